//! A whole pod as local processes: its address, files, containers and status.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::future::select_all;
use k8s_openapi::api::core::v1::{Container, ContainerStatus, Pod, PodStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use parking_lot::Mutex;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::backoff::BackoffConfig;
use crate::container::{ContainerConfig, ContainerHandle, RestartPolicy, RuntimeEvent};
use crate::env::{PodIdentity, command_line, container_env};
use crate::error::{Result, io};
use crate::image::ImageMap;
use crate::ipam::AddressLease;
use crate::probe::ProbeTarget;
use crate::process::ProcessSpec;
use crate::service_account::{ApiAccess, Credentials, MOUNT_PATH};
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
    /// server is (`KUBERNETES_SERVICE_HOST`/`PORT`). Pods with
    /// `automountServiceAccountToken: false` get none of it.
    pub pod_env: Vec<(String, String)>,
    /// The API server pods reach with their own ServiceAccount's token (see
    /// [`crate::service_account`]); `None` mounts no credentials.
    pub api: Option<ApiAccess>,
}

/// A running pod.
#[derive(Debug)]
pub struct PodRun {
    identity: PodIdentity,
    dir: PathBuf,
    _lease: AddressLease,
    stages: Arc<Stages>,
    init_names: Vec<String>,
    init_images: Vec<String>,
    names: Vec<String>,
    images: Vec<String>,
    restart_policy: RestartPolicy,
    grace: Duration,
    start_time: Time,
    driver: Option<JoinHandle<()>>,
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
    /// The pod's ServiceAccount credentials, mounted in every container; `None` when it
    /// mounts none.
    pub credentials: Option<Credentials>,
}

impl PodRun {
    /// Materialises the pod's volumes and starts its containers: the init containers first,
    /// one at a time, each to a successful exit (restarted with backoff after a failure
    /// unless the pod's `restartPolicy` is `Never`, which fails the pod), then the others.
    pub fn start(
        config: &RuntimeConfig,
        pod: &Pod,
        inputs: PodInputs,
        events: mpsc::UnboundedSender<RuntimeEvent>,
    ) -> Result<Self> {
        let spec = pod.spec.clone().unwrap_or_default();
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
        if let Some(credentials) = &inputs.credentials {
            let kubeconfig = credentials.materialise(&dir)?;
            extra_env.push(("KUBECONFIG".into(), kubeconfig.display().to_string()));
        }
        let build = |c: &Container, restart_policy: RestartPolicy| -> Result<ContainerConfig> {
            let mut volume_mounts = c.volume_mounts.clone().unwrap_or_default();
            if inputs.credentials.is_some()
                && !volume_mounts.iter().any(|m| m.mount_path.trim_end_matches('/') == MOUNT_PATH)
            {
                volume_mounts.push(Credentials::mount());
            }
            let mounts = MountTable::create(&dir, &c.name, &volume_mounts)?;
            let image = c.image.clone().unwrap_or_default();
            let binary = config.images.resolve(&image)?;
            let env = container_env(&identity, c, &inputs.sources, &extra_env, &mounts)?;
            let command = command_line(c, &binary, &env, &mounts);
            let cwd = mounts.working_dir(c.working_dir.as_deref())?;
            Ok(ContainerConfig {
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
            })
        };
        let init_policy = match restart_policy {
            RestartPolicy::Never => RestartPolicy::Never,
            _ => RestartPolicy::OnFailure,
        };
        let init_specs = spec.init_containers.as_deref().unwrap_or_default();
        let init: Vec<_> =
            init_specs.iter().map(|c| build(c, init_policy)).collect::<Result<_>>()?;
        let main: Vec<_> =
            spec.containers.iter().map(|c| build(c, restart_policy)).collect::<Result<_>>()?;
        let init_names = init.iter().map(|c| c.name.clone()).collect();
        let init_images = init.iter().map(|c| c.image.clone()).collect();
        let names = main.iter().map(|c| c.name.clone()).collect();
        let images = main.iter().map(|c| c.image.clone()).collect();
        let stages = Arc::new(Stages::default());
        let driver = tokio::spawn(drive(stages.clone(), init, main, events));
        Ok(Self {
            identity,
            dir,
            _lease: inputs.address,
            stages,
            init_names,
            init_images,
            names,
            images,
            restart_policy,
            grace,
            start_time: status::now(),
            driver: Some(driver),
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
        let (init, main) = self.stages.handles();
        let init = init.iter().map(|c| c.status()).collect();
        let main = main.iter().map(|c| c.status()).collect();
        self.status_of(init, main)
    }

    fn status_of(&self, init: Vec<ContainerStatus>, main: Vec<ContainerStatus>) -> PodStatus {
        let init =
            status::pending_after(init, &self.init_names, &self.init_images, "PodInitializing");
        let initialised = self.init_names.is_empty() || !self.stages.initialising();
        let main = if initialised { main } else { Vec::new() };
        let waiting =
            if self.init_names.is_empty() { "ContainerCreating" } else { "PodInitializing" };
        let main = status::pending_after(main, &self.names, &self.images, waiting);
        status::pod_status(
            &self.identity,
            status::Containers { init, main, initialised },
            self.restart_policy,
            &self.start_time,
        )
    }

    /// Resolves when any container's status changes or a container starts.
    pub async fn changed(&self) {
        let mut started = self.stages.started.subscribe();
        started.mark_unchanged();
        let (init, main) = self.stages.handles();
        let mut receivers: Vec<watch::Receiver<_>> =
            init.iter().chain(main.iter()).map(|c| c.subscribe()).collect();
        let mut waits: Vec<_> = receivers.iter_mut().map(|r| Box::pin(r.changed())).collect();
        if waits.is_empty() {
            let _ = started.changed().await;
            return;
        }
        let any = select_all(waits.drain(..));
        tokio::select! {
            _ = any => {}
            _ = started.changed() => {}
        }
    }

    /// The log file of `container` (the only one when `None`), current or previous run.
    pub fn log_path(&self, container: Option<&str>, previous: bool) -> Option<PathBuf> {
        let (init, main) = self.stages.handles();
        let handle = match container {
            Some(name) => init.iter().chain(main.iter()).find(|c| c.status().name == name)?,
            None if main.len() == 1 => &main[0],
            None => return None,
        };
        handle.log_path(previous)
    }

    /// Terminates every container (SIGTERM, then SIGKILL after the grace period, the pod's own
    /// `terminationGracePeriodSeconds` unless `grace` overrides it) and frees the address.
    /// Init containers not started yet never start.
    pub async fn stop(&self, grace: Option<Duration>) -> PodStatus {
        let grace = grace.unwrap_or(self.grace);
        let (init, main) = self.stages.stop();
        let init = futures::future::join_all(init.iter().map(|c| c.stop(grace))).await;
        let main = futures::future::join_all(main.iter().map(|c| c.stop(grace))).await;
        self.status_of(init, main)
    }
}

impl Drop for PodRun {
    fn drop(&mut self) {
        if let Some(d) = self.driver.take() {
            d.abort();
        }
    }
}

/// The containers started so far, shared by the pod and the task that starts them in order.
#[derive(Debug, Default)]
struct Stages {
    inner: Mutex<StagesInner>,
    /// Bumped whenever a container starts, so [`PodRun::changed`] sees new ones.
    started: watch::Sender<u64>,
}

#[derive(Debug, Default)]
struct StagesInner {
    init: Vec<Arc<ContainerHandle>>,
    main: Vec<Arc<ContainerHandle>>,
    initialised: bool,
    stopping: bool,
}

type Handles = (Vec<Arc<ContainerHandle>>, Vec<Arc<ContainerHandle>>);

impl Stages {
    fn handles(&self) -> Handles {
        let g = self.inner.lock();
        (g.init.clone(), g.main.clone())
    }

    fn initialising(&self) -> bool {
        !self.inner.lock().initialised
    }

    /// Adds a started container unless the pod is stopping (the handle is then dropped,
    /// which kills it).
    fn add(&self, handle: Arc<ContainerHandle>, init: bool) -> bool {
        let mut g = self.inner.lock();
        if g.stopping {
            return false;
        }
        if init {
            g.init.push(handle)
        } else {
            g.main.push(handle)
        }
        drop(g);
        self.started.send_modify(|n| *n += 1);
        true
    }

    fn set_initialised(&self) -> bool {
        let mut g = self.inner.lock();
        g.initialised = true;
        !g.stopping
    }

    fn stop(&self) -> Handles {
        let mut g = self.inner.lock();
        g.stopping = true;
        (g.init.clone(), g.main.clone())
    }
}

/// Runs the init containers in order, each until it exits 0, then starts the others.
async fn drive(
    stages: Arc<Stages>,
    init: Vec<ContainerConfig>,
    main: Vec<ContainerConfig>,
    events: mpsc::UnboundedSender<RuntimeEvent>,
) {
    for config in init {
        let never = config.restart_policy == RestartPolicy::Never;
        let handle = Arc::new(ContainerHandle::start(config, events.clone()));
        let mut rx = handle.subscribe();
        if !stages.add(handle, true) {
            return;
        }
        loop {
            let code = rx
                .borrow_and_update()
                .state
                .as_ref()
                .and_then(|s| s.terminated.as_ref().map(|t| t.exit_code));
            match code {
                Some(0) => break,
                // A failed init container under `restartPolicy: Never` fails the pod.
                Some(_) if never => return,
                _ => {}
            }
            if rx.changed().await.is_err() {
                return;
            }
        }
    }
    if !stages.set_initialised() {
        return;
    }
    stages.started.send_modify(|n| *n += 1);
    for config in main {
        if !stages.add(Arc::new(ContainerHandle::start(config, events.clone())), false) {
            return;
        }
    }
}

fn pod_dir_name(id: &PodIdentity) -> String {
    if id.uid.is_empty() { format!("{}_{}", id.namespace, id.name) } else { id.uid.clone() }
}
