//! One endpoint's live state: weight, requests in flight, peak-EWMA time to first byte,
//! circuit breaker and health. No IO: the proxy and the health checker feed it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use blaze_api::router::BreakerState;
use parking_lot::Mutex;

use crate::breaker::{Admit, Breaker, BreakerConfig};

/// Time-to-first-byte assumed for an endpoint never measured. Pessimistic (a slow first
/// token on a busy engine), so a new endpoint has to prove itself before it draws a large
/// share from the adaptive strategy.
pub const SEED_TTFB: Duration = Duration::from_millis(500);
/// How fast the latency estimate forgets: about the time for a few dozen requests.
pub const EWMA_DECAY: Duration = Duration::from_secs(10);
/// Share of its weight a new endpoint starts with under slow start.
pub const SLOW_START_FLOOR: f64 = 0.1;

/// Peak-sensitive moving average: jumps up to a slower sample at once, decays down slowly.
#[derive(Debug, Clone, Copy)]
pub struct PeakEwma {
    value_s: f64,
    at: Instant,
}

impl PeakEwma {
    /// Starts at `seed`.
    pub fn new(seed: Duration, now: Instant) -> Self {
        Self { value_s: seed.as_secs_f64(), at: now }
    }

    /// Adds a sample.
    pub fn observe(&mut self, sample: Duration, now: Instant) {
        let s = sample.as_secs_f64();
        if s > self.value_s {
            self.value_s = s;
        } else {
            let dt = now.saturating_duration_since(self.at).as_secs_f64();
            let w = (-dt / EWMA_DECAY.as_secs_f64()).exp();
            // At least a small step toward each sample, so bursts at one instant still move it.
            let w = w.min(0.95);
            self.value_s = self.value_s * w + s * (1.0 - w);
        }
        self.at = now;
    }

    /// The estimate in seconds.
    pub fn get(&self) -> f64 {
        self.value_s
    }
}

/// One endpoint the router may send to.
#[derive(Debug)]
pub struct Endpoint {
    /// `HOST:PORT`.
    pub address: String,
    /// Engine name, for metrics.
    pub engine: String,
    /// Pod name, for metrics.
    pub pod: String,
    /// Position in the current endpoint list (for metrics lookups and strategies).
    pub index: AtomicU32,
    weight: AtomicU32,
    added: Instant,
    slow_start: Duration,
    in_flight: AtomicU64,
    ttfb: Mutex<PeakEwma>,
    breaker: Mutex<Breaker>,
    healthy: AtomicBool,
    ejected: AtomicBool,
    health_streak: Mutex<(u32, u32)>,
}

impl Endpoint {
    /// A new endpoint, healthy and closed.
    pub fn new(
        address: String,
        engine: String,
        pod: String,
        weight: u32,
        breaker: BreakerConfig,
        slow_start: Duration,
        now: Instant,
    ) -> Arc<Self> {
        let seed = address.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
        });
        Arc::new(Self {
            address,
            engine,
            pod,
            index: AtomicU32::new(0),
            weight: AtomicU32::new(weight),
            added: now,
            slow_start,
            in_flight: AtomicU64::new(0),
            ttfb: Mutex::new(PeakEwma::new(SEED_TTFB, now)),
            breaker: Mutex::new(Breaker::new(breaker, seed)),
            healthy: AtomicBool::new(true),
            ejected: AtomicBool::new(false),
            health_streak: Mutex::new((0, 0)),
        })
    }

    /// Applies new settings from a reload, keeping live state. Slow start stays as it was
    /// when the endpoint arrived: it is about the endpoint's arrival, not the settings.
    pub fn reconfigure(&self, weight: u32, breaker: BreakerConfig) {
        self.weight.store(weight, Ordering::Relaxed);
        self.breaker.lock().reconfigure(breaker);
    }

    /// Configured weight.
    pub fn weight(&self) -> u32 {
        self.weight.load(Ordering::Relaxed)
    }

    /// Weight scaled by slow start: from [`SLOW_START_FLOOR`] of the weight when added, rising
    /// linearly to all of it over the slow-start time.
    pub fn effective_weight(&self, now: Instant) -> f64 {
        let w = f64::from(self.weight());
        let ss = self.slow_start;
        if ss.is_zero() {
            return w;
        }
        let frac = now.saturating_duration_since(self.added).as_secs_f64() / ss.as_secs_f64();
        w * frac.clamp(SLOW_START_FLOOR, 1.0)
    }

    /// Requests in flight (until their response bodies end).
    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Counts a request in; it stays counted until the guard drops.
    pub fn start(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self.clone())
    }

    /// Peak-EWMA time to first byte, in seconds.
    pub fn ttfb(&self) -> f64 {
        self.ttfb.lock().get()
    }

    /// Records a time to first byte.
    pub fn observe_ttfb(&self, sample: Duration, now: Instant) {
        self.ttfb.lock().observe(sample, now);
    }

    /// Adaptive cost: latency times load, over weight.
    pub fn cost(&self, now: Instant) -> f64 {
        let w = self.effective_weight(now).max(1e-9);
        self.ttfb() * (self.in_flight() as f64 + 1.0) / w
    }

    /// Whether active health checks pass.
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// Whether the breaker would let a request through now.
    pub fn breaker_allows(&self, now: Instant) -> bool {
        self.breaker.lock().would_admit(now)
    }

    /// Admits a request through the breaker.
    pub fn admit(&self, now: Instant) -> Admit {
        self.breaker.lock().admit(now)
    }

    /// Gives back a probe slot taken by [`Endpoint::admit`] for a request that ended without
    /// a verdict.
    pub fn release_probe(&self) {
        self.breaker.lock().release_probe();
    }

    /// Breaker state.
    pub fn breaker_state(&self, now: Instant) -> BreakerState {
        self.breaker.lock().state(now)
    }

    /// Feeds a request outcome to the breaker. Returns `Some(true)` when it opened,
    /// `Some(false)` when it closed, `None` when nothing changed.
    pub fn record(&self, ok: bool, now: Instant, may_eject: impl FnOnce() -> bool) -> Option<bool> {
        let mut b = self.breaker.lock();
        if ok {
            b.on_success(now).then_some(false)
        } else {
            b.on_failure(now, may_eject).then_some(true)
        }
    }

    /// Whether the breaker holds an ejection slot (open or half-open). Kept outside the
    /// breaker's lock so counting ejections never takes another endpoint's lock.
    pub fn is_ejected(&self) -> bool {
        self.ejected.load(Ordering::Acquire)
    }

    /// Marks the endpoint ejected or back.
    pub fn set_ejected(&self, ejected: bool) {
        self.ejected.store(ejected, Ordering::Release);
    }

    /// Feeds an active health check result; returns the new health when it flipped.
    pub fn record_health(
        &self,
        ok: bool,
        healthy_after: u32,
        unhealthy_after: u32,
    ) -> Option<bool> {
        let mut s = self.health_streak.lock();
        if ok {
            *s = (s.0 + 1, 0);
        } else {
            *s = (0, s.1 + 1);
        }
        let was = self.is_healthy();
        let now_healthy =
            if was { s.1 < unhealthy_after.max(1) } else { s.0 >= healthy_after.max(1) };
        self.healthy.store(now_healthy, Ordering::Relaxed);
        (was != now_healthy).then_some(now_healthy)
    }
}

/// Holds one request in flight on an endpoint.
#[derive(Debug)]
pub struct InFlight(Arc<Endpoint>);

impl InFlight {
    /// The endpoint.
    pub fn endpoint(&self) -> &Endpoint {
        &self.0
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use blaze_api::router::CircuitBreakerSpec;

    fn ep(ss: u64, now: Instant) -> Arc<Endpoint> {
        let cfg = BreakerConfig::from(&CircuitBreakerSpec::default());
        Endpoint::new(
            "a:1".into(),
            String::new(),
            String::new(),
            100,
            cfg,
            Duration::from_secs(ss),
            now,
        )
    }

    #[test]
    fn slow_start_ramps_the_weight_linearly() {
        let t0 = Instant::now();
        let e = ep(10, t0);
        assert_eq!(e.effective_weight(t0), 10.0);
        assert!((e.effective_weight(t0 + Duration::from_secs(5)) - 50.0).abs() < 1e-9);
        assert_eq!(e.effective_weight(t0 + Duration::from_secs(60)), 100.0);
        assert_eq!(ep(0, t0).effective_weight(t0), 100.0);
    }

    #[test]
    fn peak_ewma_jumps_up_and_decays_down() {
        let t0 = Instant::now();
        let mut p = PeakEwma::new(Duration::from_millis(10), t0);
        p.observe(Duration::from_millis(100), t0);
        assert!((p.get() - 0.1).abs() < 1e-9);
        p.observe(Duration::from_millis(10), t0 + Duration::from_secs(10));
        assert!(p.get() < 0.05 && p.get() > 0.01, "{}", p.get());
    }

    #[test]
    fn in_flight_lasts_as_long_as_the_guard() {
        let e = ep(0, Instant::now());
        let g1 = e.start();
        let g2 = e.start();
        assert_eq!(e.in_flight(), 2);
        drop(g1);
        assert_eq!(e.in_flight(), 1);
        drop(g2);
        assert_eq!(e.in_flight(), 0);
    }

    #[test]
    fn health_flips_after_the_thresholds() {
        let e = ep(0, Instant::now());
        assert_eq!(e.record_health(false, 2, 3), None);
        assert_eq!(e.record_health(false, 2, 3), None);
        assert_eq!(e.record_health(false, 2, 3), Some(false));
        assert_eq!(e.record_health(true, 2, 3), None);
        assert_eq!(e.record_health(true, 2, 3), Some(true));
        assert!(e.is_healthy());
    }
}
