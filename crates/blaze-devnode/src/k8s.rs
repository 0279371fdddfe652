//! The parts that talk to an API server, through the Kubernetes API only (kube-rs), so they
//! work against the development API server and a real one alike.

use kube::api::{Patch, PatchParams};

pub mod deployment;
pub mod endpointslice;
pub mod kubelet;
pub mod node;
pub mod plane;
pub mod replicaset;
pub mod scheduler;
pub mod service_proxy;

/// A merge patch with this component's field manager.
pub(crate) fn merge<T: serde::Serialize>(value: T) -> Patch<T> {
    Patch::Merge(value)
}

/// Patch parameters naming the component as field manager.
pub(crate) fn params(manager: &str) -> PatchParams {
    PatchParams { field_manager: Some(manager.into()), ..Default::default() }
}

/// Whether an API error is a 404.
pub(crate) fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

/// The `matchLabels` part of a selector as a list query (`matchExpressions` are applied to
/// the result in memory).
pub(crate) fn label_query(
    selector: &k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector,
) -> String {
    selector
        .match_labels
        .iter()
        .flatten()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}
