//! The operator's own metrics: reconciles, failures by reason, reconcile durations, and the
//! number of objects waiting for a retry; and what it observes of each engine and router
//! endpoint ([`ObjectMetrics`], the dashboard's history for Prometheus). One registry is made
//! in `main` and handed down.

use std::sync::atomic::AtomicU64;
use std::time::Instant;

use blaze_api::routing::RoutingEndpoint;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Labels naming the controller.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ControllerLabels {
    /// `engine` or `router`.
    pub(crate) controller: String,
}

/// Labels of a failure.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ErrorLabels {
    /// `engine` or `router`.
    pub(crate) controller: String,
    /// [`crate::Error::metric_label`].
    pub(crate) reason: String,
}

/// Labels of a failed scrape.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ScrapeLabels {
    /// `worker` or `router`.
    pub(crate) target: String,
    /// `io`, `timeout` or `status`.
    pub(crate) reason: String,
}

/// Labels naming an engine.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EngineLabels {
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub engine: String,
}

/// Labels of a scale decision.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ScaleLabels {
    /// The engine's namespace.
    pub namespace: String,
    /// The engine's name.
    pub engine: String,
    /// `up` or `down`.
    pub direction: &'static str,
}

/// Labels naming a router's endpoint.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouterEndpointLabels {
    /// The router's namespace.
    pub namespace: String,
    /// The router's name.
    pub router: String,
    /// The engine the endpoint belongs to.
    pub engine: String,
    /// `HOST:PORT`.
    pub endpoint: String,
}

/// A gauge of a measured quantity.
type Level = Gauge<f64, AtomicU64>;

blaze_telemetry::metrics! {
    /// What the operator observes of each engine and router endpoint, as gauges: the latest
    /// samples of [`crate::history::History`]. Names do not repeat what routers export of
    /// their endpoints themselves (`blaze_router_endpoint_in_flight`, `_breaker_state`, the
    /// latency histograms): these are the operator's view over all router replicas.
    #[derive(Clone)]
    pub struct ObjectMetrics {
        /// Workers the operator asks for.
        desired: Family<EngineLabels, Gauge> =
            "engine_desired_replicas", "Workers the operator asks for, per engine";
        /// Workers ready.
        ready: Family<EngineLabels, Gauge> = "engine_ready_replicas", "Workers ready, per engine";
        /// Requests queued or running over the stable window.
        in_flight: Family<EngineLabels, Level> =
            "engine_in_flight", "Requests queued or running (mean over the stable window)";
        /// Median latency over the stable window.
        p50: Family<EngineLabels, Level> =
            "engine_latency_p50_seconds", "Median request latency over the stable window";
        /// p95 latency over the stable window.
        p95: Family<EngineLabels, Level> =
            "engine_latency_p95_seconds", "p95 request latency over the stable window";
        /// p95 time to first token over the stable window.
        ttft: Family<EngineLabels, Level> =
            "engine_ttft_p95_seconds", "p95 time to first token over the stable window";
        /// Tokens generated per second over the stable window.
        tokens: Family<EngineLabels, Level> =
            "engine_tokens_per_second", "Tokens generated per second over the stable window";
        /// Fraction of requests the engine failed over the stable window.
        errors: Family<EngineLabels, Level> =
            "engine_error_ratio", "Fraction of finished requests the engine failed";
        /// The most workers the autoscaler may ask for.
        max: Family<EngineLabels, Gauge> = "engine_max_replicas",
            "Most workers the autoscaler may ask for, per engine the operator scales";
        /// The p95 latency the autoscaler adds workers to stay under.
        target_p95: Family<EngineLabels, Level> = "engine_target_latency_p95_seconds",
            "p95 latency the autoscaler adds workers to stay under, per engine that sets one";
        /// Changes of the desired workers, by direction.
        scale: Family<ScaleLabels, Counter> =
            "engine_scale_decisions", "Changes of an engine's desired workers, by direction";
        /// The weight the operator published for an endpoint.
        weight: Family<RouterEndpointLabels, Gauge> =
            "router_endpoint_published_weight", "Weight the operator published to the routers";
        /// p95 time to first token over the weights' window, all router replicas together.
        endpoint_p95: Family<RouterEndpointLabels, Level> = "router_endpoint_ttft_p95_seconds",
            "p95 time to first token over the weights' window, all router replicas";
        /// Fraction of tries that failed over the weights' window.
        endpoint_errors: Family<RouterEndpointLabels, Level> = "router_endpoint_error_ratio",
            "Fraction of tries that failed over the weights' window, all router replicas";
        /// Worst breaker state over router replicas: 0 closed, 1 open, 2 half-open.
        endpoint_breaker: Family<RouterEndpointLabels, Gauge> =
            "router_endpoint_worst_breaker_state",
            "Worst breaker state over router replicas: 0 closed, 1 open, 2 half-open";
    }
}

/// `(namespace, name)` of a `namespace/name` key.
fn split(key: &str) -> (String, String) {
    let (ns, name) = key.split_once('/').unwrap_or(("", key));
    (ns.to_owned(), name.to_owned())
}

impl ObjectMetrics {
    /// Sets an engine's (`namespace/name`) gauges to `p`; a figure not measured is removed.
    pub(crate) fn engine(&self, engine: &str, p: &crate::history::EnginePoint) {
        let (namespace, engine) = split(engine);
        let l = EngineLabels { namespace, engine };
        if let Some(d) = p.desired {
            self.desired.get_or_create(&l).set(i64::from(d));
        }
        if let Some(r) = p.ready {
            self.ready.get_or_create(&l).set(i64::from(r));
        }
        let m = &p.metrics;
        let secs = |ms: Option<f64>| ms.map(|v| v / 1000.0);
        for (family, v) in [
            (&self.in_flight, m.in_flight),
            (&self.p50, secs(m.p50_latency_ms)),
            (&self.p95, secs(m.p95_latency_ms)),
            (&self.ttft, secs(m.ttft_p95_ms)),
            (&self.tokens, m.tokens_per_second),
            (&self.errors, m.error_rate),
        ] {
            set_or_remove(family, &l, v);
        }
    }

    /// Sets an engine's autoscaling bounds: the most workers and the p95 latency target,
    /// each removed when the engine has none (not scaled by the operator, or no target).
    pub(crate) fn bounds(&self, engine: &str, max: Option<i32>, target_p95_ms: Option<i32>) {
        let (namespace, engine) = split(engine);
        let l = EngineLabels { namespace, engine };
        match max {
            Some(m) => {
                self.max.get_or_create(&l).set(i64::from(m));
            }
            None => {
                self.max.remove(&l);
            }
        }
        set_or_remove(&self.target_p95, &l, target_p95_ms.map(|ms| f64::from(ms) / 1000.0));
    }

    /// Counts a change of an engine's desired workers.
    pub(crate) fn scaled(&self, engine: &str, from: i32, to: i32) {
        let (namespace, engine) = split(engine);
        let direction = if to > from { "up" } else { "down" };
        self.scale.get_or_create(&ScaleLabels { namespace, engine, direction }).inc();
    }

    /// Removes a deleted engine's series.
    pub(crate) fn forget_engine(&self, engine: &str) {
        let (namespace, engine) = split(engine);
        let l = EngineLabels { namespace: namespace.clone(), engine: engine.clone() };
        self.desired.remove(&l);
        self.ready.remove(&l);
        self.max.remove(&l);
        let levels = [&self.in_flight, &self.p50, &self.p95, &self.ttft, &self.tokens];
        for f in levels.into_iter().chain([&self.errors, &self.target_p95]) {
            f.remove(&l);
        }
        for direction in ["up", "down"] {
            let l = ScaleLabels { namespace: namespace.clone(), engine: engine.clone(), direction };
            self.scale.remove(&l);
        }
    }

    /// Sets a router's (`namespace/name`) endpoint gauges.
    pub(crate) fn endpoint(
        &self,
        router: &str,
        e: &RoutingEndpoint,
        p: &crate::history::EndpointPoint,
    ) {
        let l = endpoint_labels(router, &e.engine, &e.address);
        self.weight.get_or_create(&l).set(i64::from(p.weight));
        let breaker = match p.breaker {
            blaze_api::router::BreakerState::Closed => 0,
            blaze_api::router::BreakerState::Open => 1,
            blaze_api::router::BreakerState::HalfOpen => 2,
        };
        self.endpoint_breaker.get_or_create(&l).set(breaker);
        set_or_remove(&self.endpoint_p95, &l, p.p95_ms.map(|v| v / 1000.0));
        set_or_remove(&self.endpoint_errors, &l, p.error_rate);
    }

    /// Removes an endpoint's series.
    pub(crate) fn forget_endpoint(&self, router: &str, engine: &str, address: &str) {
        let l = endpoint_labels(router, engine, address);
        self.weight.remove(&l);
        self.endpoint_breaker.remove(&l);
        self.endpoint_p95.remove(&l);
        self.endpoint_errors.remove(&l);
    }
}

fn endpoint_labels(router: &str, engine: &str, address: &str) -> RouterEndpointLabels {
    let (namespace, router) = split(router);
    RouterEndpointLabels {
        namespace,
        router,
        engine: engine.to_owned(),
        endpoint: address.to_owned(),
    }
}

fn set_or_remove<L>(family: &Family<L, Level>, l: &L, v: Option<f64>)
where
    L: Clone + std::hash::Hash + Eq,
{
    match v {
        Some(v) => {
            family.get_or_create(l).set(v);
        }
        None => {
            family.remove(l);
        }
    }
}

fn reconcile_histogram() -> Histogram {
    // Reconciles take milliseconds to a few seconds against a busy API server.
    Histogram::new([0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0])
}

fn cold_start_histogram() -> Histogram {
    // From held requests waking an engine at zero to its first ready worker: a pod start and
    // a model load, seconds to minutes.
    Histogram::new([1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0])
}

blaze_telemetry::metrics! {
    /// What the controllers do (registered under `blaze_operator_`).
    #[derive(Clone)]
    struct ControllerMetrics {
        /// Reconciles run.
        reconciles: Family<ControllerLabels, Counter> = "reconciles", "Reconciles run";
        /// Failed scrapes of workers and routers, by target and reason.
        scrape_failures: Family<ScrapeLabels, Counter> = "scrape_failures",
            "Scrapes of a worker's or router's /metrics that failed: missing samples";
        /// Failed reconciles, by reason.
        failures: Family<ErrorLabels, Counter> =
            "reconcile_errors", "Reconciles that failed, by reason";
        /// Time per reconcile.
        duration: Family<ControllerLabels, Histogram, fn() -> Histogram> =
            "reconcile_duration_seconds", "Time spent in one reconcile",
            Family::new_with_constructor(reconcile_histogram);
        /// Objects waiting to retry after a failure.
        backing_off: Family<ControllerLabels, Gauge> =
            "objects_backing_off", "Objects waiting to retry after a failure";
        /// Cold starts begun.
        cold_starts: Counter = "cold_starts",
            "Engines at zero workers woken by requests a router held for them";
        /// Cold starts' durations.
        cold_start_seconds: Histogram = "cold_start_seconds",
            "Time from held requests waking an engine at zero to its first ready worker",
            cold_start_histogram();
    }
}

/// Metrics of the controllers.
#[derive(Clone)]
pub struct Metrics {
    controllers: ControllerMetrics,
    /// What the operator observes of engines and router endpoints.
    pub objects: ObjectMetrics,
}

impl Metrics {
    /// Creates the metrics and registers them: the controllers' under `blaze_operator_`, what
    /// they observe of objects under `blaze_`.
    pub fn new(registry: &mut Registry) -> Self {
        Self {
            controllers: ControllerMetrics::create(
                registry.sub_registry_with_prefix("blaze_operator"),
            ),
            objects: ObjectMetrics::create(registry.sub_registry_with_prefix("blaze")),
        }
    }

    /// Counts a cold start begun.
    pub(crate) fn cold_start_begun(&self) {
        self.controllers.cold_starts.inc();
    }

    /// Records a cold start that ended `secs` after it began.
    pub(crate) fn cold_start_done(&self, secs: f64) {
        self.controllers.cold_start_seconds.observe(secs);
    }

    /// Counts a reconcile and returns a guard that records its duration when dropped.
    pub(crate) fn reconcile(&self, controller: &str) -> DurationGuard {
        let l = ControllerLabels { controller: controller.to_owned() };
        self.controllers.reconciles.get_or_create(&l).inc();
        let hist = self.controllers.duration.get_or_create(&l).clone();
        DurationGuard { hist, start: Instant::now() }
    }

    /// Counts a failure.
    pub(crate) fn failure(&self, controller: &str, e: &crate::Error) {
        let l =
            ErrorLabels { controller: controller.to_owned(), reason: e.metric_label().to_owned() };
        self.controllers.failures.get_or_create(&l).inc();
    }

    /// Counts a failed scrape of a `target` (`worker` or `router`).
    pub(crate) fn scrape_failed(&self, target: &str, reason: &str) {
        let l = ScrapeLabels { target: target.to_owned(), reason: reason.to_owned() };
        self.controllers.scrape_failures.get_or_create(&l).inc();
    }

    /// Sets the number of objects backing off.
    pub(crate) fn set_backing_off(&self, controller: &str, n: usize) {
        let l = ControllerLabels { controller: controller.to_owned() };
        self.controllers.backing_off.get_or_create(&l).set(n as i64);
    }
}

/// Records the time since its creation in a histogram when dropped.
pub(crate) struct DurationGuard {
    hist: Histogram,
    start: Instant,
}

impl Drop for DurationGuard {
    fn drop(&mut self) {
        self.hist.observe(self.start.elapsed().as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_show_in_the_exposition() {
        let mut reg = Registry::default();
        let m = Metrics::new(&mut reg);
        drop(m.reconcile("engine"));
        m.failure("engine", &crate::Error::MissingField("metadata.uid"));
        m.set_backing_off("engine", 1);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &reg).unwrap();
        assert!(out.contains("blaze_operator_reconciles_total{controller=\"engine\"} 1"), "{out}");
        assert!(out.contains("blaze_operator_reconcile_errors_total{controller=\"engine\",reason=\"missing_field\"} 1"), "{out}");
        assert!(
            out.contains(
                "blaze_operator_reconcile_duration_seconds_count{controller=\"engine\"} 1"
            ),
            "{out}"
        );
        assert!(
            out.contains("blaze_operator_objects_backing_off{controller=\"engine\"} 1"),
            "{out}"
        );
    }
}
