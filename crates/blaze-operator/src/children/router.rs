//! A router's children: the router Deployment, its Service, the ConfigMap carrying its
//! routing configuration, and the identity that lets the router pods watch that ConfigMap (a
//! ServiceAccount with a Role granting `get`, `list` and `watch` on that one ConfigMap).
//!
//! Router pods watch the ConfigMap through the API server (`--config-map`) rather than
//! mounting it: the kubelet refreshes a mounted ConfigMap only on its sync period (a minute or
//! more), while a watch event reaches every replica within milliseconds of the operator's
//! write, inside the two seconds a change of endpoints or weights may take.

use std::collections::BTreeMap;

use blaze_api::BlazeRouter;
use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{
    ConfigMap, Container, ContainerPort, HTTPGetAction, PodSpec, PodTemplateSpec, Probe,
    SecretVolumeSource, Service, ServiceAccount, ServicePort, ServiceSpec, Volume,
};
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::model_source::mount;
use super::pod::{container_security, pod_security};
use super::routing::RoutingConfig;
use super::{Defaults, name_of, worker_token};
use crate::Result;
use crate::labels::{self, ROUTER};

/// Port of the router's proxy.
pub const ROUTER_PORT: i32 = 8080;
/// Port of the router's `/metrics`, `/livez`, `/readyz`.
pub const ADMIN_PORT: i32 = 9090;
/// Key of the routing file in the ConfigMap.
pub const CONFIG_KEY: &str = blaze_api::routing::CONFIG_MAP_KEY;
/// What the router pods may do with their routing ConfigMap: read it and watch it (a watch
/// on one object by a `metadata.name` field selector is authorised by `resourceNames`).
pub const CONFIG_MAP_VERBS: &[&str] = &["get", "list", "watch"];
/// Where the API-key Secret is mounted (one file per key; the router reads it as `auth.keysDir`).
pub const API_KEYS_DIR: &str = "/etc/blaze/api-keys";
/// Where the `spec.tls` Secret is mounted (`tls.crt`, `tls.key`).
pub const TLS_DIR: &str = "/etc/blaze/tls";

pub use blaze_api::routing::config_map_name;

/// Metadata of a child of `router`.
pub fn child_meta(router: &BlazeRouter) -> Result<ObjectMeta> {
    super::child_meta(router, labels::router_child_name, labels::router_labels)
}

/// The ConfigMap with the routing configuration.
pub fn config_map(router: &BlazeRouter, config: &RoutingConfig) -> Result<ConfigMap> {
    let mut metadata = child_meta(router)?;
    metadata.name = Some(config_map_name(&name_of(router)?));
    Ok(ConfigMap {
        metadata,
        data: Some(BTreeMap::from([(CONFIG_KEY.to_owned(), serde_saphyr::to_string(config)?)])),
        ..Default::default()
    })
}

/// The router's arguments; every flag here must match `blaze-router --help`. The routing
/// document comes from the ConfigMap `config_map` in `namespace`, watched through the API;
/// with `tls`, the proxy port serves TLS from the Secret mounted at [`TLS_DIR`].
pub fn router_args(listen_host: &str, config_map: &str, namespace: &str, tls: bool) -> Vec<String> {
    let tls_args = [
        "--tls-cert".to_owned(),
        format!("{TLS_DIR}/tls.crt"),
        "--tls-key".to_owned(),
        format!("{TLS_DIR}/tls.key"),
    ];
    [
        "--listen",
        &format!("{listen_host}:{ROUTER_PORT}"),
        "--admin-listen",
        &format!("{listen_host}:{ADMIN_PORT}"),
        "--config-map",
        config_map,
        "--namespace",
        namespace,
        "--log-format",
        "json",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain(tls_args.into_iter().filter(|_| tls))
    .collect()
}

/// The router pods' ServiceAccount (named as the Deployment).
pub fn service_account(router: &BlazeRouter) -> Result<ServiceAccount> {
    Ok(ServiceAccount { metadata: child_meta(router)?, ..Default::default() })
}

/// The Role letting the router pods read and watch their routing ConfigMap, and nothing else.
pub fn role(router: &BlazeRouter) -> Result<Role> {
    Ok(Role {
        metadata: child_meta(router)?,
        rules: Some(vec![PolicyRule {
            api_groups: Some(vec![String::new()]),
            resources: Some(vec!["configmaps".into()]),
            resource_names: Some(vec![config_map_name(&name_of(router)?)]),
            verbs: CONFIG_MAP_VERBS.iter().map(|v| v.to_string()).collect(),
            ..Default::default()
        }]),
    })
}

/// Binds [`role`] to [`service_account`].
pub fn role_binding(router: &BlazeRouter) -> Result<RoleBinding> {
    let meta = child_meta(router)?;
    let name = meta.name.clone().unwrap_or_default();
    Ok(RoleBinding {
        role_ref: RoleRef {
            api_group: Some("rbac.authorization.k8s.io".into()),
            kind: "Role".into(),
            name: name.clone(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".into(),
            name,
            namespace: meta.namespace.clone(),
            ..Default::default()
        }]),
        metadata: meta,
    })
}

/// The router Deployment for the router serving `engines` (their worker tokens are mounted;
/// see [`super::worker_token`]). Rolling updates surge one pod and keep all others serving.
pub fn deployment(
    router: &BlazeRouter,
    engines: &[String],
    defaults: &Defaults,
) -> Result<Deployment> {
    let name = name_of(router)?;
    let namespace = router.metadata.namespace.clone().unwrap_or_default();
    let selector = labels::router_selector(&name);
    // Secrets the router reads from files: API keys, and the TLS certificate and key.
    let secrets = [
        ("api-keys", router.spec.auth.as_ref().map(|a| &a.secret_name), API_KEYS_DIR),
        ("tls", router.spec.tls.as_ref().map(|t| &t.secret_name), TLS_DIR),
    ];
    let (mut volumes, mut mounts) = (Vec::new(), Vec::new());
    for (volume, secret, dir) in secrets {
        let Some(secret) = secret else { continue };
        volumes.push(Volume {
            name: volume.into(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(secret.clone()),
                ..Default::default()
            }),
            ..Default::default()
        });
        mounts.push(mount(volume, dir, true));
    }
    let (token_volumes, token_mounts, token_args) = worker_token::router_volumes(engines);
    volumes.extend(token_volumes);
    mounts.extend(token_mounts);
    let mut args = router_args(
        &defaults.listen_host,
        &config_map_name(&name),
        &namespace,
        router.spec.tls.is_some(),
    );
    args.extend(token_args);
    let port = |n: &str, p: i32| ContainerPort {
        name: Some(n.into()),
        container_port: p,
        protocol: Some("TCP".into()),
        ..Default::default()
    };
    let probe = |path: &str| Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::String("admin".into()),
            ..Default::default()
        }),
        period_seconds: Some(5),
        failure_threshold: Some(3),
        timeout_seconds: Some(2),
        ..Default::default()
    };
    let container = Container {
        name: ROUTER.into(),
        image: Some(router.spec.image.clone().unwrap_or_else(|| defaults.router_image.clone())),
        args: Some(args),
        env: super::pod_ip_env(&defaults.listen_host),
        ports: Some(vec![port(proxy_port_name(router), ROUTER_PORT), port("admin", ADMIN_PORT)]),
        readiness_probe: Some(probe("/readyz")),
        liveness_probe: Some(probe("/livez")),
        security_context: Some(container_security()),
        volume_mounts: (!mounts.is_empty()).then_some(mounts),
        ..Default::default()
    };
    Ok(Deployment {
        metadata: child_meta(router)?,
        spec: DeploymentSpec {
            replicas: Some(router.spec.replicas),
            selector: LabelSelector { match_labels: Some(selector), ..Default::default() },
            strategy: Some(super::surge_one()),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels::router_labels(&name)),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![container],
                    service_account_name: Some(labels::router_child_name(&name)),
                    volumes: (!volumes.is_empty()).then_some(volumes),
                    security_context: Some(pod_security()),
                    enable_service_links: Some(false),
                    ..Default::default()
                }),
            },
            ..Default::default()
        },
        status: None,
    })
}

/// The name of the router's proxy port: `https` with `spec.tls`, else `http`.
fn proxy_port_name(router: &BlazeRouter) -> &'static str {
    if router.spec.tls.is_some() { "https" } else { "http" }
}

/// The Service clients call: `spec.service` port to the router's `http` (or `https`) port.
pub fn service(router: &BlazeRouter) -> Result<Service> {
    let name = name_of(router)?;
    let mut meta = child_meta(router)?;
    if !router.spec.service.annotations.is_empty() {
        meta.annotations = Some(router.spec.service.annotations.clone());
    }
    let type_ = serde_json::to_value(router.spec.service.service_type)?;
    Ok(Service {
        metadata: meta,
        spec: Some(ServiceSpec {
            selector: Some(labels::router_selector(&name)),
            type_: type_.as_str().map(str::to_owned),
            ports: Some(vec![ServicePort {
                name: Some(proxy_port_name(router).into()),
                port: router.spec.service.port,
                target_port: Some(IntOrString::String(proxy_port_name(router).into())),
                protocol: Some("TCP".into()),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        status: None,
    })
}
