//! Services to EndpointSlices, pure: which pods back a Service and in what condition.
//!
//! As the endpointslice controller: one `discovery.k8s.io/v1` slice per Service (Blaze's
//! Services are small; upstream splits at 100 endpoints), named `<service>-<suffix>` with
//! labels `kubernetes.io/service-name` and `endpointslice.kubernetes.io/managed-by`, an owner
//! reference to the Service, and per endpoint `ready` (Ready and not terminating), `serving`
//! (Ready, terminating or not) and `terminating` (has a deletion timestamp). Pods without an
//! address are left out; `publishNotReadyAddresses` makes every endpoint ready.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ObjectReference, Pod, Service};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::core::{Selector, SelectorExt};

use crate::replicas::{controller_ref, is_ready};

/// The label naming a slice's Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// The label naming the controller that manages a slice.
pub const MANAGED_BY_LABEL: &str = "endpointslice.kubernetes.io/managed-by";
/// This controller's value for [`MANAGED_BY_LABEL`].
pub const MANAGED_BY: &str = "endpointslice-controller.k8s.io";

/// The pods a Service selects; a Service without a selector selects none (its endpoints are
/// managed by hand).
pub fn selected<'a>(service: &Service, pods: &'a [Pod]) -> Vec<&'a Pod> {
    let Some(selector) = service.spec.as_ref().and_then(|s| s.selector.clone()) else {
        return Vec::new();
    };
    if selector.is_empty() {
        return Vec::new();
    }
    let selector: Selector = selector.into_iter().collect();
    let no_labels = BTreeMap::new();
    pods.iter()
        .filter(|p| p.metadata.namespace == service.metadata.namespace)
        .filter(|p| selector.matches(p.metadata.labels.as_ref().unwrap_or(&no_labels)))
        .collect()
}

/// The slice for `service` over `pods` (already filtered by [`selected`]).
pub fn build_slice(service: &Service, pods: &[&Pod]) -> EndpointSlice {
    let spec = service.spec.clone().unwrap_or_default();
    let name = service.metadata.name.clone().unwrap_or_default();
    let publish_not_ready = spec.publish_not_ready_addresses.unwrap_or(false);
    let mut endpoints = Vec::new();
    for pod in pods {
        let Some(ip) = pod.status.as_ref().and_then(|s| s.pod_ip.clone()) else {
            continue;
        };
        let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
        if matches!(phase, Some("Succeeded" | "Failed")) {
            continue;
        }
        let terminating = pod.metadata.deletion_timestamp.is_some();
        let serving = is_ready(pod) || publish_not_ready;
        endpoints.push(Endpoint {
            addresses: vec![ip],
            conditions: Some(EndpointConditions {
                ready: Some(serving && !terminating),
                serving: Some(serving),
                terminating: Some(terminating),
            }),
            node_name: pod.spec.as_ref().and_then(|s| s.node_name.clone()),
            target_ref: Some(ObjectReference {
                kind: Some("Pod".into()),
                name: pod.metadata.name.clone(),
                namespace: pod.metadata.namespace.clone(),
                uid: pod.metadata.uid.clone(),
                ..Default::default()
            }),
            ..Default::default()
        });
    }
    endpoints.sort_by(|a, b| a.addresses.cmp(&b.addresses));
    // A named target port that no pod declares yet has no number: it is left out until one
    // does, rather than published as a port without a number.
    let ports = spec.ports.iter().flatten().filter_map(|p| {
        let target = p.target_port.clone().unwrap_or(IntOrString::Int(p.port));
        Some(EndpointPort {
            name: Some(p.name.clone().unwrap_or_default()),
            port: Some(resolve_target_port(&target, pods)?),
            protocol: Some(p.protocol.clone().unwrap_or_else(|| "TCP".into())),
            app_protocol: p.app_protocol.clone(),
        })
    });
    EndpointSlice {
        address_type: "IPv4".into(),
        endpoints: Some(endpoints),
        metadata: ObjectMeta {
            name: Some(format!("{name}-devnode")),
            namespace: service.metadata.namespace.clone(),
            labels: Some(
                [
                    (SERVICE_NAME_LABEL.to_string(), name),
                    (MANAGED_BY_LABEL.to_string(), MANAGED_BY.to_string()),
                ]
                .into(),
            ),
            owner_references: Some(vec![controller_ref("v1", "Service", &service.metadata)]),
            ..Default::default()
        },
        ports: Some(ports.collect()),
    }
}

/// A numeric target port, or a named one looked up in the first pod that declares it.
fn resolve_target_port(target: &IntOrString, pods: &[&Pod]) -> Option<i32> {
    match target {
        IntOrString::Int(n) => Some(*n),
        IntOrString::String(name) => pods.iter().find_map(|p| {
            p.spec.as_ref()?.containers.iter().find_map(|c| {
                c.ports
                    .iter()
                    .flatten()
                    .find(|port| port.name.as_deref() == Some(name))
                    .map(|port| port.container_port)
            })
        }),
    }
}

#[cfg(test)]
mod tests;
