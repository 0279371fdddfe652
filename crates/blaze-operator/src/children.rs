//! The child objects of BlazeEngines and BlazeRouters, built from their specs without IO.
//! The controllers apply what these functions return with server-side apply, so each builder
//! states the whole desired object (and only fields the operator manages).

pub mod engine;
pub mod model_source;
pub mod pod;
pub mod router;
pub mod routing;
pub mod worker_flags;
pub mod worker_token;

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{DeploymentStrategy, RollingUpdateDeployment};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::Resource;

use crate::{Error, Result};

/// Images and settings that come from the operator's own configuration, not from a spec.
#[derive(Clone, Debug)]
pub struct Defaults {
    /// Worker image for CPU engines (`spec.resources.gpus` 0) when `spec.image` is unset.
    pub worker_image: String,
    /// Worker image for GPU engines (`spec.resources.gpus` above 0) when `spec.image` is
    /// unset: the same worker built with `--features cuda` (`docker/worker-cuda.Dockerfile`).
    pub worker_cuda_image: String,
    /// Router image when `spec.image` is unset.
    pub router_image: String,
    /// Host part of the addresses workers and routers listen on. `0.0.0.0` in a cluster;
    /// `$(POD_IP)` where pods share one network namespace (the development control plane
    /// runs every pod as a process on one machine), in which case the pod IP is put in the
    /// container's environment for the kubelet to expand.
    pub listen_host: String,
}

impl Default for Defaults {
    fn default() -> Self {
        let v = env!("CARGO_PKG_VERSION");
        Self {
            worker_image: format!("ghcr.io/blaze-ai/blaze-worker:{v}"),
            // A tag variant of the same repository, as `docker/worker-cuda.Dockerfile` tags it
            // (the way text-generation-inference publishes `-rocm` builds): one worker, two
            // builds; and the development control plane, which runs an image as the local
            // binary its repository names, runs `blaze-worker` for both.
            worker_cuda_image: format!("ghcr.io/blaze-ai/blaze-worker:{v}-cuda"),
            router_image: format!("ghcr.io/blaze-ai/blaze-router:{v}"),
            listen_host: "0.0.0.0".to_owned(),
        }
    }
}

/// The `POD_IP` environment variable when `listen_host` refers to it.
pub fn pod_ip_env(listen_host: &str) -> Option<Vec<k8s_openapi::api::core::v1::EnvVar>> {
    use k8s_openapi::api::core::v1::{EnvVar, EnvVarSource, ObjectFieldSelector};
    listen_host.contains("$(POD_IP)").then(|| {
        vec![EnvVar {
            name: "POD_IP".into(),
            value_from: Some(EnvVarSource {
                field_ref: Some(ObjectFieldSelector {
                    field_path: "status.podIP".into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }]
    })
}

/// The controller owner reference to put on every child of `owner`, so the garbage collector
/// removes children with their owner and `Controller::owns` maps child events back.
pub fn owner_ref<K: Resource<DynamicType = ()>>(owner: &K) -> Result<OwnerReference> {
    owner.controller_owner_ref(&()).ok_or(Error::MissingField("metadata.uid"))
}

/// Metadata of a child of `owner`: in the owner's namespace, named by `child_name` and
/// labelled by `labels` (each given the owner's name), with the controller reference.
pub fn child_meta<K: Resource<DynamicType = ()>>(
    owner: &K,
    child_name: fn(&str) -> String,
    labels: fn(&str) -> BTreeMap<String, String>,
) -> Result<ObjectMeta> {
    let name = name_of(owner)?;
    Ok(ObjectMeta {
        name: Some(child_name(&name)),
        namespace: owner.meta().namespace.clone(),
        labels: Some(labels(&name)),
        owner_references: Some(vec![owner_ref(owner)?]),
        ..Default::default()
    })
}

/// The rollout of a child Deployment: one pod more at a time and none fewer, so capacity
/// never drops while a new image or spec rolls out.
pub fn surge_one() -> DeploymentStrategy {
    DeploymentStrategy {
        type_: Some("RollingUpdate".into()),
        rolling_update: Some(RollingUpdateDeployment {
            max_surge: Some(IntOrString::Int(1)),
            max_unavailable: Some(IntOrString::Int(0)),
        }),
    }
}

/// The name of an object, which the API server always sets.
pub fn name_of<K: Resource>(obj: &K) -> Result<String> {
    obj.meta().name.clone().ok_or(Error::MissingField("metadata.name"))
}

/// Document `n` of a multi-document YAML manifest, as `T`.
#[cfg(test)]
pub(crate) fn manifest_doc<T: serde::de::DeserializeOwned>(yaml: &str, n: usize) -> T {
    let docs: Vec<serde_json::Value> = serde_saphyr::from_multiple(yaml).expect("YAML documents");
    serde_json::from_value(docs[n].clone()).expect("a document of the expected kind")
}
