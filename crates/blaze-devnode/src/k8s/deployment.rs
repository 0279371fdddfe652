//! The Deployment controller: a ReplicaSet per pod template, rolled with the
//! [`crate::rollout`] arithmetic, and the Deployment's status and conditions.
//!
//! The new ReplicaSet is named `<deployment>-<pod-template-hash>` and carries the hash in its
//! labels, selector and template, so the ReplicaSets of two templates never share pods.
//! `RollingUpdate` moves one step per reconcile (scale the new one up within `maxSurge`, or
//! the old ones down within `maxUnavailable`); `Recreate` scales the old ones to zero and
//! waits for their pods to go before scaling the new one up. Old ReplicaSets at zero beyond
//! `revisionHistoryLimit` are deleted.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, ReplicaSetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use kube::api::{Api, DeleteParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::{Client, ResourceExt};
use serde_json::json;

use crate::error::Result;
use crate::k8s::{drive, merge, params, selecting};
use crate::replicas::{POD_TEMPLATE_HASH, controlled_by, controller_ref, template_hash};
use crate::rollout::{
    Bounds, RsCounts, bounds, condition_reasons, next_new_replicas, next_old_replicas,
};

const MANAGER: &str = "deployment-controller";
const REVISION: &str = "deployment.kubernetes.io/revision";

mod status;

/// Runs the controller until the watches end.
pub async fn run(client: Client) {
    let controller = Controller::new(Api::<Deployment>::all(client.clone()), Default::default())
        .owns(Api::<ReplicaSet>::all(client.clone()), Default::default());
    drive("deployment", controller, reconcile, client).await;
}

async fn reconcile(d: Arc<Deployment>, client: Arc<Client>) -> Result<Action> {
    if d.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let ns = d.namespace().unwrap_or_default();
    let api: Api<ReplicaSet> = Api::namespaced((*client).clone(), &ns);
    let uid = d.uid().unwrap_or_default();
    let mut sets: Vec<ReplicaSet> = api
        .list(&selecting(&d.spec.selector)?)
        .await?
        .items
        .into_iter()
        .filter(|rs| controlled_by(&rs.metadata, &uid))
        .collect();
    sets.sort_by_key(|rs| rs.metadata.creation_timestamp.as_ref().map(|t| t.0.as_second()));
    let collision = d.status.as_ref().and_then(|s| s.collision_count);
    let hash = template_hash(&d.spec.template, collision);
    let new_rs = match sets
        .iter()
        .position(|rs| label(&rs.metadata, POD_TEMPLATE_HASH) == Some(hash.as_str()))
    {
        Some(i) => sets.remove(i),
        None => api.create(&PostParams::default(), &new_replica_set(&d, &hash, &sets)).await?,
    };
    let desired = d.spec.replicas.unwrap_or(1).max(0);
    let strategy = d.spec.strategy.clone().unwrap_or_default();
    let rolling = strategy.rolling_update.unwrap_or_default();
    let b = bounds(desired, rolling.max_surge.as_ref(), rolling.max_unavailable.as_ref());
    if !d.spec.paused.unwrap_or(false) {
        let recreate = strategy.type_.as_deref() == Some("Recreate");
        if recreate {
            step_recreate(&api, desired, &new_rs, &sets).await?;
        } else {
            step_rolling(&api, desired, b, &new_rs, &sets).await?;
        }
        prune_history(&api, &d, &sets).await?;
    }
    status::write(&client, &d, desired, b, &new_rs, &sets).await?;
    Ok(Action::await_change())
}

fn label<'a>(meta: &'a ObjectMeta, key: &str) -> Option<&'a str> {
    meta.labels.as_ref()?.get(key).map(String::as_str)
}

fn counts(rs: &ReplicaSet) -> RsCounts {
    RsCounts {
        name: rs.name_any(),
        replicas: rs.spec.replicas.unwrap_or(1),
        available: rs.status.as_ref().and_then(|s| s.available_replicas).unwrap_or(0),
    }
}

fn new_replica_set(d: &Deployment, hash: &str, existing: &[ReplicaSet]) -> ReplicaSet {
    let mut template = d.spec.template.clone();
    let mut meta = template.metadata.clone().unwrap_or_default();
    let mut labels = meta.labels.clone().unwrap_or_default();
    labels.insert(POD_TEMPLATE_HASH.into(), hash.into());
    meta.labels = Some(labels.clone());
    template.metadata = Some(meta);
    let mut selector: LabelSelector = d.spec.selector.clone();
    let mut match_labels = selector.match_labels.clone().unwrap_or_default();
    match_labels.insert(POD_TEMPLATE_HASH.into(), hash.into());
    selector.match_labels = Some(match_labels);
    let revision = existing
        .iter()
        .filter_map(|rs| rs.metadata.annotations.as_ref()?.get(REVISION)?.parse::<i64>().ok())
        .max()
        .unwrap_or(0)
        + 1;
    ReplicaSet {
        metadata: ObjectMeta {
            name: Some(format!("{}-{hash}", d.name_any())),
            namespace: d.namespace(),
            labels: Some(labels),
            annotations: Some(BTreeMap::from([(REVISION.to_string(), revision.to_string())])),
            owner_references: Some(vec![controller_ref("apps/v1", "Deployment", &d.metadata)]),
            ..Default::default()
        },
        spec: ReplicaSetSpec {
            replicas: Some(0),
            min_ready_seconds: d.spec.min_ready_seconds,
            selector,
            template: Some(template),
        },
        status: None,
    }
}

async fn scale(api: &Api<ReplicaSet>, rs: &RsCounts, replicas: i32) -> Result<()> {
    if rs.replicas != replicas {
        tracing::info!(replicaset = %rs.name, from = rs.replicas, to = replicas, "scaling");
        let patch = json!({"spec": {"replicas": replicas}});
        api.patch(&rs.name, &params(MANAGER), &merge(patch)).await?;
    }
    Ok(())
}

async fn step_rolling(
    api: &Api<ReplicaSet>,
    desired: i32,
    b: Bounds,
    new_rs: &ReplicaSet,
    olds: &[ReplicaSet],
) -> Result<()> {
    let new = counts(new_rs);
    let old: Vec<RsCounts> = olds.iter().map(counts).collect();
    let target = next_new_replicas(desired, b, &new, &old);
    if target != new.replicas {
        return scale(api, &new, target).await;
    }
    for (rs, replicas) in old.iter().zip(next_old_replicas(desired, b, &new, &old)) {
        scale(api, rs, replicas).await?;
    }
    Ok(())
}

async fn step_recreate(
    api: &Api<ReplicaSet>,
    desired: i32,
    new_rs: &ReplicaSet,
    olds: &[ReplicaSet],
) -> Result<()> {
    for rs in olds {
        scale(api, &counts(rs), 0).await?;
    }
    let old_pods: i32 =
        olds.iter().map(|rs| rs.status.as_ref().map(|s| s.replicas).unwrap_or(0)).sum();
    if old_pods == 0 {
        scale(api, &counts(new_rs), desired).await?;
    }
    Ok(())
}

async fn prune_history(api: &Api<ReplicaSet>, d: &Deployment, olds: &[ReplicaSet]) -> Result<()> {
    let limit = d.spec.revision_history_limit.unwrap_or(10).max(0) as usize;
    let idle: Vec<&ReplicaSet> = olds
        .iter()
        .filter(|rs| {
            rs.spec.replicas == Some(0) && rs.status.as_ref().is_none_or(|s| s.replicas == 0)
        })
        .collect();
    if idle.len() > limit {
        for rs in &idle[..idle.len() - limit] {
            let _ = api.delete(&rs.name_any(), &DeleteParams::background()).await;
        }
    }
    Ok(())
}

/// `(available, reason, progressing reason)` for a Deployment's counts; see
/// [`condition_reasons`].
pub fn conditions_for(
    desired: i32,
    b: Bounds,
    updated: i32,
    available: i32,
    total: i32,
) -> (bool, &'static str, &'static str) {
    condition_reasons(desired, b, updated, available, total)
}
