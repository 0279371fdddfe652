//! L1: answers in memory, bounded by bytes, least recently used evicted first.

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use bytes::Bytes;
use parking_lot::Mutex;

use super::Key;

/// Bytes an entry costs besides its answer: the key twice (map and order), the slot, the
/// maps' own overhead, roughly.
const OVERHEAD: u64 = 128;
#[cfg(test)]
pub(super) const OVERHEAD_FOR_TESTS: u64 = OVERHEAD;

/// The memory level.
#[derive(Debug)]
pub struct Memory {
    limit: u64,
    inner: Mutex<Lru>,
}

#[derive(Debug, Default)]
struct Lru {
    map: HashMap<Key, Slot>,
    /// Use order: the oldest use first.
    order: BTreeMap<u64, Key>,
    tick: u64,
    bytes: u64,
}

#[derive(Debug)]
struct Slot {
    value: Bytes,
    expires: Instant,
    used: u64,
}

fn cost(value: &Bytes) -> u64 {
    value.len() as u64 + OVERHEAD
}

impl Memory {
    /// An empty level of at most `limit` bytes.
    pub fn new(limit: u64) -> Self {
        Self { limit, inner: Mutex::new(Lru::default()) }
    }

    /// Bytes and entries held.
    pub fn usage(&self) -> (u64, usize) {
        let l = self.inner.lock();
        (l.bytes, l.map.len())
    }

    /// The answer for `key` unless absent or expired at `now` (an expired one is dropped).
    pub fn get(&self, key: &Key, now: Instant) -> Option<Bytes> {
        let mut l = self.inner.lock();
        let expired = l.map.get(key)?.expires <= now;
        if expired {
            l.remove(key);
            return None;
        }
        l.tick += 1;
        let tick = l.tick;
        let slot = l.map.get_mut(key)?;
        let old = std::mem::replace(&mut slot.used, tick);
        let value = slot.value.clone();
        l.order.remove(&old);
        l.order.insert(tick, *key);
        Some(value)
    }

    /// Keeps `value` for `key` until `expires`, evicting the least recently used answers
    /// until the level is within its bytes; returns how many were evicted. An answer larger
    /// than the whole level is not kept.
    pub fn put(&self, key: Key, value: Bytes, expires: Instant) -> usize {
        if cost(&value) > self.limit {
            return 0;
        }
        let mut l = self.inner.lock();
        l.remove(&key);
        l.tick += 1;
        let used = l.tick;
        l.bytes += cost(&value);
        l.map.insert(key, Slot { value, expires, used });
        l.order.insert(used, key);
        let mut evicted = 0;
        while l.bytes > self.limit {
            let Some((_, oldest)) = l.order.pop_first() else { break };
            if let Some(slot) = l.map.remove(&oldest) {
                l.bytes -= cost(&slot.value);
            }
            evicted += 1;
        }
        evicted
    }
}

impl Lru {
    fn remove(&mut self, key: &Key) {
        if let Some(slot) = self.map.remove(key) {
            self.order.remove(&slot.used);
            self.bytes -= cost(&slot.value);
        }
    }
}
