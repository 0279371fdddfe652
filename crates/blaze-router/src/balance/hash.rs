//! A weighted consistent-hash ring with bounded load.

use std::sync::Arc;
use std::time::Instant;

use crate::endpoint::Endpoint;

/// Ring points for the heaviest endpoint. 160 points per endpoint keep each endpoint's share
/// within about 10% of its weight (Envoy's ring hash uses a similar minimum), while a ring of
/// a hundred endpoints stays a few hundred KiB.
const POINTS: u32 = 160;

/// A stable 64-bit hash (FNV-1a, then the SplitMix64 finaliser to spread the bits). Stable
/// across processes and versions, so every router replica maps a key to the same endpoint.
pub fn hash_bytes(bytes: &[u8]) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for &b in bytes {
        h = (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
    }
    mix(h)
}

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The ring: points sorted by hash, each naming an endpoint index.
#[derive(Debug, Default)]
pub struct Ring {
    points: Vec<(u64, u32)>,
}

impl Ring {
    /// Builds the ring. An endpoint's points depend only on its address, so adding or removing
    /// one endpoint moves only the keys that land on its points.
    pub fn new(eps: &[Arc<Endpoint>]) -> Self {
        let max_w = eps.iter().map(|e| e.weight()).max().unwrap_or(0).max(1);
        let mut points = Vec::new();
        for (i, e) in eps.iter().enumerate() {
            let w = e.weight();
            if w == 0 {
                continue;
            }
            let n = (u64::from(POINTS) * u64::from(w)).div_ceil(u64::from(max_w));
            let base = hash_bytes(e.address.as_bytes());
            for p in 0..n {
                points.push((mix(base ^ mix(p + 1)), u32::try_from(i).unwrap_or(u32::MAX)));
            }
        }
        points.sort_unstable();
        Self { points }
    }

    /// The first endpoint clockwise from `key` that is usable and under its load bound:
    /// `ceil(load_factor * (in_flight_total + 1) * weight / total_weight)`.
    pub fn pick(
        &self,
        eps: &[Arc<Endpoint>],
        key: u64,
        load_factor: f64,
        now: Instant,
        ok: &dyn Fn(usize) -> bool,
    ) -> Option<usize> {
        if self.points.is_empty() {
            return None;
        }
        let (mut load, mut weight) = (0u64, 0f64);
        for i in (0..eps.len()).filter(|&i| ok(i)) {
            load += eps[i].in_flight();
            weight += eps[i].effective_weight(now);
        }
        if weight <= 0.0 {
            return None;
        }
        let start = self.points.partition_point(|&(h, _)| h < key);
        let mut first_usable = None;
        for k in 0..self.points.len() {
            let i = self.points[(start + k) % self.points.len()].1 as usize;
            if !ok(i) {
                continue;
            }
            first_usable.get_or_insert(i);
            let share = eps[i].effective_weight(now) / weight;
            let bound = (load_factor * (load as f64 + 1.0) * share).ceil();
            if (eps[i].in_flight() as f64) < bound {
                return Some(i);
            }
        }
        first_usable
    }
}
