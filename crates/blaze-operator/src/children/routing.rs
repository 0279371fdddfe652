//! What a router is told: the endpoints of the engines it selects and their weights, with the
//! traffic settings of its spec.
//!
//! The document is `blaze_api::routing::RoutingConfig`, the router's `routing.yaml`. It is
//! delivered in the ConfigMap `ROUTER-routing` (key `routing.yaml`), which router pods mount
//! and read with `--config`; the router's planned in-cluster mode watches that ConfigMap
//! through the API instead, since a mounted ConfigMap reaches pods only after the kubelet's
//! sync period and DESIGN.md asks for 2 s.

use std::collections::BTreeMap;

use blaze_api::BlazeRouter;
use blaze_api::router::{EngineSelection, WeightsMode};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::core::{Selector, SelectorExt};

use super::worker_flags::WORKER_PORT;
use crate::labels;
use crate::policy::weights::{self, EndpointStats};

pub use blaze_api::routing::{RoutingConfig, RoutingEndpoint as Endpoint};

/// Whether `router` selects the engine named `name` with labels `engine_labels`.
pub fn selects(
    sel: &EngineSelection,
    name: &str,
    engine_labels: &BTreeMap<String, String>,
) -> bool {
    if let Some(names) = &sel.names {
        return names.iter().any(|n| n.0 == name);
    }
    // A selector kube cannot read (an unknown operator) selects nothing, as the API server
    // would have refused it.
    sel.selector
        .clone()
        .and_then(|s| Selector::try_from(s).ok())
        .is_some_and(|s| s.matches(engine_labels))
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
    out.sort_by(|a, b| (&a.engine, &a.pod, &a.address).cmp(&(&b.engine, &b.pod, &b.address)));
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
    let w = weights::weights(&s, &spec.weights, spec.strategy);
    for (e, w) in eps.iter_mut().zip(w) {
        e.weight = u32::try_from(w).unwrap_or(0);
    }
    // In `auto` mode an endpoint at 0 (ejected by a router) stays listed: the routers keep
    // checking its health and running its breaker, which is how it is seen to recover.
    if spec.weights.mode == WeightsMode::Manual {
        eps.retain(|e| e.weight > 0);
    }
    let mut cfg = RoutingConfig::from_spec(spec, eps);
    // The API-key Secret is mounted there (one file per key), and the router reads it.
    if let Some(auth) = cfg.auth.as_mut() {
        auth.keys_dir = Some(super::router::API_KEYS_DIR.to_owned());
    }
    cfg
}

/// Keeps the weights already published when the new ones move too little to matter (see
/// [`weights::changed_enough`]) and the endpoint set is the same, so measurement noise does
/// not rewrite the routers' configuration.
pub fn keep_small_moves(published: &[(String, i32)], eps: &mut [Endpoint]) {
    let same_set = published.len() == eps.len()
        && published.iter().zip(eps.iter()).all(|((a, _), e)| *a == e.address);
    if !same_set {
        return;
    }
    let old: Vec<i32> = published.iter().map(|(_, w)| *w).collect();
    let new: Vec<i32> = eps.iter().map(|e| i32::try_from(e.weight).unwrap_or(i32::MAX)).collect();
    if !weights::changed_enough(&old, &new) {
        for (e, w) in eps.iter_mut().zip(old) {
            e.weight = u32::try_from(w).unwrap_or(0);
        }
    }
}

#[cfg(test)]
mod tests;
