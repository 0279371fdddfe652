//! Per-endpoint latency, errors and breaker state as the routers see them, from two scrapes
//! of each router pod's `/metrics`, summed over router replicas. These feed the weights and
//! the router's per-endpoint status.

use std::collections::BTreeMap;

use blaze_api::router::BreakerState;

use super::prom::{self, Sample};
use super::weights::EndpointStats;

/// The router's series.
pub mod series {
    /// Tries sent to an endpoint (a counter).
    pub const REQUESTS: &str = "blaze_router_endpoint_requests_total";
    /// Tries that failed (a counter).
    pub const ERRORS: &str = "blaze_router_endpoint_errors_total";
    /// Time to response headers (a histogram in seconds).
    pub const TTFB: &str = "blaze_router_endpoint_ttfb_seconds";
    /// Breaker state: 0 closed, 1 open, 2 half-open (a gauge).
    pub const BREAKER: &str = "blaze_router_endpoint_breaker_state";
}

/// What the routers report of one endpoint over an interval.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EndpointView {
    /// Latency and errors, for weights.
    pub stats: EndpointStats,
    /// The worst breaker state any router replica holds.
    pub breaker: BreakerState,
}

/// Per-endpoint observations (keyed by `HOST:PORT`) from scrapes of router pods now and
/// before (keyed by pod). Endpoints no request reached in the interval have no latency.
pub fn observe(
    before: &BTreeMap<String, Vec<Sample>>,
    now: &BTreeMap<String, Vec<Sample>>,
) -> BTreeMap<String, EndpointView> {
    let mut buckets: BTreeMap<String, BTreeMap<u64, (f64, f64)>> = BTreeMap::new();
    let mut counts: BTreeMap<String, (f64, f64)> = BTreeMap::new();
    let mut out: BTreeMap<String, EndpointView> = BTreeMap::new();
    for (pod, samples) in now {
        let prev = before.get(pod).map(Vec::as_slice).unwrap_or_default();
        for s in samples {
            let Some(ep) = s.labels.get("endpoint") else { continue };
            let delta = s.value - previous(prev, s).filter(|p| *p <= s.value).unwrap_or(0.0);
            let entry = out.entry(ep.clone()).or_default();
            entry.stats.engine = s.labels.get("engine").cloned().unwrap_or_default();
            match s.name.as_str() {
                series::REQUESTS => counts.entry(ep.clone()).or_default().0 += delta,
                series::ERRORS => counts.entry(ep.clone()).or_default().1 += delta,
                series::BREAKER => entry.breaker = worse(entry.breaker, s.value),
                n if n == format!("{}_bucket", series::TTFB) => {
                    let Some(le) = s.labels.get("le").and_then(|v| prom::parse_value(v)) else {
                        continue;
                    };
                    let b = buckets
                        .entry(ep.clone())
                        .or_default()
                        .entry(le.to_bits())
                        .or_insert((le, 0.0));
                    b.1 += delta;
                }
                _ => {}
            }
        }
    }
    for (ep, o) in &mut out {
        if let Some(b) = buckets.get(ep) {
            let mut v: Vec<(f64, f64)> = b.values().copied().collect();
            v.sort_by(|a, b| a.0.total_cmp(&b.0));
            o.stats.p95_ms = prom::quantile(&v, 0.95).map(|s| s * 1000.0);
        }
        if let Some((req, err)) = counts.get(ep).filter(|(r, _)| *r > 0.0) {
            o.stats.error_rate = Some((err / req).clamp(0.0, 1.0));
        }
        // Endpoints the routers already know are past any slow start the operator applies.
        o.stats.age_s = f64::MAX;
    }
    out
}

/// The same series (name and labels) in an earlier scrape.
fn previous(prev: &[Sample], s: &Sample) -> Option<f64> {
    prev.iter().find(|p| p.name == s.name && p.labels == s.labels).map(|p| p.value)
}

fn worse(a: BreakerState, code: f64) -> BreakerState {
    let b = match code as i64 {
        1 => BreakerState::Open,
        2 => BreakerState::HalfOpen,
        _ => BreakerState::Closed,
    };
    let rank = |s: BreakerState| match s {
        BreakerState::Closed => 0,
        BreakerState::HalfOpen => 1,
        BreakerState::Open => 2,
    };
    if rank(b) > rank(a) { b } else { a }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scrape(requests: f64, errors: f64, fast: f64, slow: f64, breaker: f64) -> Vec<Sample> {
        let l = r#"{endpoint="10.0.0.1:8000",engine="chat"}"#;
        let b = |le: &str| format!(r#"{{endpoint="10.0.0.1:8000",engine="chat",le="{le}"}}"#);
        let text = format!(
            "{r}{l} {requests}\n{e}{l} {errors}\n{br}{l} {breaker}\n{h}_bucket{} {fast}\n{h}_bucket{} {}\n{h}_bucket{} {}\n",
            b("0.1"),
            b("1"),
            fast + slow,
            b("+Inf"),
            fast + slow,
            r = series::REQUESTS,
            e = series::ERRORS,
            br = series::BREAKER,
            h = series::TTFB,
        );
        prom::parse(&text)
    }

    #[test]
    fn latency_errors_and_breakers_sum_over_router_replicas() {
        let before = BTreeMap::from([("r-0".to_owned(), scrape(100.0, 0.0, 100.0, 0.0, 0.0))]);
        let now = BTreeMap::from([
            ("r-0".to_owned(), scrape(120.0, 5.0, 110.0, 10.0, 0.0)),
            ("r-1".to_owned(), scrape(20.0, 5.0, 10.0, 0.0, 1.0)),
        ]);
        let o = observe(&before, &now);
        let e = &o["10.0.0.1:8000"];
        assert_eq!(e.stats.engine, "chat");
        assert_eq!(e.stats.error_rate, Some(10.0 / 40.0));
        assert_eq!(e.breaker, BreakerState::Open, "the worst replica's view");
        // 20 fast and 10 slow in the interval: p95 in the slow bucket.
        let p95 = e.stats.p95_ms.unwrap();
        assert!(p95 > 100.0 && p95 <= 1000.0, "{p95}");
    }

    #[test]
    fn an_idle_interval_has_no_latency_and_restarted_routers_count_from_zero() {
        let s = scrape(50.0, 1.0, 50.0, 0.0, 0.0);
        let same = BTreeMap::from([("r-0".to_owned(), s.clone())]);
        let o = observe(&same, &same);
        assert_eq!(o["10.0.0.1:8000"].stats.p95_ms, None);
        assert_eq!(o["10.0.0.1:8000"].stats.error_rate, None);
        let restarted = BTreeMap::from([("r-0".to_owned(), scrape(4.0, 0.0, 4.0, 0.0, 0.0))]);
        let o = observe(&same, &restarted);
        assert_eq!(o["10.0.0.1:8000"].stats.error_rate, Some(0.0));
        assert!(o["10.0.0.1:8000"].stats.p95_ms.unwrap() <= 100.0);
    }
}
