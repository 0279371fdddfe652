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
    assert_status(c, &b, &[415]);
    assert_eq!(b["reason"], "UnsupportedMediaType");
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
