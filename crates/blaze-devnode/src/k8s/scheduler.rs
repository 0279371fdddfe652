//! The scheduler loop: binds pending pods to nodes, or marks them Unschedulable.
//!
//! Watches Pods and Nodes; on every change, and every few seconds for pods still pending,
//! runs [`crate::scheduler::choose`] over the nodes with the requests of the pods already bound
//! to each. A pod that fits is bound through the `pods/binding` subresource (falling back to
//! setting `spec.nodeName` where an API server lacks it); one that fits nowhere gets
//! `PodScheduled=False, reason=Unschedulable` and a `FailedScheduling` event, once per message.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, PostParams};
use kube::runtime::events::{Event, EventType, Recorder};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use serde_json::json;

use crate::error::Result;
use crate::k8s::{merge, params};
use crate::pod::status::now;
use crate::quantity::Resources;
use crate::replicas::is_active;
use crate::scheduler::{NodeInfo, choose, pod_requests};

/// The scheduler name this scheduler answers to.
pub const SCHEDULER_NAME: &str = "default-scheduler";
/// How often pods that fit nowhere are tried again without any change seen.
const RETRY: Duration = Duration::from_secs(5);

/// Runs the scheduler until the watches end.
pub async fn run(client: Client) -> Result<()> {
    let (pods, pod_writer) = reflector::store::<Pod>();
    let (nodes, node_writer) = reflector::store::<Node>();
    let pod_events = reflector::reflector(
        pod_writer,
        watcher(Api::<Pod>::all(client.clone()), Default::default()),
    )
    .default_backoff()
    .touched_objects()
    .map(|_| ());
    let node_events = reflector::reflector(
        node_writer,
        watcher(Api::<Node>::all(client.clone()), Default::default()),
    )
    .default_backoff()
    .touched_objects()
    .map(|_| ());
    let ticks = tokio_stream_interval(RETRY);
    let mut triggers = std::pin::pin!(futures::stream::select(
        futures::stream::select(pod_events, node_events),
        ticks
    ));
    let recorder = Recorder::new(client.clone(), SCHEDULER_NAME.into());
    let mut reported: HashMap<String, String> = HashMap::new();
    // The stores fill as the trigger stream is polled; a pass on a partial view could call a
    // pod unschedulable only because its node has not been seen yet.
    while triggers.next().await.is_some() {
        let pods_ready = futures::FutureExt::now_or_never(pods.wait_until_ready()).is_some();
        let nodes_ready = futures::FutureExt::now_or_never(nodes.wait_until_ready()).is_some();
        if !pods_ready || !nodes_ready {
            continue;
        }
        if let Err(e) = schedule_pending(&client, &pods, &nodes, &recorder, &mut reported).await {
            // A 409 is a pod bound since the cache was read: the next pass sees it.
            match &e {
                crate::Error::Kube(kube::Error::Api(s)) if s.code == 409 => {
                    tracing::debug!(error = %e, "pod already bound")
                }
                _ => tracing::warn!(error = %e, "scheduling pass failed"),
            }
        }
    }
    Ok(())
}

fn tokio_stream_interval(period: Duration) -> impl futures::Stream<Item = ()> {
    futures::stream::unfold(tokio::time::interval(period), |mut i| async move {
        i.tick().await;
        Some(((), i))
    })
}

/// One pass over the pending pods, oldest first.
pub async fn schedule_pending(
    client: &Client,
    pods: &Store<Pod>,
    nodes: &Store<Node>,
    recorder: &Recorder,
    reported: &mut HashMap<String, String>,
) -> Result<()> {
    let all_pods = pods.state();
    let mut used: BTreeMap<String, Resources> = BTreeMap::new();
    for p in all_pods.iter().filter(|p| is_active(p)) {
        if let Some(node) = p.spec.as_ref().and_then(|s| s.node_name.clone()) {
            used.entry(node)
                .or_default()
                .add(&pod_requests(p.spec.as_ref().unwrap_or(&Default::default())));
        }
    }
    let node_infos: Vec<NodeInfo> = nodes.state().iter().map(|n| NodeInfo::from_node(n)).collect();
    let mut pending: Vec<_> = all_pods.iter().filter(|p| wants_scheduling(p)).cloned().collect();
    pending.sort_by_key(|p| p.metadata.creation_timestamp.as_ref().map(|t| t.0.as_second()));
    for pod in pending {
        let spec = pod.spec.clone().unwrap_or_default();
        let candidates: Vec<(NodeInfo, Resources)> = node_infos
            .iter()
            .map(|n| (n.clone(), used.get(&n.name).cloned().unwrap_or_default()))
            .collect();
        let key = format!("{}/{}", pod.namespace().unwrap_or_default(), pod.name_any());
        match choose(&candidates, &spec) {
            Ok(node) => {
                bind(client, &pod, &node).await?;
                used.entry(node).or_default().add(&pod_requests(&spec));
                reported.remove(&key);
            }
            Err(message) => {
                if reported.get(&key) != Some(&message) {
                    mark_unschedulable(client, recorder, &pod, &message).await?;
                    reported.insert(key, message);
                }
            }
        }
    }
    Ok(())
}

fn wants_scheduling(p: &Pod) -> bool {
    let spec = p.spec.as_ref();
    let unbound = spec.is_some_and(|s| s.node_name.as_deref().unwrap_or("").is_empty());
    let ours = spec.and_then(|s| s.scheduler_name.as_deref()).is_none_or(|n| n == SCHEDULER_NAME);
    unbound && ours && is_active(p)
}

async fn bind(client: &Client, pod: &Pod, node: &str) -> Result<()> {
    let ns = pod.namespace().unwrap_or_else(|| "default".into());
    let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let name = pod.name_any();
    let binding = json!({
        "apiVersion": "v1", "kind": "Binding",
        "metadata": {"name": name, "namespace": ns, "uid": pod.uid()},
        "target": {"apiVersion": "v1", "kind": "Node", "name": node},
    });
    let bound = api
        .create_subresource::<_, serde_json::Value>(
            "binding",
            &name,
            &PostParams::default(),
            &binding,
        )
        .await;
    match bound {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code != 409 => {
            // An API server without pods/binding: set the node directly (a pod that is gone
            // fails here with its own 404).
            let patch = json!({"spec": {"nodeName": node}});
            api.patch(&name, &params(SCHEDULER_NAME), &merge(patch)).await?;
        }
        Err(e) => return Err(e.into()),
    }
    let condition = json!({"status": {"conditions": [
        {"type": "PodScheduled", "status": "True", "lastTransitionTime": now()}
    ]}});
    api.patch_status(&name, &params(SCHEDULER_NAME), &kube::api::Patch::Strategic(condition))
        .await?;
    tracing::info!(pod = %name, namespace = %ns, node, "bound");
    Ok(())
}

async fn mark_unschedulable(
    client: &Client,
    recorder: &Recorder,
    pod: &Pod,
    message: &str,
) -> Result<()> {
    let ns = pod.namespace().unwrap_or_else(|| "default".into());
    let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let condition = json!({"status": {"phase": "Pending", "conditions": [{
        "type": "PodScheduled", "status": "False", "reason": "Unschedulable",
        "message": message, "lastTransitionTime": now(),
    }]}});
    api.patch_status(
        &pod.name_any(),
        &params(SCHEDULER_NAME),
        &kube::api::Patch::Strategic(condition),
    )
    .await?;
    let event = Event {
        type_: EventType::Warning,
        reason: "FailedScheduling".into(),
        note: Some(message.into()),
        action: "Scheduling".into(),
        secondary: None,
    };
    recorder.publish(&event, &pod.object_ref(&())).await?;
    Ok(())
}
