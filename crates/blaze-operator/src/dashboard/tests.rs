use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;

/// Objects fixed at construction, or an API server that cannot be reached.
struct Fixed(Option<(Vec<BlazeEngine>, Vec<BlazeRouter>)>);

impl Objects for Fixed {
    fn engines(&self) -> BoxFuture<'_, crate::Result<Vec<BlazeEngine>>> {
        let r = self.0.as_ref().map(|o| o.0.clone()).ok_or(crate::Error::Timeout("list".into()));
        Box::pin(async move { r })
    }

    fn routers(&self) -> BoxFuture<'_, crate::Result<Vec<BlazeRouter>>> {
        let r = self.0.as_ref().map(|o| o.1.clone()).ok_or(crate::Error::Timeout("list".into()));
        Box::pin(async move { r })
    }
}

fn engine() -> BlazeEngine {
    serde_json::from_value(json!({
        "apiVersion": "blaze.ai/v1alpha1", "kind": "BlazeEngine",
        "metadata": {"name": "smollm2", "namespace": "ml"},
        "spec": {"kind": "llm", "model": {"source": "pvc://models/smol.gguf"}},
        "status": {"desiredReplicas": 2, "readyReplicas": 1, "conditions": [{
            "type": "Ready", "status": "True", "reason": "Serving", "message": "1 worker ready",
            "lastTransitionTime": "2026-01-01T00:00:00Z"
        }]}
    }))
    .unwrap()
}

fn router() -> BlazeRouter {
    serde_json::from_value(json!({
        "apiVersion": "blaze.ai/v1alpha1", "kind": "BlazeRouter",
        "metadata": {"name": "front", "namespace": "ml"},
        "spec": {"engines": {"names": ["smollm2"]}}
    }))
    .unwrap()
}

/// A dashboard over `objects` on a local port: its address.
async fn serve(objects: Fixed, history: Arc<History>) -> SocketAddr {
    let listener = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let d = Dashboard::new(Arc::new(objects), history);
    tokio::spawn(d.serve(listener, std::future::pending()));
    addr
}

/// `GET path`: the status code and the body.
async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: dash\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    let code = out[9..12].parse().unwrap();
    let body = out.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    (code, body)
}

fn json_of(body: &str) -> Value {
    // Small bodies come whole; longer ones chunked. The JSON is the text from the first brace.
    let start = body.find('{').unwrap();
    let end = body.rfind('}').unwrap();
    serde_json::from_str(&body[start..=end]).unwrap()
}

fn fixed() -> Fixed {
    Fixed(Some((vec![engine()], vec![router()])))
}

#[tokio::test]
async fn the_overview_lists_engines_and_routers_with_conditions_and_events() {
    let history = Arc::new(History::default());
    let note = |i| crate::history::Note {
        t: i,
        warning: i == 9,
        reason: format!("R{i}"),
        message: "m".into(),
    };
    for i in 0..10 {
        history.note("BlazeEngine/ml/smollm2", note(i));
    }
    let addr = serve(fixed(), history).await;
    let (code, body) = get(addr, "/api/overview").await;
    assert_eq!(code, 200, "{body}");
    let v = json_of(&body);
    let e = &v["engines"][0];
    assert_eq!((e["namespace"].as_str(), e["name"].as_str()), (Some("ml"), Some("smollm2")));
    assert_eq!(e["desiredReplicas"], 2);
    assert_eq!(e["conditions"][0]["reason"], "Serving");
    let events = e["events"].as_array().unwrap();
    assert_eq!(events.len(), EVENTS_SHOWN, "the most recent few");
    assert_eq!(events[0]["reason"], "R9", "newest first");
    assert_eq!(v["routers"][0]["name"], "front");
    let (code, page) = get(addr, "/").await;
    assert_eq!(code, 200);
    assert!(page.contains("data-page=\"overview\"") && page.contains("/assets/app.js"));
}

#[tokio::test]
async fn an_engine_page_serves_its_history_and_decisions() {
    let history = Arc::new(History::default());
    history.engine_replicas("ml/smollm2", 1_000, 1, 1);
    history.scaled("ml/smollm2", 11_000, 1, 2, "load above target".into());
    history.engine_replicas("ml/smollm2", 11_000, 2, 1);
    let addr = serve(fixed(), history).await;
    let (code, body) = get(addr, "/api/engines/ml/smollm2").await;
    assert_eq!(code, 200, "{body}");
    let v = json_of(&body);
    assert_eq!(v["points"].as_array().unwrap().len(), 2);
    assert_eq!(v["points"][1]["desired"], 2);
    assert_eq!(v["decisions"][0]["reason"], "load above target");
    let (code, page) = get(addr, "/engines/ml/smollm2").await;
    assert_eq!(code, 200);
    assert!(page.contains("data-page=\"engine\"") && page.contains("data-name=\"smollm2\""));
    let (code, body) = get(addr, "/api/routers/ml/front").await;
    assert_eq!(code, 200, "{body}");
    assert!(json_of(&body)["history"].as_array().unwrap().is_empty());
}

#[tokio::test]
async fn a_missing_object_is_a_404_naming_it() {
    let addr = serve(fixed(), Arc::new(History::default())).await;
    let (code, page) = get(addr, "/engines/ml/nope").await;
    assert_eq!(code, 404);
    assert!(page.contains("BlazeEngine ml/nope not found"), "{page}");
    let (code, page) = get(addr, "/routers/ml/%3Cb%3E").await;
    assert_eq!(code, 404);
    assert!(page.contains("BlazeRouter ml/&lt;b&gt; not found"), "escaped: {page}");
    let (code, body) = get(addr, "/api/engines/ml/nope").await;
    assert_eq!(code, 404);
    assert_eq!(json_of(&body)["error"], "BlazeEngine ml/nope not found");
    assert_eq!(get(addr, "/no/such/page").await.0, 404);
}

#[tokio::test]
async fn an_unreachable_api_server_is_a_503_saying_so() {
    let addr = serve(Fixed(None), Arc::new(History::default())).await;
    let (code, body) = get(addr, "/api/overview").await;
    assert_eq!(code, 503);
    assert!(json_of(&body)["error"].as_str().unwrap().contains("cannot list objects"));
}

#[tokio::test]
async fn assets_are_embedded_and_need_no_network() {
    let addr = serve(fixed(), Arc::new(History::default())).await;
    let (code, js) = get(addr, "/assets/app.js").await;
    assert_eq!(code, 200);
    assert!(js.contains("function chart("));
    let (code, css) = get(addr, "/assets/style.css").await;
    assert_eq!(code, 200);
    assert!(!css.contains("http") && !PAGE.contains("http"), "no external asset");
    // The script names no host but the SVG namespace.
    let hosts: Vec<&str> = js.matches("http").collect();
    assert_eq!(hosts.len(), 1, "only the SVG namespace URI");
}
