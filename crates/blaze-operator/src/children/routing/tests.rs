use blaze_api::BlazeRouter;
use serde_json::json;

use super::*;
use crate::children::router;
use crate::children::{Defaults, manifest_doc};

fn slice(service: &str, eps: serde_json::Value) -> EndpointSlice {
    serde_json::from_value(json!({
        "metadata": {"name": format!("{service}-abc"), "labels": {"kubernetes.io/service-name": service}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8000}],
        "endpoints": eps
    }))
    .unwrap()
}

fn quickstart_router() -> BlazeRouter {
    let yaml = include_str!("../../../../../manifests/examples/quickstart.yaml");
    let mut r: BlazeRouter = manifest_doc(yaml, 1);
    r.metadata.namespace = Some("default".into());
    r.metadata.uid = Some("u".into());
    r
}

#[test]
fn endpoints_come_from_ready_addresses_of_the_selected_engines_slices() {
    let slices = [
        slice(
            "chat-worker",
            json!([
                {"addresses": ["10.0.0.2"], "conditions": {"ready": true}, "targetRef": {"kind": "Pod", "name": "chat-worker-b"}},
                {"addresses": ["10.0.0.1"], "conditions": {"ready": true}, "targetRef": {"kind": "Pod", "name": "chat-worker-a"}},
                {"addresses": ["10.0.0.3"], "conditions": {"ready": false}, "targetRef": {"kind": "Pod", "name": "chat-worker-c"}}
            ]),
        ),
        slice("other-worker", json!([{"addresses": ["10.0.1.1"]}])),
    ];
    let eps = endpoints(&["chat".into()], &slices);
    let addrs: Vec<_> = eps.iter().map(|e| (e.pod.as_str(), e.address.as_str())).collect();
    assert_eq!(addrs, [("chat-worker-a", "10.0.0.1:8000"), ("chat-worker-b", "10.0.0.2:8000")]);
    assert!(endpoints(&["gone".into()], &slices).is_empty(), "a deleted engine just drops out");
}

#[test]
fn selection_by_names_or_labels() {
    let by_name: EngineSelection = serde_json::from_value(json!({"names": ["a", "b"]})).unwrap();
    assert!(selects(&by_name, "a", &BTreeMap::new()));
    assert!(!selects(&by_name, "c", &BTreeMap::new()));
    let by_labels: EngineSelection = serde_json::from_value(json!({"selector": {
        "matchLabels": {"tier": "chat"},
        "matchExpressions": [{"key": "size", "operator": "In", "values": ["s", "m"]},
                             {"key": "beta", "operator": "DoesNotExist"}]
    }}))
    .unwrap();
    let l = |pairs: &[(&str, &str)]| {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    };
    assert!(selects(&by_labels, "x", &l(&[("tier", "chat"), ("size", "m")])));
    assert!(!selects(&by_labels, "x", &l(&[("tier", "chat"), ("size", "l")])));
    assert!(!selects(&by_labels, "x", &l(&[("tier", "chat"), ("size", "s"), ("beta", "1")])));
}

#[test]
fn config_carries_weights_and_traffic_settings_and_renders_into_the_config_map() {
    let r = quickstart_router();
    let eps = vec![
        Endpoint {
            engine: "smollm2".into(),
            pod: "a".into(),
            address: "10.0.0.1:8000".into(),
            weight: 0,
        },
        Endpoint {
            engine: "smollm2".into(),
            pod: "b".into(),
            address: "10.0.0.2:8000".into(),
            weight: 0,
        },
    ];
    let stats = BTreeMap::from([
        (
            "10.0.0.1:8000".to_owned(),
            EndpointStats { ttft_ms: Some(100.0), age_s: 1e6, ..Default::default() },
        ),
        (
            "10.0.0.2:8000".to_owned(),
            EndpointStats { ttft_ms: Some(400.0), age_s: 1e6, ..Default::default() },
        ),
    ]);
    let c = config(&r, eps, &stats);
    // 400 ms against a fastest of 100 ms, counted from 125 ms (the tolerance): 125/400.
    assert_eq!(c.endpoints.iter().map(|e| e.weight).collect::<Vec<_>>(), [100, 31]);
    assert_eq!(c.strategy, blaze_api::router::Strategy::Adaptive);
    assert_eq!(c.circuit_breaker.consecutive_failures, 5);
    let yaml: serde_json::Value =
        serde_saphyr::from_str(&serde_saphyr::to_string(&c).unwrap()).unwrap();
    assert_eq!(yaml["endpoints"][1]["address"].as_str(), Some("10.0.0.2:8000"));
    assert_eq!(yaml["slowStartSeconds"].as_u64(), Some(30));
    let cm = router::config_map(&r, &c).unwrap();
    assert_eq!(cm.metadata.name.as_deref(), Some("quickstart-routing"));
    let back: RoutingConfig =
        serde_saphyr::from_str(&cm.data.unwrap()[router::CONFIG_KEY]).unwrap();
    assert_eq!(back, c);
}

#[test]
fn small_weight_moves_keep_the_published_weights() {
    let ep = |a: &str, w: u32| Endpoint {
        engine: "e".into(),
        pod: a.into(),
        address: a.into(),
        weight: w,
    };
    let published = vec![("a".to_owned(), 100), ("b".to_owned(), 50)];
    let mut eps = vec![ep("a", 100), ep("b", 53)];
    keep_small_moves(&published, &mut eps);
    assert_eq!(eps[1].weight, 50, "a 6% move is noise");
    let mut eps = vec![ep("a", 100), ep("b", 70)];
    keep_small_moves(&published, &mut eps);
    assert_eq!(eps[1].weight, 70);
    let mut eps = vec![ep("a", 100), ep("c", 53)];
    keep_small_moves(&published, &mut eps);
    assert_eq!(eps[1].weight, 53, "a new endpoint set is always published");
}

#[test]
fn router_deployment_and_service_follow_the_spec() {
    let mut r = quickstart_router();
    r.spec.auth = Some(serde_json::from_value(json!({"secretName": "keys"})).unwrap());
    let d = router::deployment(&r, &["quickstart".into()], &Defaults::default()).unwrap();
    let spec = &d.spec;
    assert_eq!(spec.replicas, Some(1));
    let pod = spec.template.spec.as_ref().unwrap();
    let c = &pod.containers[0];
    let args = c.args.as_ref().unwrap().join(" ");
    assert!(args.starts_with("--listen 0.0.0.0:8080 "), "{args}");
    // The routing document is watched through the API server, not mounted.
    assert!(args.contains("--config-map quickstart-routing --namespace default"), "{args}");
    assert!(!args.contains("--config "), "{args}");
    assert!(!args.contains("api-keys"), "the router has no such flag: {args}");
    assert_eq!(c.security_context.as_ref().unwrap().read_only_root_filesystem, Some(true));
    assert_eq!(pod.service_account_name.as_deref(), Some("quickstart-router"));
    // The engine's worker token is mounted and named by a flag; it is not in the ConfigMap.
    let token = "--worker-token quickstart=/etc/blaze/worker-tokens/quickstart/token";
    assert!(args.ends_with(token), "{args}");
    let vols = pod.volumes.as_ref().unwrap();
    assert_eq!(vols.len(), 2, "the API keys and the worker token are mounted: {vols:?}");
    assert_eq!(d.metadata.name.as_deref(), Some("quickstart-router"));
    assert_eq!(vols[0].secret.as_ref().unwrap().secret_name.as_deref(), Some("keys"));
    let token = vols[1].secret.as_ref().unwrap();
    assert_eq!(token.secret_name.as_deref(), Some("quickstart-worker-token"));
    let mounts = c.volume_mounts.as_ref().unwrap();
    assert!(
        mounts.iter().any(
            |m| m.name == vols[1].name && m.mount_path == "/etc/blaze/worker-tokens/quickstart"
        )
    );
    let s = router::service(&r).unwrap();
    let ss = s.spec.unwrap();
    assert_eq!(ss.type_.as_deref(), Some("ClusterIP"));
    assert_eq!(ss.ports.unwrap()[0].port, 80);
    assert_eq!(ss.selector.unwrap()["blaze.ai/router"], "quickstart");
}

#[test]
fn router_pods_may_read_and_watch_their_routing_config_map_and_nothing_else() {
    let r = quickstart_router();
    let sa = router::service_account(&r).unwrap();
    assert_eq!(sa.metadata.name.as_deref(), Some("quickstart-router"));
    let role = router::role(&r).unwrap();
    let rules = role.rules.unwrap();
    assert_eq!(rules.len(), 1);
    assert_eq!(rules[0].api_groups.as_deref(), Some(&[String::new()][..]));
    assert_eq!(rules[0].resources.as_deref(), Some(&["configmaps".to_owned()][..]));
    assert_eq!(rules[0].resource_names.as_deref(), Some(&["quickstart-routing".to_owned()][..]));
    assert_eq!(rules[0].verbs, ["get", "list", "watch"]);
    let b = router::role_binding(&r).unwrap();
    assert_eq!(b.role_ref.kind, "Role");
    assert_eq!(b.role_ref.name, "quickstart-router");
    let subject = &b.subjects.unwrap()[0];
    assert_eq!(
        (subject.kind.as_str(), subject.name.as_str()),
        ("ServiceAccount", "quickstart-router")
    );
    assert_eq!(subject.namespace.as_deref(), Some("default"));
    for owner in [sa.metadata, role.metadata, b.metadata].map(|m| m.owner_references.unwrap()) {
        assert_eq!(owner[0].kind, "BlazeRouter");
        assert_eq!(owner[0].controller, Some(true));
    }
}

#[test]
fn a_router_with_tls_mounts_its_secret_and_serves_https() {
    let mut r = quickstart_router();
    let plain = router::deployment(&r, &[], &Defaults::default()).unwrap();
    let args = |d: &k8s_openapi::api::apps::v1::Deployment| {
        d.spec.template.spec.as_ref().unwrap().containers[0].args.clone().unwrap().join(" ")
    };
    assert!(!args(&plain).contains("--tls"), "{}", args(&plain));
    assert_eq!(
        router::service(&r).unwrap().spec.unwrap().ports.unwrap()[0].name.as_deref(),
        Some("http")
    );

    r.spec.tls = Some(serde_json::from_value(json!({"secretName": "router-cert"})).unwrap());
    let d = router::deployment(&r, &[], &Defaults::default()).unwrap();
    let a = args(&d);
    assert!(
        a.ends_with("--tls-cert /etc/blaze/tls/tls.crt --tls-key /etc/blaze/tls/tls.key"),
        "{a}"
    );
    let pod = d.spec.template.spec.unwrap();
    let vols = pod.volumes.unwrap();
    assert_eq!(vols[0].secret.as_ref().unwrap().secret_name.as_deref(), Some("router-cert"));
    let c = &pod.containers[0];
    let m = &c.volume_mounts.as_ref().unwrap()[0];
    assert_eq!((m.mount_path.as_str(), m.read_only), ("/etc/blaze/tls", Some(true)));
    assert_eq!(c.ports.as_ref().unwrap()[0].name.as_deref(), Some("https"));
    let port = router::service(&r).unwrap().spec.unwrap().ports.unwrap().remove(0);
    assert_eq!(port.name.as_deref(), Some("https"));
    let https = k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String("https".into());
    assert_eq!(port.target_port, Some(https));
}
