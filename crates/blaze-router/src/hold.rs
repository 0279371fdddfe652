//! Holding requests while there is no endpoint at all (engines scaled to zero, or still
//! starting): instead of an immediate 503, a request that finds no endpoint with a weight
//! above zero waits for a reload that brings one, up to `hold.timeoutSeconds`, with at most
//! `hold.maxRequests` held at once. Beyond either bound it is answered 503 with
//! `Retry-After`.
//!
//! The number held is the gauge `blaze_router_held_requests`, which the operator reads to wake
//! engines scaled to zero: holding is what turns a request into demand it can see.

use std::sync::Arc;
use std::time::Duration;

use blaze_api::router::HoldSpec;
use prometheus_client::metrics::gauge::Gauge;
use tokio::time::Instant;

use crate::metrics::ReasonLabels;
use crate::routes::{Routes, Table};

/// Seconds a client is told to wait before trying again after a 503 for want of an endpoint:
/// long enough not to hammer a router whose hold is full, short beside an engine's start.
pub const RETRY_AFTER_SECONDS: u32 = 5;

/// The hold settings in the units used here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bounds {
    /// Most requests held at once; 0 holds none.
    pub max_requests: u32,
    /// Longest hold.
    pub timeout: Duration,
}

impl From<&HoldSpec> for Bounds {
    fn from(s: &HoldSpec) -> Self {
        Self {
            max_requests: u32::try_from(s.max_requests).unwrap_or(0),
            timeout: Duration::from_secs(u64::try_from(s.timeout_seconds).unwrap_or(1).max(1)),
        }
    }
}

impl Bounds {
    /// Whether requests are held at all.
    pub fn enabled(&self) -> bool {
        self.max_requests > 0
    }

    /// Whether one more request may be held when `held` are already.
    pub fn admits(&self, held: u64) -> bool {
        held < u64::from(self.max_requests)
    }
}

/// Why a request was not held, or not served after its hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rejected {
    /// `maxRequests` were held already.
    Full(u32),
    /// No endpoint came within `timeoutSeconds`.
    Timeout(Duration),
}

impl Rejected {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Rejected::Full(_) => "full",
            Rejected::Timeout(_) => "timeout",
        }
    }
}

impl std::fmt::Display for Rejected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Rejected::Full(n) => {
                write!(f, "no endpoint ready, and {n} requests are held already (hold.maxRequests)")
            }
            Rejected::Timeout(t) => {
                write!(f, "no endpoint ready within {}s (hold.timeoutSeconds)", t.as_secs())
            }
        }
    }
}

/// Counts one held request in the gauge until dropped (the request served, refused, or its
/// client gone).
struct Held<'a>(&'a Gauge);

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Holds the request until `table` has an endpoint with a weight above zero, within
/// `bounds`, and returns the routes that have one.
pub async fn wait(table: &Table, bounds: Bounds) -> Result<Arc<Routes>, Rejected> {
    let m = table.metrics();
    let before = m.held.inc();
    let _held = Held(&m.held);
    let refuse = |r: Rejected| {
        m.hold_rejected.get_or_create(&ReasonLabels { reason: r.label() }).inc();
        Err(r)
    };
    if !bounds.admits(u64::try_from(before).unwrap_or(0)) {
        return refuse(Rejected::Full(bounds.max_requests));
    }
    let start = Instant::now();
    let deadline = start + bounds.timeout;
    loop {
        let reloaded = table.reloaded();
        let routes = table.load();
        if routes.weighted > 0 {
            m.hold_seconds.observe(start.elapsed().as_secs_f64());
            return Ok(routes);
        }
        if tokio::time::timeout_at(deadline, reloaded).await.is_err() {
            return refuse(Rejected::Timeout(bounds.timeout));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;
    use prometheus_client::registry::Registry;

    #[test]
    fn bounds_follow_the_spec_and_zero_holds_nothing() {
        let b = Bounds::from(&HoldSpec::default());
        assert_eq!(b, Bounds { max_requests: 256, timeout: Duration::from_secs(120) });
        assert!(b.enabled() && b.admits(255) && !b.admits(256));
        let off = Bounds::from(&HoldSpec { max_requests: 0, timeout_seconds: 1 });
        assert!(!off.enabled() && !off.admits(0));
        let odd = Bounds::from(&HoldSpec { max_requests: -1, timeout_seconds: 0 });
        assert_eq!(odd, Bounds { max_requests: 0, timeout: Duration::from_secs(1) });
    }

    fn table(addrs: &[&str]) -> Arc<Table> {
        table_in(addrs, &mut Registry::default())
    }

    fn table_in(addrs: &[&str], registry: &mut Registry) -> Arc<Table> {
        let cfg = crate::routes::tests::cfg(addrs);
        Arc::new(Table::new(cfg, Metrics::new(registry), None))
    }

    #[tokio::test(start_paused = true)]
    async fn a_held_request_gets_the_endpoints_a_reload_brings() {
        let mut registry = Registry::default();
        let t = table_in(&[], &mut registry);
        let bounds = Bounds { max_requests: 1, timeout: Duration::from_secs(60) };
        let held = tokio::spawn({
            let t = t.clone();
            async move { wait(&t, bounds).await.map(|r| r.endpoints.len()) }
        });
        // Wait until it is held; a second request finds the hold full.
        while t.metrics().held.get() == 0 {
            tokio::task::yield_now().await;
        }
        assert_eq!(wait(&t, bounds).await.unwrap_err(), Rejected::Full(1));
        assert_eq!(t.metrics().held.get(), 1);
        let mut cfg = t.load().config.clone();
        cfg.endpoints = table(&["a:1"]).load().config.endpoints.clone();
        t.apply(cfg);
        assert_eq!(held.await.unwrap(), Ok(1));
        assert_eq!(t.metrics().held.get(), 0);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(text.contains("blaze_router_hold_seconds_count 1\n"), "{text}");
        assert!(text.contains("blaze_router_hold_rejected_total{reason=\"full\"} 1\n"), "{text}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_hold_ends_at_its_timeout_and_a_weightless_reload_does_not_end_it() {
        let t = table(&[]);
        let bounds = Bounds { max_requests: 4, timeout: Duration::from_secs(30) };
        let start = tokio::time::Instant::now();
        let held = tokio::spawn({
            let t = t.clone();
            async move { wait(&t, bounds).await.map(|_| ()) }
        });
        tokio::time::sleep(Duration::from_secs(10)).await;
        let mut cfg = table(&["a:1"]).load().config.clone();
        cfg.endpoints[0].weight = 0;
        t.apply(cfg);
        let r = held.await.unwrap();
        assert_eq!(r, Err(Rejected::Timeout(Duration::from_secs(30))));
        let held_for = start.elapsed();
        assert!(held_for >= Duration::from_secs(30) && held_for < Duration::from_secs(31));
        assert_eq!(t.metrics().held.get(), 0);
    }
}
