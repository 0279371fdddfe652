//! Registering a development node: a Node object with capacity, labels and taints.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Node, NodeSpec, Taint};
use kube::api::{Api, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;

use crate::devices::GPU_RESOURCE;
use crate::error::Result;
use crate::k8s::{is_not_found, merge, params};
use crate::pod::status::now;

/// A node's shape.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// Node name.
    pub name: String,
    /// CPU capacity in millicores.
    pub cpu_millis: i64,
    /// Memory capacity in bytes.
    pub memory_bytes: i64,
    /// `nvidia.com/gpu` capacity (`--gpus-per-node`).
    pub gpus: u32,
    /// Pod capacity.
    pub max_pods: u32,
    /// Extra labels.
    pub labels: BTreeMap<String, String>,
    /// Taints.
    pub taints: Vec<Taint>,
}

impl NodeConfig {
    /// A node named `name` with `gpus` GPUs and this machine's CPU count, 64 GiB and 110 pods.
    pub fn new(name: impl Into<String>, gpus: u32) -> Self {
        let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2) as i64;
        Self {
            name: name.into(),
            cpu_millis: cpus * 1000,
            memory_bytes: 64 << 30,
            gpus,
            max_pods: 110,
            labels: BTreeMap::new(),
            taints: Vec::new(),
        }
    }

    fn capacity(&self) -> serde_json::Value {
        json!({
            "cpu": format!("{}m", self.cpu_millis),
            "memory": self.memory_bytes.to_string(),
            "pods": self.max_pods.to_string(),
            GPU_RESOURCE: self.gpus.to_string(),
        })
    }
}

/// Creates the Node (or updates its labels and taints) and reports it Ready with its capacity.
pub async fn register(client: &Client, config: &NodeConfig) -> Result<Node> {
    let api: Api<Node> = Api::all(client.clone());
    let mut labels = BTreeMap::from([
        ("kubernetes.io/hostname".to_string(), config.name.clone()),
        ("kubernetes.io/os".to_string(), "linux".to_string()),
        ("kubernetes.io/arch".to_string(), std::env::consts::ARCH.to_string()),
    ]);
    labels.extend(config.labels.clone());
    let taints = (!config.taints.is_empty()).then(|| config.taints.clone());
    match api.get(&config.name).await {
        Ok(existing) => {
            let patch = json!({"metadata": {"labels": labels}, "spec": {"taints": taints}});
            api.patch(&existing.name_any(), &params("devnode-kubelet"), &merge(patch)).await?;
        }
        Err(e) if is_not_found(&e) => {
            let node = Node {
                metadata: kube::api::ObjectMeta {
                    name: Some(config.name.clone()),
                    labels: Some(labels),
                    ..Default::default()
                },
                spec: Some(NodeSpec { taints, ..Default::default() }),
                status: None,
            };
            api.create(&PostParams::default(), &node).await?;
        }
        Err(e) => return Err(e.into()),
    }
    let t = now();
    let status = json!({"status": {
        "capacity": config.capacity(),
        "allocatable": config.capacity(),
        "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}, {"type": "Hostname", "address": config.name}],
        "conditions": [{
            "type": "Ready", "status": "True", "reason": "KubeletReady",
            "message": "development kubelet is posting ready status",
            "lastHeartbeatTime": t, "lastTransitionTime": t,
        }],
        "nodeInfo": {
            "architecture": std::env::consts::ARCH, "operatingSystem": "linux",
            "kubeletVersion": "v1.33.0-blaze-devnode", "kubeProxyVersion": "",
            "containerRuntimeVersion": "process://blaze-devnode", "kernelVersion": "",
            "osImage": "", "machineID": "", "systemUUID": "", "bootID": "",
        },
    }});
    Ok(api.patch_status(&config.name, &params("devnode-kubelet"), &merge(status)).await?)
}
