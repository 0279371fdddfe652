//! A whole pod as local processes: its address, files, containers and status.

use std::path::PathBuf;
use std::time::Duration;

use futures::future::select_all;
use k8s_openapi::api::core::v1::{Pod, PodStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use tokio::sync::{mpsc, watch};

use crate::backoff::BackoffConfig;
use crate::container::{ContainerConfig, ContainerHandle, RestartPolicy, RuntimeEvent};
use crate::env::{PodIdentity, command_line, container_env};
use crate::error::{Error, Result, io};
use crate::image::ImageMap;
use crate::ipam::AddressLease;
use crate::probe::ProbeTarget;
use crate::process::ProcessSpec;
use crate::volumes::{MountTable, PodSources, materialise};

pub mod status;

/// What every pod on a node shares.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Pod directories go under `<root>/pods/<uid>/`.
    pub root: PathBuf,
    /// Image to binary mapping.
    pub images: ImageMap,
    /// CrashLoopBackOff timing.
    pub backoff: BackoffConfig,
    /// Environment every container gets unless it sets the variable itself: where the API
    /// server is (`KUBERNETES_SERVICE_HOST`/`PORT`, and `KUBECONFIG` with a token, since a
    /// process cannot read the service-account files a real kubelet mounts at
    /// `/var/run/secrets/kubernetes.io/serviceaccount`). Pods with
    /// `automountServiceAccountToken: false` get none of it.
    pub pod_env: Vec<(String, String)>,
}

/// A running pod.
#[derive(Debug)]
pub struct PodRun {
    identity: PodIdentity,
    dir: PathBuf,
    _lease: AddressLease,
    containers: Vec<ContainerHandle>,
    restart_policy: RestartPolicy,
    grace: Duration,
    start_time: Time,
}

/// What a pod needs besides its spec.
#[derive(Debug)]
pub struct PodInputs {
    /// The node it runs on.
    pub node_name: String,
    /// Its address.
    pub address: AddressLease,
    /// ConfigMaps and Secrets it refers to.
    pub sources: PodSources,
    /// Extra environment for every container (GPU device variables).
    pub extra_env: Vec<(String, String)>,
}

impl PodRun {
    /// Materialises the pod's volumes and starts its containers.
    /// Init containers are not supported: a pod with any is refused.
    pub fn start(
        config: &RuntimeConfig,
        pod: &Pod,
        inputs: PodInputs,
        events: mpsc::UnboundedSender<RuntimeEvent>,
    ) -> Result<Self> {
        let spec = pod.spec.clone().unwrap_or_default();
        if spec.init_containers.as_ref().is_some_and(|c| !c.is_empty()) {
            return Err(Error::Unsupported("init containers".into()));
        }
        let meta = &pod.metadata;
        let identity = PodIdentity {
            namespace: meta.namespace.clone().unwrap_or_else(|| "default".into()),
            name: meta.name.clone().unwrap_or_default(),
            uid: meta.uid.clone().unwrap_or_default(),
            node_name: inputs.node_name.clone(),
            pod_ip: inputs.address.addr(),
            service_account: spec.service_account_name.clone().unwrap_or_else(|| "default".into()),
        };
        let dir = config.root.join("pods").join(pod_dir_name(&identity));
        std::fs::create_dir_all(&dir).map_err(io(format!("creating {}", dir.display())))?;
        materialise(&dir, spec.volumes.as_deref().unwrap_or_default(), &inputs.sources)?;
        let restart_policy = RestartPolicy::parse(spec.restart_policy.as_deref());
        let grace =
            Duration::from_secs(spec.termination_grace_period_seconds.unwrap_or(30).max(0) as u64);
        let mut extra_env = inputs.extra_env.clone();
        if spec.automount_service_account_token != Some(false) {
            extra_env.extend(config.pod_env.iter().cloned());
        }
        let mut configs = Vec::new();
        for c in &spec.containers {
            let mounts =
                MountTable::create(&dir, &c.name, c.volume_mounts.as_deref().unwrap_or_default())?;
            let image = c.image.clone().unwrap_or_default();
            let binary = config.images.resolve(&image)?;
            let env = container_env(&identity, c, &inputs.sources, &extra_env, &mounts)?;
            let command = command_line(c, &binary, &env, &mounts);
            let cwd = mounts.working_dir(c.working_dir.as_deref())?;
            configs.push(ContainerConfig {
                name: c.name.clone(),
                image,
                process: ProcessSpec {
                    command,
                    env: env.clone(),
                    cwd: cwd.clone(),
                    log_path: PathBuf::new(),
                },
                log_dir: dir.join("logs").join(&c.name),
                startup: c.startup_probe.clone(),
                readiness: c.readiness_probe.clone(),
                liveness: c.liveness_probe.clone(),
                probe_target: ProbeTarget {
                    pod_ip: identity.pod_ip,
                    ports: ProbeTarget::named_ports(c.ports.as_deref().unwrap_or_default()),
                    env,
                    cwd,
                },
                restart_policy,
                backoff: config.backoff,
                grace,
            });
        }
        let containers =
            configs.into_iter().map(|c| ContainerHandle::start(c, events.clone())).collect();
        Ok(Self {
            identity,
            dir,
            _lease: inputs.address,
            containers,
            restart_policy,
            grace,
            start_time: status::now(),
        })
    }

    /// Who the pod is.
    pub fn identity(&self) -> &PodIdentity {
        &self.identity
    }

    /// The pod's directory on this machine.
    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    /// The pod's status as the kubelet reports it, with fresh condition times; merge it into
    /// the previous status with [`status::merge_conditions`].
    pub fn status(&self) -> PodStatus {
        let containers: Vec<_> = self.containers.iter().map(ContainerHandle::status).collect();
        status::pod_status(&self.identity, containers, self.restart_policy, &self.start_time)
    }

    /// Resolves when any container's status changes.
    pub async fn changed(&self) {
        if self.containers.is_empty() {
            return std::future::pending().await;
        }
        let mut receivers: Vec<watch::Receiver<_>> =
            self.containers.iter().map(ContainerHandle::subscribe).collect();
        let waits = receivers.iter_mut().map(|r| Box::pin(r.changed()));
        let _ = select_all(waits).await;
    }

    /// The log file of `container` (the only one when `None`), current or previous run.
    pub fn log_path(&self, container: Option<&str>, previous: bool) -> Option<PathBuf> {
        let handle = match container {
            Some(name) => self.containers.iter().find(|c| c.status().name == name)?,
            None if self.containers.len() == 1 => &self.containers[0],
            None => return None,
        };
        handle.log_path(previous)
    }

    /// Terminates every container (SIGTERM, then SIGKILL after the grace period, the pod's own
    /// `terminationGracePeriodSeconds` unless `grace` overrides it) and frees the address.
    pub async fn stop(&self, grace: Option<Duration>) -> PodStatus {
        let grace = grace.unwrap_or(self.grace);
        let stops = self.containers.iter().map(|c| c.stop(grace));
        let containers = futures::future::join_all(stops).await;
        status::pod_status(&self.identity, containers, self.restart_policy, &self.start_time)
    }
}

fn pod_dir_name(id: &PodIdentity) -> String {
    if id.uid.is_empty() { format!("{}_{}", id.namespace, id.name) } else { id.uid.clone() }
}
