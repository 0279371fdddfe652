use super::*;
use k8s_openapi::api::apps::v1::ReplicaSetSpec;
use k8s_openapi::api::core::v1::{PodCondition, PodSpec, PodStatus};

fn at(secs: i64) -> Time {
    Time(k8s_openapi::jiff::Timestamp::from_second(secs).unwrap())
}

fn pod(name: &str, node: Option<&str>, phase: &str, ready: bool, created: i64) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some(name.into()),
            creation_timestamp: Some(at(created)),
            ..Default::default()
        },
        spec: Some(PodSpec { node_name: node.map(Into::into), ..Default::default() }),
        status: Some(PodStatus {
            phase: Some(phase.into()),
            conditions: Some(vec![PodCondition {
                type_: "Ready".into(),
                status: if ready { "True" } else { "False" }.into(),
                last_transition_time: Some(at(created + 5)),
                ..Default::default()
            }]),
            ..Default::default()
        }),
    }
}

#[test]
fn hashes_are_stable_and_change_with_the_template() {
    let mut t = PodTemplateSpec::default();
    let a = template_hash(&t, None);
    assert_eq!(a, template_hash(&t, None));
    assert!(a.chars().all(|c| "bcdfghjklmnpqrstvwxz2456789".contains(c)));
    t.metadata = Some(ObjectMeta {
        labels: Some([("v".to_string(), "2".to_string())].into()),
        ..Default::default()
    });
    assert_ne!(a, template_hash(&t, None));
    assert_ne!(template_hash(&t, None), template_hash(&t, Some(1)));
}

#[test]
fn pods_from_a_replicaset_are_owned_and_labelled() {
    let rs = ReplicaSet {
        metadata: ObjectMeta {
            name: Some("web-abc".into()),
            namespace: Some("ns".into()),
            uid: Some("rs-uid".into()),
            ..Default::default()
        },
        spec: ReplicaSetSpec {
            template: Some(PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some([("app".to_string(), "web".to_string())].into()),
                    ..Default::default()
                }),
                spec: Some(PodSpec::default()),
            }),
            ..Default::default()
        },
        status: None,
    };
    let p = pod_for(&rs);
    assert_eq!(p.metadata.generate_name.as_deref(), Some("web-abc-"));
    assert_eq!(p.metadata.namespace.as_deref(), Some("ns"));
    assert_eq!(p.metadata.labels.as_ref().unwrap()["app"], "web");
    assert!(controlled_by(&p.metadata, "rs-uid"));
    assert!(!controlled_by(&p.metadata, "other"));
}

#[test]
fn scale_down_removes_the_least_useful_pods_first() {
    let mut pods = vec![
        pod("ready-old", Some("n"), "Running", true, 100),
        pod("ready-new", Some("n"), "Running", true, 200),
        pod("unready", Some("n"), "Running", false, 50),
        pod("pending", Some("n"), "Pending", false, 10),
        pod("unscheduled", None, "Pending", false, 10),
    ];
    deletion_order(&mut pods);
    let names: Vec<_> = pods.iter().map(|p| p.metadata.name.clone().unwrap()).collect();
    assert_eq!(names, ["unscheduled", "pending", "unready", "ready-new", "ready-old"]);
}

#[test]
fn availability_honours_min_ready_seconds() {
    let p = pod("p", Some("n"), "Running", true, 100);
    assert!(is_available(&p, 0, 0));
    assert!(!is_available(&p, 10, 110));
    assert!(is_available(&p, 10, 115));
    assert!(!is_available(&pod("q", None, "Running", false, 0), 0, 999));
    let mut done = p.clone();
    done.status.as_mut().unwrap().phase = Some("Succeeded".into());
    assert!(is_active(&p) && !is_active(&done));
}
