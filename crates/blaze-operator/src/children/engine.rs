//! An engine's children: the worker Deployment, its Service, its PodDisruptionBudget and its
//! NetworkPolicy.

use blaze_api::BlazeEngine;
use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{Container, PodTemplateSpec, Service, ServicePort, ServiceSpec};
use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicyPort,
    NetworkPolicySpec,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::pod::{self, HTTP_PORT_NAME};
use super::worker_flags::WORKER_PORT;
use super::{Defaults, name_of};
use crate::labels::{self, WORKER};
use crate::{Error, Result};

/// Metadata of a child of `engine`: its name, namespace, labels and controller reference.
pub fn child_meta(engine: &BlazeEngine) -> Result<ObjectMeta> {
    super::child_meta(engine, labels::engine_child_name, labels::engine_labels)
}

/// The worker image of `spec`: `spec.image` if set, else the operator's CUDA build for an
/// engine that asks for GPUs and its CPU build otherwise (a CPU build given a GPU would leave
/// it idle; a CUDA build on a node without one would not start).
pub fn worker_image<'a>(
    spec: &'a blaze_api::engine::BlazeEngineSpec,
    defaults: &'a Defaults,
) -> &'a str {
    match &spec.image {
        Some(image) => image,
        None if spec.resources.gpus > 0 => &defaults.worker_cuda_image,
        None => &defaults.worker_image,
    }
}

/// The worker Deployment of `engine` with `replicas` workers (the spec's, or the autoscaler's).
/// Rolling updates surge one worker and take none away, so capacity never drops while a new
/// model or image rolls out.
pub fn deployment(engine: &BlazeEngine, replicas: i32, defaults: &Defaults) -> Result<Deployment> {
    let name = name_of(engine)?;
    let selector = labels::engine_selector(&name);
    let image = worker_image(&engine.spec, defaults).to_owned();
    let pod_spec =
        pod::worker_pod_spec(&engine.spec, &name, &image, &defaults.listen_host, &selector)?;
    let mut template = PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some(labels::engine_labels(&name)),
            ..Default::default()
        }),
        spec: Some(pod_spec),
    };
    if let Some(over) = &engine.spec.pod_template {
        template = apply_override(template, over)?;
    }
    Ok(Deployment {
        metadata: child_meta(engine)?,
        spec: DeploymentSpec {
            replicas: Some(replicas),
            selector: LabelSelector { match_labels: Some(selector), ..Default::default() },
            strategy: Some(super::surge_one()),
            // Model loading is slow; give a rollout the startup budget before it counts as stuck.
            progress_deadline_seconds: Some(pod::STARTUP_BUDGET_SECONDS + 600),
            revision_history_limit: Some(3),
            template,
            ..Default::default()
        },
        status: None,
    })
}

/// Merges `over` (a partial pod template) over `template`. What the operator manages wins:
/// the worker's image, args, probes and resources, and the selector labels.
pub fn apply_override(
    template: PodTemplateSpec,
    over: &serde_json::Value,
) -> Result<PodTemplateSpec> {
    let generated = template.clone();
    let mut value = serde_json::to_value(template)?;
    blaze_merge::merge(
        &mut value,
        over,
        blaze_merge::lists::Node::builtin("v1", "PodTemplateSpec"),
    );
    let mut merged: PodTemplateSpec = serde_json::from_value(value).map_err(|e| {
        Error::InvalidSpec(format!("spec.podTemplate does not merge into a pod template: {e}"))
    })?;
    let theirs =
        merged.spec.as_mut().and_then(|s| s.containers.iter_mut().find(|c| c.name == WORKER));
    if let (Some(ours), Some(c)) = (worker(&generated), theirs) {
        c.image = ours.image.clone();
        c.args = ours.args.clone();
        c.startup_probe = ours.startup_probe.clone();
        c.readiness_probe = ours.readiness_probe.clone();
        c.liveness_probe = ours.liveness_probe.clone();
        c.resources = merge_resources(c.resources.take(), ours.resources.clone());
    }
    let gen_labels = generated.metadata.and_then(|m| m.labels).unwrap_or_default();
    let meta = merged.metadata.get_or_insert_with(Default::default);
    meta.labels.get_or_insert_with(Default::default).extend(gen_labels);
    Ok(merged)
}

/// The worker container of a template.
pub fn worker(t: &PodTemplateSpec) -> Option<&Container> {
    t.spec.as_ref()?.containers.iter().find(|c| c.name == WORKER)
}

/// The override may add resources (ephemeral storage, say); ours win where both set one.
fn merge_resources(
    theirs: Option<k8s_openapi::api::core::v1::ResourceRequirements>,
    ours: Option<k8s_openapi::api::core::v1::ResourceRequirements>,
) -> Option<k8s_openapi::api::core::v1::ResourceRequirements> {
    let (Some(mut t), Some(o)) = (theirs.clone(), ours.clone()) else {
        return ours.or(theirs);
    };
    for (dst, src) in [(&mut t.requests, o.requests), (&mut t.limits, o.limits)] {
        if let Some(src) = src {
            dst.get_or_insert_with(Default::default).extend(src);
        }
    }
    Some(t)
}

/// The application protocol of the worker's port, for the Service: `kubernetes.io/h2c`, HTTP/2
/// over cleartext with prior knowledge (KEP-3726's standard value).
///
/// The worker serves HTTP/1.1, HTTP/2 and gRPC on one port (hyper answers both versions on
/// each connection), so any of them is right for a client; the port says h2c because that is
/// what a proxy that reads `appProtocol` (Gateway API implementations such as Envoy Gateway
/// and NGINX Gateway Fabric) must speak for gRPC to pass through, where `http` lets them send
/// HTTP/1.1, which cannot carry gRPC. HTTP/1.1 clients keep working: such a proxy converts,
/// and direct clients (curl, the OpenAI SDK, Blaze's router, which picks HTTP/2 for HTTP/2
/// and gRPC requests) ignore the field. The port keeps its name `http`, by which the router
/// finds its endpoints and the probes their port; the name is on the pod template too, so
/// renaming it would restart every worker on an operator upgrade, where this field is on the
/// Service only.
pub const WORKER_APP_PROTOCOL: &str = "kubernetes.io/h2c";

/// The engine's Service: port 8000 named `http` with application protocol
/// [`WORKER_APP_PROTOCOL`], carrying HTTP and gRPC (the worker serves both on one port, so no
/// separate `grpc` port is needed).
pub fn service(engine: &BlazeEngine) -> Result<Service> {
    let name = name_of(engine)?;
    Ok(Service {
        metadata: child_meta(engine)?,
        spec: Some(ServiceSpec {
            selector: Some(labels::engine_selector(&name)),
            ports: Some(vec![ServicePort {
                name: Some(HTTP_PORT_NAME.into()),
                port: WORKER_PORT,
                target_port: Some(IntOrString::String(HTTP_PORT_NAME.into())),
                protocol: Some("TCP".into()),
                app_protocol: Some(WORKER_APP_PROTOCOL.into()),
                ..Default::default()
            }]),
            type_: Some("ClusterIP".into()),
            ..Default::default()
        }),
        status: None,
    })
}

/// The PodDisruptionBudget: at most one worker evicted at a time. `maxUnavailable` rather
/// than `minAvailable`, so an engine with one worker does not block node drains forever.
pub fn pdb(engine: &BlazeEngine) -> Result<PodDisruptionBudget> {
    let name = name_of(engine)?;
    Ok(PodDisruptionBudget {
        metadata: child_meta(engine)?,
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(LabelSelector {
                match_labels: Some(labels::engine_selector(&name)),
                ..Default::default()
            }),
            // Workers that never became ready may be evicted regardless (they serve nothing).
            unhealthy_pod_eviction_policy: Some("AlwaysAllow".into()),
            ..Default::default()
        }),
        status: None,
    })
}

/// Labels of the operator's pods, as the chart and the install manifest set them.
pub const OPERATOR_POD_LABELS: [(&str, &str); 1] = [("app.kubernetes.io/name", "blaze-operator")];

/// The NetworkPolicy of the workers: their port admits only the namespace's Blaze routers
/// (pods with a `blaze.ai/router` label) and the operator's pods in any namespace (its
/// scrapes of `/metrics`). Policies add up: another one admitting a Prometheus opens the port
/// to it too. Enforced by the cluster's network plugin, if it enforces NetworkPolicy (the
/// development control plane keeps it but does not enforce it).
pub fn network_policy(engine: &BlazeEngine) -> Result<NetworkPolicy> {
    let name = name_of(engine)?;
    let routers = NetworkPolicyPeer {
        pod_selector: Some(LabelSelector {
            match_expressions: Some(vec![
                k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement {
                    key: labels::ROUTER_LABEL.to_owned(),
                    operator: "Exists".to_owned(),
                    values: None,
                },
            ]),
            ..Default::default()
        }),
        ..Default::default()
    };
    let operator = NetworkPolicyPeer {
        namespace_selector: Some(LabelSelector::default()),
        pod_selector: Some(LabelSelector {
            match_labels: Some(
                OPERATOR_POD_LABELS
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
            ),
            ..Default::default()
        }),
        ..Default::default()
    };
    Ok(NetworkPolicy {
        metadata: child_meta(engine)?,
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector {
                match_labels: Some(labels::engine_selector(&name)),
                ..Default::default()
            }),
            policy_types: Some(vec!["Ingress".to_owned()]),
            ingress: Some(vec![NetworkPolicyIngressRule {
                from: Some(vec![routers, operator]),
                ports: Some(vec![NetworkPolicyPort {
                    port: Some(IntOrString::Int(WORKER_PORT)),
                    protocol: Some("TCP".to_owned()),
                    ..Default::default()
                }]),
            }]),
            ..Default::default()
        }),
    })
}

#[cfg(test)]
mod tests;
