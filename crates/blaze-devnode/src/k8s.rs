//! The parts that talk to an API server, through the Kubernetes API only (kube-rs), so they
//! work against the development API server and a real one alike.

use std::fmt::Debug;
use std::hash::Hash;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::api::{ListParams, Patch, PatchParams};
use kube::core::Selector;
use kube::runtime::controller::{Action, Controller};
use kube::{Client, Resource};
use serde::de::DeserializeOwned;

use crate::error::{Error, Result};

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

/// A list query for what `selector` selects, `matchExpressions` included (the API server
/// matches them).
pub(crate) fn selecting(selector: &LabelSelector) -> Result<ListParams> {
    Ok(ListParams::default().labels_from(&Selector::try_from(selector.clone())?))
}

/// How long a failed reconcile waits before it is retried.
const RETRY: Duration = Duration::from_secs(2);

/// Runs `controller` with `reconcile` until its watches end. A failed reconcile is logged
/// under `name` and retried after [`RETRY`].
pub(crate) async fn drive<K, F, Fut>(
    name: &'static str,
    controller: Controller<K>,
    reconcile: F,
    client: Client,
) where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Eq + Hash + Clone + Debug + Unpin,
    F: FnMut(Arc<K>, Arc<Client>) -> Fut,
    Fut: Future<Output = Result<Action>> + Send + 'static,
{
    let error_policy = move |_: Arc<K>, e: &Error, _: Arc<Client>| {
        tracing::warn!(error = %e, controller = name, "reconcile failed");
        Action::requeue(RETRY)
    };
    controller
        .run(reconcile, error_policy, Arc::new(client))
        .for_each(|r| async move {
            if let Err(e) = r {
                tracing::debug!(error = %e, controller = name, "reconcile");
            }
        })
        .await;
}
