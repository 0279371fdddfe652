//! What the operator's binary tests share: a client of the development API server, the CRDs
//! installed in it, and Blaze objects applied as a user would.

#![allow(clippy::unwrap_used, dead_code)] // a test fails by panicking; not every test uses all

use std::path::Path;

use blaze_testing::eventually;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::core::GroupVersionKind;
use kube::discovery::ApiResource;
use serde_json::json;

/// The field manager the tests apply with.
pub const MANAGER: &str = "operator-test";

/// A client of the API server that wrote `kubeconfig`.
pub async fn client(kubeconfig: &Path) -> kube::Client {
    let kc = Kubeconfig::read_from(kubeconfig).unwrap();
    let config =
        kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await.unwrap();
    kube::Client::try_from(config).unwrap()
}

/// Applies Blaze's CRDs.
pub async fn install_crds(client: &kube::Client) {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    for (_, yaml) in blaze_api::crds::render_all().unwrap() {
        let crd: CustomResourceDefinition = serde_saphyr::from_str(&yaml).unwrap();
        let name = crd.metadata.name.clone().unwrap();
        api.patch(&name, &PatchParams::apply(MANAGER).force(), &Patch::Apply(&crd)).await.unwrap();
    }
}

/// Applies a Blaze object (`kind`, `name` in `default`) with `spec`, retrying while its CRD is
/// being established.
pub async fn apply(client: &kube::Client, kind: &str, name: &str, spec: serde_json::Value) {
    let gvk = GroupVersionKind::gvk("blaze.ai", "v1alpha1", kind);
    let api: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), "default", &ApiResource::from_gvk(&gvk));
    let obj = json!({
        "apiVersion": "blaze.ai/v1alpha1", "kind": kind,
        "metadata": {"name": name, "namespace": "default"}, "spec": spec,
    });
    let pp = PatchParams::apply(MANAGER).force();
    eventually(&format!("{kind} {name} applied"), 30, async || {
        api.patch(name, &pp, &Patch::Apply(&obj)).await.ok()
    })
    .await;
}
