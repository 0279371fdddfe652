//! Garbage in: malformed bodies, unknown kinds, wrong content types, oversized requests and
//! invalid selectors get a `Status` with the right code, and the server keeps serving.

use proptest::prelude::*;
use serde_json::Value;

use blaze_devcluster::{ApiServer, Config};

struct Rig {
    rt: tokio::runtime::Runtime,
    server: ApiServer,
    client: kube::Client,
}

fn rig() -> Rig {
    let rt =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let (server, client) = rt.block_on(async {
        let server = ApiServer::start(Config::default()).await.unwrap();
        let client = super::common::client_for(&server.kubeconfig()).await;
        (server, client)
    });
    Rig { rt, server, client }
}

/// Sends a request; returns the status code and the body parsed as JSON (if it is).
fn send(rig: &Rig, method: &str, path: &str, ct: &str, body: Vec<u8>) -> (u16, Value) {
    rig.rt.block_on(async {
        let req = http::Request::builder()
            .method(method)
            .uri(path)
            .header("content-type", ct)
            .body(body)
            .unwrap();
        let resp = rig.client.send(req.map(kube::client::Body::from)).await.unwrap();
        let code = resp.status().as_u16();
        let bytes = http_body_util::BodyExt::collect(resp.into_body()).await.unwrap().to_bytes();
        (code, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    })
}

fn assert_status(code: u16, body: &Value, want: &[u16]) {
    assert!(want.contains(&code), "code {code} not in {want:?}: {body}");
    if code >= 400 {
        assert_eq!(body["kind"], "Status", "{body}");
        assert_eq!(body["code"], code, "{body}");
    }
}

#[test]
fn fixed_garbage_gets_the_right_status() {
    let rig = rig();
    let cms = "/api/v1/namespaces/default/configmaps";
    let (c, b) = send(&rig, "POST", cms, "application/json", b"{not json".to_vec());
    assert_status(c, &b, &[400]);
    let (c, b) =
        send(&rig, "POST", cms, "application/vnd.kubernetes.protobuf", b"\x00\x01".to_vec());
    assert_status(c, &b, &[400]);
    assert!(b["message"].as_str().unwrap().contains("does not appear to be a protobuf message"));
    let (c, b) = send(
        &rig,
        "POST",
        cms,
        "application/vnd.kubernetes.protobuf",
        b"k8s\x00\n\x14\n\x07demo/v1\x12\tWhatsThis\x12\x00".to_vec(),
    );
    assert_status(c, &b, &[415]);
    assert_eq!(b["reason"], "UnsupportedMediaType");
    assert!(b["message"].as_str().unwrap().contains("WhatsThis (demo/v1)"), "{b}");
    let (c, b) = send(
        &rig,
        "POST",
        "/apis/nope.example/v1/namespaces/default/things",
        "application/json",
        b"{}".to_vec(),
    );
    assert_status(c, &b, &[404]);
    let (c, b) = send(&rig, "PATCH", &format!("{cms}/x"), "text/plain", b"{}".to_vec());
    assert_status(c, &b, &[415]);
    let (c, b) = send(
        &rig,
        "GET",
        &format!("{cms}?labelSelector=a%20in%20(b"),
        "application/json",
        Vec::new(),
    );
    assert_status(c, &b, &[400]);
    let (c, b) = send(&rig, "PUT", cms, "application/json", b"{}".to_vec());
    assert_status(c, &b, &[405]);
    assert_eq!(b["reason"], "MethodNotAllowed");
    let big = format!(
        "{{\"metadata\":{{\"name\":\"big\"}},\"data\":{{\"a\":\"{}\"}}}}",
        "x".repeat(4 * 1024 * 1024)
    );
    let (c, b) = send(&rig, "POST", cms, "application/json", big.into_bytes());
    assert_status(c, &b, &[413]);
    let (c, b) = send(
        &rig,
        "POST",
        cms,
        "application/json",
        br#"{"kind":"Secret","apiVersion":"v1","metadata":{"name":"a"}}"#.to_vec(),
    );
    assert_status(c, &b, &[400]);
    let (c, b) =
        send(&rig, "POST", cms, "application/json", br#"{"metadata":{"name":"UPPER"}}"#.to_vec());
    assert_status(c, &b, &[422]);
    let (c, b) = send(
        &rig,
        "PATCH",
        &format!("{cms}/shape?fieldManager=m"),
        "application/apply-patch+yaml",
        b"metadata: 0".to_vec(),
    );
    assert_status(c, &b, &[400]);
    assert_eq!(
        b["message"],
        "ConfigMap in version \"v1\" cannot be handled as a ConfigMap: json: cannot unmarshal number into Go struct field ConfigMap.metadata of type v1.ObjectMeta"
    );
    let deployments = "/apis/apps/v1/namespaces/default/deployments";
    let (c, b) = send(&rig, "POST", deployments, "application/json", br#"{"spec":[]}"#.to_vec());
    assert_status(c, &b, &[400]);
    rig.rt.block_on(rig.server.shutdown());
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        "[a-zA-Z0-9:/. -]{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(
                "(metadata|name|spec|status|kind|apiVersion|labels|[a-z]{1,6})",
                inner,
                0..5
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]
    #[test]
    fn random_requests_never_crash_the_server(
        body in prop_oneof![json_value().prop_map(|v| v.to_string().into_bytes()), prop::collection::vec(any::<u8>(), 0..64)],
        method in prop_oneof![Just("POST"), Just("PUT"), Just("PATCH"), Just("DELETE"), Just("GET")],
        ct in prop_oneof![Just("application/json"), Just("application/merge-patch+json"), Just("application/json-patch+json"),
            Just("application/strategic-merge-patch+json"), Just("application/apply-patch+yaml"), Just("application/yaml"), Just("x/y")],
        path in prop_oneof![Just("/api/v1/namespaces/default/configmaps"), Just("/api/v1/namespaces/default/configmaps/g"),
            Just("/apis/apps/v1/namespaces/default/deployments/d/scale"), Just("/api/v1/namespaces/default/pods/p/status"),
            Just("/api/v1/namespaces"), Just("/apis/apps/v1/namespaces/default/deployments?fieldSelector=%%%"),
            Just("/api/v1/namespaces/default/configmaps/g?fieldManager=x&force=true")],
    ) {
        thread_local! { static RIG: Rig = rig(); }
        RIG.with(|rig| {
            let (code, body_json) = send(rig, method, path, ct, body);
            prop_assert!(code < 500, "{method} {path} {ct}: {code} {body_json}");
            if code >= 400 {
                prop_assert_eq!(&body_json["kind"], "Status");
            }
            let (alive, _) = send(rig, "GET", "/version", "application/json", Vec::new());
            prop_assert_eq!(alive, 200);
            Ok(())
        })?;
    }
}

/// A rig with objects for patches to work on: a Deployment `d`, a Pod `p`, a ConfigMap `g`.
fn rig_with_objects() -> Rig {
    let rig = rig();
    let ns = "/api/v1/namespaces/default";
    let objects = [
        (
            "/apis/apps/v1/namespaces/default/deployments",
            serde_json::json!({"metadata": {"name": "d", "labels": {"app": "d"}, "finalizers": ["a/b"]},
                "spec": {"selector": {"matchLabels": {"app": "d"}}, "template": {"metadata": {"labels": {"app": "d"}},
                "spec": {"containers": [{"name": "c", "image": "i", "args": ["x"], "env": [{"name": "E", "value": "1"}],
                "ports": [{"containerPort": 80}]}]}}}}),
        ),
        (
            &*format!("{ns}/pods"),
            serde_json::json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "i"}]}}),
        ),
        (
            &*format!("{ns}/configmaps"),
            serde_json::json!({"metadata": {"name": "g"}, "data": {"k": "v"}}),
        ),
    ];
    for (path, body) in objects {
        let (code, b) = send(&rig, "POST", path, "application/json", body.to_string().into_bytes());
        assert_eq!(code, 201, "{b}");
    }
    rig
}

/// Every error is a `Status` with its code, a reason and a message.
fn assert_error_is_a_status(what: &str, code: u16, body: &Value) -> Result<(), TestCaseError> {
    prop_assert!(code < 500, "{what}: {code} {body}");
    if code >= 400 {
        prop_assert_eq!(&body["kind"], "Status", "{}: {}", what, body);
        prop_assert_eq!(&body["status"], "Failure", "{}: {}", what, body);
        prop_assert_eq!(&body["code"], code, "{}: {}", what, body);
        prop_assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()), "{what}: {body}");
        prop_assert!(body["reason"].as_str().is_some_and(|r| !r.is_empty()), "{what}: {body}");
    }
    Ok(())
}

fn query_escape(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn label_selector() -> impl Strategy<Value = String> {
    let key = prop_oneof!["[a-z]{1,5}", "[a-z]{1,3}\\.io/[a-z]{1,4}", "[a-z!=<>(), ]{0,4}"];
    let op = prop::sample::select(vec!["=", "==", "!=", " in ", " notin ", ">", "<", "", "!"]);
    let requirement = (key, op, "[a-z0-9.()_-]{0,6}").prop_map(|(k, op, v)| match op {
        " in " | " notin " => format!("{k}{op}({v})"),
        "!" => format!("!{k}"),
        _ => format!("{k}{op}{v}"),
    });
    let requirement = prop_oneof![4 => requirement, 1 => "[ -~]{0,12}"];
    prop::collection::vec(requirement, 0..4).prop_map(|r| r.join(","))
}

fn field_selector() -> impl Strategy<Value = String> {
    let known = prop::sample::select(vec![
        "metadata.name",
        "metadata.namespace",
        "spec.nodeName",
        "spec.host",
        "spec.hostNetwork",
        "status.phase",
        "status.podIP",
        "status.podIPs",
        "spec.unschedulable",
        "type",
        "involvedObject.name",
        "regarding.kind",
        "reportingController",
        "source",
        "spec.clusterIP",
    ])
    .prop_map(str::to_owned);
    let label = prop_oneof![4 => known, 1 => "[a-zA-Z.]{0,12}"];
    let op = prop::sample::select(vec!["=", "==", "!=", "", "=="]);
    let term = (label, op, "[a-z0-9.=!-]{0,6}").prop_map(|(l, op, v)| format!("{l}{op}{v}"));
    prop::collection::vec(term, 0..4).prop_map(|t| t.join(","))
}

fn json_patch() -> impl Strategy<Value = Value> {
    let path = prop_oneof![
        prop::sample::select(vec![
            "/metadata/labels/a",
            "/metadata/name",
            "/metadata/finalizers/0",
            "/spec/replicas",
            "/spec/template/spec/containers/0/image",
            "/spec/containers/-",
            "/data/k",
            "/status",
            "",
        ])
        .prop_map(str::to_owned),
        "(/[a-z0-9~-]{0,4}){0,4}",
    ];
    let op = prop::sample::select(vec!["add", "remove", "replace", "move", "copy", "test", "nope"]);
    let one = (op, path.clone(), path, json_value())
        .prop_map(|(op, path, from, value)| serde_json::json!({"op": op, "path": path, "from": from, "value": value}));
    prop_oneof![4 => prop::collection::vec(one, 0..4).prop_map(Value::Array), 1 => json_value()]
}

/// Objects shaped like the patched kinds, with strategic merge directives in random places.
fn strategic_patch() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<i64>().prop_map(Value::from),
        prop::sample::select(vec!["replace", "delete", "merge", "c", "x", "retainKeys"])
            .prop_map(|s| Value::String(s.into())),
    ];
    leaf.prop_recursive(4, 32, 4, |inner| {
        let key = prop::sample::select(vec![
            "$patch",
            "$retainKeys",
            "$setElementOrder/containers",
            "$setElementOrder/env",
            "$deleteFromPrimitiveList/args",
            "$deleteFromPrimitiveList/finalizers",
            "metadata",
            "spec",
            "template",
            "containers",
            "env",
            "ports",
            "finalizers",
            "args",
            "name",
            "image",
            "containerPort",
            "data",
            "labels",
            "replicas",
        ]);
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..3).prop_map(Value::Array),
            prop::collection::btree_map(key, inner, 0..4).prop_map(|m| Value::Object(
                m.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
            )),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn random_selectors_get_a_list_or_a_status(
        labels in label_selector(),
        fields in field_selector(),
        path in prop::sample::select(vec![
            "/api/v1/pods", "/api/v1/nodes", "/api/v1/namespaces", "/api/v1/namespaces/default/configmaps",
            "/api/v1/namespaces/default/events", "/apis/events.k8s.io/v1/events", "/api/v1/secrets",
            "/api/v1/services", "/apis/apps/v1/deployments",
            "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
        ]),
        how in prop::sample::select(vec!["GET", "GET watch", "DELETE"]),
    ) {
        thread_local! { static RIG: Rig = rig_with_objects(); }
        RIG.with(|rig| {
            let query = format!("labelSelector={}&fieldSelector={}", query_escape(&labels), query_escape(&fields));
            let (method, url) = match how {
                "GET watch" => ("GET", format!("{path}?{query}&watch=true&timeoutSeconds=0")),
                // Deleting collections only where the patches' objects are not.
                "DELETE" => ("DELETE", format!("/api/v1/namespaces/default/secrets?{query}")),
                _ => ("GET", format!("{path}?{query}&limit=2")),
            };
            let (code, body) = send(rig, method, &url, "application/json", Vec::new());
            assert_error_is_a_status(&format!("{method} {url}"), code, &body)?;
            let (alive, _) = send(rig, "GET", "/version", "application/json", Vec::new());
            prop_assert_eq!(alive, 200);
            Ok(())
        })?;
    }

    #[test]
    fn random_patches_and_bodies_get_an_object_or_a_status(
        kind in prop::sample::select(vec!["json", "merge", "strategic", "apply", "put", "post"]),
        json in json_patch(),
        merge in json_value(),
        strategic in strategic_patch(),
        target in prop::sample::select(vec![
            "/apis/apps/v1/namespaces/default/deployments/d", "/apis/apps/v1/namespaces/default/deployments/d/status",
            "/apis/apps/v1/namespaces/default/deployments/d/scale", "/api/v1/namespaces/default/pods/p",
            "/api/v1/namespaces/default/pods/p/status", "/api/v1/namespaces/default/configmaps/g",
        ]),
        dry_run in any::<bool>(),
    ) {
        thread_local! { static RIG: Rig = rig_with_objects(); }
        RIG.with(|rig| {
            let (method, ct, body) = match kind {
                "json" => ("PATCH", "application/json-patch+json", json),
                "merge" => ("PATCH", "application/merge-patch+json", merge),
                "strategic" => ("PATCH", "application/strategic-merge-patch+json", strategic),
                "apply" => ("PATCH", "application/apply-patch+yaml", strategic),
                "put" => ("PUT", "application/json", merge),
                _ => ("POST", "application/json", strategic),
            };
            let mut url = if method == "POST" {
                target.rsplit_once('/').map(|(c, _)| c.to_owned()).unwrap_or_default()
            } else {
                target.to_owned()
            };
            url.push_str(if dry_run { "?fieldManager=fuzz&dryRun=All" } else { "?fieldManager=fuzz" });
            let what = format!("{method} {url} {ct} {body}");
            let (code, answer) = send(rig, method, &url, ct, body.to_string().into_bytes());
            assert_error_is_a_status(&what, code, &answer)?;
            let (alive, _) = send(rig, "GET", "/version", "application/json", Vec::new());
            prop_assert_eq!(alive, 200);
            Ok(())
        })?;
    }
}
