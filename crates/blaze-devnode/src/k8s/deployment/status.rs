//! Deployment status and conditions.

use k8s_openapi::api::apps::v1::{Deployment, DeploymentCondition, ReplicaSet};
use kube::api::Api;
use kube::{Client, ResourceExt};
use serde_json::json;

use super::{MANAGER, conditions_for};
use crate::error::Result;
use crate::k8s::{merge, params};
use crate::pod::status::now;
use crate::rollout::Bounds;

/// Writes `status` when it differs from what is stored.
pub(super) async fn write(
    client: &Client,
    d: &Deployment,
    desired: i32,
    b: Bounds,
    new_rs: &ReplicaSet,
    olds: &[ReplicaSet],
) -> Result<()> {
    let st = |rs: &ReplicaSet| rs.status.clone().unwrap_or_default();
    let all: Vec<&ReplicaSet> = std::iter::once(new_rs).chain(olds.iter()).collect();
    let total: i32 = all.iter().map(|rs| st(rs).replicas).sum();
    let ready: i32 = all.iter().map(|rs| st(rs).ready_replicas.unwrap_or(0)).sum();
    let available: i32 = all.iter().map(|rs| st(rs).available_replicas.unwrap_or(0)).sum();
    let updated = st(new_rs).replicas;
    let (is_available, available_reason, progressing_reason) =
        conditions_for(desired, b, updated, available, total);
    let old_conditions = d.status.as_ref().and_then(|s| s.conditions.clone()).unwrap_or_default();
    let available_msg = if is_available {
        "Deployment has minimum availability.".to_string()
    } else {
        "Deployment does not have minimum availability.".to_string()
    };
    let progressing_msg = if progressing_reason == "NewReplicaSetAvailable" {
        format!("ReplicaSet \"{}\" has successfully progressed.", new_rs.name_any())
    } else {
        format!("ReplicaSet \"{}\" is progressing.", new_rs.name_any())
    };
    let conditions = vec![
        condition(&old_conditions, "Available", is_available, available_reason, &available_msg),
        condition(&old_conditions, "Progressing", true, progressing_reason, &progressing_msg),
    ];
    let status = json!({
        "observedGeneration": d.metadata.generation,
        "replicas": total,
        "updatedReplicas": updated,
        "readyReplicas": ready,
        "availableReplicas": available,
        "unavailableReplicas": (desired - available).max(0),
        "conditions": conditions,
    });
    let current = d.status.as_ref().map(|s| {
        json!({
            "observedGeneration": s.observed_generation,
            "replicas": s.replicas.unwrap_or(0),
            "updatedReplicas": s.updated_replicas.unwrap_or(0),
            "readyReplicas": s.ready_replicas.unwrap_or(0),
            "availableReplicas": s.available_replicas.unwrap_or(0),
            "unavailableReplicas": s.unavailable_replicas.unwrap_or(0),
            "conditions": s.conditions.clone().unwrap_or_default(),
        })
    });
    if current.as_ref() != Some(&status) {
        let api: Api<Deployment> =
            Api::namespaced(client.clone(), &d.namespace().unwrap_or_default());
        api.patch_status(&d.name_any(), &params(MANAGER), &merge(json!({ "status": status })))
            .await?;
    }
    Ok(())
}

/// A condition that keeps its transition time unless its status flips, and its update time
/// unless its reason or message changes.
fn condition(
    old: &[DeploymentCondition],
    type_: &str,
    ok: bool,
    reason: &str,
    message: &str,
) -> DeploymentCondition {
    let status = if ok { "True" } else { "False" };
    let previous = old.iter().find(|c| c.type_.as_deref() == Some(type_));
    let t = now();
    let same_status = previous.is_some_and(|p| p.status.as_deref() == Some(status));
    let same_reason = previous.is_some_and(|p| {
        same_status && p.reason.as_deref() == Some(reason) && p.message.as_deref() == Some(message)
    });
    DeploymentCondition {
        type_: Some(type_.into()),
        status: Some(status.into()),
        reason: Some(reason.into()),
        message: Some(message.into()),
        last_transition_time: if same_status {
            previous.and_then(|p| p.last_transition_time.clone())
        } else {
            Some(t.clone())
        },
        last_update_time: if same_reason {
            previous.and_then(|p| p.last_update_time.clone())
        } else {
            Some(t)
        },
    }
}
