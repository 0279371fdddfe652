//! One pod's life on the node: start, status updates, termination.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::core::v1::{
    ConfigMap, PersistentVolume, PersistentVolumeClaim, Pod, PodCondition, Secret,
};
use kube::api::{Api, DeleteParams, PostParams};
use kube::runtime::events::{Event, EventType};
use kube::{Resource, ResourceExt};
use serde_json::json;
use tokio::sync::{mpsc, watch};

use super::Inner;
use crate::container::RuntimeEvent;
use crate::devices::{GPU_RESOURCE, visible_devices_env};
use crate::error::Result;
use crate::k8s::{merge, params};
use crate::pod::status::merge_conditions;
use crate::pod::{PodInputs, PodRun};
use crate::scheduler::pod_requests;
use crate::service_account::{ApiAccess, Credentials, TOKEN_SECONDS};
use crate::volumes::PodSources;

const MANAGER: &str = "devnode-kubelet";

/// Runs `pod` until it is stopped, then finalises its deletion if one was asked for.
pub(super) async fn work(
    inner: Arc<Inner>,
    pod: Pod,
    mut stop: watch::Receiver<Option<Option<i64>>>,
) {
    let uid = pod.uid().unwrap_or_default();
    let api: Api<Pod> = Api::namespaced(inner.client.clone(), &pod.namespace().unwrap_or_default());
    let (events_tx, events) = mpsc::unbounded_channel();
    tokio::spawn(publish_events(inner.clone(), pod.clone(), events));
    let mut delay = Duration::from_secs(1);
    let run = loop {
        if stop.borrow().is_some() {
            break None;
        }
        match start(&inner, &pod, events_tx.clone()).await {
            Ok(run) => break Some(Arc::new(run)),
            Err(e) => {
                tracing::warn!(pod = %pod.name_any(), error = %e, "cannot start pod");
                let _ = events_tx.send(RuntimeEvent {
                    container: String::new(),
                    reason: "Failed".into(),
                    message: e.to_string(),
                    warning: true,
                });
                let _ = report_waiting(&api, &pod, e.waiting_reason(), &e.to_string()).await;
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = stop.wait_for(Option::is_some) => {}
                }
                delay = (delay * 2).min(Duration::from_secs(30));
            }
        }
    };
    if let Some(run) = &run {
        if let Some(entry) = inner.pods.lock().get_mut(&uid) {
            entry.run = Some(run.clone());
        }
        let refresher = tokio::spawn(refresh_volumes(inner.clone(), pod.clone(), run.clone()));
        push_statuses(&api, &pod, run, &mut stop).await;
        refresher.abort();
        let grace = (*stop.borrow()).flatten().map(|s| Duration::from_secs(s.max(0) as u64));
        let last = run.stop(grace).await;
        let _ = patch_status(&api, &pod, serde_json::to_value(&last).unwrap_or_default()).await;
    }
    inner.devices.lock().release(&uid);
    inner.pods.lock().remove(&uid);
    // The kubelet confirms a graceful deletion once the containers are gone.
    let _ = api.delete(&pod.name_any(), &DeleteParams::default().grace_period(0)).await;
}

async fn start(
    inner: &Inner,
    pod: &Pod,
    events: mpsc::UnboundedSender<RuntimeEvent>,
) -> Result<PodRun> {
    let sources = fetch_sources(inner, pod).await?;
    let gpus = pod.spec.as_ref().map(|s| pod_requests(s).get(GPU_RESOURCE)).unwrap_or(0);
    let uid = pod.uid().unwrap_or_default();
    let devices = inner.devices.lock().allocate(&uid, gpus.max(0) as u32).ok_or_else(|| {
        crate::Error::Unsupported(format!("{gpus} GPUs requested but not free on this node"))
    })?;
    let credentials = match &inner.config.runtime.api {
        Some(api) => credentials(inner, pod, api).await?,
        None => None,
    };
    let inputs = PodInputs {
        node_name: inner.config.node.name.clone(),
        address: inner.config.addresses.allocate()?,
        sources,
        extra_env: visible_devices_env(&devices),
        credentials,
    };
    PodRun::start(&inner.config.runtime, pod, inputs, events)
}

/// The pod's ServiceAccount credentials (see [`crate::service_account`]): `None` when the pod,
/// or failing that its account, turns automounting off; an error while the account does not
/// exist (the pod waits for it, as a real kubelet waits to mount the token).
async fn credentials(inner: &Inner, pod: &Pod, api: &ApiAccess) -> Result<Option<Credentials>> {
    let spec = pod.spec.clone().unwrap_or_default();
    if spec.automount_service_account_token == Some(false) {
        return Ok(None);
    }
    let ns = pod.namespace().unwrap_or_default();
    let name =
        spec.service_account_name.filter(|n| !n.is_empty()).unwrap_or_else(|| "default".into());
    let accounts: Api<ServiceAccount> = Api::namespaced(inner.client.clone(), &ns);
    let account = accounts.get_opt(&name).await?.ok_or_else(|| crate::Error::MissingSource {
        kind: "ServiceAccount",
        name: name.clone(),
        key: None,
    })?;
    if spec.automount_service_account_token.is_none()
        && account.automount_service_account_token == Some(false)
    {
        return Ok(None);
    }
    let request = TokenRequest {
        spec: Some(TokenRequestSpec {
            expiration_seconds: Some(TOKEN_SECONDS),
            bound_object_ref: Some(BoundObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: pod.metadata.name.clone(),
                uid: pod.metadata.uid.clone(),
            }),
            ..TokenRequestSpec::default()
        }),
        ..TokenRequest::default()
    };
    let answer: TokenRequest =
        accounts.create_subresource("token", &name, &PostParams::default(), &request).await?;
    let token = answer.status.and_then(|s| s.token).unwrap_or_default();
    Ok(Some(Credentials { token, namespace: ns, api: api.clone() }))
}

/// How often mounted ConfigMaps and Secrets are brought up to date (a real kubelet takes up to
/// its sync period plus a cache TTL, about a minute; here changes show within seconds).
const VOLUME_SYNC: Duration = Duration::from_secs(2);

/// Keeps the pod's ConfigMap and Secret volumes in step with the API until aborted.
async fn refresh_volumes(inner: Arc<Inner>, pod: Pod, run: Arc<PodRun>) {
    let volumes = pod.spec.as_ref().and_then(|s| s.volumes.clone()).unwrap_or_default();
    if !volumes.iter().any(|v| v.config_map.is_some() || v.secret.is_some()) {
        return;
    }
    loop {
        tokio::time::sleep(VOLUME_SYNC).await;
        let sources = match fetch_sources(&inner, &pod).await {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(pod = %pod.name_any(), error = %e, "cannot read volume sources");
                continue;
            }
        };
        if let Err(e) = crate::volumes::materialise(run.dir(), &volumes, &sources) {
            tracing::warn!(pod = %pod.name_any(), error = %e, "cannot update volumes");
        }
    }
}

/// Reads the ConfigMaps and Secrets the pod refers to; missing ones are left out (the pod
/// start then says which is missing, unless it is optional).
async fn fetch_sources(inner: &Inner, pod: &Pod) -> Result<PodSources> {
    let ns = pod.namespace().unwrap_or_default();
    let cms: Api<ConfigMap> = Api::namespaced(inner.client.clone(), &ns);
    let secrets: Api<Secret> = Api::namespaced(inner.client.clone(), &ns);
    let spec = pod.spec.clone().unwrap_or_default();
    let mut cm_names = Vec::new();
    let mut secret_names = Vec::new();
    for v in spec.volumes.iter().flatten() {
        cm_names.extend(v.config_map.as_ref().map(|c| c.name.clone()));
        secret_names.extend(v.secret.as_ref().and_then(|s| s.secret_name.clone()));
    }
    for c in &spec.containers {
        for from in c.env_from.iter().flatten() {
            cm_names.extend(from.config_map_ref.as_ref().map(|r| r.name.clone()));
            secret_names.extend(from.secret_ref.as_ref().map(|r| r.name.clone()));
        }
        for e in c.env.iter().flatten().filter_map(|e| e.value_from.as_ref()) {
            cm_names.extend(e.config_map_key_ref.as_ref().map(|r| r.name.clone()));
            secret_names.extend(e.secret_key_ref.as_ref().map(|r| r.name.clone()));
        }
    }
    let mut sources = PodSources::default();
    for name in cm_names {
        if let Some(cm) = cms.get_opt(&name).await? {
            sources.config_maps.insert(name, cm);
        }
    }
    for name in secret_names {
        if let Some(s) = secrets.get_opt(&name).await? {
            sources.secrets.insert(name, s);
        }
    }
    for v in spec.volumes.iter().flatten() {
        if let Some(c) = &v.persistent_volume_claim
            && let Some(path) = claim_path(inner, &ns, &c.claim_name).await?
        {
            sources.claims.insert(c.claim_name.clone(), path);
        }
    }
    Ok(sources)
}

/// The directory of the PersistentVolume that claim `name` is bound to (`spec.volumeName`),
/// from the volume's `hostPath` or `local` source; `None` while the claim is missing or
/// unbound (the pod then waits, as a real kubelet waits to attach a volume).
async fn claim_path(inner: &Inner, ns: &str, name: &str) -> Result<Option<PathBuf>> {
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(inner.client.clone(), ns);
    let Some(claim) = claims.get_opt(name).await? else { return Ok(None) };
    let Some(volume) = claim.spec.and_then(|s| s.volume_name).filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    let volumes: Api<PersistentVolume> = Api::all(inner.client.clone());
    let Some(pv) = volumes.get_opt(&volume).await? else { return Ok(None) };
    let spec = pv.spec.unwrap_or_default();
    Ok(spec.host_path.map(|h| h.path).or(spec.local.map(|l| l.path)).map(PathBuf::from))
}

/// Writes the pod's status whenever a container changes, until a stop is asked for.
async fn push_statuses(
    api: &Api<Pod>,
    pod: &Pod,
    run: &PodRun,
    stop: &mut watch::Receiver<Option<Option<i64>>>,
) {
    let mut conditions: Vec<PodCondition> =
        pod.status.as_ref().and_then(|s| s.conditions.clone()).unwrap_or_default();
    let mut last_written = None;
    loop {
        let mut status = run.status();
        conditions = merge_conditions(&conditions, status.conditions.take().unwrap_or_default());
        status.conditions = Some(conditions.clone());
        let value = serde_json::to_value(&status).unwrap_or_default();
        if last_written.as_ref() != Some(&value) {
            match patch_status(api, pod, value.clone()).await {
                Ok(()) => last_written = Some(value),
                Err(e) => tracing::warn!(pod = %pod.name_any(), error = %e, "status update failed"),
            }
        }
        tokio::select! {
            _ = run.changed() => {}
            _ = stop.wait_for(Option::is_some) => return,
            // Retry a failed write even when nothing changes.
            _ = tokio::time::sleep(Duration::from_secs(10)) => {}
        }
    }
}

async fn patch_status(api: &Api<Pod>, pod: &Pod, status: serde_json::Value) -> Result<()> {
    let body = json!({ "status": status });
    api.patch_status(&pod.name_any(), &params(MANAGER), &merge(body)).await?;
    Ok(())
}

async fn report_waiting(api: &Api<Pod>, pod: &Pod, reason: &str, message: &str) -> Result<()> {
    let statuses: Vec<_> = pod
        .spec
        .iter()
        .flat_map(|s| s.containers.iter())
        .map(|c| {
            json!({
                "name": c.name, "image": c.image, "imageID": "", "ready": false, "restartCount": 0,
                "started": false, "state": {"waiting": {"reason": reason, "message": message}},
            })
        })
        .collect();
    patch_status(api, pod, json!({"phase": "Pending", "containerStatuses": statuses})).await
}

async fn publish_events(
    inner: Arc<Inner>,
    pod: Pod,
    mut events: mpsc::UnboundedReceiver<RuntimeEvent>,
) {
    let reference = pod.object_ref(&());
    while let Some(e) = events.recv().await {
        let event = Event {
            type_: if e.warning { EventType::Warning } else { EventType::Normal },
            reason: e.reason,
            note: Some(e.message),
            action: "Sync".into(),
            secondary: None,
        };
        if let Err(err) = inner.recorder.publish(&event, &reference).await {
            tracing::debug!(error = %err, "event not recorded");
        }
    }
}
