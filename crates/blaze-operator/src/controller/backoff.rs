//! Per-object exponential backoff. kube-runtime retries failed reconciles when the error
//! policy says; it keeps no failure count, so this does.

use std::collections::HashMap;
use std::time::Duration;

use parking_lot::Mutex;

/// First retry delay.
pub const BASE: Duration = Duration::from_secs(1);
/// Longest retry delay: an object broken for long is still retried every five minutes.
pub const MAX: Duration = Duration::from_secs(300);

/// Failure counts by object key.
#[derive(Debug, Default)]
pub struct Backoff {
    failures: Mutex<HashMap<String, u32>>,
}

impl Backoff {
    /// Records a failure of `key` and returns how long to wait before retrying.
    pub fn fail(&self, key: &str) -> Duration {
        let mut f = self.failures.lock();
        let n = f.entry(key.to_owned()).or_insert(0);
        let d = BASE.saturating_mul(2u32.saturating_pow(*n)).min(MAX);
        *n = n.saturating_add(1);
        d
    }

    /// Forgets the failures of `key` after a success.
    pub fn succeed(&self, key: &str) {
        self.failures.lock().remove(key);
    }

    /// Objects currently backing off.
    pub fn len(&self) -> usize {
        self.failures.lock().len()
    }

    /// Whether no object is backing off.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_per_failure_caps_and_resets_per_object() {
        let b = Backoff::default();
        let secs: Vec<u64> = (0..11).map(|_| b.fail("ns/a").as_secs()).collect();
        assert_eq!(secs, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300]);
        assert_eq!(b.fail("ns/b").as_secs(), 1, "objects back off independently");
        assert_eq!(b.len(), 2);
        b.succeed("ns/a");
        assert_eq!(b.fail("ns/a").as_secs(), 1);
        for _ in 0..100 {
            b.fail("ns/c");
        }
        assert_eq!(b.fail("ns/c"), MAX);
    }
}
