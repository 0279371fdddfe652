//! The router as a process in front of real upstream processes: balancing, headers, reloads,
//! API keys, server-sent events, gRPC server streams and retried one-message gRPC calls.

use crate::support::process as support;

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use support::*;

/// A GET of `url` with `authorization` as the header of that name, if given.
async fn get_authorized(c: &Http, url: &str, authorization: Option<&str>) -> (u16, String) {
    let header = authorization.map(|value| ("authorization", value));
    get_with(c, url, header.as_slice()).await.unwrap()
}

const FAST: &str = "healthCheck:\n  path: /readyz\n  intervalSeconds: 1\n  timeoutSeconds: 1\n";

#[tokio::test]
async fn round_robin_spreads_evenly_and_headers_are_forwarded() {
    let ups: Vec<Proc> = (0..3).map(|i| upstream(&format!("u{i}"), "127.0.0.1:0")).collect();
    let addrs: Vec<&str> = ups.iter().map(|u| u.addr.as_str()).collect();
    let routing = format!("strategy: roundRobin\n{FAST}{}", endpoints_yaml(&addrs));
    let Routed { _dir, r, c, .. } = routed(&routing, &[]).await;
    let mut seen = std::collections::HashMap::new();
    for _ in 0..30 {
        let (s, body) = get(&c, &format!("http://{}/", r.addr)).await.unwrap();
        assert_eq!(s, 200);
        *seen.entry(body).or_insert(0) += 1;
    }
    assert_eq!(seen.len(), 3, "{seen:?}");
    assert!(seen.values().all(|&n| n == 10), "{seen:?}");

    let req = http::Request::get(format!("http://{}/headers", r.addr))
        .header("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
        .header("connection", "x-secret")
        .header("x-secret", "hop")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = c.request(req).await.unwrap();
    let id = resp.headers().get("x-request-id").cloned().expect("a request id on the response");
    let body =
        String::from_utf8(resp.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap();
    assert!(
        body.contains("traceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
        "{body}"
    );
    assert!(body.contains("x-forwarded-for: 127.0.0.1"), "{body}");
    assert!(body.contains(&format!("x-request-id: {}", id.to_str().unwrap())), "{body}");
    assert!(!body.contains("x-secret"), "hop-by-hop header leaked: {body}");
}

/// A chat request with a system prompt and a user turn; the name of the upstream it reached.
async fn chat(c: &Http, router: &str, system: &str, user: &str) -> String {
    let body = serde_json::json!({
        "model": "qwen3-8b",
        "messages": [{"role": "system", "content": system}, {"role": "user", "content": user}],
    });
    let req = http::Request::post(format!("http://{router}/"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap();
    let (status, text) = send(c, req).await.unwrap();
    assert_eq!(status, 200, "{text}");
    text
}

#[tokio::test]
async fn prefix_aware_lands_conversations_sharing_a_system_prompt_on_one_upstream() {
    let ups: Vec<Proc> = (0..3).map(|i| upstream(&format!("u{i}"), "127.0.0.1:0")).collect();
    let addrs: Vec<&str> = ups.iter().map(|u| u.addr.as_str()).collect();
    // Requests go one at a time; a high load bound keeps a response whose in-flight count is
    // not yet released from spilling the next request off its key's upstream.
    let routing = format!(
        "strategy: prefixAware\nhashLoadFactor: 4\nslowStartSeconds: 0\n{FAST}{}",
        endpoints_yaml(&addrs)
    );
    let Routed { _dir, r, c, .. } = routed(&routing, &[]).await;
    let turns = ["What is Rust?", "Write a haiku about autumn.", "Summarise: the cat sat."];
    let mut homes = std::collections::HashSet::new();
    for i in 0..12 {
        // Far shorter than `prefixBytes` (256): the user turns differ within it.
        let system = format!("You are assistant number {i}. Answer briefly.");
        let mut seen = std::collections::HashSet::new();
        for user in turns {
            seen.insert(chat(&c, &r.addr, &system, user).await);
        }
        assert_eq!(seen.len(), 1, "one system prompt, several upstreams: {seen:?}");
        homes.extend(seen);
    }
    // Twelve keys all on one of three upstreams would happen about once in 177,000 runs.
    assert!(homes.len() >= 2, "every system prompt went to {homes:?}");
}

#[tokio::test]
async fn a_config_change_is_live_within_two_seconds() {
    let a = upstream("alpha", "127.0.0.1:0");
    let b = upstream("beta", "127.0.0.1:0");
    let routing = format!("strategy: roundRobin\n{}", endpoints_yaml(&[&a.addr]));
    let Routed { _dir, cfg, r, c } = routed(&routing, &[]).await;
    let url = format!("http://{}/", r.addr);
    assert_eq!(get(&c, &url).await.unwrap().1, "hello from alpha\n");
    write_config(&cfg, &format!("strategy: roundRobin\n{}", endpoints_yaml(&[&b.addr])));
    let took = poll(Duration::from_secs(2), || async {
        get(&c, &url).await.unwrap().1 == "hello from beta\n"
    })
    .await;
    eprintln!("new endpoint set live after {took:?}");
    // A broken document is refused and the last good one keeps serving.
    write_config(&cfg, "endpoints: [broken\n");
    poll(Duration::from_secs(2), || async {
        metric(&c, &r.addr, "blaze_router_config_reloads_total{result=\"Error\"}").await
            == Some(1.0)
    })
    .await;
    assert_eq!(get(&c, &url).await.unwrap().1, "hello from beta\n");
}

#[tokio::test]
async fn api_keys_are_required_when_configured() {
    let a = upstream("alpha", "127.0.0.1:0");
    let auth = "auth:\n  keys:\n    team-a: sk-123456\n";
    let Routed { _dir, r, c, .. } =
        routed(&format!("{auth}{}", endpoints_yaml(&[&a.addr])), &[]).await;
    let url = format!("http://{}/", r.addr);
    let call = |authorization| get_authorized(&c, &url, authorization);
    assert_eq!(call(None).await, (401, "unauthorized\n".into()));
    assert_eq!(call(Some("Bearer sk-12345")).await, (401, "unauthorized\n".into()));
    assert_eq!(call(Some("Bearer sk-123456")).await, (200, "hello from alpha\n".into()));
    let n = metric(&c, &r.addr, "blaze_router_api_key_requests_total{key=\"team-a\"}").await;
    assert_eq!(n, Some(1.0));
}

#[tokio::test]
async fn server_sent_events_stream_through_and_count_in_flight_until_the_end() {
    let a = upstream("alpha", "127.0.0.1:0");
    let Routed { _dir, r, c, .. } = routed(&endpoints_yaml(&[&a.addr]), &[]).await;
    let in_flight = labelled("blaze_router_endpoint_in_flight", &a.addr);
    let req = http::Request::get(format!("http://{}/sse/5/150", r.addr))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = c.request(req).await.unwrap();
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let mut body = resp.into_body();
    let mut got = String::new();
    let mut checked_mid_stream = false;
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.unwrap().into_data() {
            got.push_str(std::str::from_utf8(&data).unwrap());
        }
        if !checked_mid_stream && got.contains("data: alpha 1\n") {
            assert_eq!(
                metric(&c, &r.addr, &in_flight).await,
                Some(1.0),
                "in flight while streaming"
            );
            checked_mid_stream = true;
        }
    }
    assert!(checked_mid_stream);
    let want: String = (0..5).map(|i| format!("id: {i}\ndata: alpha {i}\n\n")).collect();
    assert_eq!(got, want);
    poll(Duration::from_secs(2), || async { metric(&c, &r.addr, &in_flight).await == Some(0.0) })
        .await;
}

#[tokio::test]
async fn grpc_server_streams_pass_with_trailers_over_http2() {
    let a = upstream("alpha", "127.0.0.1:0");
    let Routed { _dir, r, c, .. } = routed(&endpoints_yaml(&[&a.addr]), &[]).await;
    let h2: hyper_util::client::legacy::Client<_, Full<Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .http2_only(true)
            .build(hyper_util::client::legacy::connect::HttpConnector::new());
    let in_flight = labelled("blaze_router_endpoint_in_flight", &a.addr);
    let req = http::Request::post(format!("http://{}/grpc/stream/4/150", r.addr))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(Full::new(Bytes::from_static(b"\0\0\0\0\0")))
        .unwrap();
    let resp = h2.request(req).await.unwrap();
    assert_eq!(resp.version(), http::Version::HTTP_2);
    let mut body = resp.into_body();
    let (mut data, mut trailers) = (Vec::new(), None);
    while let Some(frame) = body.frame().await {
        let frame = frame.unwrap();
        if let Some(t) = frame.trailers_ref() {
            trailers = Some(t.clone());
        } else if let Ok(d) = frame.into_data() {
            data.extend_from_slice(&d);
            if data.len() == 12 {
                assert_eq!(
                    metric(&c, &r.addr, &in_flight).await,
                    Some(1.0),
                    "in flight while streaming"
                );
            }
        }
    }
    let mut msgs = Vec::new();
    let mut rest = &data[..];
    while rest.len() >= 5 {
        let n = u32::from_be_bytes(rest[1..5].try_into().unwrap()) as usize;
        msgs.push(String::from_utf8(rest[5..5 + n].to_vec()).unwrap());
        rest = &rest[5 + n..];
    }
    assert_eq!(msgs, vec!["alpha:0", "alpha:1", "alpha:2", "alpha:3"]);
    assert_eq!(trailers.expect("trailers")["grpc-status"], "0");
    poll(Duration::from_secs(2), || async { metric(&c, &r.addr, &in_flight).await == Some(0.0) })
        .await;
}

#[tokio::test]
async fn endpoint_connections_are_kept_alive_and_reused() {
    let a = upstream("alpha", "127.0.0.1:0");
    let routing = format!("healthCheck: null\n{}", endpoints_yaml(&[&a.addr]));
    let Routed { _dir, r, .. } = routed(&routing, &["--worker-threads", "1"]).await;
    let url = format!("http://{}/", r.addr);
    // Sequential requests, on fresh client connections each time, then 8 at once, 5 rounds.
    for _ in 0..20 {
        assert_eq!(get(&client(), &url).await.unwrap().1, "hello from alpha\n");
    }
    let c = client();
    for _ in 0..5 {
        let round = (0..8).map(|_| get(&c, &url));
        for r in futures::future::join_all(round).await {
            assert_eq!(r.unwrap().1, "hello from alpha\n");
        }
    }
    let direct = client();
    let (_, n) = get(&direct, &format!("http://{}/connections", a.addr)).await.unwrap();
    let n: u64 = n.trim().parse().unwrap();
    // At most one connection per request in flight at once (8), plus this query's own.
    assert!(n <= 9, "the router opened {n} connections for 60 requests");
}

#[tokio::test]
async fn api_keys_from_a_secret_directory_are_required_and_reloaded() {
    let a = upstream("alpha", "127.0.0.1:0");
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("api-keys");
    // The kubelet's layout: key files are links through `..data` into a hidden directory.
    let data = keys.join("..2026_11_27_00_00_00.1");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("team-a"), "sk-from-secret\n").unwrap();
    std::os::unix::fs::symlink("..2026_11_27_00_00_00.1", keys.join("..data")).unwrap();
    std::os::unix::fs::symlink("..data/team-a", keys.join("team-a")).unwrap();
    let auth = format!("auth:\n  keysDir: {}\n", keys.display());
    let Routed { _dir: _routing, r, c, .. } =
        routed(&format!("{auth}{}", endpoints_yaml(&[&a.addr])), &[]).await;
    let url = format!("http://{}/", r.addr);
    let call = |authorization| get_authorized(&c, &url, authorization);
    assert_eq!(call(None).await, (401, "unauthorized\n".into()));
    assert_eq!(call(Some("Bearer ..data")).await.0, 401);
    assert_eq!(call(Some("Bearer sk-from-secret")).await, (200, "hello from alpha\n".into()));
    let n = metric(&c, &r.addr, "blaze_router_api_key_requests_total{key=\"team-a\"}").await;
    assert_eq!(n, Some(1.0));
    // A key added to the Secret is accepted without a restart.
    assert_eq!(call(Some("Bearer sk-added")).await.0, 401);
    std::fs::write(keys.join("team-b"), "sk-added").unwrap();
    poll(Duration::from_secs(3), || async { call(Some("Bearer sk-added")).await.0 == 200 }).await;
}

#[tokio::test]
async fn workers_get_their_engines_token_and_never_the_clients_key() {
    let a = upstream("alpha", "127.0.0.1:0");
    let b = upstream("beta", "127.0.0.1:0");
    let tokens = tempfile::tempdir().unwrap();
    let chat = tokens.path().join("chat");
    std::fs::write(&chat, "tok-chat-1\n").unwrap();
    let routing = format!(
        "strategy: roundRobin\nauth:\n  keys: {{team: sk-client}}\nendpoints:\n\
         - address: {}\n  engine: chat\n- address: {}\n  engine: embed\n",
        a.addr, b.addr
    );
    let flag = format!("chat={}", chat.display());
    let Routed { _dir, r, c, .. } = routed(&routing, &["--worker-token", &flag]).await;
    let url = format!("http://{}/headers", r.addr);
    let seen = async |token: &str| {
        let (mut with_token, mut without) = (0, 0);
        for _ in 0..10 {
            let (status, body) = get_authorized(&c, &url, Some("Bearer sk-client")).await;
            assert_eq!(status, 200, "{body}");
            assert!(!body.contains("sk-client"), "the client's key reached a worker: {body}");
            if body.contains(&format!("authorization: Bearer {token}")) {
                with_token += 1;
            } else if !body.contains("authorization") {
                without += 1;
            }
        }
        (with_token, without)
    };
    // engine chat's worker gets chat's token, engine embed's (no token) no Authorization.
    assert_eq!(seen("tok-chat-1").await, (5, 5));
    // A rotated token file is sent without a restart.
    std::fs::write(&chat, "tok-chat-2").unwrap();
    poll(Duration::from_secs(5), || async { seen("tok-chat-2").await == (5, 5) }).await;
    // The router's own key check still comes first.
    assert_eq!(get_authorized(&c, &url, None).await.0, 401);
}

#[tokio::test]
async fn grpc_health_checks_take_a_not_serving_endpoint_out_and_back() {
    let a = upstream("alpha", "127.0.0.1:0");
    let b = upstream("beta", "127.0.0.1:0");
    let hc = "healthCheck: {path: /grpc.health.v1.Health/Check, intervalSeconds: 1, \
              timeoutSeconds: 1, healthyThreshold: 1, unhealthyThreshold: 1}\n";
    let routing = format!("strategy: roundRobin\n{hc}{}", endpoints_yaml(&[&a.addr, &b.addr]));
    let Routed { _dir, r, c, .. } = routed(&routing, &[]).await;
    let healthy = |addr: &str| labelled("blaze_router_endpoint_healthy", addr);
    let flip = |addr: &str, to: &str| {
        let req = http::Request::post(format!("http://{addr}/grpc-health/{to}"))
            .body(Full::new(Bytes::new()))
            .unwrap();
        send(&c, req)
    };
    assert_eq!(flip(&b.addr, "not-serving").await.unwrap().0, 200);
    poll(Duration::from_secs(5), || async {
        metric(&c, &r.addr, &healthy(&b.addr)).await == Some(0.0)
    })
    .await;
    assert_eq!(metric(&c, &r.addr, &healthy(&a.addr)).await, Some(1.0));
    let url = format!("http://{}/", r.addr);
    for _ in 0..10 {
        assert_eq!(get(&c, &url).await.unwrap().1, "hello from alpha\n");
    }
    assert_eq!(flip(&b.addr, "serving").await.unwrap().0, 200);
    poll(Duration::from_secs(5), || async {
        metric(&c, &r.addr, &healthy(&b.addr)).await == Some(1.0)
    })
    .await;
}

/// An HTTP/2 client whose request bodies have no known size, as gRPC clients send them.
type Grpc = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    http_body_util::combinators::BoxBody<Bytes, std::convert::Infallible>,
>;

/// A unary gRPC call of `method` with `message` (framed, sent without a length): the status,
/// `grpc-status` and the answer's message.
async fn unary(h2: &Grpc, router: &str, method: &str, message: &[u8]) -> (u16, String, Vec<u8>) {
    let mut framed = vec![0];
    framed.extend_from_slice(&u32::try_from(message.len()).unwrap().to_be_bytes());
    framed.extend_from_slice(message);
    let frame = Ok(hyper::body::Frame::data(Bytes::from(framed)));
    let body = http_body_util::StreamBody::new(futures::stream::iter([frame])).boxed();
    let req =
        http::Request::post(format!("http://{router}/inference.GRPCInferenceService/{method}"))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(body)
            .unwrap();
    let resp = h2.request(req).await.unwrap();
    let status = resp.status().as_u16();
    let collected = resp.into_body().collect().await.unwrap();
    let grpc_status = collected
        .trailers()
        .and_then(|t| t.get("grpc-status"))
        .map(|s| s.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let data = collected.to_bytes();
    (status, grpc_status, data.get(5..).unwrap_or_default().to_vec())
}

/// A gRPC call whose request is one message (here the Open Inference Protocol's) is read
/// whole, so an endpoint that cannot be reached costs a retry, not the call; one larger than
/// the proxy keeps streams through whole.
#[tokio::test]
async fn one_message_grpc_calls_are_retried_on_another_endpoint() {
    let a = upstream("alpha", "127.0.0.1:0");
    let dead = free_addr();
    let routing = format!(
        "strategy: roundRobin\nhealthCheck: null\nretries: {{attempts: 2, budgetPercent: 100}}\n{}",
        endpoints_yaml(&[&dead, &a.addr])
    );
    let Routed { _dir, r, c, .. } = routed(&routing, &[]).await;
    let h2: Grpc =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .http2_only(true)
            .build(hyper_util::client::legacy::connect::HttpConnector::new());
    for (i, method) in
        ["ServerLive", "ModelMetadata", "ModelInfer", "ModelInfer"].iter().enumerate()
    {
        let message = format!("call {i}");
        let answer = unary(&h2, &r.addr, method, message.as_bytes()).await;
        assert_eq!(answer, (200, "0".into(), format!("alpha:{message}").into_bytes()), "{method}");
    }
    let retries = metric(&c, &r.addr, "blaze_router_retries_total").await.unwrap_or(0.0);
    assert!(retries >= 1.0, "round robin over a dead endpoint must have needed retries");

    let Routed { _dir: _alive, r: alive, .. } = routed(&endpoints_yaml(&[&a.addr]), &[]).await;
    let large = vec![7u8; 1_500_000];
    let (status, grpc_status, echoed) = unary(&h2, &alive.addr, "ModelInfer", &large).await;
    assert_eq!((status, grpc_status.as_str()), (200, "0"));
    assert_eq!((echoed.len(), &echoed[..6]), (large.len() + 6, &b"alpha:"[..]));
    assert!(echoed[6..] == large[..], "the large message arrived changed");
}
