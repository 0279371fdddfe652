use std::time::Duration;

use blaze_api::router::CircuitBreakerSpec;

use super::*;
use crate::breaker::BreakerConfig;
use crate::endpoint::InFlight;

fn endpoints(weights: &[u32], slow_start_s: u64, now: Instant) -> Vec<Arc<Endpoint>> {
    let cfg = BreakerConfig::from(&CircuitBreakerSpec::default());
    weights
        .iter()
        .enumerate()
        .map(|(i, &w)| {
            let ss = Duration::from_secs(slow_start_s);
            Endpoint::new(
                format!("10.0.0.{i}:8000"),
                String::new(),
                String::new(),
                w,
                cfg.clone(),
                ss,
                now,
            )
        })
        .collect()
}

fn counts(b: &Balancer, eps: &[Arc<Endpoint>], n: usize, now: Instant) -> Vec<usize> {
    let mut c = vec![0; eps.len()];
    let cx = PickContext { now, key: None };
    for _ in 0..n {
        c[b.pick(eps, &cx, &|_| true).unwrap()] += 1;
    }
    c
}

/// Asserts each share is within `tol` (relative) of its weight's share.
fn assert_shares(c: &[usize], weights: &[u32], tol: f64) {
    let total: usize = c.iter().sum();
    let wsum: u32 = weights.iter().sum();
    for (i, (&n, &w)) in c.iter().zip(weights).enumerate() {
        let want = total as f64 * f64::from(w) / f64::from(wsum);
        let got = n as f64;
        assert!((got - want).abs() <= want * tol + 1.0, "endpoint {i}: {got} vs {want} ({c:?})");
    }
}

#[test]
fn round_robin_is_exact_with_equal_weights_and_skips_unusable() {
    let now = Instant::now();
    let eps = endpoints(&[1, 1, 1], 0, now);
    let b = Balancer::new(Strategy::RoundRobin, &eps, 1.25);
    assert_eq!(counts(&b, &eps, 300, now), vec![100, 100, 100]);
    let cx = PickContext { now, key: None };
    for _ in 0..10 {
        assert_ne!(b.pick(&eps, &cx, &|i| i != 1), Some(1));
    }
    assert_eq!(b.pick(&eps, &cx, &|_| false), None);
}

#[test]
fn round_robin_honours_unequal_weights() {
    let now = Instant::now();
    let eps = endpoints(&[1, 3], 0, now);
    let b = Balancer::new(Strategy::RoundRobin, &eps, 1.25);
    assert_eq!(counts(&b, &eps, 400, now), vec![100, 300]);
}

#[test]
fn weighted_round_robin_is_exact_and_smooth() {
    let now = Instant::now();
    let weights = [1, 2, 3, 0];
    let eps = endpoints(&weights, 0, now);
    let b = Balancer::new(Strategy::WeightedRoundRobin, &eps, 1.25);
    assert_shares(&counts(&b, &eps, 60_000, now), &weights, 0.001);
    // Smooth: in any window of 6 picks each endpoint appears about in proportion.
    let cx = PickContext { now, key: None };
    let seq: Vec<usize> = (0..60).map(|_| b.pick(&eps, &cx, &|_| true).unwrap()).collect();
    for w in seq.chunks(6) {
        let n = w.iter().filter(|&&i| i == 2).count();
        assert!((2..=4).contains(&n), "{seq:?}");
    }
}

#[test]
fn random_follows_weights() {
    let now = Instant::now();
    let weights = [1, 2, 5];
    let eps = endpoints(&weights, 0, now);
    let b = Balancer::new(Strategy::Random, &eps, 1.25);
    assert_shares(&counts(&b, &eps, 80_000, now), &weights, 0.05);
}

#[test]
fn least_connections_holds_in_flight_in_proportion_to_weight() {
    let now = Instant::now();
    let weights = [1, 3];
    let eps = endpoints(&weights, 0, now);
    let b = Balancer::new(Strategy::LeastConnections, &eps, 1.25);
    let cx = PickContext { now, key: None };
    let mut held: Vec<InFlight> = Vec::new();
    for _ in 0..400 {
        let i = b.pick(&eps, &cx, &|_| true).unwrap();
        held.push(eps[i].start(now));
    }
    assert_shares(&[eps[0].in_flight() as usize, eps[1].in_flight() as usize], &weights, 0.02);
    // With 3 in flight on the light one and none on the heavy one, the heavy one wins.
    drop(held);
    let _g: Vec<InFlight> = (0..3).map(|_| eps[0].start(now)).collect();
    assert_eq!(b.pick(&eps, &cx, &|_| true), Some(1));
}

#[test]
fn adaptive_prefers_the_fast_endpoint_but_not_exclusively() {
    let now = Instant::now();
    let eps = endpoints(&[1, 1, 1], 0, now);
    eps[0].observe_ttft(Duration::from_millis(10), now + Duration::from_secs(60));
    eps[1].observe_ttft(Duration::from_millis(100), now + Duration::from_secs(60));
    eps[2].observe_ttft(Duration::from_millis(100), now + Duration::from_secs(60));
    let b = Balancer::new(Strategy::Adaptive, &eps, 1.25);
    let c = counts(&b, &eps, 30_000, now);
    // P2C without load: the fastest wins every pair it is drawn into: 2/3 of picks.
    let share = c[0] as f64 / 30_000.0;
    assert!((share - 2.0 / 3.0).abs() < 0.02, "{c:?}");
    // Load on the fast one makes the others cheaper.
    let cx = PickContext { now, key: None };
    let _held: Vec<InFlight> = (0..20).map(|_| eps[0].start(now)).collect();
    for _ in 0..100 {
        assert_ne!(b.pick(&eps, &cx, &|_| true), Some(0));
    }
}

#[test]
fn slow_start_gives_a_new_endpoint_a_small_share_that_grows() {
    let old = Instant::now();
    let t0 = old + Duration::from_secs(1000);
    let eps = endpoints(&[1, 1], 100, old);
    let fresh = endpoints(&[1], 100, t0);
    let all = vec![eps[0].clone(), eps[1].clone(), fresh[0].clone()];
    let b = Balancer::new(Strategy::Random, &all, 1.25);
    let early = counts(&b, &all, 21_000, t0)[2] as f64 / 21_000.0;
    let half = counts(&b, &all, 25_000, t0 + Duration::from_secs(50))[2] as f64 / 25_000.0;
    let full = counts(&b, &all, 30_000, t0 + Duration::from_secs(100))[2] as f64 / 30_000.0;
    assert!((early - 0.1 / 2.1).abs() < 0.01, "{early}");
    assert!((half - 0.5 / 2.5).abs() < 0.015, "{half}");
    assert!((full - 1.0 / 3.0).abs() < 0.015, "{full}");
}

fn keyed_pick(b: &Balancer, eps: &[Arc<Endpoint>], key: &str, now: Instant) -> usize {
    let cx = PickContext { now, key: Some(hash_bytes(key.as_bytes())) };
    b.pick(eps, &cx, &|_| true).unwrap()
}

#[test]
fn consistent_hash_is_sticky_and_weighted() {
    let now = Instant::now();
    let weights = [1, 1, 2];
    let eps = endpoints(&weights, 0, now);
    let b = Balancer::new(Strategy::ConsistentHash, &eps, 1.25);
    let mut c = vec![0; 3];
    for k in 0..20_000 {
        let key = format!("user-{k}");
        let i = keyed_pick(&b, &eps, &key, now);
        assert_eq!(keyed_pick(&b, &eps, &key, now), i);
        c[i] += 1;
    }
    assert_shares(&c, &weights, 0.15);
}

#[test]
fn consistent_hash_moves_few_keys_when_an_endpoint_leaves() {
    let now = Instant::now();
    let eps = endpoints(&[1, 1, 1, 1, 1], 0, now);
    let b5 = Balancer::new(Strategy::ConsistentHash, &eps, 1.25);
    let four: Vec<_> = eps.iter().take(4).cloned().collect();
    let b4 = Balancer::new(Strategy::ConsistentHash, &four, 1.25);
    let mut moved = 0;
    for k in 0..10_000 {
        let key = format!("session-{k}");
        let before = keyed_pick(&b5, &eps, &key, now);
        let after = keyed_pick(&b4, &four, &key, now);
        if before != 4 {
            assert_eq!(before, after, "a key on a remaining endpoint moved");
        } else {
            moved += 1;
        }
    }
    // Only the leaving endpoint's keys move: about a fifth.
    assert!((1_400..2_600).contains(&moved), "{moved}");
}

#[test]
fn bounded_load_spills_a_hot_key() {
    let now = Instant::now();
    let eps = endpoints(&[1, 1, 1, 1], 0, now);
    let b = Balancer::new(Strategy::PrefixAware, &eps, 1.25);
    let mut held = Vec::new();
    for _ in 0..100 {
        let i = keyed_pick(&b, &eps, "the same long system prompt", now);
        held.push(eps[i].start(now));
    }
    // No endpoint above ceil(1.25 * 100 / 4) = 32 even though every request shares one key.
    for e in &eps {
        assert!(e.in_flight() <= 32, "{}", e.in_flight());
    }
    // With nothing in flight the key goes home again.
    let home = {
        drop(held);
        keyed_pick(&b, &eps, "the same long system prompt", now)
    };
    assert_eq!(keyed_pick(&b, &eps, "the same long system prompt", now), home);
}

#[test]
fn hashing_without_a_key_falls_back_and_skips_unusable() {
    let now = Instant::now();
    let eps = endpoints(&[1, 1], 0, now);
    let b = Balancer::new(Strategy::ConsistentHash, &eps, 1.25);
    let cx = PickContext { now, key: None };
    assert!(b.pick(&eps, &cx, &|_| true).is_some());
    let cx = PickContext { now, key: Some(42) };
    for _ in 0..10 {
        assert_eq!(b.pick(&eps, &cx, &|i| i == 1), Some(1));
    }
}
