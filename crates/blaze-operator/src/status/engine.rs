//! An engine's status: `Ready`, `ModelLoaded`, `Scaling`, `Degraded`, `Unschedulable`,
//! `CacheReady` (see [`super::cache`]), replica counts and the selector, and the workers
//! recovery should replace.

use std::collections::BTreeMap;

use blaze_api::conditions::{ConditionStatus, Observed, set_condition};
use blaze_api::engine::condition_types as ct;
use blaze_api::{BlazeEngine, BlazeEngineStatus};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use super::cache::{PodCache, cache_ready};
use super::pods::{PodFacts, unready_too_long};
use crate::children::pod::DOWNLOAD_CONTAINER;
use crate::labels;

/// What the controller observed for one engine.
#[derive(Clone, Debug)]
pub struct Observation<'a> {
    /// The worker Deployment, as the API server returned it.
    pub deployment: Option<&'a Deployment>,
    /// Facts of the engine's worker pods.
    pub pods: &'a [PodFacts],
    /// Workers the operator wants (spec or autoscaler).
    pub desired: i32,
    /// What the latest scrape of the ready workers said of their caches, by pod.
    pub caches: &'a BTreeMap<String, PodCache>,
    /// The clock.
    pub now: Timestamp,
}

/// One condition as computed, before it is recorded.
pub(crate) struct Cond {
    pub(crate) status: ConditionStatus,
    pub(crate) reason: &'static str,
    pub(crate) message: String,
}

impl Cond {
    pub(crate) fn new(
        status: impl Into<ConditionStatus>,
        reason: &'static str,
        message: String,
    ) -> Self {
        Self { status: status.into(), reason, message }
    }
}

/// The new status of `engine` from `obs`, starting from its current status so transition
/// times survive. Compare with the current status and write only if they differ.
pub fn engine_status(engine: &BlazeEngine, obs: &Observation<'_>) -> BlazeEngineStatus {
    let old = engine.status.clone().unwrap_or_default();
    let mut st = old.clone();
    let name = engine.metadata.name.clone().unwrap_or_default();
    let ds = obs.deployment.and_then(|d| d.status.as_ref());
    let live: Vec<&PodFacts> = obs.pods.iter().filter(|p| !p.terminating).collect();
    st.observed_generation = engine.metadata.generation;
    st.replicas = ds.and_then(|s| s.replicas).unwrap_or(live.len() as i32);
    st.ready_replicas = ds.and_then(|s| s.ready_replicas).unwrap_or(0);
    st.desired_replicas = obs.desired;
    st.selector = Some(labels::selector_string(&labels::engine_selector(&name)));
    if old.desired_replicas != obs.desired || old.last_scale_time.is_none() {
        st.last_scale_time = Some(Time(obs.now));
    }
    let updated = ds.and_then(|s| s.updated_replicas).unwrap_or(0);
    let ctx =
        Ctx { engine, pods: &live, ready: st.ready_replicas, desired: obs.desired, now: obs.now };
    let unsched = ctx.unschedulable();
    let loaded = ctx.model_loaded(&unsched);
    let ready = ctx.ready(&loaded, &unsched);
    let scaling = ctx.scaling(st.replicas, updated);
    let degraded = ctx.degraded();
    let g = engine.metadata.generation;
    for (t, c) in [
        (ct::READY, ready),
        (ct::MODEL_LOADED, loaded),
        (ct::SCALING, scaling),
        (ct::DEGRADED, degraded),
        (ct::UNSCHEDULABLE, unsched),
    ] {
        let obs = Observed {
            type_: t,
            status: c.status,
            reason: c.reason,
            message: c.message,
            generation: g,
        };
        set_condition(&mut st.conditions, obs, ctx.now);
    }
    let ready_pods: Vec<&str> = live.iter().filter(|p| p.ready).map(|p| p.name.as_str()).collect();
    match cache_ready(&engine.spec.cache, &ready_pods, obs.caches) {
        Some(c) => {
            let obs = Observed {
                type_: ct::CACHE_READY,
                status: c.status,
                reason: c.reason,
                message: c.message,
                generation: g,
            };
            set_condition(&mut st.conditions, obs, ctx.now);
        }
        None => st.conditions.retain(|c| c.type_ != ct::CACHE_READY),
    }
    st
}

struct Ctx<'a> {
    engine: &'a BlazeEngine,
    pods: &'a [&'a PodFacts],
    ready: i32,
    desired: i32,
    now: Timestamp,
}

impl Ctx<'_> {
    fn model(&self) -> &str {
        &self.engine.spec.model.source
    }

    fn unschedulable(&self) -> Cond {
        let stuck: Vec<_> = self.pods.iter().filter_map(|p| p.unschedulable.as_ref()).collect();
        let Some(msg) = stuck.first() else {
            return Cond::new(false, "Scheduled", "every worker is placed on a node".into());
        };
        let r = &self.engine.spec.resources;
        let gpu = r.gpus > 0 && msg.contains(&r.gpu_resource_name);
        let reason = if gpu { "InsufficientGPU" } else { "Unschedulable" };
        let advice = if gpu {
            format!(
                "each worker asks for {} {}: lower spec.resources.gpus, add GPU nodes, or relax spec.scheduling",
                r.gpus, r.gpu_resource_name
            )
        } else {
            "check spec.resources and spec.scheduling (nodeSelector, affinity, tolerations) against the nodes".into()
        };
        let n = stuck.len();
        let total = self.pods.len();
        Cond::new(true, reason, format!("{n} of {total} workers cannot be placed: {msg}; {advice}"))
    }

    fn model_loaded(&self, unsched: &Cond) -> Cond {
        if self.ready > 0 {
            return Cond::new(true, "Loaded", format!("{} is loaded and serving", self.model()));
        }
        if let Some(c) = self.load_failure() {
            return c;
        }
        if self.desired == 0 {
            return Cond::new(
                ConditionStatus::Unknown,
                "ScaledToZero",
                "no workers run: the engine is scaled to zero".into(),
            );
        }
        if unsched.status == ConditionStatus::True
            && self.pods.iter().all(|p| p.unschedulable.is_some())
        {
            return Cond::new(
                false,
                "NotScheduled",
                "no worker is placed on a node yet; see the Unschedulable condition".into(),
            );
        }
        if let Some(p) = self.pods.iter().find(|p| p.downloading && !p.terminating) {
            let how_far = p.download_progress.as_ref().map_or(String::new(), |d| format!(" ({d})"));
            return Cond::new(
                false,
                "Downloading",
                format!("worker {} is downloading {}{how_far}", p.name, self.model()),
            );
        }
        Cond::new(false, "Loading", format!("workers are loading {}", self.model()))
    }

    /// Workers that crash without ever having become ready: the model cannot load; or
    /// their model download fails.
    fn load_failure(&self) -> Option<Cond> {
        if let Some((pod, (restarts, exit))) =
            self.pods.iter().find_map(|p| Some((p, p.download_failing.as_ref()?)))
        {
            return Some(Cond::new(
                false,
                "DownloadFailed",
                format!(
                    "downloading {} fails ({}), {restarts} restarts: check spec.model.source (repository, revision), the token Secret and the route to the hub, and `kubectl logs {} -c {DOWNLOAD_CONTAINER} --previous`",
                    self.model(),
                    exit.describe(),
                    pod.name
                ),
            ));
        }
        let crashing: Vec<_> = self
            .pods
            .iter()
            .filter(|p| p.crash_looping || (p.restarts > 0 && !p.started))
            .collect();
        let p = crashing.iter().find(|p| p.last_exit.is_some()).or(crashing.first())?;
        let m = &self.engine.spec.resources.memory;
        if p.last_exit.as_ref().is_some_and(|e| e.is_oom()) {
            let limit = m.as_ref().map_or("no limit".to_owned(), |q| q.0.clone());
            return Some(Cond::new(
                false,
                "OutOfMemory",
                format!(
                    "workers ran out of memory loading {} (OOMKilled, memory limit {limit}, {} restarts): raise spec.resources.memory, or pick a smaller spec.model.dtype or a quantized model",
                    self.model(),
                    p.restarts
                ),
            ));
        }
        let exit = p.last_exit.as_ref().map_or(String::new(), |e| format!(" ({})", e.describe()));
        Some(Cond::new(
            false,
            "LoadFailed",
            format!(
                "workers exit while loading {}{exit}, {} restarts: check spec.model (source, format) and `kubectl logs {} -c blaze-worker --previous`",
                self.model(),
                p.restarts,
                p.name
            ),
        ))
    }

    fn ready(&self, loaded: &Cond, unsched: &Cond) -> Cond {
        if self.ready > 0 {
            return Cond::new(
                true,
                "Serving",
                format!("{} of {} workers are ready", self.ready, self.desired),
            );
        }
        if self.desired == 0 {
            return Cond::new(
                false,
                "ScaledToZero",
                "no workers run: the engine is scaled to zero".into(),
            );
        }
        if loaded.reason == "NotScheduled" {
            return Cond::new(false, unsched.reason, unsched.message.clone());
        }
        Cond::new(false, loaded.reason, loaded.message.clone())
    }

    fn scaling(&self, replicas: i32, updated: i32) -> Cond {
        let d = self.desired;
        if replicas > d {
            return Cond::new(
                true,
                "ScalingDown",
                format!("{replicas} workers, scaling down to {d}"),
            );
        }
        if self.ready < d {
            return Cond::new(true, "ScalingUp", format!("{} of {d} workers ready", self.ready));
        }
        if updated < d {
            return Cond::new(
                true,
                "RollingOut",
                format!("{updated} of {d} workers run the current spec"),
            );
        }
        Cond::new(false, "Stable", format!("{d} workers, all ready"))
    }

    fn degraded(&self) -> Cond {
        let rec = &self.engine.spec.recovery;
        let mut problems: Vec<(&'static str, String)> = Vec::new();
        for p in self.pods {
            if p.last_exit.as_ref().is_some_and(|e| e.is_oom()) && p.restarts > 0 {
                problems.push((
                    "OutOfMemory",
                    format!("worker {} was OOMKilled ({} restarts)", p.name, p.restarts),
                ));
            } else if p.restarts >= rec.max_restarts_before_replace {
                problems.push((
                    "CrashLoop",
                    format!(
                        "worker {} restarted {} times (limit {})",
                        p.name, p.restarts, rec.max_restarts_before_replace
                    ),
                ));
            } else if p.crash_looping {
                problems.push(("CrashLoop", format!("worker {} is in CrashLoopBackOff", p.name)));
            } else if let Some((restarts, _)) = &p.download_failing {
                problems.push((
                    "DownloadFailed",
                    format!("worker {} cannot download its model ({restarts} restarts)", p.name),
                ));
            } else if unready_too_long(p, rec.unhealthy_after_seconds, self.now) {
                problems.push((
                    "WorkerUnhealthy",
                    format!(
                        "worker {} has been unready for over {}s",
                        p.name, rec.unhealthy_after_seconds
                    ),
                ));
            }
        }
        if self.ready > 0 && self.pods.iter().any(|p| p.unschedulable.is_some()) {
            problems.push((
                "PartiallyUnschedulable",
                "some workers cannot be placed; see the Unschedulable condition".into(),
            ));
        }
        match problems.first() {
            None => Cond::new(false, "AsExpected", "no worker is failing".into()),
            Some((reason, _)) => {
                let msg: Vec<_> = problems.iter().map(|(_, m)| m.as_str()).collect();
                // A worker that cannot download its model is not replaced: a new one would
                // fail the same way.
                let replaced = problems.iter().any(|(r, _)| *r != "DownloadFailed");
                let tail =
                    if replaced { "; failing workers are replaced per spec.recovery" } else { "" };
                Cond::new(true, reason, format!("{}{tail}", msg.join("; ")))
            }
        }
    }
}

/// A worker recovery should delete so its ReplicaSet starts a fresh one (maybe elsewhere).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Replacement {
    /// The pod.
    pub pod: String,
    /// `TooManyRestarts` or `UnreadyTooLong`.
    pub reason: &'static str,
}

/// Workers to replace, by deleting them.
///
/// The rule, by what a worker shows:
/// - Unready for longer than `spec.recovery.unhealthyAfterSeconds` after it had started
///   (`UnreadyTooLong`, see [`unready_too_long`]): replaced even when no other worker is
///   ready, so a single-replica engine heals. This container loaded the model and was ready,
///   so the model and the spec work and the fault is this pod's: a wedged GPU, a stalled
///   process its liveness probe does not catch, a bad node. A worker still loading its model
///   within the startup probe's budget never counts, nor one the kubelet just restarted.
/// - Restarted `spec.recovery.maxRestartsBeforeReplace` times and not ready
///   (`TooManyRestarts`): replaced only while another worker is ready. A worker that never
///   came up in its container cannot tell a bad node from a model that can never load; with
///   no worker ready the fault is most likely the model's or the spec's, a new pod would fail
///   the same way, and status says why (`LoadFailed`, `OutOfMemory`) instead.
/// - Its model download keeps failing: never replaced (a new pod downloads from the same
///   place); status says `DownloadFailed`.
///
/// Against flapping: at most a quarter of the workers (at least one) are replaced at once,
/// and workers still being deleted count against that, so a slow drain holds further
/// replacements back. A replaced single worker is replaced again only after its successor
/// has loaded, started and then been unready for the whole threshold again.
///
/// Why delete rather than surge first: the Deployment's `maxSurge` applies to rollouts, not
/// to a pod that goes away. Deleting the pod marks it terminating, which the ReplicaSet stops
/// counting at once, so the replacement is created and starts loading while the old worker
/// drains its grace period: the same overlap a surge would give. A real surge-first (raise
/// the Deployment's replicas, wait for the new worker, then delete) would fight the replica
/// count the operator and the autoscaler apply each reconcile and keep state across
/// reconciles, for no capacity gained: an unready worker is out of the Service's endpoints
/// and serves nothing. Deleting also bypasses the PodDisruptionBudget on purpose; it guards
/// healthy workers, and this one is not.
pub fn replacements(engine: &BlazeEngine, pods: &[PodFacts], now: Timestamp) -> Vec<Replacement> {
    let rec = &engine.spec.recovery;
    let live: Vec<_> = pods.iter().filter(|p| !p.terminating).collect();
    let any_ready = live.iter().any(|p| p.ready);
    let going = pods.len() - live.len();
    let budget = (live.len() / 4).max(1).saturating_sub(going);
    live.iter()
        .filter(|p| p.download_failing.is_none())
        .filter_map(|p| {
            let reason = if any_ready && !p.ready && p.restarts >= rec.max_restarts_before_replace {
                "TooManyRestarts"
            } else if unready_too_long(p, rec.unhealthy_after_seconds, now) {
                "UnreadyTooLong"
            } else {
                return None;
            };
            Some(Replacement { pod: p.name.clone(), reason })
        })
        .take(budget)
        .collect()
}

#[cfg(test)]
mod tests;
