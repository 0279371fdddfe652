use super::*;

fn cfg() -> BreakerConfig {
    BreakerConfig::from(&CircuitBreakerSpec {
        consecutive_failures: 3,
        failure_rate_threshold: 0.5,
        open_seconds: 10,
        max_open_seconds: 40,
        half_open_requests: 1,
        success_threshold: 2,
        max_ejection_percent: 50,
    })
}

fn fail(b: &mut Breaker, now: Instant) -> bool {
    b.on_failure(now, || true)
}

/// A breaker (jitter drawn from `seed`) opened by consecutive failures at `t0`, and the
/// instant it is open until.
fn opened(seed: u64, t0: Instant) -> (Breaker, Instant) {
    let mut b = Breaker::new(cfg(), seed);
    for _ in 0..3 {
        fail(&mut b, t0);
    }
    let until = b.open_until().expect("open after three failures");
    (b, until)
}

#[test]
fn consecutive_failures_open_the_breaker() {
    let t0 = Instant::now();
    let mut b = Breaker::new(cfg(), 7);
    assert!(!fail(&mut b, t0));
    assert!(!fail(&mut b, t0));
    assert_eq!(b.state(t0), BreakerState::Closed);
    assert!(fail(&mut b, t0));
    assert_eq!(b.state(t0), BreakerState::Open);
    assert_eq!(b.admit(t0 + Duration::from_secs(1)), Admit::No);
}

#[test]
fn a_success_resets_the_consecutive_count() {
    let t0 = Instant::now();
    let mut b = Breaker::new(cfg(), 7);
    for _ in 0..6 {
        assert!(!fail(&mut b, t0));
        assert!(!fail(&mut b, t0));
        for _ in 0..4 {
            b.on_success(t0);
        }
    }
    // A third of outcomes fail, under the 50% rate, and never 3 in a row.
    assert_eq!(b.state(t0), BreakerState::Closed);
}

#[test]
fn the_failure_rate_opens_the_breaker_once_enough_requests_were_seen() {
    let t0 = Instant::now();
    let mut b = Breaker::new(cfg(), 7);
    let mut opened_after = None;
    for i in 0..20 {
        if i % 2 == 0 {
            b.on_success(t0);
        } else if fail(&mut b, t0) {
            opened_after = Some(i + 1);
            break;
        }
    }
    // Alternating outcomes reach 50% at the 10th outcome, the minimum sample.
    assert_eq!(opened_after, Some(10));
}

#[test]
fn open_becomes_half_open_after_the_open_time_with_jitter() {
    let t0 = Instant::now();
    let (mut b, until) = opened(7, t0);
    let open = until - t0;
    assert!(open >= Duration::from_secs(8) && open < Duration::from_secs(12), "{open:?}");
    assert_eq!(b.admit(until - Duration::from_millis(1)), Admit::No);
    assert_eq!(b.state(until), BreakerState::HalfOpen);
    assert_eq!(b.admit(until), Admit::Probe);
    // One probe at a time.
    assert_eq!(b.admit(until), Admit::No);
}

#[test]
fn successful_probes_close_the_breaker() {
    let t0 = Instant::now();
    let (mut b, t1) = opened(7, t0);
    assert_eq!(b.admit(t1), Admit::Probe);
    assert!(!b.on_success(t1));
    assert_eq!(b.admit(t1), Admit::Probe);
    assert!(b.on_success(t1));
    assert_eq!(b.state(t1), BreakerState::Closed);
    assert!(!b.is_ejected());
    assert_eq!(b.admit(t1), Admit::Yes);
}

#[test]
fn a_failed_probe_reopens_with_a_doubled_capped_time() {
    let t0 = Instant::now();
    let (mut b, mut now) = opened(11, t0);
    let mut opens = Vec::new();
    for _ in 0..4 {
        assert_eq!(b.admit(now), Admit::Probe);
        assert!(fail(&mut b, now));
        let until = b.open_until().unwrap();
        opens.push((until - now).as_secs_f64());
        now = until;
    }
    // 20s, 40s (cap), 40s, 40s, each with up to 20% jitter and never above the cap.
    assert!((16.0..24.0).contains(&opens[0]), "{opens:?}");
    for o in &opens[1..] {
        assert!((32.0..=40.0).contains(o), "{opens:?}");
    }
}

#[test]
fn a_refused_ejection_keeps_the_breaker_closed() {
    let t0 = Instant::now();
    let mut b = Breaker::new(cfg(), 7);
    for _ in 0..5 {
        assert!(!b.on_failure(t0, || false));
    }
    assert_eq!(b.state(t0), BreakerState::Closed);
    assert_eq!(b.admit(t0), Admit::Yes);
}

#[test]
fn ejections_honour_the_percentage_and_never_take_all() {
    assert_eq!(max_ejections(4, 50), 2);
    assert_eq!(max_ejections(3, 50), 1);
    assert_eq!(max_ejections(2, 100), 1);
    assert_eq!(max_ejections(1, 100), 0);
    assert_eq!(max_ejections(10, 0), 0);
}

#[test]
fn a_released_probe_lets_the_next_one_through() {
    let t0 = Instant::now();
    let (mut b, t1) = opened(7, t0);
    assert_eq!(b.admit(t1), Admit::Probe);
    assert_eq!(b.admit(t1), Admit::No);
    b.release_probe();
    assert_eq!(b.admit(t1), Admit::Probe);
}
