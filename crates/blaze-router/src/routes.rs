//! The live routing table: the current endpoints with their strategy, swapped atomically on
//! every reload. Endpoints that survive a reload (same address) keep their in-flight count,
//! latency estimate, breaker and health, so a reload drops no request and resets nothing.
//! Endpoints a reload drops are marked removed, which wakes the tries still waiting on them,
//! and every reload wakes the requests held for want of an endpoint ([`crate::hold`]).

use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use blaze_api::routing::RoutingConfig;
use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio::sync::futures::Notified;

use crate::balance::{Balancer, PickContext};
use crate::breaker::{Admit, BreakerConfig, max_ejections};
use crate::budget::RetryBudget;
use crate::endpoint::Endpoint;
use crate::metrics::{EndpointLabels, EndpointMetrics, Metrics};

/// One generation of the routing table.
#[derive(Debug)]
pub struct Routes {
    /// The document it was built from.
    pub config: RoutingConfig,
    /// Endpoints, in document order.
    pub endpoints: Vec<Arc<Endpoint>>,
    /// Metric handles, parallel to `endpoints`.
    pub endpoint_metrics: Vec<EndpointMetrics>,
    /// The strategy over `endpoints`.
    pub balancer: Balancer,
    /// Endpoints with a weight above zero: none, and a request has nowhere to go.
    pub weighted: usize,
    max_ejected: usize,
    eject_lock: Mutex<()>,
}

/// An endpoint chosen for one try.
#[derive(Debug, Clone, Copy)]
pub struct Choice {
    /// Index into [`Routes::endpoints`].
    pub index: usize,
    /// Whether it is a half-open probe.
    pub probe: bool,
    /// The endpoint's ejection count when it was picked ([`Endpoint::ejected_since`]).
    pub epoch: u64,
}

impl Routes {
    /// Picks an endpoint not in `tried` that is healthy and whose breaker admits the request.
    /// When none qualifies it balances over every untried endpoint (and counts a panic), so
    /// a router whose checks all fail still tries rather than refusing everything. Endpoints
    /// a reload dropped are never picked (a retry may still hold an older table).
    pub fn choose(&self, cx: &PickContext, tried: &[usize], metrics: &Metrics) -> Option<Choice> {
        let mut refused: Vec<usize> = Vec::new();
        for _ in 0..=self.endpoints.len() {
            let usable = |i: usize| {
                let e = &self.endpoints[i];
                !tried.contains(&i)
                    && !refused.contains(&i)
                    && e.is_healthy()
                    && e.breaker_allows(cx.now)
                    && !e.is_removed()
            };
            let Some(i) = self.balancer.pick(&self.endpoints, cx, &usable) else { break };
            let e = &self.endpoints[i];
            let probe = match e.admit(cx.now) {
                Admit::Yes => false,
                Admit::Probe => true,
                // Another request took the last probe slot in between.
                Admit::No => {
                    refused.push(i);
                    continue;
                }
            };
            return Some(Choice { index: i, probe, epoch: e.ejection_epoch() });
        }
        let untried = |i: usize| !tried.contains(&i) && !self.endpoints[i].is_removed();
        let i = self.balancer.pick(&self.endpoints, cx, &untried)?;
        metrics.panic.inc();
        Some(Choice { index: i, probe: false, epoch: self.endpoints[i].ejection_epoch() })
    }

    /// Where `ep` (an endpoint of another generation of the table) is in this one.
    pub fn position(&self, ep: &Arc<Endpoint>) -> Option<usize> {
        let i = ep.index.load(std::sync::atomic::Ordering::Relaxed) as usize;
        self.endpoints.get(i).filter(|e| Arc::ptr_eq(e, ep)).map(|_| i)
    }

    /// Feeds a try's outcome to the endpoint's breaker.
    pub fn record(&self, index: usize, ok: bool, now: Instant) {
        let ep = &self.endpoints[index];
        if !ok {
            self.endpoint_metrics[index].errors.inc();
        }
        match ep.record(ok, now, || self.may_eject(ep)) {
            Some(true) => {
                self.endpoint_metrics[index].ejections.inc();
                tracing::warn!(endpoint = %ep.address, "circuit breaker opened");
            }
            Some(false) => {
                ep.set_ejected(false);
                tracing::info!(endpoint = %ep.address, "circuit breaker closed");
            }
            None => {}
        }
    }

    fn may_eject(&self, ep: &Endpoint) -> bool {
        let _one_at_a_time = self.eject_lock.lock();
        let ejected = self.endpoints.iter().filter(|e| e.is_ejected()).count();
        if ejected < self.max_ejected {
            ep.set_ejected(true);
            true
        } else {
            false
        }
    }

    /// Endpoints that would take traffic now (weight above zero, healthy, breaker admitting).
    pub fn ready_endpoints(&self, now: Instant) -> usize {
        self.endpoints
            .iter()
            .filter(|e| e.weight() > 0 && e.is_healthy() && e.breaker_allows(now))
            .count()
    }
}

/// The table every request reads and every reload replaces.
pub struct Table {
    current: ArcSwap<Routes>,
    reloaded: Notify,
    metrics: Metrics,
    /// The retry budget, shared across reloads.
    pub budget: RetryBudget,
    breaker_open: Option<(Duration, Duration)>,
}

impl std::fmt::Debug for Table {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Table").field("current", &self.current).finish_non_exhaustive()
    }
}

impl Table {
    /// A table for `cfg`. `breaker_open` overrides the breaker's open times (tests and
    /// benchmarks need them shorter than the API's whole seconds).
    pub fn new(
        cfg: RoutingConfig,
        metrics: Metrics,
        breaker_open: Option<(Duration, Duration)>,
    ) -> Self {
        let now = Instant::now();
        let budget = RetryBudget::new(u32::try_from(cfg.retries.budget_percent).unwrap_or(0), now);
        let routes = build(cfg, &[], &metrics, breaker_open, now);
        Self {
            current: ArcSwap::from_pointee(routes),
            reloaded: Notify::new(),
            metrics,
            budget,
            breaker_open,
        }
    }

    /// The current routes.
    pub fn load(&self) -> Arc<Routes> {
        self.current.load_full()
    }

    /// The metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Replaces the routes with ones built from `cfg`, keeping surviving endpoints' state.
    /// The endpoints it drops are marked removed (their waiting tries go elsewhere, and find
    /// the new routes), then the requests held for an endpoint are woken.
    pub fn apply(&self, cfg: RoutingConfig) {
        let old = self.load();
        let routes = build(cfg, &old.endpoints, &self.metrics, self.breaker_open, Instant::now());
        tracing::info!(endpoints = routes.endpoints.len(), strategy = ?routes.balancer.strategy(), "routing configuration applied");
        let routes = Arc::new(routes);
        self.current.store(routes.clone());
        for e in old.endpoints.iter().filter(|e| routes.position(e).is_none()) {
            e.remove();
        }
        self.reloaded.notify_waiters();
    }

    /// A future that completes at the next reload. It hears every reload from the moment it
    /// is created: create it, then look at [`Table::load`], and no reload falls between.
    pub fn reloaded(&self) -> Notified<'_> {
        self.reloaded.notified()
    }
}

fn build(
    cfg: RoutingConfig,
    old: &[Arc<Endpoint>],
    metrics: &Metrics,
    breaker_open: Option<(Duration, Duration)>,
    now: Instant,
) -> Routes {
    let mut breaker = BreakerConfig::from(&cfg.circuit_breaker);
    if let Some((open, max)) = breaker_open {
        breaker = breaker.with_open(open, max);
    }
    let slow_start = Duration::from_secs(u64::from(cfg.slow_start_seconds));
    let mut endpoints = Vec::with_capacity(cfg.endpoints.len());
    let mut endpoint_metrics = Vec::with_capacity(cfg.endpoints.len());
    for (i, spec) in cfg.endpoints.iter().enumerate() {
        let ep = match old.iter().find(|e| e.address == spec.address) {
            Some(e) => {
                e.reconfigure(spec.weight, breaker.clone());
                e.clone()
            }
            // The very first endpoints start at full weight: slow start is for newcomers, and
            // a router that just started has no incumbents to protect.
            None => {
                let ss = if old.is_empty() { Duration::ZERO } else { slow_start };
                Endpoint::new(
                    spec.address.clone(),
                    spec.engine.clone(),
                    spec.pod.clone(),
                    spec.weight,
                    breaker.clone(),
                    ss,
                    now,
                )
            }
        };
        ep.index.store(u32::try_from(i).unwrap_or(u32::MAX), std::sync::atomic::Ordering::Relaxed);
        let labels = EndpointLabels { endpoint: ep.address.clone(), engine: ep.engine.clone() };
        endpoint_metrics.push(metrics.endpoint(&labels));
        endpoints.push(ep);
    }
    let pct = u32::try_from(cfg.circuit_breaker.max_ejection_percent).unwrap_or(0);
    let balancer = Balancer::new(cfg.strategy, &endpoints, cfg.hash_load_factor);
    Routes {
        weighted: endpoints.iter().filter(|e| e.weight() > 0).count(),
        max_ejected: max_ejections(endpoints.len(), pct),
        config: cfg,
        endpoints,
        endpoint_metrics,
        balancer,
        eject_lock: Mutex::new(()),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use blaze_api::routing::RoutingEndpoint;
    use prometheus_client::registry::Registry;

    /// A document with endpoints at `addrs`, weight 1 each, defaults otherwise.
    pub(crate) fn cfg(addrs: &[&str]) -> RoutingConfig {
        let endpoints = addrs
            .iter()
            .map(|a| RoutingEndpoint {
                address: (*a).into(),
                engine: String::new(),
                pod: String::new(),
                weight: 1,
            })
            .collect();
        RoutingConfig { endpoints, ..RoutingConfig::default() }
    }

    fn table(addrs: &[&str]) -> Table {
        Table::new(cfg(addrs), Metrics::new(&mut Registry::default()), None)
    }

    #[test]
    fn a_reload_keeps_surviving_endpoints_state() {
        let t = table(&["a:1", "b:2"]);
        let old = t.load();
        let held = old.endpoints[1].start(Instant::now());
        t.apply(cfg(&["b:2", "c:3"]));
        let r = t.load();
        assert_eq!(r.endpoints[0].address, "b:2");
        assert_eq!(r.endpoints[0].in_flight(), 1);
        // The dropped endpoint is marked, and the survivor found in the new table.
        assert!(old.endpoints[0].is_removed() && !old.endpoints[1].is_removed());
        assert_eq!(r.position(&old.endpoints[1]), Some(0));
        assert_eq!(r.position(&old.endpoints[0]), None);
        let cx = PickContext { now: Instant::now(), key: None };
        assert_eq!(old.choose(&cx, &[1], t.metrics()).map(|c| c.index), None, "removed");
        drop(held);
        assert_eq!(r.endpoints[0].in_flight(), 0);
        // The newcomer ramps up; the first endpoints did not.
        let now = Instant::now();
        assert!(r.endpoints[1].effective_weight(now) < 1.0);
        assert_eq!(r.endpoints[0].effective_weight(now), 1.0);
    }

    #[test]
    fn failures_eject_at_most_the_allowed_share_and_choose_avoids_them() {
        let t = table(&["a:1", "b:2", "c:3", "d:4"]);
        let r = t.load();
        let now = Instant::now();
        for i in 0..4 {
            for _ in 0..5 {
                r.record(i, false, now);
            }
        }
        let ejected: Vec<bool> = r.endpoints.iter().map(|e| e.is_ejected()).collect();
        assert_eq!(ejected, vec![true, true, false, false], "50% of 4");
        let cx = PickContext { now, key: None };
        for _ in 0..20 {
            let c = r.choose(&cx, &[], t.metrics()).unwrap();
            assert!(c.index >= 2);
        }
        assert_eq!(r.ready_endpoints(now), 2);
    }

    #[test]
    fn with_nothing_usable_choose_panics_over_all_and_counts_it() {
        let t = table(&["a:1", "b:2"]);
        let r = t.load();
        for e in &r.endpoints {
            for _ in 0..3 {
                e.record_health(false, 2, 3);
            }
        }
        let cx = PickContext { now: Instant::now(), key: None };
        let c = r.choose(&cx, &[0], t.metrics()).unwrap();
        assert_eq!(c.index, 1);
        assert_eq!(t.metrics().panic.get(), 1);
        assert!(r.choose(&cx, &[0, 1], t.metrics()).is_none());
    }
}
