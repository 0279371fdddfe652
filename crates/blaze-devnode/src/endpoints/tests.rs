use super::*;

fn pod(name: &str, ip: Option<&str>, ready: bool, terminating: bool, app: &str) -> Pod {
    serde_json::from_value(serde_json::json!({
        "metadata": {
            "name": name, "namespace": "ns", "uid": format!("uid-{name}"),
            "labels": {"app": app},
            "deletionTimestamp": if terminating { Some("2026-01-01T00:00:00Z") } else { None },
        },
        "spec": {"nodeName": "node-0", "containers": [{"name": "c", "ports": [{"name": "http", "containerPort": 8080}]}]},
        "status": {
            "phase": "Running",
            "podIP": ip,
            "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]
        }
    }))
    .unwrap()
}

fn service(publish_not_ready: bool) -> Service {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": "web", "namespace": "ns", "uid": "svc-uid"},
        "spec": {
            "selector": {"app": "web"},
            "ports": [{"name": "http", "port": 80, "targetPort": "http"}, {"name": "raw", "port": 9000}],
            "publishNotReadyAddresses": publish_not_ready
        }
    }))
    .unwrap()
}

#[test]
fn slices_follow_readiness_and_termination() {
    let pods = vec![
        pod("ready", Some("127.0.1.1"), true, false, "web"),
        pod("unready", Some("127.0.1.2"), false, false, "web"),
        pod("leaving", Some("127.0.1.3"), true, true, "web"),
        pod("no-ip", None, false, false, "web"),
        pod("other", Some("127.0.1.5"), true, false, "db"),
    ];
    let svc = service(false);
    let chosen = selected(&svc, &pods);
    assert_eq!(chosen.len(), 4);
    let slice = build_slice(&svc, &chosen);
    let conds: Vec<(String, bool, bool, bool)> = slice
        .endpoints
        .unwrap()
        .into_iter()
        .map(|e| {
            let c = e.conditions.unwrap();
            (e.addresses[0].clone(), c.ready.unwrap(), c.serving.unwrap(), c.terminating.unwrap())
        })
        .collect();
    assert_eq!(
        conds,
        [
            ("127.0.1.1".to_string(), true, true, false),
            ("127.0.1.2".to_string(), false, false, false),
            ("127.0.1.3".to_string(), false, true, true),
        ]
    );
    let ports = slice.ports.unwrap();
    assert_eq!((ports[0].port, ports[1].port), (Some(8080), Some(9000)));
    assert_eq!(slice.metadata.labels.unwrap()[SERVICE_NAME_LABEL], "web");
    assert_eq!(slice.metadata.owner_references.unwrap()[0].uid, "svc-uid");
}

#[test]
fn publish_not_ready_addresses_marks_everything_ready() {
    let pods = vec![pod("unready", Some("127.0.1.2"), false, false, "web")];
    let svc = service(true);
    let slice = build_slice(&svc, &selected(&svc, &pods));
    let c = slice.endpoints.unwrap()[0].conditions.clone().unwrap();
    assert_eq!((c.ready, c.serving), (Some(true), Some(true)));
}
