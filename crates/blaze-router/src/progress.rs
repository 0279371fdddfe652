//! When something last arrived from an endpoint, on a clock cheap enough to read per body
//! frame.
//!
//! Times are milliseconds since a process-wide origin, so one fits an atomic. The request path
//! marks progress with times it has already read (response headers, first body byte) and, for
//! every later frame, with a coarse clock that the stall detector ([`crate::stall`]) advances
//! once per tick: a frame costs two atomic loads, and a store only when the coarse time moved,
//! never a clock read. Coarse marks are late by at most one tick, which the detector allows
//! for.

use std::sync::LazyLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

static ORIGIN: LazyLock<Instant> = LazyLock::new(Instant::now);
static COARSE: AtomicU64 = AtomicU64::new(0);

/// `t` in milliseconds since the origin (0 for times before it).
pub fn millis(t: Instant) -> u64 {
    u64::try_from(t.saturating_duration_since(*ORIGIN).as_millis()).unwrap_or(u64::MAX)
}

/// Advances the coarse clock to `now`.
pub fn tick(now: Instant) {
    COARSE.fetch_max(millis(now), Ordering::Relaxed);
}

/// The coarse clock: the time of the last tick.
pub fn coarse_now() -> u64 {
    COARSE.load(Ordering::Relaxed)
}

/// The last time something arrived from one endpoint.
#[derive(Debug, Default)]
pub struct LastProgress(AtomicU64);

impl LastProgress {
    /// Notes progress at `ms` (from [`millis`]); an earlier time than the one kept is ignored.
    /// Not atomic as a whole: two marks racing may keep the earlier of two close times, which
    /// only makes the endpoint look idle a little sooner.
    pub fn mark(&self, ms: u64) {
        if ms > self.0.load(Ordering::Relaxed) {
            self.0.store(ms, Ordering::Relaxed);
        }
    }

    /// Notes progress now, by the coarse clock.
    pub fn mark_coarse(&self) {
        self.mark(coarse_now());
    }

    /// The last progress, in milliseconds since the origin.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn marks_only_move_forward_and_the_coarse_clock_follows_ticks() {
        let p = LastProgress::default();
        let t = Instant::now() + Duration::from_secs(5);
        p.mark(millis(t));
        p.mark(millis(t - Duration::from_secs(1)));
        assert_eq!(p.get(), millis(t));
        tick(t + Duration::from_secs(2));
        p.mark_coarse();
        assert!(p.get() >= millis(t) + 2000, "{}", p.get());
        // A tick never moves the clock back.
        tick(t);
        assert!(coarse_now() >= millis(t) + 2000);
    }
}
