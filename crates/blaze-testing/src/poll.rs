//! Waiting with a deadline instead of sleeping: poll until a condition gives a value.

use std::fmt;
use std::time::{Duration, Instant};

/// What was waited for did not come in time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimedOut {
    /// What was waited for.
    pub what: String,
    /// For how long.
    pub within: Duration,
}

impl fmt::Display for TimedOut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "timed out after {:?} waiting for {}", self.within, self.what)
    }
}

impl std::error::Error for TimedOut {}

/// How often a wait of `within` polls: a two-hundredth of it, from 10 ms to 250 ms, so short
/// waits react fast and long ones (each poll an API call, say) stay light.
fn interval(within: Duration) -> Duration {
    (within / 200).clamp(Duration::from_millis(10), Duration::from_millis(250))
}

/// Polls `f` until it gives a value, for at most `secs` seconds; the error names `what` was
/// waited for.
pub async fn until<T>(
    what: &str,
    secs: u64,
    f: impl AsyncFnMut() -> Option<T>,
) -> Result<T, TimedOut> {
    until_within(what, Duration::from_secs(secs), f).await
}

/// [`until`] for at most `within`.
pub async fn until_within<T>(
    what: &str,
    within: Duration,
    mut f: impl AsyncFnMut() -> Option<T>,
) -> Result<T, TimedOut> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = f().await {
            return Ok(v);
        }
        if Instant::now() >= deadline {
            return Err(TimedOut { what: what.to_owned(), within });
        }
        tokio::time::sleep(interval(within)).await;
    }
}

/// [`until`], panicking with its message when time runs out: for a test's own steps.
pub async fn eventually<T>(what: &str, secs: u64, f: impl AsyncFnMut() -> Option<T>) -> T {
    until(what, secs, f).await.unwrap_or_else(|e| panic!("{e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn gives_the_first_value_and_names_what_timed_out() {
        let mut calls = 0;
        let v = until("the third call", 5, async || {
            calls += 1;
            (calls == 3).then_some(calls)
        })
        .await;
        assert_eq!(v, Ok(3));
        let started = Instant::now();
        let e = until("nothing", 1, async || None::<()>).await.unwrap_err();
        assert!(started.elapsed() >= Duration::from_secs(1));
        assert_eq!(e.to_string(), "timed out after 1s waiting for nothing");
    }

    #[test]
    fn polls_faster_for_short_waits() {
        assert_eq!(interval(Duration::from_secs(1)), Duration::from_millis(10));
        assert_eq!(interval(Duration::from_secs(10)), Duration::from_millis(50));
        assert_eq!(interval(Duration::from_secs(300)), Duration::from_millis(250));
    }
}
