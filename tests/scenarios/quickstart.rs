//! The quickstart as a newcomer runs it: `blaze dev up` applies it, a chat completion goes
//! through its router (a worker called past it gets 401), the operator dashboard shows the engine with data in a real browser,
//! kubectl lists the pods, `blaze dev down` ends every process. On a control plane of its
//! own, since it stops it.

use std::sync::Arc;

use anyhow::{Context as _, Result, ensure};
use blaze_api::router::BlazeRouter;
use blaze_e2e::pods::{alive, pids};
use blaze_e2e::quickstart::ROUTER;
use blaze_e2e::{DevCluster, Quickstart, http, until};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};

use crate::Fixture;

pub async fn dev_up_serves_a_chat_completion_and_dev_down_stops_every_process(
    f: Arc<Fixture>,
) -> Result<()> {
    let cluster = DevCluster::start(f.setup()?, true).await?;
    let q = Quickstart::applied(&cluster).await?;
    until("the router Ready", 120, async || {
        let r = q.api::<BlazeRouter>().get(ROUTER).await.ok()?;
        blaze_api::conditions::is_true(&r.status?.conditions, "Ready").then_some(())
    })
    .await?;
    let body = r#"{"model": "smollm2", "messages": [{"role": "system", "content": "You are a helpful assistant."}, {"role": "user", "content": "What is the capital of France?"}], "temperature": 0, "max_tokens": 24}"#;
    let answer = until("a chat completion through the router", 60, async || {
        let out = http::request(&q.url, "POST", "/v1/chat/completions", body).await.ok()?;
        out.starts_with("HTTP/1.1 200").then_some(out)
    })
    .await?;
    ensure!(answer.contains("Paris"), "{answer}");
    worker_refuses_requests_without_the_routers_token(&q, body).await?;
    dashboard_shows_the_quickstart(&cluster, &q.url, body).await?;
    let listing = cluster.kubectl(&["get", "pods", "-A"])?;
    ensure!(listing.contains("READY") && listing.contains("STATUS"), "{listing}");
    let running = listing.matches("Running").count();
    ensure!(running == 3, "operator, worker, router:\n{listing}");

    let all = pids(&Api::<Pod>::all(q.client.clone()).list(&ListParams::default()).await?.items);
    ensure!(all.len() == 3, "a process for each pod: {all:?}");
    cluster.down()?;
    until("no pod process left", 30, async || all.iter().all(|p| !alive(*p)).then_some(())).await?;
    Ok(())
}

/// A client that reaches a worker pod past the router gets 401 naming what is missing; the
/// worker's metrics (scraped by the operator) stay open.
async fn worker_refuses_requests_without_the_routers_token(
    q: &Quickstart,
    chat: &str,
) -> Result<()> {
    let worker = q.ready_workers().await?;
    let ip = worker
        .iter()
        .find_map(|p| p.status.as_ref()?.pod_ip.clone())
        .context("no ready worker with an address")?;
    let url = format!("http://{ip}:8000");
    let direct = http::request(&url, "POST", "/v1/chat/completions", chat).await?;
    ensure!(direct.starts_with("HTTP/1.1 401"), "{direct}");
    ensure!(direct.contains("Authorization: Bearer"), "{direct}");
    let metrics = http::get(&format!("{ip}:8000"), "/metrics").await?;
    ensure!(metrics.contains("# TYPE"), "{metrics}");
    Ok(())
}

/// The dashboard `blaze dev up` printed, in Debian's headless chromium (as a user opens it;
/// scripts/test-deps.sh installs it): the overview lists the quickstart's engine and router,
/// and after a few requests the engine page draws its latency.
async fn dashboard_shows_the_quickstart(
    cluster: &DevCluster,
    router: &str,
    chat: &str,
) -> Result<()> {
    let base = cluster.dashboard.clone().context("blaze dev up printed no dashboard URL")?;
    let addr = base.trim_start_matches("http://").to_owned();
    let engine = "/api/engines/default/smollm2";
    until("the dashboard's history to hold a latency", 90, async || {
        http::request(router, "POST", "/v1/chat/completions", chat).await.ok()?;
        let body = http::get(&addr, engine).await.ok()?;
        let json: serde_json::Value = serde_json::from_str(&body).ok()?;
        let points = json["history"].as_array().or_else(|| json["points"].as_array())?;
        points.iter().any(|p| p["p50LatencyMs"].as_f64().is_some()).then_some(())
    })
    .await?;
    let profile = tempfile::tempdir()?;
    let overview = browse(&format!("{base}/"), profile.path())?;
    ensure!(overview.contains(">default/smollm2</a>"), "{overview}");
    ensure!(overview.contains(">default/quickstart</a>"), "{overview}");
    // The page draws once its first fetch of the history answers, which on a loaded machine
    // can come after the browser's time budget: look again until the deadline.
    let url = format!("{base}/engines/default/smollm2");
    let mut page = browse(&url, profile.path())?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !page.contains("data-series=\"p50\"") && std::time::Instant::now() < deadline {
        page = browse(&url, profile.path())?;
    }
    ensure!(page.matches("class=\"chart\"").count() == 6, "six charts: {page}");
    ensure!(page.contains("data-series=\"p50\""), "a drawn latency: {page}");
    Ok(())
}

/// The page at `url` after its script ran (5 s of virtual time: a few polls).
fn browse(url: &str, profile: &std::path::Path) -> Result<String> {
    let out = std::process::Command::new("chromium")
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=5000"])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(["--dump-dom", url])
        .output()
        .context("chromium (scripts/test-deps.sh installs Debian's chromium)")?;
    ensure!(out.status.success(), "chromium {url}: {}", String::from_utf8_lossy(&out.stderr));
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
