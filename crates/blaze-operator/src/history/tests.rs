use blaze_api::engine::{AutoscalingMode, AutoscalingSpec};
use prometheus_client::registry::Registry;

use super::*;
use crate::policy::autoscale::Sample;

fn exposition(reg: &Registry) -> String {
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, reg).unwrap();
    out
}

fn history() -> (History, Registry) {
    let mut reg = Registry::default();
    let m = ObjectMetrics::create(reg.sub_registry_with_prefix("blaze"));
    (History::new(m), reg)
}

#[test]
fn observations_within_a_step_keep_the_latest_and_an_hour_is_the_most_kept() {
    let (h, _) = history();
    h.engine_replicas("ml/a", 1_000, 1, 0);
    h.engine_metrics("ml/a", 3_000, &EngineMetrics { in_flight: Some(2.0), ..Default::default() });
    let e = h.engine("ml/a").unwrap();
    let pts: Vec<_> = e.points.iter().collect();
    assert_eq!(pts.len(), 1, "one step");
    assert_eq!((pts[0].t, pts[0].desired, pts[0].metrics.in_flight), (3_000, Some(1), Some(2.0)));
    // Replicas carry into later samples; metrics are replaced by the next scrape's.
    h.engine_replicas("ml/a", 12_000, 2, 1);
    let last = h.engine("ml/a").unwrap().points.last().cloned().unwrap();
    assert_eq!((last.desired, last.ready, last.metrics.in_flight), (Some(2), Some(1), Some(2.0)));
    for i in 0..2 * POINTS as u64 {
        h.engine_replicas("ml/a", 20_000 + i * STEP_MS, 1, 1);
    }
    let e = h.engine("ml/a").unwrap();
    assert_eq!(e.points.iter().count(), POINTS);
    assert!(e.points.iter().next().unwrap().t > 12_000, "the oldest went first");
}

#[test]
fn engine_figures_and_decisions_are_exported_and_forgotten_with_the_engine() {
    let (h, reg) = history();
    let m = EngineMetrics {
        p95_latency_ms: Some(250.0),
        error_rate: Some(0.5),
        tokens_per_second: Some(12.0),
        ..Default::default()
    };
    h.engine_metrics("ml/a", 1_000, &m);
    h.engine_replicas("ml/a", 2_000, 3, 2);
    h.scaled("ml/a", 2_000, 2, 3, "load".into());
    h.engine_bounds("ml/a", Some(8), Some(1500));
    let text = exposition(&reg);
    for line in [
        "blaze_engine_desired_replicas{namespace=\"ml\",engine=\"a\"} 3",
        "blaze_engine_ready_replicas{namespace=\"ml\",engine=\"a\"} 2",
        "blaze_engine_latency_p95_seconds{namespace=\"ml\",engine=\"a\"} 0.25",
        "blaze_engine_error_ratio{namespace=\"ml\",engine=\"a\"} 0.5",
        "blaze_engine_tokens_per_second{namespace=\"ml\",engine=\"a\"} 12.0",
        "blaze_engine_scale_decisions_total{namespace=\"ml\",engine=\"a\",direction=\"up\"} 1",
        "blaze_engine_max_replicas{namespace=\"ml\",engine=\"a\"} 8",
        "blaze_engine_target_latency_p95_seconds{namespace=\"ml\",engine=\"a\"} 1.5",
    ] {
        assert!(text.contains(line), "{line} in {text}");
    }
    assert!(!text.contains("blaze_engine_latency_p50_seconds{"), "not measured: no series");
    h.engine_bounds("ml/a", Some(8), None);
    assert!(!exposition(&reg).contains("blaze_engine_target_latency_p95_seconds{"), "no target");
    let d = h.engine("ml/a").unwrap().decisions.last().cloned().unwrap();
    assert_eq!((d.from, d.to, d.reason.as_str()), (2, 3, "load"));
    h.note(
        "BlazeEngine/ml/a",
        Note { t: 1, warning: false, reason: "R".into(), message: "m".into() },
    );
    assert_eq!(h.notes("BlazeEngine/ml/a").len(), 1);
    h.forget_engine("ml/a");
    assert!(h.engine("ml/a").is_none());
    assert!(h.notes("BlazeEngine/ml/a").is_empty());
    assert!(!exposition(&reg).contains("engine=\"a\""), "series removed");
}

fn ep(addr: &str, weight: u32) -> RoutingEndpoint {
    RoutingEndpoint { address: addr.into(), engine: "a".into(), pod: format!("pod-{addr}"), weight }
}

#[test]
fn router_endpoints_keep_their_series_and_gone_ones_age_out() {
    let (h, reg) = history();
    let mut open = EndpointView { breaker: BreakerState::Open, ..Default::default() };
    open.stats.p95_ms = Some(1500.0);
    let observed = BTreeMap::from([("10.0.0.2:8000".to_owned(), open)]);
    h.router("ml/front", 1_000, &[ep("10.0.0.1:8000", 100), ep("10.0.0.2:8000", 0)], &observed);
    let text = exposition(&reg);
    let l = "namespace=\"ml\",router=\"front\",engine=\"a\",endpoint=\"10.0.0.2:8000\"";
    assert!(text.contains(&format!("blaze_router_endpoint_published_weight{{{l}}} 0")), "{text}");
    assert!(text.contains(&format!("blaze_router_endpoint_worst_breaker_state{{{l}}} 1")));
    assert!(text.contains(&format!("blaze_router_endpoint_ttft_p95_seconds{{{l}}} 1.5")));
    let eps = h.router_endpoints("ml/front");
    assert_eq!(eps.len(), 2);
    assert_eq!(eps[1].points.last().unwrap().breaker, BreakerState::Open);
    // The second endpoint is gone: its gauges go at once, its history after an hour.
    h.router("ml/front", 20_000, &[ep("10.0.0.1:8000", 100)], &BTreeMap::new());
    assert_eq!(h.router_endpoints("ml/front").len(), 2);
    assert!(!exposition(&reg).contains("10.0.0.2"));
    let later = 20_000 + STEP_MS * POINTS as u64;
    h.router("ml/front", later, &[ep("10.0.0.1:8000", 100)], &BTreeMap::new());
    assert_eq!(h.router_endpoints("ml/front").len(), 1);
    h.forget_router("ml/front");
    assert!(h.router_endpoints("ml/front").is_empty());
    assert!(!exposition(&reg).contains("router=\"front\""));
}

#[test]
fn scale_reasons_name_the_cause() {
    let spec = AutoscalingSpec {
        mode: AutoscalingMode::Blaze,
        min_replicas: 1,
        max_replicas: Some(4),
        ..Default::default()
    };
    let s = Sample { at: 0.0, in_flight: 9.0, p95_ms: Some(820.0) };
    let r = |from, to, panic| scale_reason(&spec, from, to, panic, Some(&s));
    assert_eq!(
        r(1, 2, false),
        "load above target over the stable window (in flight 9.0, p95 820 ms)"
    );
    assert!(r(1, 3, true).starts_with("panic mode"));
    assert!(r(0, 1, false).starts_with("raised to minReplicas"));
    assert!(r(6, 4, false).starts_with("lowered to maxReplicas"));
    assert!(r(3, 2, false).starts_with("load below target"));
    let zero = AutoscalingSpec { min_replicas: 0, ..spec.clone() };
    assert!(scale_reason(&zero, 0, 1, false, None).starts_with("woken from zero"));
    assert!(scale_reason(&zero, 1, 0, false, None).starts_with("scaled to zero"));
    let off = AutoscalingSpec { mode: AutoscalingMode::Off, ..spec };
    assert_eq!(scale_reason(&off, 1, 3, false, None), "spec.replicas set to 3 (autoscaling off)");
}
