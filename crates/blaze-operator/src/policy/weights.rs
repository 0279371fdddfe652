//! Router weights from what each endpoint shows. In `auto` mode an endpoint's score is the
//! inverse of its upper-quartile time to first token (see [`super::router_stats`]; those within
//! [`LATENCY_TOLERANCE`] of the fastest count as equal), cut by its error
//! rate squared (an unmeasured endpoint gets the median score divided by one plus its requests
//! in flight); weights are scores scaled so
//! the best endpoint gets [`MAX_WEIGHT`], never below `minWeight` (so a recovered endpoint
//! keeps getting the traffic that shows it recovered). An endpoint a router has ejected
//! (breaker open, health check failing) gets 0; one whose breaker is half-open gets just the
//! slow-start floor, so the router's probes reach it; recovered endpoints ramp up from that
//! floor over `slowStartSeconds` (new ones are ramped by the routers themselves). In `manual` mode the weights are engine shares: an
//! engine's weight is split evenly over its endpoints, so a 90/10 canary between two engines
//! sends 90% and 10% of the traffic whatever number of workers each runs.

use std::collections::BTreeMap;

use blaze_api::router::{Strategy, WeightsMode, WeightsSpec};

/// The weight of the best endpoint.
pub const MAX_WEIGHT: i32 = 100;
/// Latencies below this count as this, so one idle endpoint reporting 1 ms does not take all
/// the traffic.
pub const LATENCY_FLOOR_MS: f64 = 10.0;
/// Times to first token within this factor of the fastest serving endpoint's count as equal.
/// Two alike workers' medians over a few seconds differ by tens of percent from one window
/// to the next; weighing that noise would move traffic back and forth for nothing (the
/// routers' adaptive balancing already follows small differences request by request). A
/// worker slowed two and a half times or more loses half its weight.
pub const LATENCY_TOLERANCE: f64 = 1.25;
/// Share of full weight a brand-new or just-recovered endpoint starts at during slow start.
pub const SLOW_START_FLOOR: f64 = 0.1;
/// Manual engine weights (0 to 1000) are multiplied by this before they are split over an
/// engine's endpoints, so a split keeps two more digits: weight 1 over three endpoints is 33
/// each, not 0.
pub const MANUAL_SCALE: f64 = 100.0;
/// Relative change in any weight below which new weights are not published, so measurement
/// noise does not churn the router's configuration. A move to or from 0 always publishes.
pub const CHANGE_THRESHOLD: f64 = 0.1;

/// Whether routers may send an endpoint traffic, from their breakers and health checks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Condition {
    /// Breakers closed and health checks passing everywhere: weighted by what it shows.
    #[default]
    Serving,
    /// Ejected by some router replica (breaker open, or its health check fails): no traffic
    /// until it recovers.
    Down,
    /// A breaker half-open and none open: the floor weight, so the router's probes (the only
    /// way an ejected endpoint's breaker closes) reach it.
    Probing,
}

/// What is known of one endpoint.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EndpointStats {
    /// The engine it belongs to.
    pub engine: String,
    /// p95 time to first token in milliseconds, if measured (for status).
    pub p95_ms: Option<f64>,
    /// Upper-quartile (p75) time to first token in milliseconds, if measured: what the weights
    /// follow. A window holds a few dozen first tokens per endpoint: their p95 is the slowest
    /// one or two (one unlucky request, not the endpoint), and their median moves only once
    /// half of them are slow, which for an endpoint the routers already avoid (few new
    /// requests) takes most of a window. A quarter of them slow moves the upper quartile.
    pub ttft_ms: Option<f64>,
    /// Fraction of requests that failed, if measured.
    pub error_rate: Option<f64>,
    /// Requests in flight to it (over every router replica), if measured.
    pub in_flight: Option<f64>,
    /// Seconds since it became ready or recovered, for slow start.
    pub age_s: f64,
    /// Whether routers may send it traffic.
    pub condition: Condition,
}

/// Weights for `endpoints`, in order, for a router balancing with `strategy`.
///
/// Under the hashing strategies (`consistentHash`, `prefixAware`) a weight is the endpoint's
/// share of the hash ring, and any change to it moves keys, with their sessions and warm KV
/// caches, to other endpoints. There weights follow membership only: a serving endpoint
/// gets its full weight (no latency scoring, no slow-start ramp, as ring hashing has no
/// slow start elsewhere either), an ejected one 0 and a probed one the probe weight; the
/// routers' bounded load spills a hot key's overflow to the next endpoint instead.
pub fn weights(endpoints: &[EndpointStats], spec: &WeightsSpec, strategy: Strategy) -> Vec<i32> {
    let hashing = strategy.hashes_keys();
    match spec.mode {
        WeightsMode::Manual => manual(endpoints, spec, hashing),
        WeightsMode::Auto => auto(endpoints, spec, hashing),
    }
}

/// The weight of an endpoint being probed, the start of a slow-start ramp.
pub fn probe_weight(spec: &WeightsSpec) -> i32 {
    let floor = (SLOW_START_FLOOR * f64::from(MAX_WEIGHT)).round() as i32;
    floor.max(spec.min_weight).clamp(1, MAX_WEIGHT)
}

fn manual(endpoints: &[EndpointStats], spec: &WeightsSpec, hashing: bool) -> Vec<i32> {
    let mut per_engine: BTreeMap<&str, usize> = BTreeMap::new();
    for e in endpoints {
        *per_engine.entry(e.engine.as_str()).or_default() += 1;
    }
    endpoints
        .iter()
        .map(|e| {
            let share = spec.manual.as_ref().and_then(|m| m.get(&e.engine)).map_or(0, |w| w.0);
            let w = f64::from(share.max(0)) * MANUAL_SCALE / per_engine[e.engine.as_str()] as f64;
            let ramp = if hashing { 1.0 } else { slow_start(e.age_s, spec.slow_start_seconds) };
            let ramped = (w * ramp).round() as i32;
            // An engine share stays above zero however far it is split or ramped.
            if w > 0.0 { ramped.max(1) } else { 0 }
        })
        .collect()
}

fn auto(endpoints: &[EndpointStats], spec: &WeightsSpec, hashing: bool) -> Vec<i32> {
    let min = spec.min_weight.clamp(0, MAX_WEIGHT);
    // Zeroing every endpoint would leave the router nothing, not even its panic mode (which
    // balances over endpoints with a weight when none passes its checks): when all are down,
    // the routers' own breakers and health checks decide.
    let all_down = endpoints.iter().all(|e| e.condition == Condition::Down);
    let full = full_weights(endpoints);
    endpoints
        .iter()
        .zip(full)
        .map(|(e, w)| match e.condition {
            Condition::Down if !all_down => 0,
            Condition::Down | Condition::Probing => probe_weight(spec),
            Condition::Serving if hashing => MAX_WEIGHT,
            Condition::Serving => {
                let ramped = w * slow_start(e.age_s, spec.slow_start_seconds);
                (ramped.round() as i32).clamp(min, MAX_WEIGHT)
            }
        })
        .collect()
}

/// Weights before slow start and `minWeight`, scaled so the best serving endpoint gets
/// [`MAX_WEIGHT`].
fn full_weights(endpoints: &[EndpointStats]) -> Vec<f64> {
    let ok = |e: &EndpointStats| {
        let ok = 1.0 - e.error_rate.unwrap_or(0.0).clamp(0.0, 1.0);
        ok * ok
    };
    let serving: Vec<&EndpointStats> =
        endpoints.iter().filter(|e| e.condition == Condition::Serving).collect();
    let fastest = serving.iter().filter_map(|e| e.ttft_ms).fold(f64::INFINITY, f64::min);
    let floor = (fastest * LATENCY_TOLERANCE).max(LATENCY_FLOOR_MS);
    let quality = |e: &EndpointStats| e.ttft_ms.map(|t| ok(e) / t.max(floor));
    let mut known: Vec<f64> = serving.iter().filter_map(|e| quality(e)).collect();
    known.sort_by(f64::total_cmp);
    // Endpoints whose latency is not measured yet are treated as typical: the median, cut by
    // their own errors.
    let median = known.get(known.len() / 2).copied();
    // A measured endpoint's first tokens already carry its load (queueing shows in them);
    // dividing by its requests in flight as well would reward the endpoint the routers
    // avoid (fewer requests, because it is slow) and cancel the signal. An unmeasured one
    // may be piling requests up that never reach a first token (a frozen worker): its
    // requests in flight cut the typical score it is given.
    let score = |e: &EndpointStats| match quality(e) {
        Some(q) => Some(q),
        None => median.map(|m| m * ok(e) / (1.0 + e.in_flight.unwrap_or(0.0).max(0.0))),
    };
    let best = serving.iter().filter_map(|e| score(e)).fold(0.0, f64::max);
    endpoints
        .iter()
        .map(|e| match score(e) {
            Some(s) if best > 0.0 => f64::from(MAX_WEIGHT) * s / best,
            _ => f64::from(MAX_WEIGHT),
        })
        .collect()
}

fn slow_start(age_s: f64, window_s: i32) -> f64 {
    if window_s <= 0 || age_s >= f64::from(window_s) {
        return 1.0;
    }
    let f = age_s.max(0.0) / f64::from(window_s);
    SLOW_START_FLOOR + (1.0 - SLOW_START_FLOOR) * f
}

/// Whether `new` differs enough from `old` to publish.
pub fn changed_enough(old: &[i32], new: &[i32]) -> bool {
    old.len() != new.len()
        || old.iter().zip(new).any(|(&o, &n)| {
            let (o, n) = (f64::from(o), f64::from(n));
            (o == 0.0) != (n == 0.0) || (n - o).abs() > CHANGE_THRESHOLD * o.max(1.0)
        })
}

#[cfg(test)]
mod tests;
