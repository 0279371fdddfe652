//! Router weights from what each endpoint shows. In `auto` mode an endpoint's score is the
//! inverse of its p95 latency, cut by its error rate squared; weights are scores scaled so the
//! best endpoint gets [`MAX_WEIGHT`], never below `minWeight` (so a recovered endpoint keeps
//! getting the traffic that shows it recovered), and new endpoints ramp up over
//! `slowStartSeconds`. In `manual` mode the weights are engine shares: an engine's weight is
//! split evenly over its endpoints, so a 90/10 canary between two engines sends 90% and 10%
//! of the traffic whatever number of workers each runs.

use std::collections::BTreeMap;

use blaze_api::router::{WeightsMode, WeightsSpec};

/// The weight of the best endpoint.
pub const MAX_WEIGHT: i32 = 100;
/// Latencies below this count as this, so one idle endpoint reporting 1 ms does not take all
/// the traffic.
pub const LATENCY_FLOOR_MS: f64 = 10.0;
/// Share of full weight a brand-new endpoint starts at during slow start.
pub const SLOW_START_FLOOR: f64 = 0.1;
/// Manual engine weights (0 to 1000) are multiplied by this before they are split over an
/// engine's endpoints, so a split keeps two more digits: weight 1 over three endpoints is 33
/// each, not 0.
pub const MANUAL_SCALE: f64 = 100.0;
/// Relative change in any weight below which new weights are not published, so measurement
/// noise does not churn the router's configuration.
pub const CHANGE_THRESHOLD: f64 = 0.1;

/// What is known of one endpoint.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EndpointStats {
    /// The engine it belongs to.
    pub engine: String,
    /// p95 latency in milliseconds, if measured.
    pub p95_ms: Option<f64>,
    /// Fraction of requests that failed, if measured.
    pub error_rate: Option<f64>,
    /// Seconds since it became ready.
    pub age_s: f64,
}

/// Weights for `endpoints`, in order.
pub fn weights(endpoints: &[EndpointStats], spec: &WeightsSpec) -> Vec<i32> {
    let min = spec.min_weight.clamp(0, MAX_WEIGHT);
    let full: Vec<f64> = match spec.mode {
        WeightsMode::Manual => manual(endpoints, spec.manual.as_ref()),
        WeightsMode::Auto => auto(endpoints),
    };
    endpoints
        .iter()
        .zip(full)
        .map(|(e, w)| {
            let ramp = slow_start(e.age_s, spec.slow_start_seconds);
            let ramped = (w * ramp).round() as i32;
            match spec.mode {
                // An engine share stays above zero however far it is split or ramped.
                WeightsMode::Manual if w > 0.0 => ramped.max(1),
                WeightsMode::Manual => 0,
                WeightsMode::Auto => ramped.clamp(min, MAX_WEIGHT),
            }
        })
        .collect()
}

fn manual(
    endpoints: &[EndpointStats],
    manual: Option<&BTreeMap<String, blaze_api::router::Weight>>,
) -> Vec<f64> {
    let mut per_engine: BTreeMap<&str, usize> = BTreeMap::new();
    for e in endpoints {
        *per_engine.entry(e.engine.as_str()).or_default() += 1;
    }
    endpoints
        .iter()
        .map(|e| {
            let share = manual.and_then(|m| m.get(&e.engine)).map_or(0, |w| w.0.max(0));
            f64::from(share) * MANUAL_SCALE / per_engine[e.engine.as_str()] as f64
        })
        .collect()
}

fn auto(endpoints: &[EndpointStats]) -> Vec<f64> {
    let score = |e: &EndpointStats| {
        e.p95_ms.map(|p| {
            let ok = 1.0 - e.error_rate.unwrap_or(0.0).clamp(0.0, 1.0);
            ok * ok / p.max(LATENCY_FLOOR_MS)
        })
    };
    let mut known: Vec<f64> = endpoints.iter().filter_map(score).collect();
    known.sort_by(f64::total_cmp);
    // Endpoints not measured yet are treated as typical: the median score.
    let median = known.get(known.len() / 2).copied();
    let best = known.last().copied().filter(|b| *b > 0.0);
    endpoints
        .iter()
        .map(|e| match (score(e).or(median), best) {
            (Some(s), Some(b)) => f64::from(MAX_WEIGHT) * s / b,
            _ => f64::from(MAX_WEIGHT),
        })
        .collect()
}

fn slow_start(age_s: f64, window_s: i32) -> f64 {
    if window_s <= 0 || age_s >= f64::from(window_s) {
        return 1.0;
    }
    let f = age_s.max(0.0) / f64::from(window_s);
    SLOW_START_FLOOR + (1.0 - SLOW_START_FLOOR) * f
}

/// Whether `new` differs enough from `old` to publish.
pub fn changed_enough(old: &[i32], new: &[i32]) -> bool {
    old.len() != new.len()
        || old.iter().zip(new).any(|(&o, &n)| {
            let (o, n) = (f64::from(o), f64::from(n));
            (o == 0.0) != (n == 0.0) || (n - o).abs() > CHANGE_THRESHOLD * o.max(1.0)
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use blaze_api::router::Weight;

    fn ep(engine: &str, p95: Option<f64>, err: Option<f64>) -> EndpointStats {
        EndpointStats { engine: engine.into(), p95_ms: p95, error_rate: err, age_s: 1e6 }
    }

    #[test]
    fn faster_endpoints_get_more_and_errors_cut_hard() {
        let w = weights(
            &[
                ep("a", Some(100.0), None),
                ep("a", Some(200.0), None),
                ep("a", Some(100.0), Some(0.5)),
                ep("a", None, None),
            ],
            &WeightsSpec::default(),
        );
        assert_eq!(w[0], 100);
        assert_eq!(w[1], 50);
        assert_eq!(w[2], 25);
        assert_eq!(w[3], 50, "unmeasured endpoints take the median score");
    }

    #[test]
    fn min_weight_and_slow_start_hold() {
        let spec = WeightsSpec { min_weight: 5, slow_start_seconds: 30, ..Default::default() };
        let mut young = ep("a", Some(100.0), None);
        young.age_s = 15.0;
        let w =
            weights(&[ep("a", Some(100.0), None), ep("a", Some(100.0), Some(1.0)), young], &spec);
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
        let eps =
            [ep("a", None, None), ep("a", None, None), ep("a", None, None), ep("b", None, None)];
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
}
