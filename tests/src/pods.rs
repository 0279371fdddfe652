//! Pods and processes as the development node runs them.

use blaze_api::engine::BlazeEngine;
use k8s_openapi::api::core::v1::Pod;

/// Whether a pod is Ready and not going away.
pub fn ready(p: &Pod) -> bool {
    p.metadata.deletion_timestamp.is_none()
        && p.status
            .iter()
            .flat_map(|s| s.conditions.iter().flatten())
            .any(|c| c.type_ == "Ready" && c.status == "True")
}

/// The process of a pod's container on the development node.
pub fn pid(pod: &Pod) -> Option<i32> {
    pod.status
        .iter()
        .flat_map(|s| s.container_statuses.iter().flatten())
        .find_map(|c| c.container_id.as_deref()?.strip_prefix("process://")?.parse().ok())
}

/// The processes of `pods`.
pub fn pids(pods: &[Pod]) -> Vec<i32> {
    pods.iter().filter_map(pid).collect()
}

/// Whether process `pid` runs (and is not a zombie).
pub fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| !s.rsplit(')').next().unwrap_or("").trim_start().starts_with('Z'))
        .unwrap_or(false)
}

/// Status and reason of an engine's condition `type_`.
pub fn condition(e: &BlazeEngine, type_: &str) -> Option<(String, String)> {
    let c = e.status.as_ref()?.conditions.iter().find(|c| c.type_ == type_)?;
    Some((c.status.clone(), c.reason.clone()))
}
