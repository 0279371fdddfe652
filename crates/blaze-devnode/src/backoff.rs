//! CrashLoopBackOff timing.

use std::time::Duration;

/// How long the kubelet waits before restarting a container that exited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackoffConfig {
    /// Delay before the first restart; doubled for each further one. The kubelet uses 10s.
    pub initial: Duration,
    /// Upper bound on the delay. The kubelet uses 5 minutes.
    pub max: Duration,
    /// A container that ran this long without exiting starts again from `initial`.
    /// The kubelet uses 10 minutes.
    pub reset_after: Duration,
}

impl Default for BackoffConfig {
    fn default() -> Self {
        Self {
            initial: Duration::from_secs(10),
            max: Duration::from_secs(300),
            reset_after: Duration::from_secs(600),
        }
    }
}

impl BackoffConfig {
    /// Every duration divided by `factor`: tests use this to see several restarts quickly.
    pub fn scaled_down(self, factor: u32) -> Self {
        let factor = factor.max(1);
        Self {
            initial: self.initial / factor,
            max: self.max / factor,
            reset_after: self.reset_after / factor,
        }
    }
}

/// Per-container backoff state.
#[derive(Debug, Clone)]
pub struct Backoff {
    config: BackoffConfig,
    /// Restarts since the last reset.
    streak: u32,
}

impl Backoff {
    /// A fresh backoff.
    pub fn new(config: BackoffConfig) -> Self {
        Self { config, streak: 0 }
    }

    /// The delay before the next restart of a container that ran for `ran_for` before exiting.
    pub fn next_delay(&mut self, ran_for: Duration) -> Duration {
        if ran_for >= self.config.reset_after {
            self.streak = 0;
        }
        let factor = 1u32.checked_shl(self.streak.min(20)).unwrap_or(u32::MAX);
        self.streak = self.streak.saturating_add(1);
        self.config.initial.checked_mul(factor).unwrap_or(self.config.max).min(self.config.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_from_ten_seconds_to_five_minutes_and_resets_after_a_long_run() {
        let mut b = Backoff::new(BackoffConfig::default());
        let quick = Duration::from_secs(1);
        let delays: Vec<u64> = (0..7).map(|_| b.next_delay(quick).as_secs()).collect();
        assert_eq!(delays, [10, 20, 40, 80, 160, 300, 300]);
        for _ in 0..40 {
            assert_eq!(b.next_delay(quick).as_secs(), 300);
        }
        assert_eq!(b.next_delay(Duration::from_secs(600)).as_secs(), 10);
        assert_eq!(b.next_delay(quick).as_secs(), 20);
    }

    #[test]
    fn scaled_down_for_tests() {
        let c = BackoffConfig::default().scaled_down(100);
        assert_eq!(c.initial, Duration::from_millis(100));
        assert_eq!(c.max, Duration::from_secs(3));
    }
}
