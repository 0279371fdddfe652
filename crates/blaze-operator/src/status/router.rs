//! A router's status: replicas, the endpoints it routes to with their weights, and the
//! `Ready` and `Degraded` conditions.

use blaze_api::conditions::{ConditionStatus, Observed, set_condition};
use blaze_api::router::EndpointStatus;
use blaze_api::{BlazeRouter, BlazeRouterStatus};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;

use std::collections::BTreeMap;

use crate::children::routing::Endpoint;
use crate::labels;
use crate::policy::router_stats::EndpointView;

/// The router's status from its Deployment and endpoints.
pub fn router_status(
    router: &BlazeRouter,
    deployment: &Deployment,
    engines: &[String],
    eps: &[Endpoint],
    observed: &BTreeMap<String, EndpointView>,
    now: Timestamp,
) -> BlazeRouterStatus {
    let old = router.status.clone().unwrap_or_default();
    let mut st = old.clone();
    let ds = deployment.status.as_ref();
    let name = router.name_any();
    st.observed_generation = router.metadata.generation;
    st.replicas = ds.and_then(|s| s.replicas).unwrap_or(0);
    st.ready_replicas = ds.and_then(|s| s.ready_replicas).unwrap_or(0);
    st.selector = Some(labels::selector_string(&labels::router_selector(&name)));
    st.endpoints = eps
        .iter()
        .map(|e| EndpointStatus {
            engine: e.engine.clone(),
            pod: e.pod.clone(),
            address: e.address.clone(),
            weight: i32::try_from(e.weight).unwrap_or(i32::MAX),
            breaker: observed.get(&e.address).map(|o| o.breaker).unwrap_or_default(),
            // Rounded so that noise in the last digits does not rewrite status.
            p95_latency_ms: observed.get(&e.address).and_then(|o| o.stats.p95_ms).map(f64::round),
            error_rate: observed
                .get(&e.address)
                .and_then(|o| o.stats.error_rate)
                .map(|r| (r * 1000.0).round() / 1000.0),
        })
        .collect();
    st.ready_endpoints = eps.iter().filter(|e| e.weight > 0).count() as i32;
    let weights = |s: &BlazeRouterStatus| {
        s.endpoints.iter().map(|e| (e.address.clone(), e.weight)).collect::<Vec<_>>()
    };
    if weights(&old) != weights(&st) {
        st.last_weight_update = Some(Time(now));
    }
    let g = router.metadata.generation;
    let (ready, reason, msg) = match (st.ready_replicas > 0, st.ready_endpoints > 0) {
        (true, true) => (
            true,
            "Serving",
            format!("{} router pods ready, {} endpoints", st.ready_replicas, st.ready_endpoints),
        ),
        (false, _) => (false, "RouterNotReady", "no router pod is ready yet".to_owned()),
        (true, false) if engines.is_empty() => {
            (false, "NoEngines", "spec.engines selects no BlazeEngine in this namespace".to_owned())
        }
        (true, false) => {
            (false, "NoReadyWorkers", format!("no ready worker in {}", engines.join(", ")))
        }
    };
    set_condition(
        &mut st.conditions,
        Observed { type_: "Ready", status: ready.into(), reason, message: msg, generation: g },
        now,
    );
    let missing: Vec<&String> =
        engines.iter().filter(|e| !eps.iter().any(|ep| &ep.engine == *e)).collect();
    let degraded = if missing.is_empty() || !ready {
        let message = if ready {
            "every selected engine has ready workers".into()
        } else {
            "not serving; see the Ready condition".into()
        };
        Observed {
            type_: "Degraded",
            status: ConditionStatus::False,
            reason: "AsExpected",
            message,
            generation: g,
        }
    } else {
        let list: Vec<&str> = missing.iter().map(|s| s.as_str()).collect();
        Observed {
            type_: "Degraded",
            status: ConditionStatus::True,
            reason: "EngineWithoutWorkers",
            message: format!("no ready worker in {}; traffic goes to the others", list.join(", ")),
            generation: g,
        }
    };
    set_condition(&mut st.conditions, degraded, now);
    st
}

#[cfg(test)]
mod tests {
    use blaze_api::conditions::find;
    use k8s_openapi::api::apps::v1::DeploymentStatus;
    use serde_json::json;

    use super::*;

    fn router() -> BlazeRouter {
        serde_json::from_value(json!({
            "apiVersion": "blaze.ai/v1alpha1", "kind": "BlazeRouter",
            "metadata": {"name": "front", "namespace": "ml", "generation": 3},
            "spec": {"engines": {"names": ["a", "b"]}}
        }))
        .unwrap()
    }

    fn deploy(ready: i32) -> Deployment {
        Deployment {
            status: Some(DeploymentStatus {
                replicas: Some(2),
                ready_replicas: Some(ready),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn ep(engine: &str, addr: &str, weight: u32) -> Endpoint {
        Endpoint { engine: engine.into(), pod: format!("{engine}-0"), address: addr.into(), weight }
    }

    #[test]
    fn a_deleted_engine_leaves_the_router_ready_on_the_others_but_degraded() {
        let t0: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let engines = ["a".to_owned(), "b".to_owned()];
        let eps = [ep("a", "10.0.0.1:8000", 100), ep("b", "10.0.0.2:8000", 50)];
        let mut r = router();
        let s = router_status(&r, &deploy(2), &engines, &eps, &BTreeMap::new(), t0);
        assert_eq!(find(&s.conditions, "Ready").unwrap().status, "True");
        assert_eq!(find(&s.conditions, "Degraded").unwrap().status, "False");
        assert_eq!((s.ready_endpoints, s.endpoints[1].weight), (2, 50));
        assert_eq!(
            s.selector.as_deref(),
            Some("app.kubernetes.io/name=blaze-router,blaze.ai/router=front")
        );
        assert_eq!(s.last_weight_update, Some(Time(t0)));
        r.status = Some(s.clone());
        let t1: Timestamp = "2026-01-01T00:01:00Z".parse().unwrap();
        assert_eq!(
            router_status(&r, &deploy(2), &engines, &eps, &BTreeMap::new(), t1),
            s,
            "same view, no write"
        );
        // Engine b deleted: it is no longer selected and its endpoints are gone.
        let s2 = router_status(&r, &deploy(2), &engines[..1], &eps[..1], &BTreeMap::new(), t1);
        assert_eq!(find(&s2.conditions, "Ready").unwrap().status, "True");
        assert_eq!(s2.endpoints.len(), 1);
        assert_eq!(s2.last_weight_update, Some(Time(t1)));
        // Engine b still selected but without ready workers: degraded, still serving.
        let s3 = router_status(&r, &deploy(2), &engines, &eps[..1], &BTreeMap::new(), t1);
        let d = find(&s3.conditions, "Degraded").unwrap();
        assert_eq!((d.status.as_str(), d.reason.as_str()), ("True", "EngineWithoutWorkers"));
        assert!(d.message.contains("no ready worker in b"), "{}", d.message);
    }

    #[test]
    fn not_ready_says_why() {
        let t0: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let r = router();
        let s = router_status(&r, &deploy(0), &["a".into()], &[], &BTreeMap::new(), t0);
        assert_eq!(find(&s.conditions, "Ready").unwrap().reason, "RouterNotReady");
        let s = router_status(&r, &deploy(1), &[], &[], &BTreeMap::new(), t0);
        let c = find(&s.conditions, "Ready").unwrap();
        assert_eq!(c.reason, "NoEngines");
        assert!(c.message.contains("spec.engines"));
        let s = router_status(&r, &deploy(1), &["a".into()], &[], &BTreeMap::new(), t0);
        assert_eq!(find(&s.conditions, "Ready").unwrap().reason, "NoReadyWorkers");
    }
}
