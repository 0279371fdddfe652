//! The closed loop measured on the development control plane: scenarios that put real load
//! (chat completions from many clients) through the quickstart's router onto real SmolLM2
//! workers, disturb the engine (a load step, a worker slowed or frozen with signals, an
//! operator restart, an engine at zero workers) and measure what a user sees: how soon the
//! operator decides and the new worker serves, how soon a slow worker loses its weight, how
//! long the worst request took, how long a cold start took.
//!
//! `blaze bench loop` prints these figures; the end-to-end tests run the same scenarios and
//! check them against the targets.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use blaze_api::engine::BlazeEngine;
use blaze_api::router::BlazeRouter;
use blaze_api::routing::{CONFIG_MAP_KEY, RoutingConfig, config_map_name};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, ResourceExt};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The quickstart's engine.
pub const ENGINE: &str = "smollm2";
/// The quickstart's router.
pub const ROUTER: &str = "quickstart";
const NS: &str = "default";
const WORKERS: &str = "blaze.ai/engine=smollm2";
const ROUTER_PODS: &str = "blaze.ai/router=quickstart";
const OPERATOR_NS: &str = "blaze-system";
const LEADER_LEASE: &str = "blaze-operator-leader";
/// The router's admin port (`/metrics`).
const ROUTER_ADMIN_PORT: u16 = 9090;
/// How long one client request may take before it counts as failed.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);

/// A short chat completion, answered whole.
pub const CHAT: &str = r#"{"model": "smollm2", "messages": [{"role": "user", "content": "Write one sentence about the sea."}], "max_tokens": 16}"#;
/// The same, streamed.
pub const CHAT_STREAM: &str = r#"{"model": "smollm2", "messages": [{"role": "user", "content": "Write one sentence about the sea."}], "max_tokens": 16, "stream": true}"#;

/// Where the binaries and the model are.
#[derive(Clone, Debug)]
pub struct Setup {
    /// The `blaze` binary.
    pub blaze: PathBuf,
    /// The folder with `blaze-operator`, `blaze-worker` and `blaze-router`.
    pub bin_dir: PathBuf,
    /// The model cache holding the quickstart's SmolLM2.
    pub models: PathBuf,
}

/// The quickstart's model file, looked for in the model cache.
pub const MODEL: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";

impl Setup {
    /// The binaries beside `blaze` (or in `bin_dir`) and the model cache `models`, checked:
    /// an error names what is missing and how to get it.
    pub fn new(blaze: PathBuf, bin_dir: Option<PathBuf>, models: PathBuf) -> Result<Self> {
        let bin_dir = match bin_dir {
            Some(d) => d,
            None => blaze.parent().context("the blaze binary's folder")?.to_path_buf(),
        };
        for bin in ["blaze-operator", "blaze-worker", "blaze-router"] {
            if !bin_dir.join(bin).is_file() {
                bail!(
                    "{} is missing: build it first (cargo build -p {bin}, or cargo test --workspace)",
                    bin_dir.join(bin).display()
                );
            }
        }
        if !models.join(MODEL).is_file() {
            bail!("{} has no {MODEL}: run scripts/fetch-models.sh", models.display());
        }
        Ok(Self { blaze, bin_dir, models })
    }
}

/// Stops a `blaze dev up` (`child`, running in `dir`): `blaze dev down`, then the process.
fn dev_down(blaze: &std::path::Path, dir: &std::path::Path, child: &mut Child) {
    let _ = Command::new(blaze)
        .args(["dev", "down", "--dir"])
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    let _ = child.kill();
    let _ = child.wait();
}

/// A `blaze dev up` of its own, with the quickstart applied; `blaze dev down` when dropped.
pub struct Cluster {
    child: Child,
    dir: tempfile::TempDir,
    blaze: PathBuf,
    /// A client of its API server.
    pub client: Client,
    /// The quickstart router's URL (`http://HOST:PORT`).
    pub url: String,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        dev_down(&self.blaze, self.dir.path(), &mut self.child);
    }
}

/// Polls `f` every 250 ms until it gives a value, for at most `secs` seconds.
pub async fn until<T>(what: &str, secs: u64, mut f: impl AsyncFnMut() -> Option<T>) -> Result<T> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f().await {
            return Ok(v);
        }
        if Instant::now() >= deadline {
            bail!("timed out after {secs} s waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

impl Cluster {
    /// Starts `blaze dev up` with pods on `pod_addresses` (a range of loopback addresses of
    /// its own, so clusters can run side by side) and waits for the quickstart to serve.
    pub async fn start(setup: &Setup, pod_addresses: &str) -> Result<Self> {
        // BLAZE_KEEP_DEV_DIR keeps the control plane's folder (pod logs under it) afterwards.
        let keep = std::env::var_os("BLAZE_KEEP_DEV_DIR").is_some();
        let dir = tempfile::Builder::new().prefix("blaze-loop-").disable_cleanup(keep).tempdir()?;
        if keep {
            eprintln!("development control plane in {}", dir.path().display());
        }
        let child = Command::new(&setup.blaze)
            .args(["dev", "up", "--listen", "127.0.0.1:0", "--port", "0"])
            .args(["--pod-addresses", pod_addresses, "--dir"])
            .arg(dir.path())
            .arg("--models")
            .arg(&setup.models)
            .env("BLAZE_BIN_DIR", &setup.bin_dir)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .context("starting blaze dev up")?;
        let info_path = dir.path().join("blaze-dev.json");
        let mut partial = Partial { child: Some(child), dir: Some(dir), blaze: &setup.blaze };
        let url = until("blaze dev up to expose the router", 90, async || {
            let info: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(&info_path).ok()?).ok()?;
            info["routers"][0][1].as_str().map(str::to_owned)
        })
        .await?;
        let dir = partial.dir.as_ref().expect("held until here");
        let kc = Kubeconfig::read_from(dir.path().join("kubeconfig"))?;
        let config =
            kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await?;
        let client = Client::try_from(config)?;
        let (child, dir) = partial.take();
        let cluster = Self { child, dir, blaze: setup.blaze.clone(), client, url };
        cluster.serving(1).await?;
        Ok(cluster)
    }

    /// Waits until `n` workers are ready, all of them in the router's document, and a chat
    /// completion through the router succeeds.
    pub async fn serving(&self, n: usize) -> Result<()> {
        until(&format!("{n} workers serving"), 300, async || {
            let ready = self.ready_workers().await.ok()?;
            let routing = self.routing().await.ok()?;
            let routed = routing.endpoints.iter().filter(|e| e.weight > 0).count();
            (ready.len() == n && routed == n).then_some(())
        })
        .await?;
        until("a chat completion through the router", 120, async || {
            request(&self.url, CHAT).await.ok.then_some(())
        })
        .await
    }

    /// Merge-patches the quickstart engine's spec.
    pub async fn patch_engine(&self, spec: serde_json::Value) -> Result<()> {
        Api::<BlazeEngine>::namespaced(self.client.clone(), NS)
            .patch(ENGINE, &PatchParams::default(), &Patch::Merge(json!({ "spec": spec })))
            .await?;
        Ok(())
    }

    /// Merge-patches the quickstart router's spec.
    pub async fn patch_router(&self, spec: serde_json::Value) -> Result<()> {
        Api::<BlazeRouter>::namespaced(self.client.clone(), NS)
            .patch(ROUTER, &PatchParams::default(), &Patch::Merge(json!({ "spec": spec })))
            .await?;
        Ok(())
    }

    /// The engine's ready worker pods.
    pub async fn ready_workers(&self) -> Result<Vec<Pod>> {
        let pods = Api::<Pod>::namespaced(self.client.clone(), NS)
            .list(&ListParams::default().labels(WORKERS))
            .await?;
        Ok(pods.items.into_iter().filter(ready).collect())
    }

    /// Workers the engine's Deployment asks for.
    pub async fn replicas(&self) -> Result<i32> {
        let name = blaze_operator::labels::engine_child_name(ENGINE);
        let d = Api::<Deployment>::namespaced(self.client.clone(), NS).get(&name).await?;
        Ok(d.spec.replicas.unwrap_or(0))
    }

    /// The router's routing document as the operator last wrote it.
    pub async fn routing(&self) -> Result<RoutingConfig> {
        let cm = Api::<ConfigMap>::namespaced(self.client.clone(), NS)
            .get(&config_map_name(ROUTER))
            .await?;
        let yaml = cm.data.and_then(|mut d| d.remove(CONFIG_MAP_KEY)).unwrap_or_default();
        Ok(serde_saphyr::from_str(&yaml)?)
    }

    /// Weight per worker pod in the routing document.
    pub async fn weights(&self) -> Result<BTreeMap<String, u32>> {
        Ok(self.routing().await?.endpoints.into_iter().map(|e| (e.pod, e.weight)).collect())
    }

    /// The `/metrics` text of the router's first pod.
    pub async fn router_metrics(&self) -> Result<String> {
        let pods = Api::<Pod>::namespaced(self.client.clone(), NS)
            .list(&ListParams::default().labels(ROUTER_PODS))
            .await?;
        let ip = pods
            .items
            .iter()
            .find_map(|p| p.status.as_ref()?.pod_ip.clone())
            .context("no router pod with an address")?;
        let out = get(&format!("{ip}:{ROUTER_ADMIN_PORT}"), "/metrics").await?;
        Ok(out)
    }

    /// Reasons of the events about the engine.
    pub async fn engine_events(&self) -> Result<Vec<String>> {
        let events =
            Api::<Event>::namespaced(self.client.clone(), NS).list(&ListParams::default()).await?;
        Ok(events
            .items
            .into_iter()
            .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(ENGINE))
            .filter_map(|e| e.reason)
            .collect())
    }

    /// Deletes the operator's pod and waits until a new one holds the leader lease.
    pub async fn restart_operator(&self) -> Result<()> {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), OPERATOR_NS);
        let leases: Api<Lease> = Api::namespaced(self.client.clone(), OPERATOR_NS);
        let old = pods.list(&ListParams::default()).await?.items;
        let old_names: BTreeSet<String> = old.iter().map(|p| p.name_any()).collect();
        for p in &old {
            pods.delete(&p.name_any(), &DeleteParams::default()).await?;
        }
        until("a new operator to lead", 120, async || {
            let holder = leases.get(LEADER_LEASE).await.ok()?.spec?.holder_identity?;
            (!old_names.iter().any(|n| holder.starts_with(n.as_str()))).then_some(())
        })
        .await
    }
}

/// A cluster being started: stopped if the start fails half way.
struct Partial<'a> {
    child: Option<Child>,
    dir: Option<tempfile::TempDir>,
    blaze: &'a PathBuf,
}

impl Partial<'_> {
    fn take(&mut self) -> (Child, tempfile::TempDir) {
        (self.child.take().expect("taken once"), self.dir.take().expect("taken once"))
    }
}

impl Drop for Partial<'_> {
    fn drop(&mut self) {
        if let (Some(mut child), Some(dir)) = (self.child.take(), self.dir.take()) {
            dev_down(self.blaze, dir.path(), &mut child);
        }
    }
}

/// Whether a pod is Ready and not going away.
pub fn ready(p: &Pod) -> bool {
    p.metadata.deletion_timestamp.is_none()
        && p.status
            .iter()
            .flat_map(|s| s.conditions.iter().flatten())
            .any(|c| c.type_ == "Ready" && c.status == "True")
}

/// The process of a pod's container on the development node.
pub fn pid(pod: &Pod) -> Option<i32> {
    pod.status
        .iter()
        .flat_map(|s| s.container_statuses.iter().flatten())
        .find_map(|c| c.container_id.as_deref()?.strip_prefix("process://")?.parse().ok())
}

/// One client request as the client saw it.
#[derive(Clone, Copy, Debug)]
pub struct Outcome {
    /// When it was sent, from the start of the load.
    pub sent: Duration,
    /// Until the whole answer arrived.
    pub latency: Duration,
    /// Until the first token (the first `data:` line of a stream; the whole answer otherwise).
    pub first_token: Duration,
    /// A 200 with a complete answer.
    pub ok: bool,
}

/// Sends `body` as a chat completion to the router at `url` over a connection of its own.
pub async fn request(url: &str, body: &str) -> Outcome {
    let start = Instant::now();
    let (ok, first) = tokio::time::timeout(REQUEST_TIMEOUT, exchange(url, body))
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or((false, None));
    let latency = start.elapsed();
    Outcome { sent: Duration::ZERO, latency, first_token: first.map_or(latency, |f| f - start), ok }
}

/// One exchange: whether the answer was a complete 200, and when its first token came.
async fn exchange(url: &str, body: &str) -> std::io::Result<(bool, Option<Instant>)> {
    let addr = url.trim_start_matches("http://");
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    s.set_nodelay(true)?;
    let req = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await?;
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    let mut first = None;
    loop {
        let n = s.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
        if first.is_none() && has_token(&out) {
            first = Some(Instant::now());
        }
    }
    let text = String::from_utf8_lossy(&out);
    let ok = text.starts_with("HTTP/1.1 200")
        && if body.contains("\"stream\": true") {
            text.contains("data: [DONE]")
        } else {
            text.contains("\"choices\"")
        };
    Ok((ok, first))
}

/// Whether a stream so far carries a chunk with some content (not just the role).
fn has_token(out: &[u8]) -> bool {
    let text = String::from_utf8_lossy(out);
    text.match_indices("\"content\":\"").any(|(i, m)| !text[i + m.len()..].starts_with('"'))
}

/// A GET over HTTP/1.1, the body.
async fn get(addr: &str, path: &str) -> Result<String> {
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await?;
    let mut out = String::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_string(&mut out)).await??;
    let body = out.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    Ok(body)
}

/// Clients sending requests back to back until stopped.
pub struct Load {
    stop: Arc<AtomicBool>,
    started: Instant,
    tasks: Vec<tokio::task::JoinHandle<Vec<Outcome>>>,
}

impl Load {
    /// Starts `clients` clients sending `body` to the router at `url`.
    pub fn start(url: &str, clients: usize, body: &'static str) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let started = Instant::now();
        let tasks = (0..clients)
            .map(|_| {
                let (stop, url) = (stop.clone(), url.to_owned());
                tokio::spawn(async move {
                    let mut out = Vec::new();
                    while !stop.load(Ordering::Relaxed) {
                        let sent = started.elapsed();
                        let mut o = request(&url, body).await;
                        o.sent = sent;
                        out.push(o);
                    }
                    out
                })
            })
            .collect();
        Self { stop, started, tasks }
    }

    /// Seconds since the load started.
    pub fn elapsed(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    /// Stops the clients and returns every request's outcome (requests in flight finish).
    pub async fn finish(self) -> Vec<Outcome> {
        self.stop.store(true, Ordering::Relaxed);
        let mut out = Vec::new();
        for t in self.tasks {
            out.extend(t.await.unwrap_or_default());
        }
        out.sort_by_key(|o| o.sent);
        out
    }
}

/// The `q` quantile of `v` (nearest rank), 0 when empty.
pub fn quantile(v: impl IntoIterator<Item = Duration>, q: f64) -> f64 {
    let mut v: Vec<f64> = v.into_iter().map(|d| d.as_secs_f64()).collect();
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let i = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1;
    v[i]
}

fn failures(out: &[Outcome]) -> usize {
    out.iter().filter(|o| !o.ok).count()
}

/// Autoscaling for the load-step and restart scenarios: one to three workers, two requests in
/// flight each, 20 s stable window and scale-down delay.
fn autoscaling_1_to_3() -> serde_json::Value {
    json!({"autoscaling": {
        "mode": "blaze", "minReplicas": 1, "maxReplicas": 3, "targetInFlightPerReplica": 2,
        "stableWindowSeconds": 20, "panicWindowSeconds": 6, "scaleDownDelaySeconds": 20,
    }})
}

/// What a load step shows.
#[derive(Clone, Debug, Default)]
pub struct LoadStep {
    /// Seconds from the step to the operator asking for more workers.
    pub decision_s: Option<f64>,
    /// Seconds from the step to a new worker ready.
    pub ready_s: Option<f64>,
    /// Seconds from the step to a new worker taking requests through the router.
    pub serving_s: Option<f64>,
    /// Seconds from the clients' last request until the engine is back at one worker.
    pub back_to_min_s: Option<f64>,
    /// Most workers asked for.
    pub peak_replicas: i32,
    /// p95 request latency over the step, seconds.
    pub p95_s: f64,
    /// Requests sent and failed.
    pub requests: usize,
    /// Requests that failed.
    pub failures: usize,
}

/// A load step of `clients` clients for `secs` seconds on one worker, with the autoscaler on
/// (one to three workers, target two in flight each) or off. With it on, it then waits for the
/// engine to return to one worker.
pub async fn load_step(
    c: &Cluster,
    autoscale: bool,
    clients: usize,
    secs: u64,
) -> Result<LoadStep> {
    if autoscale {
        c.patch_engine(autoscaling_1_to_3()).await?;
    }
    c.serving(1).await?;
    let first: BTreeSet<String> = c.ready_workers().await?.iter().map(|p| p.name_any()).collect();
    let load = Load::start(&c.url, clients, CHAT);
    let mut step = LoadStep { peak_replicas: 1, ..Default::default() };
    // The step lasts `secs`, and longer (up to 30 s) while a new worker is asked for but not
    // yet serving, so its start is measured too.
    let pending = |s: &LoadStep| s.decision_s.is_some() && s.serving_s.is_none();
    while load.elapsed() < secs as f64 || pending(&step) && load.elapsed() < secs as f64 + 30.0 {
        let replicas = c.replicas().await.unwrap_or(0);
        step.peak_replicas = step.peak_replicas.max(replicas);
        if step.decision_s.is_none() && replicas > 1 {
            step.decision_s = Some(load.elapsed());
        }
        if step.ready_s.is_none()
            && let Ok(pods) = c.ready_workers().await
            && pods.iter().any(|p| !first.contains(&p.name_any()))
        {
            step.ready_s = Some(load.elapsed());
        }
        if step.serving_s.is_none()
            && step.decision_s.is_some()
            && let (Ok(routing), Ok(metrics)) = (c.routing().await, c.router_metrics().await)
        {
            let new = routing.endpoints.iter().filter(|e| !first.contains(&e.pod));
            if new.into_iter().any(|e| requests_to(&metrics, &e.address) > 0.0) {
                step.serving_s = Some(load.elapsed());
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // The load stops when the clients stop sending; the requests in flight then drain.
    let stopped = Instant::now();
    let out = load.finish().await;
    step.p95_s = quantile(out.iter().map(|o| o.latency), 0.95);
    step.requests = out.len();
    step.failures = failures(&out);
    if autoscale && step.peak_replicas > 1 {
        let _ = until("back to one worker", 180, async || {
            (c.replicas().await.ok()? == 1).then_some(())
        })
        .await;
        if c.replicas().await? == 1 {
            step.back_to_min_s = Some(stopped.elapsed().as_secs_f64());
        }
    }
    Ok(step)
}

/// Tries the router has sent to `address`, from its metrics.
fn requests_to(metrics: &str, address: &str) -> f64 {
    let label = format!("endpoint=\"{address}\"");
    metrics
        .lines()
        .filter(|l| l.starts_with("blaze_router_endpoint_requests_total{") && l.contains(&label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The value of an unlabelled series in a metrics text, 0 when absent.
pub fn series(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Two workers serving, autoscaling off, for the slow and frozen worker scenarios.
async fn two_workers(c: &Cluster) -> Result<Vec<Pod>> {
    c.patch_engine(json!({"replicas": 2})).await?;
    c.serving(2).await?;
    let workers = c.ready_workers().await?;
    if workers.len() != 2 {
        bail!("expected two workers, found {}", workers.len());
    }
    Ok(workers)
}

/// Stops and continues a process on a duty cycle until dropped; continues it at the end.
struct DutyCycle {
    stop: Arc<AtomicBool>,
    task: Option<tokio::task::JoinHandle<()>>,
    pid: Pid,
}

impl DutyCycle {
    fn start(pid: i32, stopped: Duration, running: Duration) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let pid = Pid::from_raw(pid);
        let task = tokio::spawn(async move {
            while !flag.load(Ordering::Relaxed) {
                let _ = kill(pid, Signal::SIGSTOP);
                tokio::time::sleep(stopped).await;
                let _ = kill(pid, Signal::SIGCONT);
                tokio::time::sleep(running).await;
            }
        });
        Self { stop, task: Some(task), pid }
    }

    async fn end(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
        let _ = kill(self.pid, Signal::SIGCONT);
    }
}

impl Drop for DutyCycle {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = kill(self.pid, Signal::SIGCONT);
    }
}

/// What a slowed worker shows.
#[derive(Clone, Debug, Default)]
pub struct SlowWorker {
    /// Its weight before it slowed.
    pub before: u32,
    /// Its lowest weight while slow.
    pub lowest: u32,
    /// Seconds from the slowdown to its weight below half of `before`.
    pub shift_s: Option<f64>,
    /// Seconds from its recovery to its weight back to at least half of `before`.
    pub regain_s: Option<f64>,
    /// Its weight every second from the slowdown on (seconds, weight).
    pub timeline: Vec<(u32, u32)>,
    /// Requests sent.
    pub requests: usize,
    /// Requests that failed.
    pub failures: usize,
}

/// One of two workers slowed fivefold (stopped 0.8 s, run 0.2 s, over and over) under four streaming
/// clients: how soon its weight halves, and how soon it comes back once the worker is well.
pub async fn slow_worker(c: &Cluster) -> Result<SlowWorker> {
    // Weighted round robin: the weights alone move traffic, so they are what is measured
    // (the adaptive strategy would move it first, request by request, and even out the
    // workers' latencies the weights follow).
    c.patch_router(json!({
        "strategy": "weightedRoundRobin",
        "weights": {"mode": "auto", "slowStartSeconds": 5},
    }))
    .await?;
    let workers = two_workers(c).await?;
    let victim = workers[0].name_any();
    let pid = pid(&workers[0]).context("the worker's process")?;
    let load = Load::start(&c.url, 4, CHAT_STREAM);
    // Both workers measured under the same load first; its weight before is the median of
    // the last 6 s, relative to the other's.
    let mut seen = Vec::new();
    while load.elapsed() < 14.0 {
        let w = c.weights().await?;
        let (v, best) = (w.get(&victim).copied().unwrap_or(0), w.values().copied().max());
        if load.elapsed() > 8.0 {
            seen.push(v * 100 / best.unwrap_or(1).max(1));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    seen.sort_unstable();
    let mut r =
        SlowWorker { before: seen.get(seen.len() / 2).copied().unwrap_or(0), ..Default::default() };
    r.lowest = r.before;
    let slowed = Instant::now();
    let duty = DutyCycle::start(pid, Duration::from_millis(800), Duration::from_millis(200));
    while slowed.elapsed() < Duration::from_secs(30) {
        let w = c.weights().await?.get(&victim).copied().unwrap_or(0);
        let t = slowed.elapsed().as_secs() as u32;
        if r.timeline.last().is_none_or(|(s, _)| *s < t) {
            r.timeline.push((t, w));
        }
        r.lowest = r.lowest.min(w);
        if r.shift_s.is_none() && w * 2 < r.before {
            r.shift_s = Some(slowed.elapsed().as_secs_f64());
        }
        // Slow for 5 s more, and ended while its weight is below half, so the recovery is
        // measured from there.
        if r.shift_s.is_some_and(|s| slowed.elapsed().as_secs_f64() > s + 5.0) && w * 2 < r.before {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    duty.end().await;
    let well = Instant::now();
    while well.elapsed() < Duration::from_secs(60) {
        let w = c.weights().await?.get(&victim).copied().unwrap_or(0);
        if w * 2 >= r.before {
            r.regain_s = Some(well.elapsed().as_secs_f64());
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let out = load.finish().await;
    r.requests = out.len();
    r.failures = failures(&out);
    Ok(r)
}

/// What a frozen worker costs.
#[derive(Clone, Debug, Default)]
pub struct Frozen {
    /// Median request latency over the run, seconds.
    pub normal_s: f64,
    /// The slowest request sent while the worker was frozen or shortly before, seconds.
    pub worst_s: f64,
    /// Requests sent.
    pub requests: usize,
    /// Requests that failed.
    pub failures: usize,
}

/// One of two workers frozen (SIGSTOP) for `freeze_secs` under four clients, then continued.
pub async fn frozen_worker(c: &Cluster, freeze_secs: u64) -> Result<Frozen> {
    let workers = two_workers(c).await?;
    let pid = Pid::from_raw(pid(&workers[0]).context("the worker's process")?);
    let load = Load::start(&c.url, 4, CHAT);
    tokio::time::sleep(Duration::from_secs(8)).await;
    let frozen_at = load.elapsed();
    kill(pid, Signal::SIGSTOP)?;
    tokio::time::sleep(Duration::from_secs(freeze_secs)).await;
    kill(pid, Signal::SIGCONT)?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let out = load.finish().await;
    // A normal request: the run's median, before the freeze (two workers) and after it (one
    // worker with every client, until the frozen one is back).
    let normal_s = quantile(out.iter().map(|o| o.latency), 0.5);
    // Requests in flight when it froze count too.
    let worst_s = out
        .iter()
        .filter(|o| o.sent.as_secs_f64() + o.latency.as_secs_f64() >= frozen_at)
        .map(|o| o.latency.as_secs_f64())
        .fold(0.0, f64::max);
    Ok(Frozen { normal_s, worst_s, requests: out.len(), failures: failures(&out) })
}

/// What an operator restart under steady load shows.
#[derive(Clone, Debug, Default)]
pub struct Restart {
    /// Workers asked for before the restart.
    pub before: i32,
    /// Every different count asked for in the window after the new operator took the lead.
    pub after: Vec<i32>,
    /// Requests sent.
    pub requests: usize,
    /// Requests that failed.
    pub failures: usize,
}

/// Autoscaling on (one to three, target two) under three clients until the count has held
/// for 25 s, then the operator's pod deleted; the count is watched for `watch_secs` after the
/// new operator leads.
pub async fn operator_restart(c: &Cluster, watch_secs: u64) -> Result<Restart> {
    c.patch_engine(autoscaling_1_to_3()).await?;
    c.serving(1).await?;
    let load = Load::start(&c.url, 3, CHAT);
    let mut held = (c.replicas().await?, Instant::now());
    let before = until("a steady worker count under load", 240, async || {
        let n = c.replicas().await.ok()?;
        if n != held.0 {
            held = (n, Instant::now());
        }
        (n > 1 && held.1.elapsed() > Duration::from_secs(25)).then_some(n)
    })
    .await?;
    c.restart_operator().await?;
    let mut after = vec![];
    let watched = Instant::now();
    while watched.elapsed() < Duration::from_secs(watch_secs) {
        let n = c.replicas().await?;
        if after.last() != Some(&n) {
            after.push(n);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let out = load.finish().await;
    Ok(Restart { before, after, requests: out.len(), failures: failures(&out) })
}

/// What a cold start shows.
#[derive(Clone, Debug, Default)]
pub struct ColdStart {
    /// Seconds from the engine allowed to reach zero until it has no worker.
    pub to_zero_s: f64,
    /// Seconds from a request sent to an engine at zero until its first token.
    pub first_token_s: f64,
    /// Seconds until the whole answer.
    pub answer_s: f64,
    /// Whether the answer was a complete 200.
    pub ok: bool,
    /// Requests the router held (its hold histogram's count).
    pub held: f64,
    /// Whether the engine's events report the cold start.
    pub reported: bool,
}

/// An idle engine allowed to go to zero (after a 6 s stable window); then one streamed chat
/// completion.
pub async fn scale_from_zero(c: &Cluster) -> Result<ColdStart> {
    c.patch_engine(json!({"autoscaling": {
        "mode": "blaze", "minReplicas": 0, "maxReplicas": 1, "targetInFlightPerReplica": 2,
        "stableWindowSeconds": 6, "panicWindowSeconds": 2, "scaleDownDelaySeconds": 0,
    }}))
    .await?;
    let allowed = Instant::now();
    until("the engine at zero workers", 180, async || {
        let none = c.ready_workers().await.ok()?.is_empty();
        (none && c.replicas().await.ok()? == 0 && c.routing().await.ok()?.endpoints.is_empty())
            .then_some(())
    })
    .await?;
    let to_zero_s = allowed.elapsed().as_secs_f64();
    let o = request(&c.url, CHAT_STREAM).await;
    let held = series(&c.router_metrics().await?, "blaze_router_hold_seconds_count");
    let reported = until("the cold start reported", 30, async || {
        c.engine_events().await.ok()?.iter().any(|r| r == "ColdStart").then_some(())
    })
    .await
    .is_ok();
    Ok(ColdStart {
        to_zero_s,
        first_token_s: o.first_token.as_secs_f64(),
        answer_s: o.latency.as_secs_f64(),
        ok: o.ok,
        held,
        reported,
    })
}
