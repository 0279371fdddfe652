//! The EndpointSlice controller: one slice per selecting Service, from pod readiness.
//!
//! Reconciles a Service whenever it or a pod in its namespace changes, and writes the slice
//! from [`build_slice`] with server-side apply (field manager
//! `endpointslice-controller.k8s.io`); the owner reference to the Service lets garbage
//! collection remove the slice with it.

use std::sync::Arc;

use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::core::Selector;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::{Client, ResourceExt};

use crate::endpoints::{MANAGED_BY, build_slice, selected};
use crate::error::Result;
use crate::k8s::drive;

/// Runs the controller until the watches end.
pub async fn run(client: Client) {
    let controller = Controller::new(Api::<Service>::all(client.clone()), Default::default());
    let services = controller.store();
    let controller =
        controller.watches(Api::<Pod>::all(client.clone()), Default::default(), move |pod: Pod| {
            let ns = pod.namespace();
            let pods = [pod];
            services
                .state()
                .into_iter()
                .filter(|svc| svc.namespace() == ns && !selected(svc, &pods).is_empty())
                .map(|svc| ObjectRef::from_obj(&*svc))
                .collect::<Vec<_>>()
        });
    drive("endpointslice", controller, reconcile, client).await;
}

async fn reconcile(svc: Arc<Service>, client: Arc<Client>) -> Result<Action> {
    let has_selector =
        svc.spec.as_ref().and_then(|s| s.selector.as_ref()).is_some_and(|s| !s.is_empty());
    if svc.metadata.deletion_timestamp.is_some() || !has_selector {
        return Ok(Action::await_change());
    }
    let ns = svc.namespace().unwrap_or_default();
    let pods: Api<Pod> = Api::namespaced((*client).clone(), &ns);
    let selector: Selector = svc.spec.iter().flat_map(|s| s.selector.clone()).flatten().collect();
    let list = pods.list(&ListParams::default().labels_from(&selector)).await?.items;
    let slice = build_slice(&svc, &selected(&svc, &list));
    let slices: Api<EndpointSlice> = Api::namespaced((*client).clone(), &ns);
    let name = slice.metadata.name.clone().unwrap_or_default();
    let params = PatchParams::apply(MANAGED_BY).force();
    slices.patch(&name, &params, &Patch::Apply(&slice)).await?;
    Ok(Action::await_change())
}
