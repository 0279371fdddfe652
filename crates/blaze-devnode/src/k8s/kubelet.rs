//! The kubelet loop: runs the pods bound to its node as processes and reports their status.
//!
//! Watches Pods with `spec.nodeName=<node>`. A new pod is started with [`PodRun`] (its
//! ConfigMaps and Secrets read through the API, a loopback address and GPU devices assigned
//! here); every change of its containers is written to `pods/status` as a merge patch (phase,
//! podIP, conditions including the scheduler's `PodScheduled`, containerStatuses). A pod
//! given a deletion timestamp is terminated with its grace period and then deleted for good
//! (grace period 0), as the kubelet confirms deletions. Runtime events (`Started`,
//! `Unhealthy`, `Killing`, `BackOff`) become Events on the pod.
//!
//! Logs: [`Kubelet::logs`] reads `pods/NAME/log`. The contract for an API server that proxies
//! the log subresource: call it with a [`LogRequest`]; `None` means no such pod or container runs on this node (answer 404),
//! otherwise answer `200 text/plain` with the bytes. [`crate::k8s::plane::NodeSide::log_fn`]
//! wraps the kubelets' logs in the `Fn(namespace, pod, container) -> Option<String>` shape an
//! in-process server can install.

use std::collections::HashMap;
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use kube::runtime::events::Recorder;
use kube::runtime::watcher::{self, Event};
use kube::{Client, ResourceExt};
use parking_lot::Mutex;
use tokio::sync::watch;

use crate::devices::DeviceAllocator;
use crate::error::Result;
use crate::ipam::AddressPool;
use crate::k8s::node::{NodeConfig, register};
use crate::pod::{PodRun, RuntimeConfig};

mod pod_worker;

/// Reads a pod container's log: `(namespace, pod, container)`.
pub type LogFn = Arc<dyn Fn(&str, &str, Option<&str>) -> Option<String> + Send + Sync>;

/// Which log to read: of a pod's container (its only one when `None`), of the current run
/// or of the one before the last restart (`previous`).
#[derive(Debug, Clone, Copy)]
pub struct LogRequest<'a> {
    /// The pod's namespace.
    pub namespace: &'a str,
    /// The pod's name.
    pub pod: &'a str,
    /// The container, as the `container` query parameter names it.
    pub container: Option<&'a str>,
    /// The run before the last restart, as the `previous` query parameter asks.
    pub previous: bool,
}

/// What a kubelet needs.
#[derive(Debug, Clone)]
pub struct KubeletConfig {
    /// The node it registers and serves.
    pub node: NodeConfig,
    /// How pods run.
    pub runtime: RuntimeConfig,
    /// Where pod addresses come from (shared by all nodes on the machine).
    pub addresses: AddressPool,
}

/// A running kubelet.
#[derive(Clone)]
pub struct Kubelet {
    inner: Arc<Inner>,
}

struct Inner {
    client: Client,
    config: KubeletConfig,
    recorder: Recorder,
    devices: Mutex<DeviceAllocator>,
    /// Pods started here, by UID.
    pods: Mutex<HashMap<String, PodEntry>>,
}

struct PodEntry {
    namespace: String,
    name: String,
    run: Option<Arc<PodRun>>,
    /// Set to the grace period to stop the pod with.
    stop: watch::Sender<Option<Option<i64>>>,
}

impl Kubelet {
    /// Registers the node and returns a kubelet ready to [`Kubelet::run`].
    pub async fn new(client: Client, config: KubeletConfig) -> Result<Self> {
        register(&client, &config.node).await?;
        let recorder =
            Recorder::new(client.clone(), format!("kubelet/{}", config.node.name).into());
        let devices = Mutex::new(DeviceAllocator::new(config.node.gpus));
        Ok(Self {
            inner: Arc::new(Inner {
                client,
                config,
                recorder,
                devices,
                pods: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// The node name.
    pub fn node_name(&self) -> &str {
        &self.inner.config.node.name
    }

    /// Watches this node's pods until the watch ends.
    pub async fn run(&self) -> Result<()> {
        let api: Api<Pod> = Api::all(self.inner.client.clone());
        let selector = format!("spec.nodeName={}", self.node_name());
        let config = watcher::Config::default().fields(&selector);
        let mut events = std::pin::pin!(kube::runtime::WatchStreamExt::default_backoff(
            watcher::watcher(api, config)
        ));
        while let Some(event) = events.next().await {
            match event {
                Ok(Event::Apply(pod) | Event::InitApply(pod)) => self.sync(pod),
                Ok(Event::Delete(pod)) => self.forget(&pod),
                Ok(Event::Init | Event::InitDone) => {}
                Err(e) => tracing::warn!(error = %e, "pod watch failed"),
            }
        }
        Ok(())
    }

    fn sync(&self, pod: Pod) {
        let uid = pod.uid().unwrap_or_default();
        let deleting = pod.metadata.deletion_timestamp.is_some();
        let mut pods = self.inner.pods.lock();
        if let Some(entry) = pods.get(&uid) {
            if deleting {
                let grace = pod.metadata.deletion_grace_period_seconds;
                entry.stop.send_if_modified(|s| s.is_none().then(|| *s = Some(grace)).is_some());
            }
            return;
        }
        let finished = matches!(
            pod.status.as_ref().and_then(|s| s.phase.as_deref()),
            Some("Succeeded" | "Failed")
        );
        if finished && !deleting {
            return;
        }
        let (stop, stop_rx) = watch::channel(deleting.then_some(Some(0)));
        pods.insert(
            uid,
            PodEntry {
                namespace: pod.namespace().unwrap_or_default(),
                name: pod.name_any(),
                run: None,
                stop,
            },
        );
        tokio::spawn(pod_worker::work(self.inner.clone(), pod, stop_rx));
    }

    fn forget(&self, pod: &Pod) {
        let uid = pod.uid().unwrap_or_default();
        if let Some(entry) = self.inner.pods.lock().get(&uid) {
            entry.stop.send_if_modified(|s| s.is_none().then(|| *s = Some(Some(2))).is_some());
        }
    }

    /// The log of a container of a pod running here; see the module docs for the contract.
    pub fn logs(&self, req: &LogRequest<'_>) -> Option<Vec<u8>> {
        let run = {
            let pods = self.inner.pods.lock();
            let entry =
                pods.values().find(|e| e.namespace == req.namespace && e.name == req.pod)?;
            entry.run.clone()?
        };
        std::fs::read(run.log_path(req.container, req.previous)?).ok()
    }

    /// How many pods run here.
    pub fn running_pods(&self) -> usize {
        self.inner.pods.lock().values().filter(|e| e.run.is_some()).count()
    }

    /// Stops every pod (their own grace periods) and waits for them.
    pub async fn shutdown(&self) {
        let runs: Vec<Arc<PodRun>> =
            self.inner.pods.lock().drain().filter_map(|(_, e)| e.run).collect();
        futures::future::join_all(runs.iter().map(|r| r.stop(None))).await;
    }
}
