//! The ReplicaSet controller: keeps `spec.replicas` active pods and reports their state.
//!
//! Pods are created from the template with `generateName` and a controller owner reference;
//! surplus pods go in [`deletion_order`]. Status: `replicas`, `fullyLabeledReplicas`,
//! `readyReplicas`, `availableReplicas` (ready for `minReadySeconds`), `observedGeneration`.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::{Client, ResourceExt};
use serde_json::json;

use crate::error::Result;
use crate::k8s::{drive, merge, params, selecting};
use crate::replicas::{controlled_by, deletion_order, is_active, is_available, is_ready, pod_for};

const MANAGER: &str = "replicaset-controller";

/// Runs the controller until the watches end.
pub async fn run(client: Client) {
    let controller = Controller::new(Api::<ReplicaSet>::all(client.clone()), Default::default())
        .owns(Api::<Pod>::all(client.clone()), Default::default());
    drive("replicaset", controller, reconcile, client).await;
}

/// The pods `rs` controls.
pub async fn owned_pods(client: &Client, rs: &ReplicaSet) -> Result<Vec<Pod>> {
    let ns = rs.namespace().unwrap_or_default();
    let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let list = api.list(&selecting(&rs.spec.selector)?).await?;
    let uid = rs.uid().unwrap_or_default();
    Ok(list.items.into_iter().filter(|p| controlled_by(&p.metadata, &uid)).collect())
}

async fn reconcile(rs: Arc<ReplicaSet>, client: Arc<Client>) -> Result<Action> {
    if rs.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let ns = rs.namespace().unwrap_or_default();
    let api: Api<Pod> = Api::namespaced((*client).clone(), &ns);
    let mut active: Vec<Pod> =
        owned_pods(&client, &rs).await?.into_iter().filter(is_active).collect();
    let desired = rs.spec.replicas.unwrap_or(1).max(0) as usize;
    if active.len() < desired {
        let pod = pod_for(&rs);
        for _ in active.len()..desired {
            api.create(&PostParams::default(), &pod).await?;
        }
    } else if active.len() > desired {
        deletion_order(&mut active);
        for p in &active[..active.len() - desired] {
            match api.delete(&p.name_any(), &DeleteParams::default()).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    let pods: Vec<Pod> = owned_pods(&client, &rs).await?.into_iter().filter(is_active).collect();
    let min_ready = rs.spec.min_ready_seconds.unwrap_or(0);
    let now = crate::pod::status::now().0.as_second();
    let ready = pods.iter().filter(|p| is_ready(p)).count();
    let available = pods.iter().filter(|p| is_available(p, min_ready, now)).count();
    let status = json!({"status": {
        "replicas": pods.len(),
        "fullyLabeledReplicas": pods.len(),
        "readyReplicas": ready,
        "availableReplicas": available,
        "observedGeneration": rs.metadata.generation,
    }});
    let current = rs.status.as_ref().map(|s| {
        json!({"status": {
            "replicas": s.replicas,
            "fullyLabeledReplicas": s.fully_labeled_replicas.unwrap_or(0),
            "readyReplicas": s.ready_replicas.unwrap_or(0),
            "availableReplicas": s.available_replicas.unwrap_or(0),
            "observedGeneration": s.observed_generation,
        }})
    });
    if current.as_ref() != Some(&status) {
        let rs_api: Api<ReplicaSet> = Api::namespaced((*client).clone(), &ns);
        rs_api.patch_status(&rs.name_any(), &params(MANAGER), &merge(status)).await?;
    }
    // Pods that are ready but not yet available need another look once minReadySeconds pass.
    if ready > available && min_ready > 0 {
        return Ok(Action::requeue(Duration::from_secs(1)));
    }
    Ok(Action::await_change())
}
