use super::*;
use blaze_api::router::Weight;

/// Weights for a router balancing adaptively (no hashing).
fn weights(endpoints: &[EndpointStats], spec: &WeightsSpec) -> Vec<i32> {
    super::weights(endpoints, spec, Strategy::Adaptive)
}

fn ep(engine: &str, ttft: Option<f64>, err: Option<f64>) -> EndpointStats {
    EndpointStats {
        engine: engine.into(),
        ttft_ms: ttft,
        error_rate: err,
        age_s: 1e6,
        ..Default::default()
    }
}

fn with(mut e: EndpointStats, f: impl FnOnce(&mut EndpointStats)) -> EndpointStats {
    f(&mut e);
    e
}

#[test]
fn faster_endpoints_get_more_and_errors_cut_hard() {
    let w = weights(
        &[
            ep("a", Some(100.0), None),
            ep("a", Some(250.0), None),
            ep("a", Some(100.0), Some(0.5)),
            ep("a", None, None),
        ],
        &WeightsSpec::default(),
    );
    assert_eq!(w[0], 100);
    assert_eq!(w[1], 50, "2.5 times slower: half of what is within the tolerance");
    assert_eq!(w[2], 25);
    assert_eq!(w[3], 50, "unmeasured endpoints take the median score");
}

/// Alike endpoints whose medians differ by noise keep the same weight.
#[test]
fn first_tokens_within_the_tolerance_weigh_the_same() {
    let w = weights(
        &[ep("a", Some(100.0), None), ep("a", Some(124.0), None), ep("a", Some(500.0), None)],
        &WeightsSpec::default(),
    );
    assert_eq!(w, vec![100, 100, 25]);
}

#[test]
fn min_weight_and_slow_start_hold() {
    let spec = WeightsSpec { min_weight: 5, slow_start_seconds: 30, ..Default::default() };
    let mut young = ep("a", Some(100.0), None);
    young.age_s = 15.0;
    let w = weights(&[ep("a", Some(100.0), None), ep("a", Some(100.0), Some(1.0)), young], &spec);
    assert_eq!(w, vec![100, 5, 55]);
}

#[test]
fn manual_weights_follow_the_engine_and_zero_means_none() {
    let spec = WeightsSpec {
        mode: WeightsMode::Manual,
        manual: Some(BTreeMap::from([("a".into(), Weight(80)), ("b".into(), Weight(0))])),
        ..Default::default()
    };
    let w = weights(
        &[ep("a", Some(900.0), None), ep("b", Some(1.0), None), ep("c", None, None)],
        &spec,
    );
    assert_eq!(w, vec![8000, 0, 0]);
}

/// A 90/10 canary is 90/10 of the traffic whatever the engines' pod counts, over the
/// API's whole range, and a share split three ways is not rounded away.
#[test]
fn manual_weights_are_engine_shares_split_over_their_endpoints() {
    let spec = |a: i32, b: i32| WeightsSpec {
        mode: WeightsMode::Manual,
        manual: Some(BTreeMap::from([("a".into(), Weight(a)), ("b".into(), Weight(b))])),
        ..Default::default()
    };
    let eps = [ep("a", None, None), ep("a", None, None), ep("a", None, None), ep("b", None, None)];
    let share =
        |w: &[i32]| f64::from(w[..3].iter().sum::<i32>()) / f64::from(w.iter().sum::<i32>());
    let w = weights(&eps, &spec(90, 10));
    assert_eq!(w, vec![3000, 3000, 3000, 1000]);
    assert!((share(&w) - 0.9).abs() < 1e-9);
    let w = weights(&eps, &spec(1000, 1));
    assert!((share(&w) - 1000.0 / 1001.0).abs() < 1e-3, "{w:?}");
    let w = weights(&eps, &spec(1, 1000));
    assert_eq!(w[..3], [33, 33, 33]);
    let mut young = spec(90, 10);
    young.slow_start_seconds = 30;
    let mut new_b = ep("b", None, None);
    new_b.age_s = 0.0;
    let w = weights(&[ep("a", None, None), new_b], &young);
    assert_eq!(w, vec![9000, 100], "a new endpoint starts at the slow-start floor");
}

#[test]
fn small_moves_are_not_published() {
    assert!(!changed_enough(&[100, 50], &[100, 54]));
    assert!(changed_enough(&[100, 50], &[100, 60]));
    assert!(changed_enough(&[100, 0], &[100, 1]));
    assert!(changed_enough(&[100], &[100, 1]));
}

#[test]
fn moves_to_and_from_zero_always_publish() {
    assert!(changed_enough(&[100, 1], &[100, 0]));
    assert!(changed_enough(&[100, 0], &[100, 1]));
    assert!(!changed_enough(&[100, 0], &[100, 0]));
}

/// An endpoint ejected by a router gets no traffic; one whose breaker is half-open gets the
/// slow-start floor so the router's probes can close its breaker; neither counts as the best
/// nor as typical for the others.
#[test]
fn ejected_endpoints_get_nothing_and_probed_ones_the_floor() {
    let down = |e| with(e, |e| e.condition = Condition::Down);
    let probing = |e| with(e, |e| e.condition = Condition::Probing);
    let eps = [
        ep("a", Some(100.0), None),
        ep("a", Some(250.0), None),
        down(ep("a", Some(10.0), Some(1.0))),
        probing(ep("a", Some(10.0), None)),
        ep("a", None, None),
    ];
    let w = weights(&eps, &WeightsSpec::default());
    assert_eq!(w, vec![100, 50, 0, 10, 100]);
    let spec = WeightsSpec { min_weight: 20, ..Default::default() };
    assert_eq!(weights(&eps, &spec)[3], 20, "the floor is at least minWeight");
}

/// Zeroing them all would leave the router nothing to send to, not even in its panic mode.
#[test]
fn when_every_endpoint_is_down_none_is_zeroed() {
    let down = |e| with(e, |e| e.condition = Condition::Down);
    let eps = [down(ep("a", Some(100.0), None)), down(ep("b", None, Some(1.0)))];
    assert_eq!(weights(&eps, &WeightsSpec::default()), vec![10, 10]);
}

/// Requests piling up on an unmeasured endpoint (a frozen worker whose requests never reach
/// a first token) cut its weight, and so do failures; a measured endpoint's load is already
/// in its first tokens, and the requests it holds do not cut it again.
#[test]
fn requests_in_flight_cut_only_unmeasured_endpoints_and_failures_cut_all() {
    let busy = |e, n| with(e, |e| e.in_flight = Some(n));
    let eps = [
        busy(ep("a", Some(100.0), None), 1.0),
        busy(ep("a", Some(100.0), None), 3.0),
        busy(ep("a", None, None), 9.0),
        ep("a", None, Some(1.0)),
    ];
    let w = weights(&eps, &WeightsSpec { min_weight: 0, ..Default::default() });
    assert_eq!(w, vec![100, 100, 10, 0]);
}

/// Slow start in `auto` mode follows the endpoint's age (since it was first seen ready, or
/// recovered), from the floor to full weight.
#[test]
fn young_endpoints_ramp_from_the_floor() {
    let spec = WeightsSpec { slow_start_seconds: 30, ..Default::default() };
    let young = |age| with(ep("a", Some(100.0), None), |e| e.age_s = age);
    let w = weights(&[ep("a", Some(100.0), None), young(0.0), young(15.0), young(30.0)], &spec);
    assert_eq!(w, vec![100, 10, 55, 100]);
}

#[test]
fn manual_shares_ignore_breakers_and_latency() {
    let spec = WeightsSpec {
        mode: WeightsMode::Manual,
        manual: Some(BTreeMap::from([("a".into(), Weight(1)), ("b".into(), Weight(1))])),
        ..Default::default()
    };
    let down = with(ep("b", Some(1.0), Some(1.0)), |e| e.condition = Condition::Down);
    assert_eq!(weights(&[ep("a", Some(900.0), None), down], &spec), vec![100, 100]);
}

/// Under the hashing strategies a weight is a share of the ring: latency, slow start and
/// minWeight move none, so keys stay where their caches are; ejected and probed endpoints
/// still get 0 and the probe weight.
#[test]
fn hashing_routers_weigh_by_membership_only() {
    let mut young = ep("a", Some(100.0), None);
    young.age_s = 3.0;
    let down = with(ep("a", None, None), |e| e.condition = Condition::Down);
    let probing = with(ep("a", None, None), |e| e.condition = Condition::Probing);
    let eps = [ep("a", Some(100.0), None), ep("a", Some(900.0), Some(0.2)), young, down, probing];
    let spec = WeightsSpec { min_weight: 5, slow_start_seconds: 30, ..Default::default() };
    for strategy in [Strategy::ConsistentHash, Strategy::PrefixAware] {
        assert_eq!(
            super::weights(&eps, &spec, strategy),
            vec![100, 100, 100, 0, 10],
            "{strategy:?}"
        );
    }
    assert_eq!(weights(&eps, &spec), vec![100, 9, 19, 0, 10], "adaptive: by latency and age");
    // Manual shares hold as given, without the ramp.
    let manual = WeightsSpec {
        mode: WeightsMode::Manual,
        manual: Some(BTreeMap::from([("a".into(), Weight(90)), ("b".into(), Weight(10))])),
        slow_start_seconds: 30,
        ..Default::default()
    };
    let fresh = |engine: &str| with(ep(engine, None, None), |e| e.age_s = 0.0);
    let got = super::weights(&[fresh("a"), fresh("b")], &manual, Strategy::PrefixAware);
    assert_eq!(got, vec![9000, 1000]);
}
