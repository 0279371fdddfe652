//! Endpoints that stop answering while requests wait on them: a request whose answer has not
//! started is sent again elsewhere once its endpoint is taken out (health checks, the stall
//! detector, or a reload that drops it), and a slow endpoint that still answers its probe is
//! left to finish. Time to first byte is measured at the first body byte, not the headers.

use crate::support::process as support;

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use nix::sys::signal::Signal;
use support::*;

/// Two endpoints, round robin (the first request goes to the first), health checks every
/// `interval` seconds that take an endpoint out at the first failure.
fn config(addrs: &[&str], interval: u32) -> String {
    format!(
        "strategy: roundRobin\nslowStartSeconds: 0\n\
         healthCheck: {{path: /readyz, intervalSeconds: {interval}, timeoutSeconds: 1, \
         healthyThreshold: 1, unhealthyThreshold: 1}}\n\
         retries: {{attempts: 2, budgetPercent: 50}}\n{}",
        endpoints_yaml(addrs)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_stuck_before_its_first_byte_is_sent_again_once_its_endpoint_fails_checks() {
    let a = upstream_with("a", "127.0.0.1:0", &["--stall-streams"]);
    let b = upstream("b", "127.0.0.1:0");
    let Routed { _dir, r, c, .. } = routed(&config(&[&a.addr, &b.addr], 1), &[]).await;
    let stream = tokio::spawn({
        let (c, url) = (c.clone(), format!("http://{}/sse/3/50", r.addr));
        async move { get(&c, &url).await }
    });
    // `a` sent its headers and nothing more: the client has nothing yet.
    headers_came(&c, &r.addr, &a.addr, 1.0).await;
    assert!(!stream.is_finished());
    let fail = http::Request::post(format!("http://{}/ready/no", a.addr));
    send(&c, fail.body(Full::new(Bytes::new())).unwrap()).await.unwrap();
    let (status, body) = tokio::time::timeout(Duration::from_secs(10), stream)
        .await
        .expect("the stream was not sent again")
        .unwrap()
        .unwrap();
    assert_eq!(status, 200);
    assert_eq!(body, "id: 0\ndata: b 0\n\nid: 1\ndata: b 1\n\nid: 2\ndata: b 2\n\n");
    let resent = "blaze_router_resent_requests_total{reason=\"unhealthy\"}";
    assert_eq!(metric(&c, &r.addr, resent).await, Some(1.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_stuck_before_its_first_byte_moves_when_a_reload_drops_its_endpoint() {
    let a = upstream_with("a", "127.0.0.1:0", &["--stall-streams"]);
    let b = upstream("b", "127.0.0.1:0");
    let Routed { _dir, cfg, r, c } = routed(&config(&[&a.addr], 30), &[]).await;
    let stream = tokio::spawn({
        let (c, url) = (c.clone(), format!("http://{}/sse/2/50", r.addr));
        async move { get(&c, &url).await }
    });
    headers_came(&c, &r.addr, &a.addr, 1.0).await;
    write_config(&cfg, &config(&[&b.addr], 30));
    let (status, body) = tokio::time::timeout(Duration::from_secs(10), stream)
        .await
        .expect("the stream was not sent again")
        .unwrap()
        .unwrap();
    assert_eq!((status, body.as_str()), (200, "id: 0\ndata: b 0\n\nid: 1\ndata: b 1\n\n"));
    let resent = "blaze_router_resent_requests_total{reason=\"removed\"}";
    assert_eq!(metric(&c, &r.addr, resent).await, Some(1.0));
    // Dropped from the document is not a failure of the endpoint's.
    let errors = labelled("blaze_router_endpoint_errors_total", &a.addr);
    assert_eq!(metric(&c, &r.addr, &errors).await, Some(0.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_endpoint_is_found_within_seconds_and_its_waiting_requests_go_elsewhere() {
    let a = upstream("a", "127.0.0.1:0");
    let b = upstream("b", "127.0.0.1:0");
    // Health checks too rare to matter: only the stall detector can find the freeze in time.
    let Routed { _dir, r, c, .. } = routed(&config(&[&a.addr, &b.addr], 30), &[]).await;
    let url = format!("http://{}/", r.addr);
    for _ in 0..10 {
        assert_eq!(get(&c, &url).await.unwrap().0, 200);
    }
    a.signal(Signal::SIGSTOP);
    let frozen = Instant::now();
    let requests: Vec<_> = (0..6)
        .map(|_| {
            let (c, url) = (c.clone(), url.clone());
            tokio::spawn(async move { get(&c, &url).await })
        })
        .collect();
    for req in requests {
        let answer = tokio::time::timeout(Duration::from_secs(10), req).await;
        let (status, body) =
            answer.expect("a request still waits on the frozen endpoint").unwrap().unwrap();
        assert_eq!((status, body.as_str()), (200, "hello from b\n"));
    }
    let took = frozen.elapsed();
    eprintln!("every request answered {took:?} after the freeze");
    assert!(took < Duration::from_secs(8), "{took:?}");
    let stalls = labelled("blaze_router_endpoint_stalls_total", &a.addr);
    assert_eq!(metric(&c, &r.addr, &stalls).await, Some(1.0));
    let resent = "blaze_router_resent_requests_total{reason=\"unhealthy\"}";
    assert!(metric(&c, &r.addr, resent).await >= Some(1.0));
    a.signal(Signal::SIGCONT);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_endpoint_that_answers_its_probe_is_not_cut() {
    let a = upstream("a", "127.0.0.1:0");
    let b = upstream("b", "127.0.0.1:0");
    let Routed { _dir, r, c, .. } = routed(&config(&[&a.addr, &b.addr], 30), &[]).await;
    // Silent for 4 s, past the suspicion threshold of an endpoint never measured (2 s and a
    // tick): probed, it answers, and is left to finish.
    let start = Instant::now();
    let (status, body) = get(&c, &format!("http://{}/slow/4000", r.addr)).await.unwrap();
    assert_eq!((status, body.as_str()), (200, "slow from a\n"));
    assert!(start.elapsed() >= Duration::from_secs(4));
    let stalls = labelled("blaze_router_endpoint_stalls_total", &a.addr);
    assert_eq!(metric(&c, &r.addr, &stalls).await, Some(0.0));
    let healthy = labelled("blaze_router_endpoint_healthy", &a.addr);
    assert_eq!(metric(&c, &r.addr, &healthy).await, Some(1.0));
    assert_eq!(metric(&c, &r.addr, "blaze_router_resent_requests_total").await, None);
}

#[tokio::test]
async fn time_to_first_byte_is_taken_at_the_first_body_byte() {
    let a = upstream("a", "127.0.0.1:0");
    let Routed { _dir, r, c, .. } = routed(&endpoints_yaml(&[&a.addr]), &[]).await;
    // Headers at once, the one event 600 ms later.
    let (status, body) = get(&c, &format!("http://{}/late/600", r.addr)).await.unwrap();
    assert_eq!((status, body.as_str()), (200, "data: a late\n\n"));
    let ttfb = labelled("blaze_router_endpoint_ttfb_seconds_sum", &a.addr);
    let ttft = labelled("blaze_router_endpoint_ttft_seconds_sum", &a.addr);
    let (ttfb, ttft) = (metric(&c, &r.addr, &ttfb).await, metric(&c, &r.addr, &ttft).await);
    assert!(ttfb.is_some_and(|s| s < 0.3), "{ttfb:?}");
    assert!(ttft.is_some_and(|s| s >= 0.6), "{ttft:?}");
}
