//! The closed loop measured on the development control plane: scenarios that put real load
//! (chat completions from many clients) through the quickstart's router onto real SmolLM2
//! workers, disturb the engine (a load step, a worker slowed or frozen with signals, an
//! operator restart, an engine at zero workers) and measure what a user sees: how soon the
//! operator decides and the new worker serves, how soon a slow worker loses its weight, how
//! long the worst request took, how long a cold start took.
//!
//! `bench-loop` prints these figures; the `scenarios` test holds them to the targets.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::ListParams;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::json;

use crate::load::{
    CHAT, CHAT_SHORT, CHAT_STREAM, Load, chat, failures, quantile, requests_to, series,
};
use crate::{DevCluster, Quickstart, pods, until};

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
    q: &Quickstart,
    autoscale: bool,
    clients: usize,
    secs: u64,
) -> Result<LoadStep> {
    if autoscale {
        q.patch_engine(autoscaling_1_to_3()).await?;
    }
    q.serving(1).await?;
    let first: BTreeSet<String> = q.ready_workers().await?.iter().map(|p| p.name_any()).collect();
    let load = Load::start(&q.url, clients, CHAT);
    let mut step = LoadStep { peak_replicas: 1, ..Default::default() };
    // The step lasts `secs`, and longer (up to 30 s) while a new worker is asked for but not
    // yet serving, so its start is measured too.
    let pending = |s: &LoadStep| s.decision_s.is_some() && s.serving_s.is_none();
    while load.elapsed() < secs as f64 || pending(&step) && load.elapsed() < secs as f64 + 30.0 {
        let replicas = q.replicas().await.unwrap_or(0);
        step.peak_replicas = step.peak_replicas.max(replicas);
        if step.decision_s.is_none() && replicas > 1 {
            step.decision_s = Some(load.elapsed());
        }
        if step.ready_s.is_none()
            && let Ok(pods) = q.ready_workers().await
            && pods.iter().any(|p| !first.contains(&p.name_any()))
        {
            step.ready_s = Some(load.elapsed());
        }
        if step.serving_s.is_none()
            && step.decision_s.is_some()
            && let (Ok(routing), Ok(metrics)) = (q.routing().await, q.router_metrics().await)
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
            (q.replicas().await.ok()? == 1).then_some(())
        })
        .await;
        if q.replicas().await? == 1 {
            step.back_to_min_s = Some(stopped.elapsed().as_secs_f64());
        }
    }
    Ok(step)
}

/// Two workers serving, autoscaling off, for the slow and frozen worker scenarios.
async fn two_workers(q: &Quickstart) -> Result<Vec<Pod>> {
    q.patch_engine(json!({"replicas": 2})).await?;
    q.serving(2).await?;
    let workers = q.ready_workers().await?;
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
pub async fn slow_worker(q: &Quickstart) -> Result<SlowWorker> {
    // Weighted round robin: the weights alone move traffic, so they are what is measured
    // (the adaptive strategy would move it first, request by request, and even out the
    // workers' latencies the weights follow).
    q.patch_router(json!({
        "strategy": "weightedRoundRobin",
        "weights": {"mode": "auto", "slowStartSeconds": 5},
    }))
    .await?;
    let workers = two_workers(q).await?;
    let victim = workers[0].name_any();
    let pid = pods::pid(&workers[0]).context("the worker's process")?;
    let load = Load::start(&q.url, 4, CHAT_STREAM);
    // Both workers measured under the same load first; its weight before is the median of
    // the last 6 s, relative to the other's.
    let mut seen = Vec::new();
    while load.elapsed() < 14.0 {
        let w = q.weights().await?;
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
        let w = q.weights().await?.get(&victim).copied().unwrap_or(0);
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
        let w = q.weights().await?.get(&victim).copied().unwrap_or(0);
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
/// The requests are short: one in flight on the frozen worker is sent again from the start,
/// so its time there before the freeze and its second run add to its latency beside the
/// detection; with short answers what is measured is mostly the detection, on a loaded
/// machine too.
pub async fn frozen_worker(q: &Quickstart, freeze_secs: u64) -> Result<Frozen> {
    let workers = two_workers(q).await?;
    let pid = Pid::from_raw(pods::pid(&workers[0]).context("the worker's process")?);
    let load = Load::start(&q.url, 4, CHAT_SHORT);
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
    /// Name, uid and generation of each Deployment before the restart.
    pub deployments_before: Vec<(String, Option<String>, Option<i64>)>,
    /// The same at the end of the window: equal if the new operator rewrote no spec.
    pub deployments_after: Vec<(String, Option<String>, Option<i64>)>,
    /// Requests sent.
    pub requests: usize,
    /// Requests that failed.
    pub failures: usize,
}

/// Autoscaling on (one to three, target two) under three clients until the count has held
/// for 25 s, then the operator's pod deleted; the count is watched for `watch_secs` after the
/// new operator leads, and the Deployments compared before and after.
pub async fn operator_restart(
    cluster: &DevCluster,
    q: &Quickstart,
    watch_secs: u64,
) -> Result<Restart> {
    q.patch_engine(autoscaling_1_to_3()).await?;
    q.serving(1).await?;
    let load = Load::start(&q.url, 3, CHAT);
    let mut held = (q.replicas().await?, Instant::now());
    let before = until("a steady worker count under load", 240, async || {
        let n = q.replicas().await.ok()?;
        if n != held.0 {
            held = (n, Instant::now());
        }
        (n > 1 && held.1.elapsed() > Duration::from_secs(25)).then_some(n)
    })
    .await?;
    let deployments_before = deployments(q).await?;
    cluster.restart_operator().await?;
    let mut after = vec![];
    let watched = Instant::now();
    while watched.elapsed() < Duration::from_secs(watch_secs) {
        let n = q.replicas().await?;
        if after.last() != Some(&n) {
            after.push(n);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let deployments_after = deployments(q).await?;
    let out = load.finish().await;
    Ok(Restart {
        before,
        after,
        deployments_before,
        deployments_after,
        requests: out.len(),
        failures: failures(&out),
    })
}

/// Name, uid and generation of each Deployment in the quickstart's namespace, sorted.
async fn deployments(q: &Quickstart) -> Result<Vec<(String, Option<String>, Option<i64>)>> {
    let list = q.api::<Deployment>().list(&ListParams::default()).await?.items;
    let mut ids: Vec<_> =
        list.iter().map(|d| (d.name_any(), d.uid(), d.metadata.generation)).collect();
    ids.sort();
    Ok(ids)
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
pub async fn scale_from_zero(q: &Quickstart) -> Result<ColdStart> {
    q.patch_engine(json!({"autoscaling": {
        "mode": "blaze", "minReplicas": 0, "maxReplicas": 1, "targetInFlightPerReplica": 2,
        "stableWindowSeconds": 6, "panicWindowSeconds": 2, "scaleDownDelaySeconds": 0,
    }}))
    .await?;
    let allowed = Instant::now();
    until("the engine at zero workers", 180, async || {
        let none = q.ready_workers().await.ok()?.is_empty();
        (none && q.replicas().await.ok()? == 0 && q.routing().await.ok()?.endpoints.is_empty())
            .then_some(())
    })
    .await?;
    let to_zero_s = allowed.elapsed().as_secs_f64();
    let o = chat(&q.url, CHAT_STREAM).await;
    let held = series(&q.router_metrics().await?, "blaze_router_hold_seconds_count");
    let reported = until("the cold start reported", 30, async || {
        q.engine_events().await.ok()?.iter().any(|r| r == "ColdStart").then_some(())
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
