//! ReplicaSet bookkeeping, pure: template hashes, pods from a template, which pods count and
//! which go first when scaling down.

use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};

/// The label that ties a ReplicaSet and its pods to one Deployment template.
pub const POD_TEMPLATE_HASH: &str = "pod-template-hash";

/// A short, stable hash of a pod template (FNV-1a over its JSON, plus the collision count),
/// spelled with the same consonant-and-digit alphabet upstream uses so it never forms words.
pub fn template_hash(template: &PodTemplateSpec, collision_count: Option<i32>) -> String {
    let mut bytes = serde_json::to_vec(template).unwrap_or_default();
    if let Some(c) = collision_count {
        bytes.extend_from_slice(&c.to_le_bytes());
    }
    let mut h: u32 = 0x811c_9dc5;
    for b in bytes {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut out = String::new();
    for _ in 0..10 {
        out.push(ALPHABET[(h % ALPHABET.len() as u32) as usize] as char);
        h /= ALPHABET.len() as u32;
        if h == 0 {
            break;
        }
    }
    out
}

/// A controller owner reference to `owner`.
pub fn controller_ref(api_version: &str, kind: &str, meta: &ObjectMeta) -> OwnerReference {
    OwnerReference {
        api_version: api_version.into(),
        kind: kind.into(),
        name: meta.name.clone().unwrap_or_default(),
        uid: meta.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// Whether `owner_uid` controls `meta`.
pub fn controlled_by(meta: &ObjectMeta, owner_uid: &str) -> bool {
    meta.owner_references.iter().flatten().any(|r| r.controller == Some(true) && r.uid == owner_uid)
}

/// A new pod for `rs`, named by the API server from `generateName`.
pub fn pod_for(rs: &ReplicaSet) -> Pod {
    let template = rs.spec.template.clone().unwrap_or_default();
    let mut meta = template.metadata.unwrap_or_default();
    meta.name = None;
    meta.generate_name = Some(format!("{}-", rs.metadata.name.clone().unwrap_or_default()));
    meta.namespace = rs.metadata.namespace.clone();
    meta.owner_references = Some(vec![controller_ref("apps/v1", "ReplicaSet", &rs.metadata)]);
    Pod { metadata: meta, spec: template.spec, status: None }
}

/// A pod that counts toward replicas: not being deleted and not finished.
pub fn is_active(pod: &Pod) -> bool {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    pod.metadata.deletion_timestamp.is_none() && !matches!(phase, Some("Succeeded" | "Failed"))
}

/// Whether the pod's Ready condition is True.
pub fn is_ready(pod: &Pod) -> bool {
    ready_since(pod).is_some()
}

fn ready_since(pod: &Pod) -> Option<Option<Time>> {
    pod.status
        .as_ref()?
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "Ready" && c.status == "True")
        .map(|c| c.last_transition_time.clone())
}

/// Ready for at least `min_ready_seconds` at `now_secs` (Unix seconds).
pub fn is_available(pod: &Pod, min_ready_seconds: i32, now_secs: i64) -> bool {
    match ready_since(pod) {
        None => false,
        Some(_) if min_ready_seconds <= 0 => true,
        Some(None) => false,
        Some(Some(t)) => t.0.as_second() + i64::from(min_ready_seconds) <= now_secs,
    }
}

/// The order in which pods go when scaling down, first to go first: unscheduled before
/// scheduled, pending before running, not ready before ready, then the newest.
pub fn deletion_order(pods: &mut [Pod]) {
    let rank = |p: &Pod| {
        let scheduled = p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some();
        let running = p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running");
        let created = p.metadata.creation_timestamp.as_ref().map(|t| t.0.as_second()).unwrap_or(0);
        (scheduled, running, is_ready(p), std::cmp::Reverse(created))
    };
    pods.sort_by_key(rank);
}

#[cfg(test)]
mod tests;
