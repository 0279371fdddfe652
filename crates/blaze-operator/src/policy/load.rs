//! An engine's load from scrapes of each worker's `/metrics`: for the autoscaler, requests in
//! flight and the p95 latency between two consecutive scrapes; for the engine's status, the
//! same figures, time to first token, tokens per second and the engine's own failure rate
//! over a window (the autoscaler's stable window), diffed against a kept scrape
//! ([`History`]).

use std::collections::BTreeMap;

use blaze_api::engine::EngineMetrics;

use super::autoscale;
use super::prom::{self, History, Sample, series};

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
    /// Requests finished since the worker started, however they finished.
    pub finished: f64,
    /// Of those, the ones the engine failed (see [`series::FAILED`]). Requests refused
    /// before they started (a full queue's 429, an invalid prompt's 400) and requests the
    /// client cancelled are not failures of the engine.
    pub failed: f64,
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
            failed: prom::sum_where(s, series::REQUESTS, series::FINISH_REASON, series::FAILED),
        }
    }
}

/// The autoscaler's sample at `at` (seconds) from this scrape (`now`, by pod) and the
/// previous one (`before`): requests in flight now, p95 latency of what finished in between.
/// Pods without a previous scrape count from zero: their whole history is new.
pub fn sample(
    before: &BTreeMap<String, PodLoad>,
    now: &BTreeMap<String, PodLoad>,
    at: f64,
) -> autoscale::Sample {
    let empty = PodLoad::default();
    let mut e2e = Vec::new();
    for (pod, n) in now {
        let b = before.get(pod).unwrap_or(&empty);
        prom::add_buckets(&mut e2e, &prom::bucket_delta(&n.e2e, &b.e2e));
    }
    let in_flight = now.values().map(|n| n.in_flight).sum();
    let p95_ms = prom::quantile(&e2e, 0.95).map(|s| s * 1000.0);
    autoscale::Sample { at, in_flight, p95_ms }
}

/// The engine's status metrics at `at` over the last `window_s` seconds, from this scrape
/// (`now`) and the kept ones (`history`, not holding `now` yet). Each pod is diffed against
/// its kept scrape closest to a window ago; a pod with none (it became ready since) counts
/// from zero over the span the history covers. `inFlight` is the mean over the window's
/// scrapes. `None` before there is any earlier scrape.
pub fn windowed(
    history: &History<PodLoad>,
    now: &BTreeMap<String, PodLoad>,
    at: f64,
    window_s: f64,
) -> Option<EngineMetrics> {
    let from = at - window_s;
    let span = history.oldest().map(|t| at - t).filter(|s| *s > 0.0)?;
    let empty = PodLoad::default();
    let (mut e2e, mut ttft) = (Vec::new(), Vec::new());
    let (mut tokens_per_s, mut finished, mut failed) = (0.0, 0.0, 0.0);
    for (pod, n) in now {
        let (secs, b) = match history.baseline(pod, at, window_s) {
            Some((t, b)) => (at - t, b),
            None => (span.min(window_s), &empty),
        };
        prom::add_buckets(&mut e2e, &prom::bucket_delta(&n.e2e, &b.e2e));
        prom::add_buckets(&mut ttft, &prom::bucket_delta(&n.ttft, &b.ttft));
        tokens_per_s += prom::counter_delta(n.tokens, b.tokens) / secs;
        // A restart resets both counters together; count both from zero then.
        let reset = n.finished < b.finished;
        finished += if reset { n.finished } else { n.finished - b.finished };
        failed += if reset { n.failed } else { prom::counter_delta(n.failed, b.failed) };
    }
    let in_flight_now: f64 = now.values().map(|n| n.in_flight).sum();
    let earlier: Vec<f64> =
        history.since(from).map(|(_, pods)| pods.values().map(|p| p.in_flight).sum()).collect();
    let in_flight = (earlier.iter().sum::<f64>() + in_flight_now) / (earlier.len() + 1) as f64;
    let ms = |q: Option<f64>| q.map(|s| s * 1000.0);
    Some(EngineMetrics {
        in_flight: Some(in_flight),
        p50_latency_ms: ms(prom::quantile(&e2e, 0.5)),
        p95_latency_ms: ms(prom::quantile(&e2e, 0.95)),
        ttft_p95_ms: ms(prom::quantile(&ttft, 0.95)),
        tokens_per_second: Some(tokens_per_s),
        error_rate: (finished > 0.0).then(|| (failed / finished).clamp(0.0, 1.0)),
    })
}

#[cfg(test)]
mod tests;
