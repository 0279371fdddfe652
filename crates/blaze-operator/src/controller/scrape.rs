//! Scraping workers' `/metrics` for the autoscaler and the engine status metrics.
//!
//! Every [`INTERVAL`] the loop scrapes the ready workers of every engine, whatever its
//! autoscaling mode (status metrics are for all), several engines at once, turns two
//! consecutive complete scrapes into a load sample ([`crate::policy::load`]), and records it
//! in the autoscaler of an engine in `blaze` mode, which its next reconcile consults. Kept
//! scrapes over the engine's stable window give its status metrics.
//! A scrape in which any ready worker failed to answer is a missing sample, counted in
//! `blaze_operator_scrape_failures_total`: that worker's load is unknown, not zero, and
//! counting it as zero would scale down under load.
//!
//! The same scrape tells what each ready worker says of its caches
//! ([`crate::status::cache::PodCache`]), kept per engine for its `CacheReady` condition; a
//! change asks for the engine's reconcile at once, so the condition follows within a scrape.
//!
//! The router controller scrapes its own router pods through [`scrape_selected`] and keeps what
//! it learns here too ([`Scrapes::observe_router`]).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use blaze_api::BlazeEngine;
use blaze_api::engine::{AutoscalingMode, EngineMetrics};
use blaze_api::routing::RoutingEndpoint;
use futures::StreamExt;
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::runtime::reflector::Store;
use parking_lot::Mutex;
use tracing::debug;

use super::{Context, key};
use crate::children::worker_flags::WORKER_PORT;
use crate::labels;
use crate::policy::autoscale::Sample;
use crate::policy::load::{self, PodLoad};
use crate::policy::prom::{self, History};
use crate::policy::router_stats::{self, EndpointView, RouterMemory};
use crate::status::cache::{self, PodCache};

/// Time between scrapes. Short enough for the 6 s panic window to see a burst.
pub const INTERVAL: Duration = Duration::from_secs(2);
/// Least time between two writes of an engine's status metrics, so load that moves all the
/// time does not turn into a status write every few seconds.
pub const STATUS_METRICS_PERIOD: Duration = Duration::from_secs(30);
/// Longest wait for one worker's `/metrics`.
pub const TIMEOUT: Duration = Duration::from_secs(1);
/// Engines scraped at once. Each scrape waits at most [`TIMEOUT`], so 1,000 engines with
/// some silent workers still fit in a few intervals instead of stretching every one.
pub const CONCURRENT_ENGINES: usize = 64;

/// Why a scrape failed.
#[derive(Debug, thiserror::Error)]
pub enum ScrapeError {
    /// Connecting, sending or reading failed.
    #[error("{0}")]
    Io(String),
    /// The worker did not answer in time.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// The worker answered with an error status.
    #[error("status {0}")]
    Status(u16),
}

impl ScrapeError {
    /// The metric label of the failure.
    pub fn metric_label(&self) -> &'static str {
        match self {
            ScrapeError::Io(_) => "io",
            ScrapeError::Timeout(_) => "timeout",
            ScrapeError::Status(_) => "status",
        }
    }
}

/// Fetches `http://ADDR/metrics`.
pub async fn fetch_metrics(addr: &str, timeout: Duration) -> Result<String, ScrapeError> {
    tokio::time::timeout(timeout, fetch(addr)).await.map_err(|_| ScrapeError::Timeout(timeout))?
}

async fn fetch(addr: &str) -> Result<String, ScrapeError> {
    let io = |e: &dyn std::fmt::Display| ScrapeError::Io(e.to_string());
    let stream = tokio::net::TcpStream::connect(addr).await.map_err(|e| io(&e))?;
    let (mut send, conn) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(|e| io(&e))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let req = hyper::Request::get("/metrics")
        .header(hyper::header::HOST, addr)
        .body(Empty::<Bytes>::new())
        .map_err(|e| io(&e))?;
    let resp = send.send_request(req).await.map_err(|e| io(&e))?;
    if !resp.status().is_success() {
        return Err(ScrapeError::Status(resp.status().as_u16()));
    }
    let body = resp.into_body().collect().await.map_err(|e| io(&e))?.to_bytes();
    Ok(String::from_utf8_lossy(&body).into_owned())
}

/// Scrapes `/metrics` of `targets` (pod name, `HOST:PORT`) at once: the pods that answered,
/// and how many did not (each counted in `metrics` under `target`, `worker` or `router`).
pub async fn scrape_pods(
    targets: &[(String, String)],
    metrics: &crate::metrics::Metrics,
    target: &str,
) -> (BTreeMap<String, Vec<prom::Sample>>, usize) {
    let results = futures::future::join_all(
        targets.iter().map(|(_, addr)| async move { fetch_metrics(addr, TIMEOUT).await }),
    )
    .await;
    let mut failed = 0;
    let mut answered = BTreeMap::new();
    for ((pod, addr), r) in targets.iter().zip(results) {
        match r {
            Ok(text) => {
                answered.insert(pod.clone(), prom::parse(&text));
            }
            Err(e) => {
                debug!(%pod, %addr, error = %e, "scrape failed");
                metrics.scrape_failed(target, e.metric_label());
                failed += 1;
            }
        }
    }
    (answered, failed)
}

/// Scrapes the ready pods in `ns` that `selector` picks on `port` (see [`scrape_pods`]).
pub async fn scrape_selected(
    ctx: &Context,
    ns: &str,
    selector: &BTreeMap<String, String>,
    port: i32,
    target: &str,
) -> crate::Result<(BTreeMap<String, Vec<prom::Sample>>, usize)> {
    let pods = super::pods(&ctx.client, ns, selector).await?;
    Ok(scrape_pods(&ready_targets(&pods, port), &ctx.metrics, target).await)
}

/// `HOST:PORT` of a pod's IP (IPv6 in brackets).
pub fn pod_addr(ip: &str, port: i32) -> String {
    if ip.contains(':') { format!("[{ip}]:{port}") } else { format!("{ip}:{port}") }
}

/// Ready pods with an IP, as (name, `HOST:PORT`).
pub fn ready_targets(pods: &[Pod], port: i32) -> Vec<(String, String)> {
    pods.iter()
        .filter(|p| crate::status::pods::facts(p).ready)
        .filter_map(|p| Some((p.name_any(), pod_addr(p.status.as_ref()?.pod_ip.as_deref()?, port))))
        .collect()
}

/// What the operator keeps of recent scrapes, in memory.
#[derive(Default)]
pub struct Scrapes {
    /// Each engine's recent scrapes (`namespace/name`).
    engines: Mutex<HashMap<String, History<PodLoad>>>,
    metrics: Mutex<HashMap<String, EngineMetrics>>,
    published: Mutex<HashMap<String, Instant>>,
    /// What each engine's ready workers said of their caches at the latest scrape, by pod.
    caches: Mutex<HashMap<String, BTreeMap<String, PodCache>>>,
    /// Each router's recent scrapes and endpoint memory (`namespace/name`).
    routers: Mutex<HashMap<String, RouterMemory>>,
}

impl Scrapes {
    /// The latest metrics of an engine for its status, if the last ones were published at
    /// least [`STATUS_METRICS_PERIOD`] ago (and then they count as published now).
    pub fn metrics_due(&self, engine: &str) -> Option<EngineMetrics> {
        let m = self.metrics.lock().get(engine).cloned()?;
        let mut published = self.published.lock();
        let now = Instant::now();
        if published.get(engine).is_some_and(|t| now.duration_since(*t) < STATUS_METRICS_PERIOD) {
            return None;
        }
        published.insert(engine.to_owned(), now);
        Some(m)
    }

    /// Views of a router's endpoints `eps` from its pods' scrapes `now` taken at `at`
    /// (seconds), over [`router_stats::WINDOW_S`], with each endpoint's condition and
    /// slow-start age (see [`RouterMemory::observe`]).
    pub fn observe_router(
        &self,
        router: &str,
        at: f64,
        now: BTreeMap<String, Vec<prom::Sample>>,
        eps: &[RoutingEndpoint],
    ) -> BTreeMap<String, EndpointView> {
        let now = now.iter().map(|(pod, s)| (pod.clone(), router_stats::read(s))).collect();
        self.routers.lock().entry(router.to_owned()).or_default().observe(at, now, eps)
    }

    /// Forgets everything about a deleted engine.
    pub fn forget(&self, engine: &str) {
        self.engines.lock().remove(engine);
        self.metrics.lock().remove(engine);
        self.published.lock().remove(engine);
        self.caches.lock().remove(engine);
    }

    /// Forgets everything about a deleted router.
    pub fn forget_router(&self, router: &str) {
        self.routers.lock().remove(router);
    }

    /// Records the latest metrics of an engine.
    pub fn set_metrics(&self, engine: &str, m: EngineMetrics) {
        self.metrics.lock().insert(engine.to_owned(), m);
    }

    /// Records what an engine's ready workers said of their caches at a scrape (the workers
    /// that answered); returns whether that differs from the scrape before.
    pub fn set_caches(&self, engine: &str, now: BTreeMap<String, PodCache>) -> bool {
        self.caches.lock().insert(engine.to_owned(), now.clone()).is_none_or(|before| before != now)
    }

    /// What an engine's ready workers said of their caches at the latest scrape, by pod.
    pub fn caches(&self, engine: &str) -> BTreeMap<String, PodCache> {
        self.caches.lock().get(engine).cloned().unwrap_or_default()
    }
}

/// Scrapes until `shutdown` resolves.
pub async fn run(
    ctx: Arc<Context>,
    engines: Store<BlazeEngine>,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let mut tick = tokio::time::interval(INTERVAL);
    loop {
        tokio::select! {
            () = &mut shutdown => return,
            _ = tick.tick() => {}
        }
        let all = engines.state();
        futures::stream::iter(all.iter())
            .for_each_concurrent(CONCURRENT_ENGINES, |engine| {
                let ctx = ctx.clone();
                async move {
                    if let Err(e) = scrape_engine(&ctx, engine).await {
                        debug!(engine = %key(engine.as_ref()), error = %e, "scrape failed");
                    }
                }
            })
            .await;
    }
}

async fn scrape_engine(ctx: &Context, engine: &BlazeEngine) -> crate::Result<()> {
    let ns = engine.namespace().unwrap_or_default();
    let selector = labels::engine_selector(&engine.name_any());
    let (samples, failed) = scrape_selected(ctx, &ns, &selector, WORKER_PORT, "worker").await?;
    let k = key(engine);
    if cache::wanted(&engine.spec.cache) {
        // The workers that answered tell their caches even when another did not.
        let caches = samples.iter().map(|(p, s)| (p.clone(), PodCache::from_samples(s))).collect();
        if ctx.scrapes.set_caches(&k, caches) {
            let _ = ctx.urgent.send(kube::runtime::reflector::ObjectRef::from_obj(engine));
        }
    }
    if failed > 0 {
        // A missing sample: neither zero load nor a new baseline for the next one.
        return Ok(());
    }
    let now: BTreeMap<String, PodLoad> =
        samples.iter().map(|(pod, s)| (pod.clone(), PodLoad::from_samples(s))).collect();
    let at = super::clock();
    let window = f64::from(engine.spec.autoscaling.stable_window_seconds.max(1));
    let (sample, metrics) = {
        let mut engines = ctx.scrapes.engines.lock();
        let history = engines.entry(k.clone()).or_default();
        let sample = history.latest().map(|(_, before)| load::sample(before, &now, at));
        let metrics = load::windowed(history, &now, at, window);
        history.push(at, now, window);
        (sample, metrics)
    };
    if let Some(m) = metrics {
        ctx.history.engine_metrics(&k, crate::history::now_ms(), &m);
        ctx.scrapes.set_metrics(&k, m);
    }
    // Only `blaze` engines consult (and so prune) their autoscaler's samples; another mode's
    // would grow without end.
    let blaze = engine.spec.autoscaling.mode == AutoscalingMode::Blaze;
    if let Some(sample) = sample.filter(|_| blaze) {
        ctx.autoscalers.lock().entry(k).or_default().record(sample);
        let ready = samples.len();
        if wants_more(&engine.spec.autoscaling, &sample, ready) {
            // Scaling up is what load waits for: decide now, not at the next resync.
            let _ = ctx.urgent.send(kube::runtime::reflector::ObjectRef::from_obj(engine));
        }
    }
    Ok(())
}

/// Whether `sample`, from `ready` workers, asks for more of them than serve: load above the
/// in-flight target, or latency above the latency target.
fn wants_more(spec: &blaze_api::engine::AutoscalingSpec, sample: &Sample, ready: usize) -> bool {
    let workers = ready as f64;
    let by_load = spec
        .target_in_flight_per_replica
        .is_some_and(|t| sample.in_flight > f64::from(t) * workers);
    let by_latency =
        spec.target_latency_p95_ms.zip(sample.p95_ms).is_some_and(|(t, p)| p > f64::from(t));
    let below_max = spec.max_replicas.is_none_or(|m| workers < f64::from(m));
    below_max && (by_load || by_latency)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_load_or_latency_above_target_below_the_maximum_asks_for_a_decision_now() {
        let spec = blaze_api::engine::AutoscalingSpec {
            target_in_flight_per_replica: Some(2),
            target_latency_p95_ms: Some(500),
            max_replicas: Some(3),
            ..Default::default()
        };
        let s = |in_flight, p95_ms| Sample { at: 0.0, in_flight, p95_ms };
        assert!(wants_more(&spec, &s(5.0, None), 2));
        assert!(!wants_more(&spec, &s(4.0, None), 2), "at target");
        assert!(wants_more(&spec, &s(1.0, Some(900.0)), 2), "slow");
        assert!(!wants_more(&spec, &s(9.0, Some(900.0)), 3), "at the maximum");
    }

    #[test]
    fn status_metrics_are_published_at_most_once_per_period() {
        let s = Scrapes::default();
        assert!(s.metrics_due("ns/a").is_none(), "nothing scraped yet");
        s.set_metrics("ns/a", EngineMetrics { in_flight: Some(3.0), ..Default::default() });
        assert_eq!(s.metrics_due("ns/a").unwrap().in_flight, Some(3.0));
        s.set_metrics("ns/a", EngineMetrics { in_flight: Some(4.0), ..Default::default() });
        assert!(s.metrics_due("ns/a").is_none(), "published a moment ago");
        s.set_metrics("ns/b", EngineMetrics::default());
        assert!(s.metrics_due("ns/b").is_some(), "engines are independent");
    }

    #[test]
    fn a_change_in_what_workers_say_of_their_caches_is_reported_once() {
        let s = Scrapes::default();
        let up = |v| -> BTreeMap<String, PodCache> {
            [("a".to_owned(), PodCache { redis_up: Some(v), prefix_capacity_bytes: None })].into()
        };
        assert!(s.caches("ns/a").is_empty());
        assert!(s.set_caches("ns/a", up(true)), "the first scrape");
        assert!(!s.set_caches("ns/a", up(true)), "the same again");
        assert!(s.set_caches("ns/a", up(false)));
        assert_eq!(s.caches("ns/a"), up(false));
        s.forget("ns/a");
        assert!(s.caches("ns/a").is_empty());
    }

    /// A worker on a local port answering `/metrics` with four requests running: its
    /// address and its server task.
    async fn busy_worker() -> (String, tokio::task::JoinHandle<std::io::Result<()>>) {
        let app = axum::Router::new()
            .route("/metrics", axum::routing::get(|| async { "vllm:num_requests_running 4\n" }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        (addr, tokio::spawn(async move { axum::serve(listener, app).await }))
    }

    /// An address nothing listens on.
    async fn dead_addr() -> String {
        let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        closed.local_addr().unwrap().to_string()
    }

    #[tokio::test]
    async fn fetches_metrics_over_http_and_reports_failures() {
        let (addr, server) = busy_worker().await;
        let text = fetch_metrics(&addr, Duration::from_secs(5)).await.unwrap();
        assert_eq!(PodLoad::from_samples(&prom::parse(&text)).in_flight, 4.0);
        server.abort();
        let dead = dead_addr().await;
        assert!(matches!(
            fetch_metrics(&dead, Duration::from_secs(5)).await,
            Err(ScrapeError::Io(_))
        ));
        // A listener that never answers: the deadline holds.
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = silent.local_addr().unwrap().to_string();
        let r = fetch_metrics(&addr, Duration::from_millis(200)).await;
        assert!(matches!(r, Err(ScrapeError::Timeout(_))), "{r:?}");
    }

    /// A worker that does not answer is reported as failed and counted, never listed as a
    /// worker with no load.
    #[tokio::test]
    async fn a_worker_that_does_not_answer_is_a_counted_failure_not_an_idle_worker() {
        let (up, server) = busy_worker().await;
        let down = dead_addr().await;
        let mut registry = prometheus_client::registry::Registry::default();
        let metrics = crate::metrics::Metrics::new(&mut registry);
        let targets = [("up".to_owned(), up), ("down".to_owned(), down)];
        let (answered, failed) = scrape_pods(&targets, &metrics, "worker").await;
        assert_eq!(answered.keys().collect::<Vec<_>>(), ["up"]);
        assert_eq!(failed, 1);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        let line = "blaze_operator_scrape_failures_total{target=\"worker\",reason=\"io\"} 1";
        assert!(text.contains(line), "{text}");
        server.abort();
    }
}
