//! Waiting for what a user would wait for, with a deadline.

use std::time::{Duration, Instant};

use anyhow::{Result, bail};

/// Polls `f` every 250 ms until it gives a value, for at most `secs` seconds; the error names
/// `what` was waited for.
pub async fn until<T>(what: &str, secs: u64, mut f: impl AsyncFnMut() -> Option<T>) -> Result<T> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f().await {
            return Ok(v);
        }
        if Instant::now() >= deadline {
            bail!("timed out after {secs} s waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
