//! A router with no endpoint at all (engines scaled to zero) holds requests until a reload
//! brings one, within its bounds; beyond them it answers 503 with `Retry-After`. A request
//! whose endpoint goes away with the last of them before answering is held too.

use crate::support::process as support;

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use support::*;

/// Status, `Retry-After` and body of a GET.
async fn get_with_retry_after(c: &Http, url: &str) -> (u16, Option<String>, String) {
    let req = http::Request::get(url).body(Full::new(Bytes::new())).unwrap();
    let (status, headers, body) = exchange(c, req).await.unwrap();
    let after = headers.get("retry-after").map(|v| v.to_str().unwrap().to_owned());
    (status, after, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_held_for_want_of_an_endpoint_is_served_by_the_one_a_reload_brings() {
    let hold = "hold: {maxRequests: 1, timeoutSeconds: 60}\n";
    let Routed { _dir, cfg, r, c } = routed(&format!("{hold}endpoints: []\n"), &[]).await;
    // Ready: it takes the requests that wake engines scaled to zero.
    assert_eq!(get(&c, &format!("http://{}/readyz", r.addr)).await.unwrap().0, 200);
    let url = format!("http://{}/", r.addr);
    let held = tokio::spawn({
        let (c, url) = (c.clone(), url.clone());
        async move { get(&c, &url).await }
    });
    poll(Duration::from_secs(5), || async {
        metric(&c, &r.addr, "blaze_router_held_requests").await == Some(1.0)
    })
    .await;
    // One held already: the next is turned away, told when to come back.
    let (status, after, body) = get_with_retry_after(&c, &url).await;
    assert_eq!((status, after.as_deref()), (503, Some("5")), "{body}");
    assert!(body.contains("hold.maxRequests"), "{body}");
    let full = "blaze_router_hold_rejected_total{reason=\"full\"}";
    assert_eq!(metric(&c, &r.addr, full).await, Some(1.0));

    let a = upstream("a", "127.0.0.1:0");
    write_config(&cfg, &format!("{hold}{}", endpoints_yaml(&[&a.addr])));
    let answer = tokio::time::timeout(Duration::from_secs(5), held).await;
    let answer = answer.expect("the held request was not served after the reload").unwrap();
    assert_eq!(answer.unwrap(), (200, "hello from a\n".to_owned()));
    assert_eq!(metric(&c, &r.addr, "blaze_router_held_requests").await, Some(0.0));
    assert_eq!(metric(&c, &r.addr, "blaze_router_hold_seconds_count").await, Some(1.0));
}

#[tokio::test]
async fn a_held_request_is_answered_503_at_the_hold_timeout_and_no_hold_answers_at_once() {
    let routing = "hold: {maxRequests: 4, timeoutSeconds: 1}\nendpoints: []\n";
    let Routed { _dir, cfg, r, c } = routed(routing, &[]).await;
    let url = format!("http://{}/", r.addr);
    let start = Instant::now();
    let (status, after, body) = get_with_retry_after(&c, &url).await;
    let waited = start.elapsed();
    assert_eq!((status, after.as_deref()), (503, Some("5")), "{body}");
    assert!(body.contains("hold.timeoutSeconds"), "{body}");
    assert!(waited >= Duration::from_secs(1) && waited < Duration::from_secs(3), "{waited:?}");
    let timeout = "blaze_router_hold_rejected_total{reason=\"timeout\"}";
    assert_eq!(metric(&c, &r.addr, timeout).await, Some(1.0));
    assert_eq!(metric(&c, &r.addr, "blaze_router_held_requests").await, Some(0.0));

    // Holding off: the request is refused at once, as before holds existed.
    write_config(&cfg, "hold: {maxRequests: 0}\nendpoints: []\n");
    reloaded(&c, &r.addr, 1.0).await;
    let start = Instant::now();
    let (status, _, body) = get_with_retry_after(&c, &url).await;
    assert_eq!((status, body.as_str()), (503, "no endpoint available\n"));
    assert!(start.elapsed() < Duration::from_millis(500));
    assert_eq!(get(&c, &format!("http://{}/readyz", r.addr)).await.unwrap().0, 503);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_whose_endpoint_is_scaled_away_before_answering_is_held_for_the_next() {
    let a = upstream_with("a", "127.0.0.1:0", &["--stall-streams"]);
    let hold = "hold: {maxRequests: 4, timeoutSeconds: 60}\nhealthCheck: {intervalSeconds: 30}\n";
    let Routed { _dir, cfg, r, c } =
        routed(&format!("{hold}{}", endpoints_yaml(&[&a.addr])), &[]).await;
    let stream = tokio::spawn({
        let (c, url) = (c.clone(), format!("http://{}/sse/1/0", r.addr));
        async move { get(&c, &url).await }
    });
    // `a` answered its headers, then the document loses it, and every other endpoint.
    headers_came(&c, &r.addr, &a.addr, 1.0).await;
    write_config(&cfg, &format!("{hold}endpoints: []\n"));
    poll(Duration::from_secs(5), || async {
        metric(&c, &r.addr, "blaze_router_held_requests").await == Some(1.0)
    })
    .await;
    let b = upstream("b", "127.0.0.1:0");
    write_config(&cfg, &format!("{hold}{}", endpoints_yaml(&[&b.addr])));
    let answer = tokio::time::timeout(Duration::from_secs(5), stream).await;
    let answer = answer.expect("the held request was not served after the reload").unwrap();
    assert_eq!(answer.unwrap(), (200, "id: 0\ndata: b 0\n\n".to_owned()));
    let resent = "blaze_router_resent_requests_total{reason=\"removed\"}";
    assert_eq!(metric(&c, &r.addr, resent).await, Some(1.0));
    assert_eq!(metric(&c, &r.addr, "blaze_router_held_requests").await, Some(0.0));
}
