//! The per-endpoint circuit breaker: a pure state machine driven by outcomes and a clock the
//! caller passes in, so tests run on simulated time.
//!
//! closed -> open after `consecutiveFailures` failures in a row, or when the failure rate over
//! the last [`WINDOW`] outcomes (at least [`MIN_REQUESTS`] of them) reaches the threshold;
//! open for `openSeconds`, doubled on each re-open up to `maxOpenSeconds`, with +-20% jitter so
//! replicas do not probe in lockstep; then half-open, letting `halfOpenRequests` probes through
//! at a time; closed again after `successThreshold` successful probes, open again on a failed
//! probe. Whether an endpoint may be ejected at all is [`max_ejections`]' call
//! (`maxEjectionPercent`, and never all endpoints).

use std::time::{Duration, Instant};

use blaze_api::router::{BreakerState, CircuitBreakerSpec};

/// Outcomes remembered for the failure rate.
pub const WINDOW: u32 = 32;
/// Outcomes needed before the failure rate can open the breaker: fewer say too little.
pub const MIN_REQUESTS: u32 = 10;

/// Breaker settings in the units the state machine uses.
#[derive(Clone, Debug)]
pub struct BreakerConfig {
    consecutive_failures: u32,
    failure_rate: f64,
    open: Duration,
    max_open: Duration,
    half_open_requests: u32,
    success_threshold: u32,
}

impl From<&CircuitBreakerSpec> for BreakerConfig {
    fn from(s: &CircuitBreakerSpec) -> Self {
        let pos = |v: i32| u32::try_from(v.max(1)).unwrap_or(1);
        Self {
            consecutive_failures: pos(s.consecutive_failures),
            failure_rate: s.failure_rate_threshold.clamp(0.01, 1.0),
            open: Duration::from_secs(u64::from(pos(s.open_seconds))),
            max_open: Duration::from_secs(u64::from(pos(s.max_open_seconds))),
            half_open_requests: pos(s.half_open_requests),
            success_threshold: pos(s.success_threshold),
        }
    }
}

impl BreakerConfig {
    /// Shortens the open time (tests and benchmarks want sub-second breakers).
    pub fn with_open(mut self, open: Duration, max_open: Duration) -> Self {
        self.open = open;
        self.max_open = max_open.max(open);
        self
    }
}

#[derive(Clone, Debug, PartialEq)]
enum State {
    Closed,
    Open { until: Instant },
    HalfOpen { probes: u32, successes: u32 },
}

/// One endpoint's breaker.
#[derive(Clone, Debug)]
pub struct Breaker {
    cfg: BreakerConfig,
    state: State,
    consecutive: u32,
    /// Bit i set: the i-th most recent outcome failed.
    outcomes: u32,
    seen: u32,
    /// Opens since the breaker last closed, for the backoff.
    opens: u32,
    jitter_seed: u64,
}

/// What the breaker says about a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admit {
    /// Closed: go ahead.
    Yes,
    /// Half-open: go ahead as a probe; report its outcome.
    Probe,
    /// Open, or half-open with all probes out.
    No,
}

impl Breaker {
    /// A closed breaker. `seed` varies the jitter between endpoints.
    pub fn new(cfg: BreakerConfig, seed: u64) -> Self {
        Self {
            cfg,
            state: State::Closed,
            consecutive: 0,
            outcomes: 0,
            seen: 0,
            opens: 0,
            jitter_seed: seed | 1,
        }
    }

    /// Replaces the settings, keeping the state.
    pub fn reconfigure(&mut self, cfg: BreakerConfig) {
        self.cfg = cfg;
    }

    /// The state for status and metrics (an expired open state reads as half-open).
    pub fn state(&self, now: Instant) -> BreakerState {
        match self.state {
            State::Closed => BreakerState::Closed,
            State::Open { until } if now < until => BreakerState::Open,
            State::Open { .. } | State::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }

    /// Whether the endpoint is ejected (open or half-open) and so counts against
    /// `maxEjectionPercent`.
    pub fn is_ejected(&self) -> bool {
        self.state != State::Closed
    }

    /// Whether a request may go to this endpoint now, without taking a probe slot.
    pub fn would_admit(&self, now: Instant) -> bool {
        match self.state {
            State::Closed => true,
            State::Open { until } => now >= until,
            State::HalfOpen { probes, .. } => probes < self.cfg.half_open_requests,
        }
    }

    /// Admits a request, taking a probe slot when half-open.
    pub fn admit(&mut self, now: Instant) -> Admit {
        if let State::Open { until } = self.state {
            if now < until {
                return Admit::No;
            }
            self.state = State::HalfOpen { probes: 0, successes: 0 };
        }
        match &mut self.state {
            State::Closed => Admit::Yes,
            State::HalfOpen { probes, .. } if *probes < self.cfg.half_open_requests => {
                *probes += 1;
                Admit::Probe
            }
            _ => Admit::No,
        }
    }

    /// Gives back a probe slot whose request ended without a verdict (the client went away).
    pub fn release_probe(&mut self) {
        if let State::HalfOpen { probes, .. } = &mut self.state {
            *probes = probes.saturating_sub(1);
        }
    }

    /// Records a success. Returns true when this closed the breaker.
    pub fn on_success(&mut self, _now: Instant) -> bool {
        self.consecutive = 0;
        self.record(false);
        if let State::HalfOpen { probes, successes } = &mut self.state {
            *probes = probes.saturating_sub(1);
            *successes += 1;
            if *successes >= self.cfg.success_threshold {
                self.close();
                return true;
            }
        }
        false
    }

    /// Records a failure. `may_eject` is asked before the breaker opens from closed; it
    /// answers false when too many endpoints are ejected already. Returns true when this
    /// opened the breaker.
    pub fn on_failure(&mut self, now: Instant, may_eject: impl FnOnce() -> bool) -> bool {
        self.consecutive += 1;
        self.record(true);
        match self.state {
            State::HalfOpen { .. } => {
                self.open(now);
                true
            }
            State::Open { .. } => false,
            State::Closed => {
                if !self.tripped() || !may_eject() {
                    return false;
                }
                self.open(now);
                true
            }
        }
    }

    fn tripped(&self) -> bool {
        if self.consecutive >= self.cfg.consecutive_failures {
            return true;
        }
        let n = self.seen.min(WINDOW);
        n >= MIN_REQUESTS
            && f64::from(self.outcomes.count_ones()) / f64::from(n) >= self.cfg.failure_rate
    }

    fn record(&mut self, failed: bool) {
        self.outcomes = (self.outcomes << 1) | u32::from(failed);
        self.seen = self.seen.saturating_add(1);
    }

    fn open(&mut self, now: Instant) {
        let factor = 2f64.powi(i32::try_from(self.opens.min(30)).unwrap_or(30));
        let base = self.cfg.open.as_secs_f64() * factor;
        let capped = base.min(self.cfg.max_open.as_secs_f64());
        let secs = (capped * self.jitter()).min(self.cfg.max_open.as_secs_f64());
        self.opens += 1;
        self.state = State::Open { until: now + Duration::from_secs_f64(secs) };
    }

    fn close(&mut self) {
        self.state = State::Closed;
        self.opens = 0;
        self.consecutive = 0;
        self.outcomes = 0;
        self.seen = 0;
    }

    /// A factor in [0.8, 1.2) from a xorshift generator.
    fn jitter(&mut self) -> f64 {
        let mut x = self.jitter_seed;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.jitter_seed = x;
        0.8 + 0.4 * ((x >> 11) as f64 / (1u64 << 53) as f64)
    }

    /// When an open breaker lets the next probe through.
    pub fn open_until(&self) -> Option<Instant> {
        match self.state {
            State::Open { until } => Some(until),
            _ => None,
        }
    }
}

/// How many of `total` endpoints may be ejected at once under `maxEjectionPercent`: never
/// all of them, so the router always has somewhere to send.
pub fn max_ejections(total: usize, max_percent: u32) -> usize {
    (total * max_percent.min(100) as usize / 100).min(total.saturating_sub(1))
}

#[cfg(test)]
mod tests;
