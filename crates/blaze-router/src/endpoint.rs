//! One endpoint's live state: weight, requests in flight, peak-EWMA time to the first body
//! byte (the first token of a stream), last progress, circuit breaker, health, and the
//! ejection signal that wakes the tries waiting on it. No IO: the proxy, the health checker
//! and the stall detector feed it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use blaze_api::router::BreakerState;
use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio::sync::futures::Notified;

use crate::breaker::{Admit, Breaker, BreakerConfig};
use crate::progress::{self, LastProgress};

/// Time to first byte assumed for an endpoint never measured. Pessimistic (a slow first
/// token on a busy engine), so a new endpoint has to prove itself before it draws a large
/// share from the adaptive strategy.
pub const SEED_TTFT: Duration = Duration::from_millis(500);
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

/// Why an endpoint stopped taking traffic, as told to the tries waiting on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Ejection {
    /// Health checks (or the stall detector's probe) failed.
    Unhealthy = 0,
    /// Its circuit breaker opened.
    Breaker = 1,
    /// A reload dropped it from the routing document: not the endpoint's fault.
    Removed = 2,
}

impl Ejection {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Ejection::Unhealthy => "unhealthy",
            Ejection::Breaker => "breaker",
            Ejection::Removed => "removed",
        }
    }

    fn from_u8(v: u8) -> Self {
        match v {
            0 => Ejection::Unhealthy,
            1 => Ejection::Breaker,
            _ => Ejection::Removed,
        }
    }
}

impl std::fmt::Display for Ejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Ejection::Unhealthy => "was found unhealthy",
            Ejection::Breaker => "had its circuit breaker open",
            Ejection::Removed => "was removed from the routing configuration",
        })
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
    ttft: Mutex<PeakEwma>,
    breaker: Mutex<Breaker>,
    healthy: AtomicBool,
    ejected: AtomicBool,
    health_streak: Mutex<(u32, u32)>,
    /// When anything (headers, a body frame, a probe's answer) last came from it.
    pub progress: LastProgress,
    removed: AtomicBool,
    ejections: Notify,
    /// Ejections so far; a try compares it with the count at its pick.
    ejection_epoch: AtomicU64,
    ejection_reason: AtomicU8,
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
            ttft: Mutex::new(PeakEwma::new(SEED_TTFT, now)),
            breaker: Mutex::new(Breaker::new(breaker, seed)),
            healthy: AtomicBool::new(true),
            ejected: AtomicBool::new(false),
            health_streak: Mutex::new((0, 0)),
            progress: LastProgress::default(),
            removed: AtomicBool::new(false),
            ejections: Notify::new(),
            ejection_epoch: AtomicU64::new(0),
            ejection_reason: AtomicU8::new(0),
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

    /// Counts a request in, sent at `now`; it stays counted until the guard drops. The first
    /// request in flight starts the clock of the endpoint's progress: from then on it owes an
    /// answer.
    pub fn start(self: &Arc<Self>, now: Instant) -> InFlight {
        if self.in_flight.fetch_add(1, Ordering::Relaxed) == 0 {
            self.progress.mark(progress::millis(now));
        }
        InFlight(self.clone())
    }

    /// Peak-EWMA time to the first body byte, in seconds.
    pub fn ttft(&self) -> f64 {
        self.ttft.lock().get()
    }

    /// Records a time to the first body byte.
    pub fn observe_ttft(&self, sample: Duration, now: Instant) {
        self.ttft.lock().observe(sample, now);
    }

    /// Adaptive cost: latency times load, over weight.
    pub fn cost(&self, now: Instant) -> f64 {
        let w = self.effective_weight(now).max(1e-9);
        self.ttft() * (self.in_flight() as f64 + 1.0) / w
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
    /// An opening wakes the tries waiting on the endpoint.
    pub fn record(&self, ok: bool, now: Instant, may_eject: impl FnOnce() -> bool) -> Option<bool> {
        let changed = {
            let mut b = self.breaker.lock();
            if ok {
                b.on_success(now).then_some(false)
            } else {
                b.on_failure(now, may_eject).then_some(true)
            }
        };
        if changed == Some(true) {
            self.eject(Ejection::Breaker);
        }
        changed
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

    /// Feeds an active health check result; returns the new health when it flipped. Turning
    /// unhealthy wakes the tries waiting on the endpoint.
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
        drop(s);
        if was && !now_healthy {
            self.eject(Ejection::Unhealthy);
        }
        (was != now_healthy).then_some(now_healthy)
    }

    /// Marks the endpoint unhealthy at once, as if `unhealthy_after` checks had failed in a
    /// row (health checks bring it back after their healthy threshold), and wakes the tries
    /// waiting on it, even when it was unhealthy already. Returns whether it was healthy.
    pub fn force_unhealthy(&self, unhealthy_after: u32) -> bool {
        let mut s = self.health_streak.lock();
        *s = (0, s.1.max(unhealthy_after));
        let was = self.healthy.swap(false, Ordering::Relaxed);
        drop(s);
        self.eject(Ejection::Unhealthy);
        was
    }

    /// Marks the endpoint dropped from the routing document (never to be picked again) and
    /// wakes the tries waiting on it.
    pub fn remove(&self) {
        self.removed.store(true, Ordering::Relaxed);
        self.eject(Ejection::Removed);
    }

    /// Whether a reload dropped the endpoint.
    pub fn is_removed(&self) -> bool {
        self.removed.load(Ordering::Relaxed)
    }

    /// Tells the tries waiting on the endpoint that it stopped taking traffic.
    fn eject(&self, why: Ejection) {
        self.ejection_reason.store(why as u8, Ordering::Relaxed);
        self.ejection_epoch.fetch_add(1, Ordering::Release);
        self.ejections.notify_waiters();
    }

    /// The ejection count, to compare later with [`Endpoint::ejected_since`].
    pub fn ejection_epoch(&self) -> u64 {
        self.ejection_epoch.load(Ordering::Acquire)
    }

    /// Why the endpoint was last ejected, if it was after the count `epoch` was read.
    pub fn ejected_since(&self, epoch: u64) -> Option<Ejection> {
        (self.ejection_epoch() != epoch).then(|| self.last_ejection())
    }

    /// Why the endpoint was last ejected (meaningful once it was).
    pub fn last_ejection(&self) -> Ejection {
        Ejection::from_u8(self.ejection_reason.load(Ordering::Relaxed))
    }

    /// A future that completes at the next ejection. It hears every ejection from the moment
    /// it is created, polled or not: create it, then check [`Endpoint::ejected_since`], and
    /// no ejection falls between the two.
    pub fn ejection(&self) -> Notified<'_> {
        self.ejections.notified()
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
        let g1 = e.start(Instant::now());
        let g2 = e.start(Instant::now());
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

    #[test]
    fn ejections_reach_waiters_registered_before_them_with_their_reason() {
        use std::future::Future as _;
        use std::task::{Context, Poll, Waker};
        let e = ep(0, Instant::now());
        let epoch = e.ejection_epoch();
        let mut waiting = std::pin::pin!(e.ejection());
        assert_eq!(e.ejected_since(epoch), None);
        // Three failed checks flip it, once.
        for _ in 0..3 {
            e.record_health(false, 2, 3);
        }
        assert_eq!(e.ejected_since(epoch), Some(Ejection::Unhealthy));
        // Never polled before the ejection, the waiter still hears it.
        let mut cx = Context::from_waker(Waker::noop());
        assert_eq!(waiting.as_mut().poll(&mut cx), Poll::Ready(()));

        let epoch = e.ejection_epoch();
        assert!(!e.force_unhealthy(3), "unhealthy already");
        assert_eq!(e.ejected_since(epoch), Some(Ejection::Unhealthy));
        let epoch = e.ejection_epoch();
        e.remove();
        assert!(e.is_removed());
        assert_eq!(e.ejected_since(epoch), Some(Ejection::Removed));
    }

    #[test]
    fn a_forced_ejection_needs_the_healthy_threshold_to_come_back() {
        let e = ep(0, Instant::now());
        assert!(e.force_unhealthy(3));
        assert!(!e.is_healthy());
        assert_eq!(e.record_health(true, 2, 3), None);
        assert_eq!(e.record_health(true, 2, 3), Some(true));
    }

    #[test]
    fn the_first_request_in_flight_starts_the_progress_clock() {
        let t0 = Instant::now() + Duration::from_secs(10);
        let e = ep(0, t0);
        let g = e.start(t0);
        assert_eq!(e.progress.get(), progress::millis(t0));
        // A second request does not reset it: the endpoint owes an answer since the first.
        let g2 = e.start(t0 + Duration::from_secs(5));
        assert_eq!(e.progress.get(), progress::millis(t0));
        drop((g, g2));
    }
}
