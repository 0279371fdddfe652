//! Balancing strategies. Pure: they read endpoints' weights, in-flight counts and latency
//! estimates and return an index; the proxy decides what "usable" means (breaker, health,
//! endpoints already tried) and passes it in.
//!
//! Every strategy honours weights (a weight of 0 sends nothing) and slow start:
//! - round robin: a lock-free counter when all weights are equal, else smooth weighted;
//! - weighted round robin: earliest deadline first, as Envoy (each pick pushes the endpoint's
//!   next deadline out by 1/weight);
//! - least connections: the highest `weight / (active + 1)^bias`, as Envoy, ties at random;
//! - adaptive: power of two choices (drawn by weight) over peak-EWMA time to the first body
//!   byte (a stream's first token) times requests in flight, over weight;
//! - consistent hashing and prefix-aware: a weighted hash ring with bounded load (no endpoint
//!   takes more than `loadFactor` times its share of the requests in flight, plus one), so a hot
//!   key or prefix spills to the next endpoint on the ring instead of sinking one backend;
//!   without a key they fall back to adaptive;
//! - random: drawn by weight.

mod hash;

use std::collections::BinaryHeap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use blaze_api::router::Strategy;
use parking_lot::Mutex;
use rand::Rng;

pub use hash::{Ring, hash_bytes};

use crate::endpoint::Endpoint;

/// Envoy's `active_request_bias` default: load counts linearly against weight.
pub const LEAST_CONNECTIONS_BIAS: f64 = 1.0;

/// What a pick needs to know about the request.
#[derive(Clone, Copy, Debug)]
pub struct PickContext {
    /// The clock.
    pub now: Instant,
    /// Hash of the session key or prompt prefix, for the hashing strategies.
    pub key: Option<u64>,
}

/// A strategy bound to one endpoint list (rebuilt when the list changes).
#[derive(Debug)]
pub struct Balancer {
    strategy: Strategy,
    equal_weights: bool,
    counter: AtomicUsize,
    edf: Mutex<Edf>,
    ring: Ring,
    load_factor: f64,
}

impl Balancer {
    /// A balancer for `endpoints`.
    pub fn new(strategy: Strategy, endpoints: &[Arc<Endpoint>], load_factor: f64) -> Self {
        let weights: Vec<u32> = endpoints.iter().map(|e| e.weight()).collect();
        let equal_weights = weights.windows(2).all(|w| w[0] == w[1]);
        let ring = if strategy.hashes_keys() { Ring::new(endpoints) } else { Ring::default() };
        Self {
            strategy,
            equal_weights,
            counter: AtomicUsize::new(0),
            edf: Mutex::new(Edf::new(endpoints.len())),
            ring,
            load_factor: load_factor.max(1.0),
        }
    }

    /// The strategy.
    pub fn strategy(&self) -> Strategy {
        self.strategy
    }

    /// Picks an endpoint among those `usable` says yes to with a weight above zero.
    pub fn pick(
        &self,
        eps: &[Arc<Endpoint>],
        cx: &PickContext,
        usable: &dyn Fn(usize) -> bool,
    ) -> Option<usize> {
        let ok = |i: usize| eps[i].weight() > 0 && usable(i);
        match self.strategy {
            Strategy::RoundRobin if self.equal_weights => self.round_robin(eps.len(), &ok),
            Strategy::RoundRobin | Strategy::WeightedRoundRobin => {
                // The schedule can skip a usable endpoint when heavier unusable ones come
                // round again first; then take any usable one.
                let picked = self.edf.lock().pick(eps, cx.now, &ok);
                picked.or_else(|| (0..eps.len()).find(|&i| ok(i)))
            }
            Strategy::LeastConnections => least_connections(eps, cx.now, &ok),
            Strategy::Adaptive => p2c(eps, cx.now, &ok),
            Strategy::Random => weighted_random(eps, cx.now, &ok, None),
            Strategy::ConsistentHash | Strategy::PrefixAware => match cx.key {
                Some(key) => self.ring.pick(eps, key, self.load_factor, cx.now, &ok),
                None => p2c(eps, cx.now, &ok),
            },
        }
    }

    fn round_robin(&self, n: usize, ok: &dyn Fn(usize) -> bool) -> Option<usize> {
        if n == 0 {
            return None;
        }
        let start = self.counter.fetch_add(1, Ordering::Relaxed);
        (0..n).map(|i| (start + i) % n).find(|&i| ok(i))
    }
}

fn least_connections(
    eps: &[Arc<Endpoint>],
    now: Instant,
    ok: &dyn Fn(usize) -> bool,
) -> Option<usize> {
    let mut rng = rand::rng();
    let mut best: Option<(usize, f64)> = None;
    let mut ties = 0u32;
    for i in (0..eps.len()).filter(|&i| ok(i)) {
        let e = &eps[i];
        let score =
            e.effective_weight(now) / (e.in_flight() as f64 + 1.0).powf(LEAST_CONNECTIONS_BIAS);
        match best {
            Some((_, s)) if score < s => {}
            Some((_, s)) if score == s => {
                // Reservoir sampling over equal scores keeps ties fair.
                ties += 1;
                if rng.random_range(0..=ties) == 0 {
                    best = Some((i, score));
                }
            }
            _ => {
                best = Some((i, score));
                ties = 0;
            }
        }
    }
    best.map(|(i, _)| i)
}

fn p2c(eps: &[Arc<Endpoint>], now: Instant, ok: &dyn Fn(usize) -> bool) -> Option<usize> {
    let a = weighted_random(eps, now, ok, None)?;
    let Some(b) = weighted_random(eps, now, ok, Some(a)) else {
        return Some(a);
    };
    if eps[b].cost(now) < eps[a].cost(now) { Some(b) } else { Some(a) }
}

fn weighted_random(
    eps: &[Arc<Endpoint>],
    now: Instant,
    ok: &dyn Fn(usize) -> bool,
    skip: Option<usize>,
) -> Option<usize> {
    let candidates = move || (0..eps.len()).filter(move |&i| Some(i) != skip && ok(i));
    let total: f64 = candidates().map(|i| eps[i].effective_weight(now)).sum();
    if total <= 0.0 {
        return None;
    }
    let mut r = rand::rng().random_range(0.0..total);
    let mut last = None;
    for i in candidates() {
        r -= eps[i].effective_weight(now);
        last = Some(i);
        if r < 0.0 {
            break;
        }
    }
    last
}

/// Earliest-deadline-first scheduler for smooth weighted round robin.
#[derive(Debug)]
struct Edf {
    heap: BinaryHeap<Entry>,
    time: f64,
    seq: u64,
}

#[derive(Debug, PartialEq)]
struct Entry {
    deadline: f64,
    seq: u64,
    index: usize,
}

impl Eq for Entry {}
impl Ord for Entry {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        // Reversed: BinaryHeap is a max-heap and we want the earliest deadline, then FIFO.
        o.deadline.total_cmp(&self.deadline).then(o.seq.cmp(&self.seq))
    }
}
impl PartialOrd for Entry {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}

impl Edf {
    fn new(n: usize) -> Self {
        let heap = (0..n).map(|i| Entry { deadline: 0.0, seq: i as u64, index: i }).collect();
        Self { heap, time: 0.0, seq: n as u64 }
    }

    fn pick(
        &mut self,
        eps: &[Arc<Endpoint>],
        now: Instant,
        ok: &dyn Fn(usize) -> bool,
    ) -> Option<usize> {
        for _ in 0..self.heap.len() {
            let e = self.heap.pop()?;
            self.time = self.time.max(e.deadline);
            let w = eps[e.index].effective_weight(now);
            // A weight-0 endpoint waits far in the future but stays in the schedule.
            let step = if w > 0.0 { 1.0 / w } else { 1e9 };
            self.seq += 1;
            let index = e.index;
            self.heap.push(Entry { deadline: self.time + step, seq: self.seq, index });
            if ok(index) {
                return Some(index);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests;
