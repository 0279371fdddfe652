//! Per-object exponential backoff. kube-runtime retries failed reconciles when the error
//! policy says; it keeps no failure count, so this does.

use std::collections::HashMap;
use std::time::Duration;

use parking_lot::Mutex;

/// First retry delay.
pub(crate) const BASE: Duration = Duration::from_secs(1);
/// Longest retry delay: an object broken for long is still retried every five minutes.
pub(crate) const MAX: Duration = Duration::from_secs(300);

/// Failure counts by object: its kind and `namespace/name`.
#[derive(Debug, Default)]
pub(crate) struct Backoff {
    failures: Mutex<HashMap<(String, String), u32>>,
}

impl Backoff {
    /// Failures of the `kind` object `key` in a row, as of now.
    pub(crate) fn in_a_row(&self, kind: &str, key: &str) -> u32 {
        self.failures.lock().get(&(kind.to_owned(), key.to_owned())).copied().unwrap_or(0)
    }

    /// Records a failure of the `kind` object `key` and returns how long to wait before
    /// retrying.
    pub(crate) fn fail(&self, kind: &str, key: &str) -> Duration {
        let mut f = self.failures.lock();
        let n = f.entry((kind.to_owned(), key.to_owned())).or_insert(0);
        let d = BASE.saturating_mul(2u32.saturating_pow(*n)).min(MAX);
        *n = n.saturating_add(1);
        d
    }

    /// Forgets the failures of the `kind` object `key` after a success (or its deletion).
    pub(crate) fn succeed(&self, kind: &str, key: &str) {
        self.failures.lock().remove(&(kind.to_owned(), key.to_owned()));
    }

    /// Objects of `kind` currently backing off.
    pub(crate) fn failing(&self, kind: &str) -> usize {
        self.failures.lock().keys().filter(|(k, _)| k == kind).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_per_failure_caps_and_resets_per_object() {
        let b = Backoff::default();
        let secs: Vec<u64> = (0..11).map(|_| b.fail("BlazeEngine", "ns/a").as_secs()).collect();
        assert_eq!(secs, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300]);
        assert_eq!(b.fail("BlazeEngine", "ns/b").as_secs(), 1, "objects back off independently");
        assert_eq!(b.fail("BlazeRouter", "ns/a").as_secs(), 1, "so do kinds");
        assert_eq!((b.failing("BlazeEngine"), b.failing("BlazeRouter")), (2, 1));
        b.succeed("BlazeEngine", "ns/a");
        assert_eq!(b.fail("BlazeEngine", "ns/a").as_secs(), 1);
        assert_eq!(b.fail("BlazeRouter", "ns/a").as_secs(), 2, "a success resets its kind only");
        for _ in 0..100 {
            b.fail("BlazeEngine", "ns/c");
        }
        assert_eq!(b.fail("BlazeEngine", "ns/c"), MAX);
    }
}
