//! Scheduling decisions, pure of any API: which node a pod fits on, and why not.
//!
//! Filters as kube-scheduler's default plugins do: `NodeUnschedulable`, `NodeResourcesFit`
//! (requests, with limits standing in for missing requests, and one `pods` slot),
//! `NodeAffinity` (nodeSelector and required node affinity) and `TaintToleration`
//! (`NoSchedule` and `NoExecute` taints). Among fitting nodes it prefers the least allocated,
//! then the name, so the choice is deterministic.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Node, NodeSelectorRequirement, PodSpec, Taint, Toleration};

use crate::quantity::Resources;

/// What the scheduler knows about a node.
#[derive(Debug, Clone, Default)]
pub struct NodeInfo {
    /// Node name.
    pub name: String,
    /// `status.allocatable` (or capacity).
    pub allocatable: Resources,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Taints.
    pub taints: Vec<Taint>,
    /// `spec.unschedulable` (cordoned).
    pub unschedulable: bool,
}

impl NodeInfo {
    /// Reads a Node object.
    pub fn from_node(node: &Node) -> Self {
        let spec = node.spec.clone().unwrap_or_default();
        let status = node.status.clone().unwrap_or_default();
        let list = status.allocatable.or(status.capacity).unwrap_or_default();
        Self {
            name: node.metadata.name.clone().unwrap_or_default(),
            allocatable: Resources::from_list(&list),
            labels: node.metadata.labels.clone().unwrap_or_default(),
            taints: spec.taints.unwrap_or_default(),
            unschedulable: spec.unschedulable.unwrap_or(false),
        }
    }
}

/// What a pod asks for: the sum over its containers, limits standing in for missing requests
/// (as the API server defaults them), plus one `pods` slot. Init containers count with the
/// largest single one, as kube-scheduler does.
pub fn pod_requests(spec: &PodSpec) -> Resources {
    let container_requests = |c: &k8s_openapi::api::core::v1::Container| {
        let res = c.resources.clone().unwrap_or_default();
        let mut list = res.limits.unwrap_or_default();
        list.extend(res.requests.unwrap_or_default());
        Resources::from_list(&list)
    };
    let mut total = Resources::default();
    for c in &spec.containers {
        total.add(&container_requests(c));
    }
    for c in spec.init_containers.iter().flatten() {
        for (k, v) in container_requests(c).0 {
            let slot = total.0.entry(k).or_insert(0);
            *slot = (*slot).max(v);
        }
    }
    total.add(&Resources([("pods".to_string(), 1)].into()));
    total
}

/// Why a node does not fit, in kube-scheduler's words.
pub fn misfits(
    node: &NodeInfo,
    used: &Resources,
    spec: &PodSpec,
    requests: &Resources,
) -> Vec<String> {
    let mut why = Vec::new();
    if node.unschedulable {
        why.push("node(s) were unschedulable".to_string());
    }
    for (name, want) in &requests.0 {
        if *want > 0 && used.get(name) + want > node.allocatable.get(name) {
            let reason = if name == "pods" {
                "Too many pods".to_string()
            } else {
                format!("Insufficient {name}")
            };
            why.push(reason);
        }
    }
    if !selector_matches(node, spec) {
        why.push("node(s) didn't match Pod's node affinity/selector".to_string());
    }
    let tolerations = spec.tolerations.clone().unwrap_or_default();
    if let Some(taint) = node.taints.iter().find(|t| {
        matches!(t.effect.as_str(), "NoSchedule" | "NoExecute")
            && !tolerations.iter().any(|tol| tolerates(tol, t))
    }) {
        let value = taint.value.as_deref().map(|v| format!(": {v}")).unwrap_or_default();
        why.push(format!("node(s) had untolerated taint {{{}{value}}}", taint.key));
    }
    why
}

/// Whether `toleration` tolerates `taint`.
pub fn tolerates(toleration: &Toleration, taint: &Taint) -> bool {
    if toleration.effect.as_deref().is_some_and(|e| !e.is_empty() && e != taint.effect) {
        return false;
    }
    let exists = toleration.operator.as_deref() == Some("Exists");
    match toleration.key.as_deref() {
        None | Some("") => exists,
        Some(key) if key != taint.key => false,
        Some(_) if exists => true,
        Some(_) => {
            toleration.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or("")
        }
    }
}

fn selector_matches(node: &NodeInfo, spec: &PodSpec) -> bool {
    let selector_ok =
        spec.node_selector.iter().flatten().all(|(k, v)| node.labels.get(k) == Some(v));
    let required = spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|na| na.required_during_scheduling_ignored_during_execution.as_ref());
    let affinity_ok = match required {
        None => true,
        Some(sel) => sel.node_selector_terms.iter().any(|term| {
            term.match_expressions.iter().flatten().all(|r| requirement_matches(r, &node.labels))
                && term.match_fields.iter().flatten().all(|r| {
                    let fields = [("metadata.name".to_string(), node.name.clone())].into();
                    requirement_matches(r, &fields)
                })
        }),
    };
    selector_ok && affinity_ok
}

fn requirement_matches(r: &NodeSelectorRequirement, labels: &BTreeMap<String, String>) -> bool {
    let value = labels.get(&r.key);
    let values = r.values.clone().unwrap_or_default();
    let number = |s: &str| s.parse::<i64>().ok();
    match r.operator.as_str() {
        "In" => value.is_some_and(|v| values.contains(v)),
        "NotIn" => !value.is_some_and(|v| values.contains(v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        "Gt" => {
            matches!((value.and_then(|v| number(v)), values.first().and_then(|v| number(v))), (Some(a), Some(b)) if a > b)
        }
        "Lt" => {
            matches!((value.and_then(|v| number(v)), values.first().and_then(|v| number(v))), (Some(a), Some(b)) if a < b)
        }
        _ => false,
    }
}

/// Picks a node for a pod, or says why none fits in the words of a `FailedScheduling` event:
/// `0/2 nodes are available: 2 Insufficient nvidia.com/gpu.`
pub fn choose(nodes: &[(NodeInfo, Resources)], spec: &PodSpec) -> Result<String, String> {
    let requests = pod_requests(spec);
    let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
    let mut best: Option<(f64, &str)> = None;
    for (node, used) in nodes {
        let why = misfits(node, used, spec, &requests);
        if why.is_empty() {
            let load = load_after(node, used, &requests);
            if best.is_none_or(|(l, n)| load < l || (load == l && node.name.as_str() < n)) {
                best = Some((load, &node.name));
            }
        }
        for w in why {
            *reasons.entry(w).or_insert(0) += 1;
        }
    }
    if let Some((_, name)) = best {
        return Ok(name.to_string());
    }
    let parts: Vec<String> = reasons.iter().map(|(r, n)| format!("{n} {r}")).collect();
    Err(format!("0/{} nodes are available: {}.", nodes.len(), parts.join(", ")))
}

/// Mean fraction of cpu and memory in use once the pod is placed.
fn load_after(node: &NodeInfo, used: &Resources, requests: &Resources) -> f64 {
    let frac = |name: &str| {
        let cap = node.allocatable.get(name);
        if cap <= 0 { 0.0 } else { (used.get(name) + requests.get(name)) as f64 / cap as f64 }
    };
    (frac("cpu") + frac("memory")) / 2.0
}

#[cfg(test)]
mod tests;
