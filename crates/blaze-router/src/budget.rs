//! The retry budget: retries may add at most `budgetPercent` of recent requests, plus a small
//! floor so a quiet router can still retry, so that retries cannot multiply an overload.
//!
//! A token bucket: every request deposits `percent / 100` of a token, the floor adds
//! [`MIN_RETRIES_PER_SECOND`] tokens per second, a retry takes one whole token, and the bucket
//! holds at most what [`WINDOW`] of traffic would deposit, so a long quiet spell cannot bank
//! a burst of retries. Pure, with the clock passed in.
//!
//! Every request deposits, so a deposit is one atomic add; the bucket itself (behind a lock,
//! with an exponential) is brought up to date at most every [`SETTLE_EVERY`], or when a retry
//! asks for a token.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// Retries per second allowed whatever the traffic, so single failures on a quiet router are
/// retried.
pub const MIN_RETRIES_PER_SECOND: f64 = 10.0;
/// How far back the budget remembers deposits.
pub const WINDOW: Duration = Duration::from_secs(10);
/// Longest time deposits wait to be counted into the bucket: short beside [`WINDOW`], so the
/// budget is as exact as one updated per request, and long beside a request, so the lock is
/// taken a few dozen times a second rather than once per request.
pub const SETTLE_EVERY: Duration = Duration::from_millis(20);

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    last: Instant,
    /// Deposits per second, smoothed over the window, to size the cap.
    rate: f64,
}

/// A retry budget shared by every request of a router.
#[derive(Debug)]
pub struct RetryBudget {
    ratio: f64,
    /// Deposits not yet counted into the bucket.
    pending: AtomicU64,
    /// When the bucket was last brought up to date, in nanoseconds since `epoch`.
    settled_ns: AtomicU64,
    epoch: Instant,
    bucket: Mutex<Bucket>,
}

impl RetryBudget {
    /// A budget of `percent` retries per hundred requests.
    pub fn new(percent: u32, now: Instant) -> Self {
        Self {
            ratio: f64::from(percent.min(100)) / 100.0,
            pending: AtomicU64::new(0),
            settled_ns: AtomicU64::new(0),
            epoch: now,
            bucket: Mutex::new(Bucket { tokens: MIN_RETRIES_PER_SECOND, last: now, rate: 0.0 }),
        }
    }

    /// Records a first try.
    pub fn deposit(&self, now: Instant) {
        self.pending.fetch_add(1, Ordering::Relaxed);
        let due = self.settled_ns.load(Ordering::Relaxed) + SETTLE_EVERY.as_nanos() as u64;
        if self.nanos(now) >= due {
            self.settle(&mut self.bucket.lock(), now);
        }
    }

    fn nanos(&self, now: Instant) -> u64 {
        u64::try_from(now.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX)
    }

    /// Counts pending deposits into the bucket.
    fn settle(&self, b: &mut Bucket, now: Instant) {
        self.settled_ns.store(self.nanos(now), Ordering::Relaxed);
        self.refill(b, now);
        let n = self.pending.swap(0, Ordering::Relaxed) as f64;
        b.tokens += self.ratio * n;
        b.rate += n / WINDOW.as_secs_f64();
        b.tokens = b.tokens.min(self.cap(b));
    }

    /// Takes a token for a retry; false when the budget is spent.
    pub fn try_withdraw(&self, now: Instant) -> bool {
        let mut b = self.bucket.lock();
        self.settle(&mut b, now);
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    fn cap(&self, b: &Bucket) -> f64 {
        (b.rate * self.ratio + MIN_RETRIES_PER_SECOND) * WINDOW.as_secs_f64()
    }

    fn refill(&self, b: &mut Bucket, now: Instant) {
        let dt = now.saturating_duration_since(b.last).as_secs_f64();
        if dt <= 0.0 {
            return;
        }
        b.last = now;
        // The deposit rate decays over the window, so the cap follows recent traffic.
        b.rate *= (-dt / WINDOW.as_secs_f64()).exp();
        b.tokens = (b.tokens + dt * MIN_RETRIES_PER_SECOND).min(self.cap(b));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_are_limited_to_the_percentage_under_load() {
        let t0 = Instant::now();
        let budget = RetryBudget::new(20, t0);
        let (mut retries, mut requests) = (0u32, 0u32);
        // 1,000 requests per second for 10 simulated seconds, every one wanting a retry.
        for ms in 0..10_000u64 {
            let now = t0 + Duration::from_millis(ms);
            budget.deposit(now);
            requests += 1;
            if budget.try_withdraw(now) {
                retries += 1;
            }
        }
        // 20% of requests plus the floor of 10 per second (and the initial 10 tokens).
        let allowed = f64::from(requests) * 0.2 + 10.0 * 10.0 + 10.0;
        assert!(f64::from(retries) <= allowed + 1.0, "{retries} > {allowed}");
        assert!(f64::from(retries) >= allowed * 0.95, "{retries} far below {allowed}");
    }

    #[test]
    fn deposits_between_settlements_all_count() {
        let t0 = Instant::now();
        let budget = RetryBudget::new(50, t0);
        // 1,000 first tries within one settlement period, then nothing but retries.
        for i in 0..1000u64 {
            budget.deposit(t0 + Duration::from_micros(i));
        }
        let mut n = 0;
        while budget.try_withdraw(t0 + Duration::from_millis(1)) {
            n += 1;
            assert!(n < 10_000);
        }
        // Half of the 1,000 plus the initial floor of 10 (and 1 ms of floor refill).
        assert_eq!(n, 510);
    }

    #[test]
    fn a_zero_budget_still_allows_the_floor() {
        let t0 = Instant::now();
        let budget = RetryBudget::new(0, t0);
        let mut n = 0;
        for _ in 0..100 {
            if budget.try_withdraw(t0) {
                n += 1;
            }
        }
        assert_eq!(n, 10);
        assert!(!budget.try_withdraw(t0 + Duration::from_millis(50)));
        assert!(budget.try_withdraw(t0 + Duration::from_millis(100)));
    }

    #[test]
    fn quiet_time_cannot_bank_an_unbounded_burst() {
        let t0 = Instant::now();
        let budget = RetryBudget::new(20, t0);
        let later = t0 + Duration::from_secs(3600);
        let mut n = 0;
        while budget.try_withdraw(later) {
            n += 1;
            assert!(n < 1000);
        }
        assert_eq!(n, 100, "the floor over one window");
    }
}
