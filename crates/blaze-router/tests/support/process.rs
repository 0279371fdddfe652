//! Real processes for the integration tests: test upstreams and the router.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use blaze_testing::until_within;
pub use blaze_testing::{Proc, free_addr};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// Starts a test upstream on `listen` (port 0 for any) and waits for its address.
pub fn upstream(name: &str, listen: &str) -> Proc {
    upstream_with(name, listen, &[])
}

/// Starts a test upstream with `extra` flags.
pub fn upstream_with(name: &str, listen: &str, extra: &[&str]) -> Proc {
    let mut child = Command::new(env!("CARGO_BIN_EXE_blaze-test-upstream"))
        .args(["--listen", listen, "--name", name])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start blaze-test-upstream");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let addr = line.trim().strip_prefix("listening on ").expect("address line").to_owned();
    Proc { child, addr }
}

/// Starts the router on a free port with `config` and waits until `/livez` answers.
pub async fn router(config: &Path, extra: &[&str]) -> Proc {
    let addr = free_addr();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_blaze-router"));
    cmd.args(["--listen", &addr, "--config"])
        .arg(config)
        .args(extra)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    let p = Proc::spawn(&mut cmd, addr);
    let c = client();
    let url = format!("http://{}/livez", p.addr);
    poll(Duration::from_secs(20), || async {
        get(&c, &url).await.ok().map(|(s, _)| s == 200).unwrap_or(false)
    })
    .await;
    p
}

pub type Http = Client<HttpConnector, Full<Bytes>>;

pub fn client() -> Http {
    Client::builder(TokioExecutor::new()).build(HttpConnector::new())
}

/// A router reading its routing document from a file of its own (`cfg`, rewritten to
/// reload), and a client.
pub struct Routed {
    pub _dir: tempfile::TempDir,
    pub cfg: PathBuf,
    pub r: Proc,
    pub c: Http,
}

/// Starts a router with `extra` flags on a routing file that holds `routing`.
pub async fn routed(routing: &str, extra: &[&str]) -> Routed {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("routing.yaml");
    write_config(&cfg, routing);
    let r = router(&cfg, extra).await;
    Routed { _dir: dir, cfg, r, c: client() }
}

/// GET returning status and body text.
pub async fn get(c: &Http, url: &str) -> Result<(u16, String), String> {
    get_with(c, url, &[]).await
}

/// GET with `headers`, returning status and body text.
pub async fn get_with(
    c: &Http,
    url: &str,
    headers: &[(&str, &str)],
) -> Result<(u16, String), String> {
    let mut req = http::Request::get(url);
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    send(c, req.body(Full::new(Bytes::new())).unwrap()).await
}

pub async fn send(c: &Http, req: http::Request<Full<Bytes>>) -> Result<(u16, String), String> {
    let (status, _, body) = exchange(c, req).await?;
    Ok((status, body))
}

/// Sends `req`, returning status, headers and body text.
pub async fn exchange(
    c: &Http,
    req: http::Request<Full<Bytes>>,
) -> Result<(u16, http::HeaderMap, String), String> {
    let resp = c.request(req).await.map_err(|e| e.to_string())?;
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
    Ok((parts.status.as_u16(), parts.headers, String::from_utf8_lossy(&body).into_owned()))
}

/// Polls `check` until it holds, panicking after `deadline`: how long it took.
pub async fn poll<F, Fut>(deadline: Duration, mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    until_within("the condition", deadline, async || check().await.then_some(()))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    start.elapsed()
}

/// The value of a metric line that starts with `prefix` in the router's `/metrics`.
pub async fn metric(c: &Http, router: &str, prefix: &str) -> Option<f64> {
    let (_, text) = get(c, &format!("http://{router}/metrics")).await.ok()?;
    text.lines().find(|l| l.starts_with(prefix)).and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

/// A per-endpoint metric's name with its labels, for [`metric`].
pub fn labelled(name: &str, endpoint: &str) -> String {
    format!("{name}{{endpoint=\"{endpoint}\",engine=\"\"}}")
}

/// Waits until the router has the response headers of `n` requests from `endpoint`.
pub async fn headers_came(c: &Http, router: &str, endpoint: &str, n: f64) {
    let ttfb = labelled("blaze_router_endpoint_ttfb_seconds_count", endpoint);
    poll(Duration::from_secs(5), || async { metric(c, router, &ttfb).await == Some(n) }).await;
}

/// Waits until the router has loaded `n` routing documents after its first.
pub async fn reloaded(c: &Http, router: &str, n: f64) {
    let loaded = "blaze_router_config_reloads_total{result=\"Ok\"}";
    poll(Duration::from_secs(5), || async { metric(c, router, loaded).await >= Some(n) }).await;
}

/// Writes a routing file.
pub fn write_config(path: &Path, body: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, body).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// The `endpoints:` YAML list for upstreams.
pub fn endpoints_yaml(addrs: &[&str]) -> String {
    let mut s = String::from("endpoints:\n");
    for a in addrs {
        s.push_str(&format!("- address: {a}\n  weight: 1\n"));
    }
    s
}
