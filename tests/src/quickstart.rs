//! The quickstart (`manifests/examples/quickstart.yaml`: the `smollm2` engine and the
//! `quickstart` router) on a development control plane, as the scenarios drive it.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use anyhow::{Context as _, Result};
use blaze::dev::{apply, install};
use blaze_api::engine::BlazeEngine;
use blaze_api::router::BlazeRouter;
use blaze_api::routing::{CONFIG_MAP_KEY, RoutingConfig, config_map_name};
use blaze_devnode::k8s::service_proxy::{self, ServiceTarget};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::Client;
use kube::api::{Api, ListParams, Patch, PatchParams};
use serde_json::json;

use crate::load::{CHAT, chat};
use crate::{DevCluster, cluster, http, pods, until};

/// The quickstart's engine.
pub const ENGINE: &str = "smollm2";
/// The quickstart's router.
pub const ROUTER: &str = "quickstart";
/// Selects the quickstart's worker pods.
pub const WORKERS: &str = "blaze.ai/engine=smollm2";
/// Selects the quickstart's router pods.
pub const ROUTER_PODS: &str = "blaze.ai/router=quickstart";
/// The router's admin port (`/metrics`).
const ROUTER_ADMIN_PORT: u16 = 9090;

/// The quickstart's engine and router in one namespace, reached through the router's
/// Service on a local port, as `blaze dev up` exposes it.
pub struct Quickstart {
    /// A client of the cluster, for this scenario's async runtime.
    pub client: Client,
    /// The namespace it runs in.
    pub namespace: String,
    /// The router's URL (`http://127.0.0.1:PORT`).
    pub url: String,
    /// Set for a namespace of its own: the engine and router are deleted when dropped.
    kubeconfig: Option<PathBuf>,
    forward: Option<tokio::task::JoinHandle<()>>,
}

impl Quickstart {
    /// The quickstart that `blaze dev up` applied to `default`, at the URL it exposed, once
    /// its worker serves.
    pub async fn applied(cluster: &DevCluster) -> Result<Self> {
        let url = cluster
            .routers
            .iter()
            .find(|(name, _)| name == &format!("default/{ROUTER}"))
            .map(|(_, url)| url.clone())
            .context("blaze dev up exposed no quickstart router")?;
        let q = Self {
            client: cluster.client().await?,
            namespace: "default".into(),
            url,
            kubeconfig: None,
            forward: None,
        };
        q.serving(1).await?;
        Ok(q)
    }

    /// The quickstart applied again in a new namespace `namespace` of `cluster`, with a model
    /// claim of its own, and its router's Service exposed on a local port; once its worker
    /// serves. Its engine and router are deleted (and so their pods) when it is dropped.
    pub async fn deploy(cluster: &DevCluster, namespace: &str) -> Result<Self> {
        let client = cluster.client().await?;
        cluster::namespace(&client, namespace).await?;
        install::models_claim(&client, cluster.dir(), cluster.models(), namespace).await?;
        let mut objects = apply::parse(install::QUICKSTART_YAML, "the quickstart")?;
        for o in &mut objects {
            o.metadata.namespace = Some(namespace.to_owned());
        }
        apply::apply_all(&client, &objects).await?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let target = ServiceTarget {
            namespace: namespace.to_owned(),
            name: blaze_operator::labels::router_child_name(ROUTER),
            port: IntOrString::String("http".into()),
        };
        let forward = tokio::spawn(service_proxy::forward(client.clone(), target, listener));
        let q = Self {
            client,
            namespace: namespace.to_owned(),
            url,
            kubeconfig: Some(cluster.kubeconfig()),
            forward: Some(forward),
        };
        q.serving(1).await?;
        Ok(q)
    }

    /// Waits until `n` workers are ready, all of them in the router's document, and a chat
    /// completion through the router succeeds.
    pub async fn serving(&self, n: usize) -> Result<()> {
        until(&format!("{n} workers serving"), 300, async || {
            let ready = self.ready_workers().await.ok()?;
            let routing = self.routing().await.ok()?;
            let routed = routing.endpoints.iter().filter(|e| e.weight > 0).count();
            (ready.len() == n && routed == n).then_some(())
        })
        .await?;
        Ok(until("a chat completion through the router", 120, async || {
            chat(&self.url, CHAT).await.ok.then_some(())
        })
        .await?)
    }

    /// The API of `K` in the quickstart's namespace.
    pub fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        K::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// The engine.
    pub async fn engine(&self) -> Result<BlazeEngine> {
        Ok(self.api::<BlazeEngine>().get(ENGINE).await?)
    }

    /// Merge-patches the engine's spec.
    pub async fn patch_engine(&self, spec: serde_json::Value) -> Result<()> {
        let patch = Patch::Merge(json!({ "spec": spec }));
        self.api::<BlazeEngine>().patch(ENGINE, &PatchParams::default(), &patch).await?;
        Ok(())
    }

    /// Merge-patches the router's spec.
    pub async fn patch_router(&self, spec: serde_json::Value) -> Result<()> {
        let patch = Patch::Merge(json!({ "spec": spec }));
        self.api::<BlazeRouter>().patch(ROUTER, &PatchParams::default(), &patch).await?;
        Ok(())
    }

    /// The engine's worker pods, ready or not.
    pub async fn workers(&self) -> Result<Vec<Pod>> {
        Ok(self.api::<Pod>().list(&ListParams::default().labels(WORKERS)).await?.items)
    }

    /// The engine's ready worker pods.
    pub async fn ready_workers(&self) -> Result<Vec<Pod>> {
        Ok(self.workers().await?.into_iter().filter(pods::ready).collect())
    }

    /// Waits until exactly `n` workers are ready and the engine's status says so.
    pub async fn ready(&self, n: usize) -> Result<Vec<Pod>> {
        Ok(until(&format!("{n} ready workers"), 240, async || {
            let ready = self.ready_workers().await.ok()?;
            let status = self.engine().await.ok()?.status?;
            (ready.len() == n && status.ready_replicas == n as i32).then_some(ready)
        })
        .await?)
    }

    /// Workers the engine's Deployment asks for.
    pub async fn replicas(&self) -> Result<i32> {
        let name = blaze_operator::labels::engine_child_name(ENGINE);
        let d = self.api::<Deployment>().get(&name).await?;
        Ok(d.spec.replicas.unwrap_or(0))
    }

    /// The router's routing document as the operator last wrote it.
    pub async fn routing(&self) -> Result<RoutingConfig> {
        let cm = self.api::<ConfigMap>().get(&config_map_name(ROUTER)).await?;
        let yaml = cm.data.and_then(|mut d| d.remove(CONFIG_MAP_KEY)).unwrap_or_default();
        Ok(serde_saphyr::from_str(&yaml)?)
    }

    /// Weight per worker pod in the routing document.
    pub async fn weights(&self) -> Result<BTreeMap<String, u32>> {
        Ok(self.routing().await?.endpoints.into_iter().map(|e| (e.pod, e.weight)).collect())
    }

    /// The address of the router's first pod.
    pub async fn router_ip(&self) -> Result<String> {
        let pods = self.api::<Pod>().list(&ListParams::default().labels(ROUTER_PODS)).await?;
        pods.items
            .iter()
            .find_map(|p| p.status.as_ref()?.pod_ip.clone())
            .context("no router pod with an address")
    }

    /// The `/metrics` text of the router's first pod.
    pub async fn router_metrics(&self) -> Result<String> {
        let ip = self.router_ip().await?;
        http::get(&format!("{ip}:{ROUTER_ADMIN_PORT}"), "/metrics").await
    }

    /// Reasons of the events about the engine.
    pub async fn engine_events(&self) -> Result<Vec<String>> {
        let events = self.api::<Event>().list(&ListParams::default()).await?;
        Ok(events
            .items
            .into_iter()
            .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(ENGINE))
            .filter_map(|e| e.reason)
            .collect())
    }
}

impl Drop for Quickstart {
    fn drop(&mut self) {
        if let Some(f) = self.forward.take() {
            f.abort();
        }
        // Its workers would go on loading the machine's cores while other scenarios run.
        if let Some(kubeconfig) = &self.kubeconfig {
            let _ = Command::new("kubectl")
                .args(["delete", "blazeengines,blazerouters", "--all", "--wait=false", "-n"])
                .arg(&self.namespace)
                .env("KUBECONFIG", kubeconfig)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}
