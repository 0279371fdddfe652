use super::*;
use blaze_api::engine::AutoscalingMode;

fn spec(min: i32, max: i32) -> AutoscalingSpec {
    AutoscalingSpec {
        mode: AutoscalingMode::Blaze,
        min_replicas: min,
        max_replicas: Some(max),
        target_in_flight_per_replica: Some(10),
        scale_down_delay_seconds: 120,
        ..Default::default()
    }
}

/// Runs the autoscaler from `start` for `secs`, a sample every 2 s with `load(t)` in flight,
/// workers becoming ready at once. Returns the decisions and the final state.
fn simulate(
    a: &mut Autoscaler,
    s: &AutoscalingSpec,
    ready: &mut i32,
    start: f64,
    secs: f64,
    load: impl Fn(f64) -> f64,
) -> Vec<Decision> {
    let mut out = Vec::new();
    let mut t = start;
    while t < start + secs {
        a.record(Sample { at: t, in_flight: load(t), p95_ms: None });
        let d = a.decide(s, *ready, *ready, t);
        *ready = d.desired;
        out.push(d);
        t += 2.0;
    }
    out
}

#[test]
fn steady_load_settles_at_load_over_target_growing_at_most_max_rate_per_step() {
    let s = spec(1, 20);
    let (mut a, mut ready) = (Autoscaler::default(), 1);
    let d = simulate(&mut a, &s, &mut ready, 0.0, 120.0, |_| 70.0);
    let path: Vec<i32> = d.iter().map(|d| d.desired).take(4).collect();
    assert_eq!(path, [2, 4, 7, 7], "doubling at most, then 70/10");
    assert_eq!(ready, 7);
}

#[test]
fn changes_within_the_tolerance_do_nothing() {
    let s = spec(1, 20);
    let (mut a, mut ready) = (Autoscaler::default(), 4);
    simulate(&mut a, &s, &mut ready, 0.0, 100.0, |_| 43.0);
    assert_eq!(ready, 4, "43 in flight is within 10% of 4 x 10");
    simulate(&mut a, &s, &mut ready, 100.0, 100.0, |_| 46.0);
    assert_eq!(ready, 5, "46 is not");
}

#[test]
fn scale_down_waits_for_the_delay_then_goes_to_zero_when_allowed() {
    let s = spec(0, 20);
    let (mut a, mut ready) = (Autoscaler::default(), 1);
    simulate(&mut a, &s, &mut ready, 0.0, 100.0, |_| 40.0);
    assert_eq!(ready, 4);
    let d = simulate(&mut a, &s, &mut ready, 100.0, 400.0, |_| 0.0);
    let first_drop = d.iter().position(|d| d.desired < 4).unwrap();
    // A whole stable window (60 s) without the load, then the 120 s delay, counted from the
    // last loaded sample (2 s before the first idle one).
    assert!(first_drop as f64 * 2.0 >= 60.0 + 120.0 - 2.0, "dropped after {}s", first_drop * 2);
    assert_eq!(ready, 0, "idle engines with minReplicas 0 scale to zero");
    let d = simulate(&mut a, &s, &mut ready, 500.0, 4.0, |_| 3.0);
    assert!(d[0].desired >= 1, "a request wakes a scaled-to-zero engine at once");
}

#[test]
fn a_burst_panics_and_panic_never_scales_down_until_a_calm_stable_window() {
    let s = spec(1, 50);
    let (mut a, mut ready) = (Autoscaler::default(), 2);
    simulate(&mut a, &s, &mut ready, 0.0, 60.0, |_| 20.0);
    assert_eq!(ready, 2);
    // A 10 s burst to 200 in flight.
    let d = simulate(&mut a, &s, &mut ready, 60.0, 10.0, |_| 200.0);
    assert!(d.iter().any(|d| d.panicking));
    let peak = ready;
    assert!(peak >= 8, "panic scaled up fast: {peak}");
    let d = simulate(&mut a, &s, &mut ready, 70.0, 50.0, |_| 20.0);
    assert!(d.iter().all(|d| d.desired >= peak), "no scale down while panicking");
    let d = simulate(&mut a, &s, &mut ready, 120.0, 300.0, |_| 20.0);
    assert!(!d.last().unwrap().panicking);
    assert_eq!(ready, 2, "back to load over target once calm and the delay passed");
}

#[test]
fn latency_above_target_adds_workers_in_proportion() {
    let s = AutoscalingSpec {
        target_in_flight_per_replica: None,
        target_latency_p95_ms: Some(2000),
        ..spec(1, 10)
    };
    let mut a = Autoscaler::default();
    for i in 0..30 {
        a.record(Sample { at: f64::from(i) * 2.0, in_flight: 5.0, p95_ms: Some(3000.0) });
    }
    assert_eq!(a.decide(&s, 2, 2, 60.0).desired, 3, "2 x 3000/2000");
}

#[test]
fn bounds_hold_and_no_data_keeps_the_current_size() {
    let s = spec(2, 5);
    let (mut a, mut ready) = (Autoscaler::default(), 2);
    simulate(&mut a, &s, &mut ready, 0.0, 200.0, |_| 1000.0);
    assert_eq!(ready, 5);
    simulate(&mut a, &s, &mut ready, 200.0, 400.0, |_| 0.0);
    assert_eq!(ready, 2);
    assert_eq!(Autoscaler::default().decide(&s, 3, 1, 0.0).desired, 3);
    assert_eq!(Autoscaler::default().decide(&s, 9, 9, 0.0).desired, 5);
}

#[test]
fn workers_still_loading_do_not_compound_the_rate_limit() {
    let s = spec(1, 100);
    let mut a = Autoscaler::default();
    for i in 0..10 {
        a.record(Sample { at: f64::from(i), in_flight: 500.0, p95_ms: None });
    }
    // 2 asked for, 1 ready: at most 2 x 1 ready, but the 2 already asked for stay.
    assert_eq!(a.decide(&s, 2, 1, 10.0).desired, 2);
    assert_eq!(a.decide(&s, 2, 2, 11.0).desired, 4);
    assert_eq!(a.decide(&s, 4, 0, 12.0).desired, 4, "none ready: nothing withdrawn, nothing added");
}

/// After an operator restart the autoscaler starts empty: its first samples may scale up at
/// once, but it scales down only after a whole stable window of its own samples and then
/// the delay, never on its first sample alone.
#[test]
fn a_fresh_autoscaler_does_not_scale_down_on_its_first_samples() {
    let s = spec(1, 20);
    let (mut a, mut ready) = (Autoscaler::default(), 4);
    let d = simulate(&mut a, &s, &mut ready, 1000.0, 58.0, |_| 0.0);
    assert!(d.iter().all(|d| d.desired == 4), "{d:?}");
    let d = simulate(&mut a, &s, &mut ready, 1058.0, 300.0, |_| 0.0);
    let first_drop = d.iter().position(|d| d.desired < 4).unwrap() as f64 * 2.0 + 58.0;
    assert!(first_drop >= 60.0 + 120.0 - 2.0, "dropped {first_drop} s after the restart");
    assert_eq!(ready, 1);
    let (mut b, mut ready) = (Autoscaler::default(), 2);
    let d = simulate(&mut b, &s, &mut ready, 0.0, 2.0, |_| 100.0);
    assert_eq!(d[0].desired, 4, "a fresh autoscaler still scales up at once");
}

/// Decisions made seldom (a reconcile every 50 s) still hold a lower recommendation for the
/// whole delay.
#[test]
fn the_delay_holds_when_decisions_are_seldom() {
    let s = spec(1, 20);
    let mut a = Autoscaler::default();
    for i in 0..40 {
        a.record(Sample { at: f64::from(i) * 2.0, in_flight: 40.0, p95_ms: None });
    }
    assert_eq!(a.decide(&s, 4, 4, 78.0).desired, 4);
    for i in 40..200 {
        a.record(Sample { at: f64::from(i) * 2.0, in_flight: 0.0, p95_ms: None });
    }
    // The load went at 80 s; the stable window (60 s) sees it gone from 140 s.
    let mut dropped_at = None;
    for t in [128.0, 178.0, 228.0, 278.0, 328.0, 378.0] {
        if a.decide(&s, 4, 4, t).desired < 4 && dropped_at.is_none() {
            dropped_at = Some(t);
        }
    }
    let at = dropped_at.expect("scaled down in the end");
    assert!(at >= 140.0 + 120.0, "dropped at {at} s, before the delay passed");
}

/// An engine at zero has nothing to sample: held requests wake it to one worker at once, and
/// it keeps that worker for the stable window and then the scale-down delay, however idle.
#[test]
fn a_wake_up_brings_an_engine_at_zero_to_one_and_keeps_it_a_window_and_a_delay() {
    let s =
        AutoscalingSpec { stable_window_seconds: 20, scale_down_delay_seconds: 30, ..spec(0, 3) };
    let mut a = Autoscaler::default();
    assert_eq!(a.decide(&s, 0, 0, 0.0).desired, 0, "asleep without demand");
    assert!(a.wake(&s, 10.0, true), "the first wake-up at zero is a cold start");
    assert!(!a.wake(&s, 11.0, true), "another while woken is not");
    assert_eq!(a.decide(&s, 0, 0, 11.0).desired, 1, "one worker at once");
    // The worker is ready from 20 s and serves the held requests, then sits idle.
    let mut last_one = 0.0;
    let mut t = 20.0;
    while t < 120.0 {
        let load = if t < 24.0 { 1.0 } else { 0.0 };
        a.record(Sample { at: t, in_flight: load, p95_ms: None });
        if a.decide(&s, 1, 1, t).desired == 1 {
            last_one = t;
        }
        t += 2.0;
    }
    assert!(last_one >= 11.0 + 20.0 + 30.0 - 2.0, "kept until {last_one} s");
    assert!(last_one < 118.0, "never went back to zero");
    assert_eq!(a.decide(&s, 1, 1, 120.0).desired, 0);
    assert!(a.wake(&s, 130.0, true), "a wake-up after the window is a new cold start");
    let mut serving = Autoscaler::default();
    assert!(!serving.wake(&s, 0.0, false), "with a worker ready it is no cold start");
    assert_eq!(serving.cold_start_done(1.0), None);
}

/// The load step: 20 s windows and delay, target 2, twelve streams for a minute.
/// Workers go only after a whole stable window without the load and then the delay, even
/// though the window's average falls below the need well before.
#[test]
fn after_a_load_step_workers_go_no_sooner_than_the_window_plus_the_delay() {
    let s = AutoscalingSpec {
        stable_window_seconds: 20,
        scale_down_delay_seconds: 20,
        target_in_flight_per_replica: Some(2),
        ..spec(1, 3)
    };
    let (mut a, mut ready) = (Autoscaler::default(), 1);
    let d = simulate(&mut a, &s, &mut ready, 0.0, 60.0, |t| if t < 4.0 { 0.0 } else { 12.0 });
    let up = d.iter().position(|d| d.desired > 1).unwrap();
    assert!(up as f64 * 2.0 - 4.0 <= 4.0, "scaled up {} s after the step", up * 2);
    assert_eq!(ready, 3);
    let d = simulate(&mut a, &s, &mut ready, 60.0, 120.0, |_| 0.0);
    let down = d.iter().position(|d| d.desired < 3).unwrap() as f64 * 2.0;
    assert!(down >= 20.0 + 20.0 - 2.0, "a worker went {down} s after the load stopped");
    assert_eq!(ready, 1);
}
