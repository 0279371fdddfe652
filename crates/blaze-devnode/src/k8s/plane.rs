//! Everything on the node side at once: the scheduler, the controllers and one kubelet per
//! node, as tasks on the current runtime.

use tokio::task::JoinHandle;

use crate::error::Result;
use crate::ipam::AddressPool;
use crate::k8s::kubelet::{Kubelet, KubeletConfig, LogFn, LogRequest};
use crate::k8s::node::NodeConfig;
use crate::pod::RuntimeConfig;

/// The running node side of the control plane.
pub struct NodeSide {
    kubelets: Vec<Kubelet>,
    tasks: Vec<JoinHandle<()>>,
}

impl NodeSide {
    /// Registers `nodes` and starts their kubelets, the scheduler and the Deployment,
    /// ReplicaSet and EndpointSlice controllers. Pod addresses come from `addresses`
    /// ([`AddressPool::default`] normally); two control planes on one machine need disjoint
    /// pools.
    pub async fn start(
        client: kube::Client,
        nodes: Vec<NodeConfig>,
        runtime: RuntimeConfig,
        addresses: AddressPool,
    ) -> Result<Self> {
        let mut kubelets = Vec::new();
        let mut tasks = Vec::new();
        for node in nodes {
            let config =
                KubeletConfig { node, runtime: runtime.clone(), addresses: addresses.clone() };
            let kubelet = Kubelet::new(client.clone(), config).await?;
            let k = kubelet.clone();
            tasks.push(tokio::spawn(async move {
                if let Err(e) = k.run().await {
                    tracing::error!(error = %e, "kubelet stopped");
                }
            }));
            kubelets.push(kubelet);
        }
        let c = client.clone();
        tasks.push(tokio::spawn(async move {
            if let Err(e) = crate::k8s::scheduler::run(c).await {
                tracing::error!(error = %e, "scheduler stopped");
            }
        }));
        tasks.push(tokio::spawn(crate::k8s::replicaset::run(client.clone())));
        tasks.push(tokio::spawn(crate::k8s::deployment::run(client.clone())));
        tasks.push(tokio::spawn(crate::k8s::endpointslice::run(client)));
        Ok(Self { kubelets, tasks })
    }

    /// The kubelets, one per node.
    pub fn kubelets(&self) -> &[Kubelet] {
        &self.kubelets
    }

    /// A pod's log from whichever kubelet runs it (see [`Kubelet::logs`]).
    pub fn logs(&self, req: &LogRequest<'_>) -> Option<Vec<u8>> {
        logs_of(&self.kubelets, req)
    }

    /// [`NodeSide::logs`] in the shape an in-process API server installs as its log source.
    pub fn log_fn(&self) -> LogFn {
        let kubelets = self.kubelets.clone();
        std::sync::Arc::new(move |namespace, pod, container| {
            let req = LogRequest { namespace, pod, container, previous: false };
            logs_of(&kubelets, &req).map(|b| String::from_utf8_lossy(&b).into_owned())
        })
    }

    /// Stops the loops, then every pod, gracefully.
    pub async fn shutdown(self) {
        for t in &self.tasks {
            t.abort();
        }
        for k in &self.kubelets {
            k.shutdown().await;
        }
    }
}

fn logs_of(kubelets: &[Kubelet], req: &LogRequest<'_>) -> Option<Vec<u8>> {
    kubelets.iter().find_map(|k| k.logs(req))
}
