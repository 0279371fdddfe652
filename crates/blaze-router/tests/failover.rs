//! Killing one of three upstreams under load: no request is lost, the dead one is ejected
//! within a second, and it returns once it is back. An endpoint's early refusal of a large
//! upload reaches the client as it was sent.

use crate::support::process as support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_one_of_three_loses_nothing_ejects_fast_and_recovers() {
    let mut ups: Vec<Proc> = (0..3).map(|i| upstream(&format!("u{i}"), "127.0.0.1:0")).collect();
    let addrs: Vec<String> = ups.iter().map(|u| u.addr.clone()).collect();
    let refs: Vec<&str> = addrs.iter().map(String::as_str).collect();
    let doc = format!(
        "strategy: roundRobin\nslowStartSeconds: 0\n\
         circuitBreaker: {{consecutiveFailures: 3, openSeconds: 1, maxOpenSeconds: 2, maxEjectionPercent: 50}}\n\
         healthCheck: {{path: /readyz, intervalSeconds: 1, timeoutSeconds: 1, healthyThreshold: 1, unhealthyThreshold: 2}}\n\
         retries: {{attempts: 2, budgetPercent: 50}}\n{}",
        endpoints_yaml(&refs)
    );
    let Routed { _dir, r, c, .. } = routed(&doc, &["--breaker-open-ms", "300"]).await;
    let url = format!("http://{}/", r.addr);
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut load = Vec::new();
    for _ in 0..4 {
        let (c, url, stop, ok, failed) =
            (client(), url.clone(), stop.clone(), ok.clone(), failed.clone());
        load.push(tokio::spawn(async move {
            // Bounded: at most 20,000 requests per task.
            for _ in 0..20_000 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                match get(&c, &url).await {
                    Ok((200, _)) => ok.fetch_add(1, Ordering::Relaxed),
                    other => {
                        eprintln!("lost: {other:?}");
                        failed.fetch_add(1, Ordering::Relaxed)
                    }
                };
            }
        }));
    }
    poll(Duration::from_secs(5), || async { ok.load(Ordering::Relaxed) > 200 }).await;

    let victim = addrs[1].clone();
    ups[1].kill();
    let killed = Instant::now();
    let state = labelled("blaze_router_endpoint_breaker_state", &victim);
    let healthy = labelled("blaze_router_endpoint_healthy", &victim);
    poll(Duration::from_secs(1), || async {
        metric(&c, &r.addr, &state).await == Some(1.0)
            || metric(&c, &r.addr, &healthy).await == Some(0.0)
    })
    .await;
    eprintln!("ejected {:?} after the kill", killed.elapsed());
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Back on the same address: health checks and breaker probes let it in again.
    ups[1] = upstream("u1-again", &victim);
    let requests = labelled("blaze_router_endpoint_requests_total", &victim);
    let before = metric(&c, &r.addr, &requests).await.unwrap_or(0.0);
    let back = poll(Duration::from_secs(10), || async {
        metric(&c, &r.addr, &state).await == Some(0.0)
            && metric(&c, &r.addr, &healthy).await == Some(1.0)
            && metric(&c, &r.addr, &requests).await.unwrap_or(0.0) > before + 50.0
    })
    .await;
    eprintln!("serving again {back:?} after the restart");
    stop.store(true, Ordering::Relaxed);
    for t in load {
        t.await.unwrap();
    }
    assert_eq!(failed.load(Ordering::Relaxed), 0, "requests lost");
    assert!(ok.load(Ordering::Relaxed) > 500);
    let retries = metric(&c, &r.addr, "blaze_router_retries_total").await.unwrap_or(0.0);
    assert!(retries >= 1.0, "the kill must have needed retries");
}

/// An endpoint that answers every request at once with 413 and closes, without reading the
/// body (as a server with an upload limit does).
async fn refuses_uploads() -> String {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = l.accept().await.unwrap();
            tokio::spawn(async move {
                let mut seen = Vec::new();
                while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                    let mut chunk = [0u8; 1024];
                    match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => seen.extend_from_slice(&chunk[..n]),
                    }
                }
                let answer = b"HTTP/1.1 413 Payload Too Large\r\ncontent-length: 15\r\n\
                               connection: close\r\n\r\nprompt too long";
                let _ = s.write_all(answer).await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn an_endpoint_refusing_an_upload_early_is_answered_not_failed() {
    let ep = refuses_uploads().await;
    let routing = format!("strategy: roundRobin\n{}", endpoints_yaml(&[&ep]));
    let Routed { _dir, r, c, .. } = routed(&routing, &[]).await;
    // The largest body the router keeps for retries: far more than the endpoint's socket
    // takes unread.
    let body = Bytes::from(vec![b'x'; 1 << 20]);
    let req = http::Request::post(format!("http://{}/v1/completions", r.addr))
        .body(http_body_util::Full::new(body))
        .unwrap();
    let (status, text) = send(&c, req).await.unwrap();
    assert_eq!((status, text.as_str()), (413, "prompt too long"));
}

/// An endpoint that answers the first request of every connection (keep-alive) and closes
/// the connection when a second one arrives on it, as one whose idle timeout ends just as a
/// request comes. Returns its address and the count of connections it accepted.
async fn closes_after_one() -> (String, Arc<AtomicUsize>) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    async fn head(s: &mut tokio::net::TcpStream) -> bool {
        let mut seen = Vec::new();
        while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
            let mut chunk = [0u8; 1024];
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => return false,
                Ok(n) => seen.extend_from_slice(&chunk[..n]),
            }
        }
        true
    }
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let count = Arc::new(AtomicUsize::new(0));
    let n = count.clone();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = l.accept().await.unwrap();
            n.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                if head(&mut s).await {
                    let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nok\n";
                    let _ = s.write_all(ok).await;
                    head(&mut s).await;
                }
            });
        }
    });
    (addr, count)
}

#[tokio::test]
async fn a_reused_connection_closed_under_a_request_is_retried_without_blame() {
    let (ep, connections) = closes_after_one().await;
    let doc = format!("strategy: roundRobin\nretries: {{attempts: 1}}\n{}", endpoints_yaml(&[&ep]));
    let Routed { _dir, cfg, r, c } = routed(&doc, &["--worker-threads", "1"]).await;
    let url = format!("http://{}/v1/completions", r.addr);
    for i in 0..4 {
        let req = http::Request::post(&url).body(http_body_util::Full::new(Bytes::from("{}")));
        let (status, text) = send(&c, req.unwrap()).await.unwrap();
        assert_eq!((status, text.as_str()), (200, "ok\n"), "request {i}");
    }
    // Each request after the first found its pooled connection closed and went again on a
    // new one, to the same (only) endpoint, which the breaker did not blame. (Health checks
    // may open connections of their own.)
    assert!(connections.load(Ordering::SeqCst) >= 4);
    let errors = labelled("blaze_router_endpoint_errors_total", &ep);
    assert_eq!(metric(&c, &r.addr, &errors).await.unwrap_or(0.0), 0.0);
    assert_eq!(metric(&c, &r.addr, "blaze_router_retries_total").await, Some(3.0));

    // With retries off, the policy holds: the request is not sent twice.
    let doc = format!("strategy: roundRobin\nretries: {{attempts: 0}}\n{}", endpoints_yaml(&[&ep]));
    write_config(&cfg, &doc);
    reloaded(&c, &r.addr, 1.0).await;
    let req = http::Request::post(&url).body(http_body_util::Full::new(Bytes::from("{}")));
    let (status, _) = send(&c, req.unwrap()).await.unwrap();
    assert_eq!(status, 502, "the pooled connection is closed under it and no retry is allowed");

    // An idempotent request is sent once more on a new connection all the same, as HTTP
    // clients resend one themselves: the first GET opens a connection, which the second
    // finds closed under it.
    let url = format!("http://{}/v1/models", r.addr);
    let before = connections.load(Ordering::SeqCst);
    for i in 0..2 {
        let (status, text) =
            send(&c, http::Request::get(&url).body(http_body_util::Full::default()).unwrap())
                .await
                .unwrap();
        assert_eq!((status, text.as_str()), (200, "ok\n"), "GET {i}");
    }
    assert!(connections.load(Ordering::SeqCst) >= before + 2);
    assert_eq!(metric(&c, &r.addr, &errors).await.unwrap_or(0.0), 0.0);
}
