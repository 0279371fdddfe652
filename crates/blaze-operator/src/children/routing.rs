//! What a router is told: the endpoints of the engines it selects and their weights, with the
//! traffic settings of its spec.
//!
//! `crates/blaze-api` has no routing wire format yet, so the format here is this crate's: it is
//! the router's `--config` file (YAML), delivered in a ConfigMap the router pods mount. When
//! the router settles its in-cluster delivery (DESIGN.md asks for changes on every replica
//! within 2 s, which a mounted ConfigMap does not guarantee), this type moves to blaze-api and
//! the delivery follows; the endpoint and weight computations stay.

use std::collections::BTreeMap;

use blaze_api::BlazeRouter;
use blaze_api::router::{EngineSelection, WeightsMode};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use serde::{Deserialize, Serialize};

use super::worker_flags::WORKER_PORT;
use crate::labels;
use crate::policy::weights::{self, EndpointStats};

/// The router's configuration file.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RoutingConfig {
    /// The router's traffic settings (strategy, affinity, breaker, health checks, retries,
    /// timeouts, auth) as its spec states them, in the spec's own field names.
    pub traffic: serde_json::Value,
    /// Every worker endpoint with its weight, sorted by engine then pod.
    pub endpoints: Vec<Endpoint>,
}

/// One worker.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Endpoint {
    /// The BlazeEngine.
    pub engine: String,
    /// The worker pod.
    pub pod: String,
    /// `IP:PORT`.
    pub address: String,
    /// Traffic weight (0 sends nothing).
    pub weight: i32,
}

/// Whether `router` selects the engine named `name` with labels `engine_labels`.
pub fn selects(
    sel: &EngineSelection,
    name: &str,
    engine_labels: &BTreeMap<String, String>,
) -> bool {
    if let Some(names) = &sel.names {
        return names.iter().any(|n| n.0 == name);
    }
    sel.selector.as_ref().is_some_and(|s| label_selector_matches(s, engine_labels))
}

/// Kubernetes label selector semantics (matchLabels and matchExpressions, ANDed).
pub fn label_selector_matches(s: &LabelSelector, l: &BTreeMap<String, String>) -> bool {
    let labels_ok = s.match_labels.iter().flatten().all(|(k, v)| l.get(k) == Some(v));
    labels_ok
        && s.match_expressions.iter().flatten().all(|e| {
            let vals = e.values.as_deref().unwrap_or_default();
            let has = l.get(&e.key);
            match e.operator.as_str() {
                "In" => has.is_some_and(|v| vals.contains(v)),
                "NotIn" => has.is_none_or(|v| !vals.contains(v)),
                "Exists" => has.is_some(),
                "DoesNotExist" => has.is_none(),
                _ => false,
            }
        })
}

/// Ready worker endpoints of `engines` from the EndpointSlices of their Services.
pub fn endpoints(engines: &[String], slices: &[EndpointSlice]) -> Vec<Endpoint> {
    let mut out = Vec::new();
    for engine in engines {
        let service = labels::engine_child_name(engine);
        let mine = slices.iter().filter(|s| {
            s.metadata.labels.as_ref().and_then(|l| l.get("kubernetes.io/service-name"))
                == Some(&service)
        });
        for slice in mine {
            let port = slice
                .ports
                .iter()
                .flatten()
                .find(|p| p.name.as_deref() == Some("http"))
                .and_then(|p| p.port)
                .unwrap_or(WORKER_PORT);
            for ep in slice.endpoints.iter().flatten() {
                let ready = ep.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true);
                let Some(ip) = ep.addresses.first() else { continue };
                if !ready {
                    continue;
                }
                let host = if ip.contains(':') { format!("[{ip}]") } else { ip.clone() };
                let pod = ep.target_ref.as_ref().and_then(|r| r.name.clone()).unwrap_or_default();
                out.push(Endpoint {
                    engine: engine.clone(),
                    pod,
                    address: format!("{host}:{port}"),
                    weight: 0,
                });
            }
        }
    }
    out.sort();
    out.dedup_by(|a, b| a.address == b.address && a.engine == b.engine);
    out
}

/// The configuration for `router` over `eps`, with weights from `stats` (keyed by address;
/// endpoints without stats are unmeasured).
pub fn config(
    router: &BlazeRouter,
    mut eps: Vec<Endpoint>,
    stats: &BTreeMap<String, EndpointStats>,
) -> RoutingConfig {
    let spec = &router.spec;
    let s: Vec<EndpointStats> = eps
        .iter()
        .map(|e| {
            let mut st = stats.get(&e.address).cloned().unwrap_or_else(|| EndpointStats {
                age_s: f64::from(spec.weights.slow_start_seconds),
                ..Default::default()
            });
            st.engine = e.engine.clone();
            st
        })
        .collect();
    let w = weights::weights(&s, &spec.weights);
    for (e, w) in eps.iter_mut().zip(w) {
        e.weight = w;
    }
    if spec.weights.mode == WeightsMode::Manual {
        eps.retain(|e| e.weight > 0);
    }
    let traffic = serde_json::json!({
        "strategy": spec.strategy,
        "sessionAffinity": spec.session_affinity,
        "circuitBreaker": spec.circuit_breaker,
        "healthCheck": spec.health_check,
        "retries": spec.retries,
        "timeouts": spec.timeouts,
        "auth": spec.auth,
    });
    RoutingConfig { traffic, endpoints: eps }
}

#[cfg(test)]
#[path = "routing_tests.rs"]
mod tests;
