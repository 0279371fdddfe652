//! The operator's own metrics: reconciles, failures by reason, reconcile durations, and the
//! number of objects waiting for a retry. One registry is made in `main` and handed down.

use std::time::Instant;

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

/// Metrics of the controllers.
#[derive(Clone)]
pub struct Metrics {
    scrape_failures: Family<ScrapeLabels, Counter>,
    reconciles: Family<ControllerLabels, Counter>,
    failures: Family<ErrorLabels, Counter>,
    duration: Family<ControllerLabels, Histogram>,
    backing_off: Family<ControllerLabels, Gauge>,
    cold_starts: Counter,
    cold_start_seconds: Histogram,
}

impl Metrics {
    /// Creates the metrics and registers them under `blaze_operator_`.
    pub fn new(registry: &mut Registry) -> Self {
        let m = Self {
            scrape_failures: Family::default(),
            reconciles: Family::default(),
            failures: Family::default(),
            // Reconciles take milliseconds to a few seconds against a busy API server.
            duration: Family::new_with_constructor(|| {
                Histogram::new([0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0])
            }),
            backing_off: Family::default(),
            cold_starts: Counter::default(),
            // From held requests waking an engine at zero to its first ready worker: a pod
            // start and a model load, seconds to minutes.
            cold_start_seconds: Histogram::new([
                1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0,
            ]),
        };
        let r = registry.sub_registry_with_prefix("blaze_operator");
        r.register("reconciles", "Reconciles run", m.reconciles.clone());
        r.register(
            "scrape_failures",
            "Scrapes of a worker's or router's /metrics that failed: missing samples",
            m.scrape_failures.clone(),
        );
        r.register("reconcile_errors", "Reconciles that failed, by reason", m.failures.clone());
        r.register("reconcile_duration_seconds", "Time spent in one reconcile", m.duration.clone());
        r.register(
            "objects_backing_off",
            "Objects waiting to retry after a failure",
            m.backing_off.clone(),
        );
        r.register(
            "cold_starts",
            "Engines at zero workers woken by requests a router held for them",
            m.cold_starts.clone(),
        );
        r.register(
            "cold_start_seconds",
            "Time from held requests waking an engine at zero to its first ready worker",
            m.cold_start_seconds.clone(),
        );
        m
    }

    /// Counts a cold start begun.
    pub(crate) fn cold_start_begun(&self) {
        self.cold_starts.inc();
    }

    /// Records a cold start that ended `secs` after it began.
    pub(crate) fn cold_start_done(&self, secs: f64) {
        self.cold_start_seconds.observe(secs);
    }

    /// Counts a reconcile and returns a guard that records its duration when dropped.
    pub(crate) fn reconcile(&self, controller: &str) -> DurationGuard {
        let l = ControllerLabels { controller: controller.to_owned() };
        self.reconciles.get_or_create(&l).inc();
        DurationGuard { hist: self.duration.get_or_create(&l).clone(), start: Instant::now() }
    }

    /// Counts a failure.
    pub(crate) fn failure(&self, controller: &str, e: &crate::Error) {
        let l =
            ErrorLabels { controller: controller.to_owned(), reason: e.metric_label().to_owned() };
        self.failures.get_or_create(&l).inc();
    }

    /// Counts a failed scrape of a `target` (`worker` or `router`).
    pub(crate) fn scrape_failed(&self, target: &str, reason: &str) {
        let l = ScrapeLabels { target: target.to_owned(), reason: reason.to_owned() };
        self.scrape_failures.get_or_create(&l).inc();
    }

    /// Sets the number of objects backing off.
    pub(crate) fn set_backing_off(&self, controller: &str, n: usize) {
        let l = ControllerLabels { controller: controller.to_owned() };
        self.backing_off.get_or_create(&l).set(n as i64);
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
