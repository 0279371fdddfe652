//! Per-endpoint latency, errors, load and ejections as the routers see them, from scrapes of
//! each router pod's `/metrics` summed over router replicas, and what the operator remembers
//! of each endpoint between scrapes. These feed the weights and the router's per-endpoint
//! status.
//!
//! Counters are diffed over a fixed [`WINDOW`] (against each pod's kept scrape closest to a
//! window ago, see [`History`]), not over the time since the previous reconcile, which events
//! make anything from milliseconds to the resync period. Latency is time to first token
//! ([`series::TTFT`], the first body byte: a streaming worker sends its headers at once, so
//! time to headers is the same for every streaming endpoint), or time to headers from a
//! router that does not export it yet.

use std::collections::BTreeMap;

use blaze_api::router::BreakerState;
use blaze_api::routing::RoutingEndpoint;

use super::prom::{self, History, Sample};
use super::weights::{Condition, EndpointStats};

/// The router's series.
pub mod series {
    /// Tries sent to an endpoint (a counter).
    pub const REQUESTS: &str = "blaze_router_endpoint_requests_total";
    /// Tries that failed (a counter).
    pub const ERRORS: &str = "blaze_router_endpoint_errors_total";
    /// Time to the first byte of the response body (a histogram in seconds).
    pub const TTFT: &str = "blaze_router_endpoint_ttft_seconds";
    /// Time to response headers (a histogram in seconds), read where [`TTFT`] is missing.
    pub const TTFB: &str = "blaze_router_endpoint_ttfb_seconds";
    /// Requests in flight until their response ends (a gauge).
    pub const IN_FLIGHT: &str = "blaze_router_endpoint_in_flight";
    /// Breaker state: 0 closed, 1 open, 2 half-open (a gauge).
    pub const BREAKER: &str = "blaze_router_endpoint_breaker_state";
    /// 1 when the router's active health checks pass (a gauge).
    pub const HEALTHY: &str = "blaze_router_endpoint_healthy";
}

/// Seconds of router metrics the weights are computed over. Short, so a worker that turns
/// slow loses most of its weight within one window (its upper quartile moves once a quarter of the window's
/// first tokens are slow); long enough to hold three scrapes at the 2 s cadence of `auto`
/// routers.
pub const WINDOW_S: f64 = 6.0;
/// Seconds an endpoint's last measured time to first token stands in for a window without
/// one. An endpoint that turned slow gets little traffic, often none in a window; taken as
/// unmeasured it would be given the typical score back and the traffic that shows it slow,
/// over and over. After this long unmeasured it is typical again, so one that recovered while
/// its weight was low is tried.
pub const REMEMBER_S: f64 = 30.0;

/// What one router pod reports of one endpoint: cumulative counters and current gauges.
#[derive(Clone, Debug, PartialEq)]
pub struct EndpointSample {
    /// The engine it belongs to.
    pub engine: String,
    /// Tries sent.
    pub requests: f64,
    /// Tries failed.
    pub errors: f64,
    /// Cumulative latency buckets: time to first token, or to headers (see the module).
    pub latency: Vec<(f64, f64)>,
    /// Requests in flight.
    pub in_flight: f64,
    /// Breaker state.
    pub breaker: BreakerState,
    /// Whether health checks pass.
    pub healthy: bool,
}

impl Default for EndpointSample {
    /// Nothing counted yet, breaker closed, healthy: an endpoint before its first report.
    fn default() -> Self {
        Self {
            engine: String::new(),
            requests: 0.0,
            errors: 0.0,
            latency: Vec::new(),
            in_flight: 0.0,
            breaker: BreakerState::Closed,
            healthy: true,
        }
    }
}

/// One router pod's scrape, by endpoint (`HOST:PORT`).
pub type PodScrape = BTreeMap<String, EndpointSample>;

/// Reads a router pod's exposition.
pub fn read(samples: &[Sample]) -> PodScrape {
    let ttft = format!("{}_bucket", series::TTFT);
    let latency = if samples.iter().any(|s| s.name == ttft) {
        ttft
    } else {
        format!("{}_bucket", series::TTFB)
    };
    let mut out = PodScrape::new();
    for s in samples {
        let Some(ep) = s.labels.get("endpoint") else { continue };
        let e = out.entry(ep.clone()).or_insert_with(|| EndpointSample {
            engine: s.labels.get("engine").cloned().unwrap_or_default(),
            ..Default::default()
        });
        match s.name.as_str() {
            series::REQUESTS => e.requests += s.value,
            series::ERRORS => e.errors += s.value,
            series::IN_FLIGHT => e.in_flight += s.value,
            series::BREAKER => e.breaker = worse(e.breaker, breaker(s.value)),
            series::HEALTHY => e.healthy &= s.value > 0.0,
            n if n == latency => {
                if let Some(le) = s.le() {
                    prom::add_buckets(&mut e.latency, &[(le, s.value)]);
                }
            }
            _ => {}
        }
    }
    out
}

/// What the routers report of one endpoint.
#[derive(Clone, Debug, PartialEq)]
pub struct EndpointView {
    /// Latency, errors and load over the window, for weights.
    pub stats: EndpointStats,
    /// The worst breaker state any router replica holds.
    pub breaker: BreakerState,
    /// Whether every router replica's health checks pass.
    pub healthy: bool,
}

impl Default for EndpointView {
    fn default() -> Self {
        Self { stats: EndpointStats::default(), breaker: BreakerState::Closed, healthy: true }
    }
}

impl EndpointView {
    /// Whether routers may send it traffic, by their breakers and health checks.
    pub fn condition(&self) -> Condition {
        match self.breaker {
            BreakerState::Open => Condition::Down,
            _ if !self.healthy => Condition::Down,
            BreakerState::HalfOpen => Condition::Probing,
            BreakerState::Closed => Condition::Serving,
        }
    }
}

/// Per-endpoint views from the router pods' scrapes `now` (by pod), taken at `at`: breakers
/// and health as they are now, requests in flight averaged over the window's scrapes, and
/// latency and errors diffed against each pod's kept scrape closest to [`WINDOW_S`] ago. A
/// pod with no kept scrape (the first one after an operator start, or a new router replica)
/// adds no latency or errors yet. Age and condition are left to [`RouterMemory`].
pub fn observe(
    history: &History<PodScrape>,
    now: &BTreeMap<String, PodScrape>,
    at: f64,
) -> BTreeMap<String, EndpointView> {
    let mut out: BTreeMap<String, EndpointView> = BTreeMap::new();
    let mut counts: BTreeMap<&str, Counts> = BTreeMap::new();
    let unseen = EndpointSample::default();
    for (pod, scrape) in now {
        let baseline = history.baseline(pod, at, WINDOW_S).map(|(_, b)| b);
        for (ep, s) in scrape {
            let v = out.entry(ep.clone()).or_default();
            v.stats.engine.clone_from(&s.engine);
            v.breaker = worse(v.breaker, s.breaker);
            v.healthy &= s.healthy;
            *v.stats.in_flight.get_or_insert(0.0) += mean_in_flight(history, pod, ep, s, at);
            let Some(base) = baseline else { continue };
            let c = counts.entry(ep).or_default();
            // New to this router since the baseline: everything it counted is new.
            let b = base.get(ep).unwrap_or(&unseen);
            c.requests += prom::counter_delta(s.requests, b.requests);
            c.errors += prom::counter_delta(s.errors, b.errors);
            prom::add_buckets(&mut c.latency, &prom::bucket_delta(&s.latency, &b.latency));
        }
    }
    for (ep, c) in counts {
        // Every counted endpoint has a view: both come from the same scrape.
        let Some(v) = out.get_mut(ep) else { continue };
        v.stats.p95_ms = prom::quantile(&c.latency, 0.95).map(|s| s * 1000.0);
        v.stats.ttft_ms = prom::quantile(&c.latency, 0.75).map(|s| s * 1000.0);
        if c.requests > 0.0 {
            v.stats.error_rate = Some((c.errors / c.requests).clamp(0.0, 1.0));
        }
    }
    out
}

/// One endpoint's counts over the window, summed over router replicas.
#[derive(Default)]
struct Counts {
    requests: f64,
    errors: f64,
    latency: Vec<(f64, f64)>,
}

/// The mean of one pod's in-flight gauge for `ep` over the window's kept scrapes and `now`:
/// one scrape catches a moment, and a handful of requests more or less at that moment
/// would swing the weight.
fn mean_in_flight(
    history: &History<PodScrape>,
    pod: &str,
    ep: &str,
    now: &EndpointSample,
    at: f64,
) -> f64 {
    let earlier: Vec<f64> = history
        .since(at - WINDOW_S)
        .filter(|(t, _)| *t < at)
        .filter_map(|(_, pods)| Some(pods.get(pod)?.get(ep)?.in_flight))
        .collect();
    (earlier.iter().sum::<f64>() + now.in_flight) / (earlier.len() + 1) as f64
}

/// What the operator remembers of one router between reconciles (in memory: an operator
/// restart forgets it, which costs one window of measurements and the ramps under way).
#[derive(Clone, Debug, Default)]
pub struct RouterMemory {
    history: History<PodScrape>,
    /// Per endpoint address; `None` until the first observation.
    tracks: Option<BTreeMap<String, Track>>,
}

/// One endpoint as remembered.
#[derive(Clone, Debug)]
struct Track {
    /// The pod behind the address (an address reused by another pod is a new endpoint).
    pod: String,
    /// When it was first seen ready, or last recovered: where its slow start begins.
    since: f64,
    condition: Condition,
    /// The last measured upper-quartile time to first token (ms) and when it was measured.
    ttft: Option<(f64, f64)>,
}

impl RouterMemory {
    /// Views of the router's endpoints `eps` (every one gets a view) from its pods' scrapes
    /// `now` taken at `at` (see [`observe`]), with each endpoint's condition and slow-start
    /// age: an endpoint is young from when it recovers from `Down` or `Probing`. A new
    /// endpoint is not: each router ramps the endpoints new to it over the same
    /// `slowStartSeconds` (continuously, not at this cadence), and a second ramp here would
    /// multiply with it. An endpoint the routers do not report keeps its last condition.
    pub fn observe(
        &mut self,
        at: f64,
        now: BTreeMap<String, PodScrape>,
        eps: &[RoutingEndpoint],
    ) -> BTreeMap<String, EndpointView> {
        let mut views = observe(&self.history, &now, at);
        if !now.is_empty() {
            self.history.push(at, now, WINDOW_S);
        }
        let mut old = self.tracks.take().unwrap_or_default();
        let mut tracks = BTreeMap::new();
        let mut out = BTreeMap::new();
        for ep in eps {
            let view = views.remove(&ep.address);
            let seen = view.as_ref().map(EndpointView::condition);
            let track = match old.remove(&ep.address).filter(|t| t.pod == ep.pod) {
                Some(t) => {
                    let condition = seen.unwrap_or(t.condition);
                    let recovered =
                        t.condition != Condition::Serving && condition == Condition::Serving;
                    Track { since: if recovered { at } else { t.since }, condition, ..t }
                }
                None => Track {
                    pod: ep.pod.clone(),
                    since: f64::NEG_INFINITY,
                    condition: seen.unwrap_or_default(),
                    ttft: None,
                },
            };
            let mut track = track;
            let mut view = view.unwrap_or_default();
            match view.stats.ttft_ms {
                Some(ms) => track.ttft = Some((ms, at)),
                None => {
                    view.stats.ttft_ms =
                        track.ttft.filter(|(_, when)| at - when <= REMEMBER_S).map(|(ms, _)| ms);
                }
            }
            view.stats.engine.clone_from(&ep.engine);
            view.stats.age_s = at - track.since;
            view.stats.condition = track.condition;
            tracks.insert(ep.address.clone(), track);
            out.insert(ep.address.clone(), view);
        }
        self.tracks = Some(tracks);
        out
    }
}

fn breaker(code: f64) -> BreakerState {
    match code as i64 {
        1 => BreakerState::Open,
        2 => BreakerState::HalfOpen,
        _ => BreakerState::Closed,
    }
}

fn worse(a: BreakerState, b: BreakerState) -> BreakerState {
    let rank = |s: BreakerState| match s {
        BreakerState::Closed => 0,
        BreakerState::HalfOpen => 1,
        BreakerState::Open => 2,
    };
    if rank(b) > rank(a) { b } else { a }
}

#[cfg(test)]
mod tests;
