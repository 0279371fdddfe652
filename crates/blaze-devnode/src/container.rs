//! One container's life: start, probes, restarts with CrashLoopBackOff, termination.
//!
//! The supervisor publishes a `ContainerStatus` as the kubelet reports it: `state` (waiting,
//! running, terminated), `lastState`, `restartCount`, `started` and `ready`, and sends
//! [`RuntimeEvent`]s (`Started`, `Killing`, `Unhealthy`, `BackOff`, `Failed`) for the kubelet
//! to record.

use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting,
    ContainerStatus, Probe,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::backoff::{Backoff, BackoffConfig};
use crate::probe::{ProbeFailure, ProbeKind, ProbeTarget, Verdict, spawn_worker};
use crate::process::{ContainerProcess, Exit, ProcessSpec};

/// When a container that exited is started again (`spec.restartPolicy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartPolicy {
    /// Always restart.
    Always,
    /// Restart when it exited with a non-zero code.
    OnFailure,
    /// Never restart.
    Never,
}

impl RestartPolicy {
    /// Parses the pod spec field; Kubernetes defaults to `Always`.
    pub fn parse(value: Option<&str>) -> Self {
        match value {
            Some("OnFailure") => Self::OnFailure,
            Some("Never") => Self::Never,
            _ => Self::Always,
        }
    }

    fn restarts(self, exit_code: i32) -> bool {
        match self {
            Self::Always => true,
            Self::OnFailure => exit_code != 0,
            Self::Never => false,
        }
    }
}

/// Something the kubelet should record as an Event on the pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeEvent {
    /// The container it is about.
    pub container: String,
    /// `Started`, `Killing`, `Unhealthy`, `BackOff`, `Failed`.
    pub reason: String,
    /// Human-readable detail.
    pub message: String,
    /// `Warning` rather than `Normal`.
    pub warning: bool,
}

/// Everything needed to run one container.
#[derive(Debug, Clone)]
pub struct ContainerConfig {
    /// Container name.
    pub name: String,
    /// Image, as the spec names it.
    pub image: String,
    /// What to run; `log_path` is replaced per run with `log_dir/<restartCount>.log`.
    pub process: ProcessSpec,
    /// Where each run's log goes.
    pub log_dir: PathBuf,
    /// The probes.
    pub startup: Option<Probe>,
    /// The readiness probe.
    pub readiness: Option<Probe>,
    /// The liveness probe.
    pub liveness: Option<Probe>,
    /// Where probes connect to.
    pub probe_target: ProbeTarget,
    /// Restart policy of the pod.
    pub restart_policy: RestartPolicy,
    /// Backoff timing.
    pub backoff: BackoffConfig,
    /// Grace period for probe-triggered kills.
    pub grace: Duration,
}

/// A supervised container.
#[derive(Debug)]
pub struct ContainerHandle {
    status: watch::Receiver<ContainerStatus>,
    stop: watch::Sender<Option<Duration>>,
    task: parking_lot::Mutex<Option<JoinHandle<()>>>,
    log_dir: PathBuf,
}

impl ContainerHandle {
    /// Starts supervising `config`.
    pub fn start(config: ContainerConfig, events: mpsc::UnboundedSender<RuntimeEvent>) -> Self {
        let (status_tx, status) = watch::channel(initial_status(&config));
        let (stop, stop_rx) = watch::channel(None);
        let log_dir = config.log_dir.clone();
        let supervisor = Supervisor { config, events, status: status_tx, stop: stop_rx };
        let task = tokio::spawn(supervisor.run());
        Self { status, stop, task: parking_lot::Mutex::new(Some(task)), log_dir }
    }

    /// The current status.
    pub fn status(&self) -> ContainerStatus {
        self.status.borrow().clone()
    }

    /// A receiver that sees every status change.
    pub fn subscribe(&self) -> watch::Receiver<ContainerStatus> {
        self.status.clone()
    }

    /// The log of the current run, or of the previous one.
    pub fn log_path(&self, previous: bool) -> Option<PathBuf> {
        let restarts = self.status.borrow().restart_count;
        let run = if previous { restarts.checked_sub(1)? } else { restarts };
        Some(self.log_dir.join(format!("{run}.log")))
    }

    /// Terminates the container (SIGTERM, then SIGKILL after `grace`) and waits for it.
    /// Later calls return at once.
    pub async fn stop(&self, grace: Duration) -> ContainerStatus {
        let _ = self.stop.send(Some(grace));
        let task = self.task.lock().take();
        if let Some(task) = task {
            let _ = task.await;
        }
        self.status.borrow().clone()
    }
}

impl Drop for ContainerHandle {
    /// A handle dropped without [`ContainerHandle::stop`] kills its process group at once.
    fn drop(&mut self) {
        if let Some(task) = self.task.lock().take() {
            task.abort();
        }
    }
}

fn initial_status(config: &ContainerConfig) -> ContainerStatus {
    ContainerStatus {
        name: config.name.clone(),
        image: config.image.clone(),
        image_id: String::new(),
        ready: false,
        started: Some(false),
        restart_count: 0,
        state: Some(waiting("ContainerCreating", "")),
        ..Default::default()
    }
}

fn waiting(reason: &str, message: &str) -> ContainerState {
    ContainerState {
        waiting: Some(ContainerStateWaiting {
            reason: Some(reason.into()),
            message: (!message.is_empty()).then(|| message.into()),
        }),
        ..Default::default()
    }
}

fn now() -> Time {
    crate::pod::status::now()
}

/// Why a run ended.
enum End {
    Exited,
    Stopped,
    Killed(&'static str),
}

struct Supervisor {
    config: ContainerConfig,
    events: mpsc::UnboundedSender<RuntimeEvent>,
    status: watch::Sender<ContainerStatus>,
    stop: watch::Receiver<Option<Duration>>,
}

mod run;

#[cfg(test)]
mod tests;
