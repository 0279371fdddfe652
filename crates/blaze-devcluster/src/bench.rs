//! `blaze bench apiserver`: sustained creates per second over HTTP, watch events per second
//! delivered to several watchers, and resident memory per 10,000 objects.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::json;

use crate::{ApiServer, Config, Error, Result};

/// What to measure.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    /// ConfigMaps to create.
    pub objects: usize,
    /// Concurrent writers.
    pub concurrency: usize,
    /// Watchers that must each receive every event.
    pub watchers: usize,
}

/// The measured figures.
#[derive(Debug, Clone)]
pub struct BenchReport {
    /// Objects created.
    pub objects: usize,
    /// Creates per second, over HTTP, while the watchers run.
    pub creates_per_sec: f64,
    /// Watch events per second, summed over watchers, while the creates run.
    pub live_watch_events_per_sec: f64,
    /// Watch events per second, summed over watchers, replaying the history from version 0.
    pub replay_watch_events_per_sec: f64,
    /// Watchers.
    pub watchers: usize,
    /// Resident memory added per 10,000 stored objects, in MiB.
    pub mib_per_10k_objects: f64,
}

impl std::fmt::Display for BenchReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "objects created:              {}", self.objects)?;
        writeln!(f, "creates/s:                    {:.0}", self.creates_per_sec)?;
        writeln!(
            f,
            "watch events/s ({} watchers, live):   {:.0}",
            self.watchers, self.live_watch_events_per_sec
        )?;
        writeln!(
            f,
            "watch events/s ({} watchers, replay): {:.0}",
            self.watchers, self.replay_watch_events_per_sec
        )?;
        write!(f, "memory per 10,000 objects:    {:.1} MiB", self.mib_per_10k_objects)
    }
}

impl BenchReport {
    /// The report as JSON.
    pub fn to_json(&self) -> String {
        json!({"objects": self.objects, "creates_per_sec": self.creates_per_sec,
            "live_watch_events_per_sec": self.live_watch_events_per_sec,
            "replay_watch_events_per_sec": self.replay_watch_events_per_sec,
            "watchers": self.watchers, "mib_per_10k_objects": self.mib_per_10k_objects})
        .to_string()
    }
}

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

type HttpClient = Client<HttpConnector, Full<Bytes>>;

fn bench_error(what: impl std::fmt::Display) -> Error {
    Error::Io("bench".into(), std::io::Error::other(what.to_string()))
}

/// Starts `n` watchers from `rv`; each counts events until it has `want`.
fn watchers(
    client: &HttpClient,
    server: &ApiServer,
    n: usize,
    rv: u64,
    want: u64,
) -> Vec<tokio::task::JoinHandle<Result<Instant>>> {
    (0..n)
        .map(|_| {
            let client = client.clone();
            let uri = format!(
                "{}/api/v1/namespaces/bench/configmaps?watch=true&resourceVersion={rv}",
                server.url()
            );
            let token = server.token().to_owned();
            tokio::spawn(async move {
                let req = http::Request::get(uri)
                    .header("authorization", format!("Bearer {token}"))
                    .body(Full::new(Bytes::new()))
                    .map_err(bench_error)?;
                let resp = client.request(req).await.map_err(bench_error)?;
                let mut body = resp.into_body();
                let mut seen = 0u64;
                while seen < want {
                    let Some(frame) = body.frame().await else {
                        return Err(bench_error("watch ended early"));
                    };
                    if let Ok(data) = frame.map_err(bench_error)?.into_data() {
                        seen += data.iter().filter(|b| **b == b'\n').count() as u64;
                    }
                }
                Ok(Instant::now())
            })
        })
        .collect()
}

/// Runs the benchmark against an in-process server.
pub async fn run(cfg: BenchConfig) -> Result<BenchReport> {
    let server =
        ApiServer::start(Config { history: cfg.objects + 1000, tls: false, ..Config::default() })
            .await?;
    let client: HttpClient = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(cfg.concurrency * 2)
        .build_http();
    let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "bench"}});
    post(&client, &server, "/api/v1/namespaces", ns.to_string()).await?;
    let start_rv = server.state().store.read().rv();
    let want = cfg.objects as u64;
    let live = watchers(&client, &server, cfg.watchers, start_rv, want);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let rss_before = rss_bytes();
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let writers: Vec<_> = (0..cfg.concurrency)
        .map(|_| {
            let (client, next, url, token) = (client.clone(), next.clone(), server.url(), server.token().to_owned());
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= want {
                        return Ok::<(), Error>(());
                    }
                    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap",
                        "metadata": {"name": format!("cm-{i}"), "labels": {"app": "bench", "shard": (i % 8).to_string()}},
                        "data": {"key": format!("value-{i}"), "config.yaml": "replicas: 3\nmodel: hf://org/model\n"}});
                    post_raw(&client, &url, &token, "/api/v1/namespaces/bench/configmaps", cm.to_string()).await?;
                }
            })
        })
        .collect();
    for w in writers {
        w.await.map_err(bench_error)??;
    }
    let create_secs = started.elapsed().as_secs_f64();
    let mut last = started;
    for w in live {
        last = last.max(w.await.map_err(bench_error)??);
    }
    let live_secs = (last - started).as_secs_f64();
    let rss_after = rss_bytes();
    let replay_start = Instant::now();
    let replay = watchers(&client, &server, cfg.watchers, start_rv, want);
    let mut last = replay_start;
    for w in replay {
        last = last.max(w.await.map_err(bench_error)??);
    }
    let replay_secs = (last - replay_start).as_secs_f64();
    server.shutdown().await;
    let events = (want * cfg.watchers as u64) as f64;
    Ok(BenchReport {
        objects: cfg.objects,
        creates_per_sec: want as f64 / create_secs,
        live_watch_events_per_sec: events / live_secs,
        replay_watch_events_per_sec: events / replay_secs,
        watchers: cfg.watchers,
        mib_per_10k_objects: rss_after.saturating_sub(rss_before) as f64 / 1048576.0 * 10_000.0
            / want.max(1) as f64,
    })
}

async fn post(client: &HttpClient, server: &ApiServer, path: &str, body: String) -> Result<()> {
    post_raw(client, &server.url(), server.token(), path, body).await
}

async fn post_raw(
    client: &HttpClient,
    url: &str,
    token: &str,
    path: &str,
    body: String,
) -> Result<()> {
    let req = http::Request::post(format!("{url}{path}"))
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .map_err(bench_error)?;
    let resp = client.request(req).await.map_err(bench_error)?;
    let status = resp.status();
    let _ = resp.into_body().collect().await;
    if !status.is_success() {
        return Err(bench_error(format!("POST {path}: {status}")));
    }
    Ok(())
}
