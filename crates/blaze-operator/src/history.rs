//! What the operator observed over the last hour, for the dashboard: per engine, replicas
//! desired and ready, load and latency as the scrape loop measured them, and the scale
//! decisions with their reasons; per router, each endpoint's weight, breaker, in-flight and
//! latency; per object, the events the operator published. Everything is in memory and bounded
//! (ring buffers of [`POINTS`] samples a [`STEP_MS`] apart, [`DECISIONS`] and [`NOTES`]), and
//! forgotten with its object. The same figures are exported as `blaze_engine_*` and
//! `blaze_router_endpoint_*` gauges ([`crate::metrics::ObjectMetrics`]), so Prometheus keeps
//! the long history.
//!
//! Time is wall-clock milliseconds since the Unix epoch, passed in (charts show times of day;
//! the policies' monotonic clock would mean nothing to a reader).

use std::collections::{BTreeMap, HashMap, VecDeque};

use blaze_api::engine::EngineMetrics;
use blaze_api::router::BreakerState;
use blaze_api::routing::RoutingEndpoint;
use parking_lot::Mutex;
use serde::Serialize;

use crate::metrics::ObjectMetrics;
use crate::policy::router_stats::EndpointView;

/// Milliseconds between kept samples: several observations within one step keep the latest.
/// Ten seconds shows a scale-up (tens of seconds) and keeps an hour in 360 samples.
pub const STEP_MS: u64 = 10_000;
/// Samples kept per series: an hour at [`STEP_MS`].
pub const POINTS: usize = 360;
/// Scale decisions kept per engine: more than an hour of an engine that changes size every
/// reconcile would need is not worth the memory.
pub const DECISIONS: usize = 120;
/// Events kept per object.
pub const NOTES: usize = 20;

/// Wall-clock milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A bounded series of timed samples, at most one per [`STEP_MS`].
#[derive(Clone, Debug, Serialize)]
#[serde(transparent)]
pub struct Ring<T> {
    items: VecDeque<T>,
    #[serde(skip)]
    cap: usize,
}

/// A sample with a time.
pub trait Timed {
    /// Milliseconds since the Unix epoch.
    fn t(&self) -> u64;
}

impl<T: Timed> Ring<T> {
    /// An empty ring keeping `cap` items.
    pub fn new(cap: usize) -> Self {
        Self { items: VecDeque::new(), cap }
    }

    /// Adds `item`, replacing the last one when both fall in the same step.
    pub fn put(&mut self, item: T) {
        if self.items.back().is_some_and(|l| l.t() / STEP_MS == item.t() / STEP_MS) {
            self.items.pop_back();
        }
        self.push(item);
    }

    /// Adds `item`, dropping the oldest beyond the capacity.
    pub fn push(&mut self, item: T) {
        self.items.push_back(item);
        while self.items.len() > self.cap {
            self.items.pop_front();
        }
    }

    /// The items, oldest first.
    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.items.iter()
    }

    /// The newest item.
    pub fn last(&self) -> Option<&T> {
        self.items.back()
    }
}

/// One sample of an engine.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EnginePoint {
    /// When (ms since the epoch).
    pub t: u64,
    /// Workers the operator asks for.
    pub desired: Option<i32>,
    /// Workers ready.
    pub ready: Option<i32>,
    /// The scrape loop's figures over the engine's stable window (as in `status.metrics`).
    #[serde(flatten)]
    pub metrics: EngineMetrics,
}

impl Timed for EnginePoint {
    fn t(&self) -> u64 {
        self.t
    }
}

/// A change of an engine's desired workers and why.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Decision {
    /// When (ms since the epoch).
    pub t: u64,
    /// Workers before.
    pub from: i32,
    /// Workers after.
    pub to: i32,
    /// Why, in words.
    pub reason: String,
}

impl Timed for Decision {
    fn t(&self) -> u64 {
        self.t
    }
}

/// An event the operator published about an object.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Note {
    /// When (ms since the epoch).
    pub t: u64,
    /// Warning or not.
    pub warning: bool,
    /// CamelCase reason.
    pub reason: String,
    /// What happened.
    pub message: String,
}

impl Timed for Note {
    fn t(&self) -> u64 {
        self.t
    }
}

/// One sample of a router endpoint, as the operator weighs it.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EndpointPoint {
    /// When (ms since the epoch).
    pub t: u64,
    /// The weight published to the routers.
    pub weight: u32,
    /// The worst breaker state of any router replica.
    pub breaker: BreakerState,
    /// Requests in flight to it over every router replica (mean over the weights' window).
    pub in_flight: Option<f64>,
    /// p95 time to first token over the weights' window.
    pub p95_ms: Option<f64>,
    /// Fraction of tries that failed over the weights' window.
    pub error_rate: Option<f64>,
}

impl Timed for EndpointPoint {
    fn t(&self) -> u64 {
        self.t
    }
}

/// An engine's last hour.
#[derive(Clone, Debug, Serialize)]
pub struct EngineHistory {
    /// Samples, oldest first.
    pub points: Ring<EnginePoint>,
    /// Scale decisions, oldest first.
    pub decisions: Ring<Decision>,
    /// The latest values, carried into the next sample.
    #[serde(skip)]
    latest: EnginePoint,
}

impl Default for EngineHistory {
    fn default() -> Self {
        Self {
            points: Ring::new(POINTS),
            decisions: Ring::new(DECISIONS),
            latest: EnginePoint::default(),
        }
    }
}

/// One endpoint's last hour.
#[derive(Clone, Debug, Serialize)]
pub struct EndpointHistory {
    /// `HOST:PORT`.
    pub address: String,
    /// The engine it belongs to.
    pub engine: String,
    /// The worker pod.
    pub pod: String,
    /// Samples, oldest first.
    pub points: Ring<EndpointPoint>,
}

/// What the operator remembers, shared by the controllers (which write) and the dashboard
/// (which reads).
pub struct History {
    engines: Mutex<HashMap<String, EngineHistory>>,
    routers: Mutex<HashMap<String, BTreeMap<String, EndpointHistory>>>,
    notes: Mutex<HashMap<String, Ring<Note>>>,
    exported: ObjectMetrics,
}

impl Default for History {
    /// A history exporting into a registry of its own (for tests and benchmarks).
    fn default() -> Self {
        Self::new(ObjectMetrics::create(&mut prometheus_client::registry::Registry::default()))
    }
}

impl History {
    /// An empty history that also sets `exported`.
    pub fn new(exported: ObjectMetrics) -> Self {
        Self {
            engines: Mutex::default(),
            routers: Mutex::default(),
            notes: Mutex::default(),
            exported,
        }
    }

    /// Records an engine's (`namespace/name`) metrics from a scrape at `t`.
    pub fn engine_metrics(&self, engine: &str, t: u64, m: &EngineMetrics) {
        self.engine_update(engine, t, |p| p.metrics = m.clone());
    }

    /// Records an engine's workers desired and ready at `t`.
    pub fn engine_replicas(&self, engine: &str, t: u64, desired: i32, ready: i32) {
        self.engine_update(engine, t, |p| {
            p.desired = Some(desired);
            p.ready = Some(ready);
        });
    }

    /// Exports an engine's autoscaling bounds (the most workers, the p95 latency target) for
    /// alerts; `None` for one the operator does not scale or that sets no target.
    pub fn engine_bounds(&self, engine: &str, max: Option<i32>, target_p95_ms: Option<i32>) {
        self.exported.bounds(engine, max, target_p95_ms);
    }

    fn engine_update(&self, engine: &str, t: u64, f: impl FnOnce(&mut EnginePoint)) {
        let point = {
            let mut engines = self.engines.lock();
            let h = engines.entry(engine.to_owned()).or_default();
            f(&mut h.latest);
            h.latest.t = t;
            h.points.put(h.latest.clone());
            h.latest.clone()
        };
        self.exported.engine(engine, &point);
    }

    /// Records a change of an engine's desired workers at `t`, and why.
    pub fn scaled(&self, engine: &str, t: u64, from: i32, to: i32, reason: String) {
        let d = Decision { t, from, to, reason: reason.clone() };
        self.engines.lock().entry(engine.to_owned()).or_default().decisions.push(d);
        self.exported.scaled(engine, from, to);
    }

    /// Records a router's (`namespace/name`) endpoints at `t`: the weights published and what
    /// the routers reported of each. Endpoints gone for longer than the history's span are
    /// forgotten.
    pub fn router(
        &self,
        router: &str,
        t: u64,
        eps: &[RoutingEndpoint],
        observed: &BTreeMap<String, EndpointView>,
    ) {
        let mut routers = self.routers.lock();
        let all = routers.entry(router.to_owned()).or_default();
        for e in eps {
            let v = observed.get(&e.address).cloned().unwrap_or_default();
            let p = EndpointPoint {
                t,
                weight: e.weight,
                breaker: v.breaker,
                in_flight: v.stats.in_flight,
                p95_ms: v.stats.p95_ms,
                error_rate: v.stats.error_rate,
            };
            self.exported.endpoint(router, e, &p);
            all.entry(e.address.clone())
                .or_insert_with(|| EndpointHistory {
                    address: e.address.clone(),
                    engine: e.engine.clone(),
                    pod: e.pod.clone(),
                    points: Ring::new(POINTS),
                })
                .points
                .put(p);
        }
        let span = STEP_MS * POINTS as u64;
        all.retain(|addr, h| {
            let current = eps.iter().any(|e| &e.address == addr);
            if !current {
                self.exported.forget_endpoint(router, &h.engine, addr);
            }
            current || h.points.last().is_some_and(|p| p.t + span > t)
        });
    }

    /// Records an event published about an object (`Kind/namespace/name`).
    pub fn note(&self, object: &str, note: Note) {
        self.notes.lock().entry(object.to_owned()).or_insert_with(|| Ring::new(NOTES)).push(note);
    }

    /// An engine's last hour, if anything was recorded.
    pub fn engine(&self, engine: &str) -> Option<EngineHistory> {
        self.engines.lock().get(engine).cloned()
    }

    /// A router's endpoints' last hour, by address.
    pub fn router_endpoints(&self, router: &str) -> Vec<EndpointHistory> {
        self.routers.lock().get(router).map(|m| m.values().cloned().collect()).unwrap_or_default()
    }

    /// The events published about an object (`Kind/namespace/name`), oldest first.
    pub fn notes(&self, object: &str) -> Vec<Note> {
        self.notes.lock().get(object).map(|r| r.iter().cloned().collect()).unwrap_or_default()
    }

    /// Forgets a deleted engine.
    pub fn forget_engine(&self, engine: &str) {
        self.engines.lock().remove(engine);
        self.notes.lock().remove(&format!("BlazeEngine/{engine}"));
        self.exported.forget_engine(engine);
    }

    /// Forgets a deleted router.
    pub fn forget_router(&self, router: &str) {
        if let Some(eps) = self.routers.lock().remove(router) {
            for h in eps.values() {
                self.exported.forget_endpoint(router, &h.engine, &h.address);
            }
        }
        self.notes.lock().remove(&format!("BlazeRouter/{router}"));
    }
}

/// Why an engine's desired workers went from `from` to `to`, in words: what a reader of the
/// dashboard needs to tell a scale-up for load from one for a burst or a wake-up.
pub fn scale_reason(
    spec: &blaze_api::engine::AutoscalingSpec,
    from: i32,
    to: i32,
    panicking: bool,
    sample: Option<&crate::policy::autoscale::Sample>,
) -> String {
    use blaze_api::engine::AutoscalingMode;
    let load = sample.map_or_else(String::new, |s| {
        let p95 = s.p95_ms.map_or_else(String::new, |p| format!(", p95 {p:.0} ms"));
        format!(" (in flight {:.1}{p95})", s.in_flight)
    });
    match spec.mode {
        AutoscalingMode::Off => return format!("spec.replicas set to {to} (autoscaling off)"),
        AutoscalingMode::External => {
            return format!("spec.replicas set to {to} through the scale subresource");
        }
        AutoscalingMode::Blaze => {}
    }
    if to == spec.min_replicas && from < to {
        return format!("raised to minReplicas {to}");
    }
    if spec.max_replicas == Some(to) && from > to {
        return format!("lowered to maxReplicas {to}");
    }
    if to > from {
        if from == 0 {
            format!("woken from zero: requests held by a router{load}")
        } else if panicking {
            format!("panic mode: a burst in the panic window{load}")
        } else {
            format!("load above target over the stable window{load}")
        }
    } else if to == 0 {
        "scaled to zero: no load for scaleDownDelaySeconds".to_owned()
    } else {
        format!("load below target for scaleDownDelaySeconds{load}")
    }
}

#[cfg(test)]
mod tests;
