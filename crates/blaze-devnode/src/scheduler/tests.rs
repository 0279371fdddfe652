use super::*;
use k8s_openapi::api::core::v1::Pod;

fn node(name: &str, gpus: i64, labels: &[(&str, &str)], taints: &[(&str, &str)]) -> NodeInfo {
    NodeInfo {
        name: name.into(),
        allocatable: Resources(
            [
                ("cpu".to_string(), 4000),
                ("memory".to_string(), 8 << 30),
                ("pods".to_string(), 110),
                ("nvidia.com/gpu".to_string(), gpus),
            ]
            .into(),
        ),
        labels: labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        taints: taints
            .iter()
            .map(|(k, e)| Taint { key: k.to_string(), effect: e.to_string(), ..Default::default() })
            .collect(),
        unschedulable: false,
    }
}

fn spec(json: serde_json::Value) -> PodSpec {
    let pod: Pod = serde_json::from_value(serde_json::json!({ "spec": json })).unwrap();
    pod.spec.unwrap()
}

fn gpu_pod(gpus: u32) -> PodSpec {
    spec(serde_json::json!({
        "containers": [{"name": "w", "resources": {"limits": {"nvidia.com/gpu": gpus.to_string()}, "requests": {"cpu": "500m"}}}]
    }))
}

#[test]
fn limits_stand_in_for_requests_and_a_pod_takes_a_slot() {
    let r = pod_requests(&gpu_pod(2));
    assert_eq!((r.get("nvidia.com/gpu"), r.get("cpu"), r.get("pods")), (2, 500, 1));
}

#[test]
fn too_many_gpus_fit_nowhere_with_the_scheduler_message() {
    let nodes = vec![
        (node("a", 4, &[], &[]), Resources::default()),
        (node("b", 4, &[], &[]), Resources::default()),
    ];
    assert_eq!(
        choose(&nodes, &gpu_pod(8)),
        Err("0/2 nodes are available: 2 Insufficient nvidia.com/gpu.".into())
    );
    assert_eq!(choose(&nodes, &gpu_pod(4)), Ok("a".into()));
}

#[test]
fn used_resources_count_and_the_least_loaded_node_wins() {
    let busy = Resources([("cpu".to_string(), 3000), ("nvidia.com/gpu".to_string(), 3)].into());
    let nodes =
        vec![(node("a", 4, &[], &[]), busy), (node("b", 4, &[], &[]), Resources::default())];
    assert_eq!(choose(&nodes, &gpu_pod(1)), Ok("b".into()));
    let nodes = vec![nodes[0].clone()];
    assert_eq!(
        choose(&nodes, &gpu_pod(2)),
        Err("0/1 nodes are available: 1 Insufficient nvidia.com/gpu.".into())
    );
}

#[test]
fn node_selectors_affinity_and_taints() {
    let nodes = vec![
        (node("plain", 0, &[("zone", "a")], &[]), Resources::default()),
        (
            node("gpu", 4, &[("zone", "b")], &[("nvidia.com/gpu", "NoSchedule")]),
            Resources::default(),
        ),
    ];
    let untolerated = gpu_pod(1);
    assert_eq!(
        choose(&nodes, &untolerated),
        Err("0/2 nodes are available: 1 Insufficient nvidia.com/gpu, 1 node(s) had untolerated taint {nvidia.com/gpu}.".into())
    );
    let mut tolerated = gpu_pod(1);
    tolerated.tolerations = Some(vec![Toleration {
        key: Some("nvidia.com/gpu".into()),
        operator: Some("Exists".into()),
        effect: Some("NoSchedule".into()),
        ..Default::default()
    }]);
    assert_eq!(choose(&nodes, &tolerated), Ok("gpu".into()));

    let selected =
        spec(serde_json::json!({"containers": [{"name": "c"}], "nodeSelector": {"zone": "b"}}));
    assert_eq!(
        choose(&nodes, &selected),
        Err("0/2 nodes are available: 1 node(s) didn't match Pod's node affinity/selector, 1 node(s) had untolerated taint {nvidia.com/gpu}.".into())
    );
    let affinity = spec(serde_json::json!({
        "containers": [{"name": "c"}],
        "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
            {"matchExpressions": [{"key": "zone", "operator": "NotIn", "values": ["b"]}]}
        ]}}}
    }));
    assert_eq!(choose(&nodes, &affinity), Ok("plain".into()));
}

#[test]
fn toleration_rules() {
    let taint = Taint {
        key: "k".into(),
        value: Some("v".into()),
        effect: "NoSchedule".into(),
        ..Default::default()
    };
    let tol = |key: Option<&str>, op: Option<&str>, value: Option<&str>, effect: Option<&str>| {
        Toleration {
            key: key.map(Into::into),
            operator: op.map(Into::into),
            value: value.map(Into::into),
            effect: effect.map(Into::into),
            ..Default::default()
        }
    };
    assert!(tolerates(&tol(Some("k"), None, Some("v"), None), &taint));
    assert!(!tolerates(&tol(Some("k"), None, Some("w"), None), &taint));
    assert!(tolerates(&tol(None, Some("Exists"), None, None), &taint));
    assert!(!tolerates(&tol(Some("k"), Some("Exists"), None, Some("NoExecute")), &taint));
    assert!(!tolerates(&tol(Some("other"), Some("Exists"), None, None), &taint));
}
