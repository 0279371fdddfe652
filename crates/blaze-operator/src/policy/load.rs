//! An engine's load from two scrapes of each worker's `/metrics`: requests in flight now, and
//! over the interval between the scrapes the p50/p95 latency, p95 time to first token,
//! tokens per second and the share of requests refused.

use std::collections::BTreeMap;

use blaze_api::engine::EngineMetrics;

use super::autoscale;
use super::prom::{self, Sample, series};

/// What one scrape of one worker says.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PodLoad {
    /// Requests running or waiting.
    pub in_flight: f64,
    /// Cumulative end-to-end latency buckets.
    pub e2e: Vec<(f64, f64)>,
    /// Cumulative time-to-first-token buckets.
    pub ttft: Vec<(f64, f64)>,
    /// Tokens generated since the worker started.
    pub tokens: f64,
    /// Requests finished since the worker started.
    pub finished: f64,
    /// Requests refused since the worker started.
    pub rejected: f64,
}

impl PodLoad {
    /// Reads a worker's exposition.
    pub fn from_samples(s: &[Sample]) -> Self {
        Self {
            in_flight: prom::sum(s, series::RUNNING) + prom::sum(s, series::WAITING),
            e2e: prom::buckets(s, series::E2E_LATENCY),
            ttft: prom::buckets(s, series::TTFT),
            tokens: prom::sum(s, series::GENERATION_TOKENS),
            finished: prom::sum(s, series::REQUESTS),
            rejected: prom::sum(s, series::REJECTED),
        }
    }
}

/// The engine's load at `at` (seconds) from this scrape (`now`, by pod) and the previous one
/// (`before`), `interval_s` apart. Pods without a previous scrape count from zero: their
/// whole history is new.
pub fn aggregate(
    before: &BTreeMap<String, PodLoad>,
    now: &BTreeMap<String, PodLoad>,
    interval_s: f64,
    at: f64,
) -> (autoscale::Sample, EngineMetrics) {
    let empty = PodLoad::default();
    let mut in_flight = 0.0;
    let (mut e2e, mut ttft) = (Vec::new(), Vec::new());
    let (mut tokens, mut finished, mut rejected) = (0.0, 0.0, 0.0);
    for (pod, n) in now {
        let b = before.get(pod).unwrap_or(&empty);
        in_flight += n.in_flight;
        add_buckets(&mut e2e, &prom::bucket_delta(&n.e2e, &b.e2e));
        add_buckets(&mut ttft, &prom::bucket_delta(&n.ttft, &b.ttft));
        tokens += counter_delta(n.tokens, b.tokens);
        finished += counter_delta(n.finished, b.finished);
        rejected += counter_delta(n.rejected, b.rejected);
    }
    let ms = |q: Option<f64>| q.map(|s| s * 1000.0);
    let p95 = ms(prom::quantile(&e2e, 0.95));
    let total = finished + rejected;
    let metrics = EngineMetrics {
        in_flight: Some(in_flight),
        p50_latency_ms: ms(prom::quantile(&e2e, 0.5)),
        p95_latency_ms: p95,
        ttft_p95_ms: ms(prom::quantile(&ttft, 0.95)),
        tokens_per_second: (interval_s > 0.0).then(|| tokens / interval_s),
        error_rate: (total > 0.0).then(|| rejected / total),
    };
    (autoscale::Sample { at, in_flight, p95_ms: p95 }, metrics)
}

/// A counter's increase; a counter that went down was reset by a restart and counts from 0.
fn counter_delta(now: f64, before: f64) -> f64 {
    if now >= before { now - before } else { now }
}

fn add_buckets(acc: &mut Vec<(f64, f64)>, add: &[(f64, f64)]) {
    for &(le, c) in add {
        match acc.iter_mut().find(|(l, _)| *l == le) {
            Some(e) => e.1 += c,
            None => acc.push((le, c)),
        }
    }
    acc.sort_by(|a, b| a.0.total_cmp(&b.0));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(in_flight: f64, fast: f64, slow: f64, tokens: f64, rejected: f64) -> PodLoad {
        let total = fast + slow;
        PodLoad {
            in_flight,
            e2e: vec![(0.1, fast), (1.0, total), (f64::INFINITY, total)],
            ttft: vec![(0.05, total), (f64::INFINITY, total)],
            tokens,
            finished: total,
            rejected,
        }
    }

    #[test]
    fn two_scrapes_give_in_flight_latency_throughput_and_refusals() {
        let text = "vllm:num_requests_running 2\nvllm:num_requests_waiting 1\nvllm:generation_tokens_total 40\n";
        assert_eq!(PodLoad::from_samples(&prom::parse(text)).in_flight, 3.0);
        let before = BTreeMap::from([("a".to_owned(), load(0.0, 10.0, 0.0, 100.0, 0.0))]);
        let now = BTreeMap::from([
            ("a".to_owned(), load(3.0, 10.0, 10.0, 300.0, 5.0)),
            ("b".to_owned(), load(2.0, 10.0, 0.0, 100.0, 0.0)),
        ]);
        let (sample, m) = aggregate(&before, &now, 10.0, 42.0);
        assert_eq!((sample.at, sample.in_flight), (42.0, 5.0));
        assert_eq!(m.tokens_per_second, Some(30.0), "(200 + 100) / 10 s");
        // 10 fast (<100 ms) and 10 slow (100 ms..1 s) in the interval: p50 at the boundary.
        assert!((m.p50_latency_ms.unwrap() - 100.0).abs() < 1e-6);
        assert!((m.p95_latency_ms.unwrap() - (100.0 + 900.0 * 0.9)).abs() < 1e-6);
        assert_eq!(sample.p95_ms, m.p95_latency_ms);
        assert_eq!(m.error_rate, Some(5.0 / 25.0));
    }

    #[test]
    fn idle_engines_report_no_latency_and_restarts_do_not_go_negative() {
        let before = BTreeMap::from([("a".to_owned(), load(0.0, 50.0, 0.0, 900.0, 0.0))]);
        let now = BTreeMap::from([("a".to_owned(), load(0.0, 50.0, 0.0, 900.0, 0.0))]);
        let (s, m) = aggregate(&before, &now, 5.0, 0.0);
        assert_eq!((s.p95_ms, m.error_rate, m.tokens_per_second), (None, None, Some(0.0)));
        let restarted = BTreeMap::from([("a".to_owned(), load(1.0, 2.0, 0.0, 10.0, 0.0))]);
        let (_, m) = aggregate(&before, &restarted, 5.0, 5.0);
        assert_eq!(m.tokens_per_second, Some(2.0));
        assert!(m.p95_latency_ms.unwrap() <= 100.0);
    }
}
