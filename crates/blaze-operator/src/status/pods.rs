//! What one worker pod shows: placed or not, ready or not, crashing and why.

use blaze_worker_cli::DownloadProgress;
use k8s_openapi::api::core::v1::{ContainerState, ContainerStateTerminated, Pod};
use k8s_openapi::jiff::Timestamp;

use crate::children::pod::DOWNLOAD_CONTAINER;
use crate::labels::WORKER;

/// The facts about one worker pod that status and recovery use.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PodFacts {
    /// The pod's name.
    pub name: String,
    /// The scheduler's message when the pod cannot be placed.
    pub unschedulable: Option<String>,
    /// The pod is Ready.
    pub ready: bool,
    /// Since when the Ready condition has had its current value.
    pub ready_since: Option<Timestamp>,
    /// The worker passed its startup probe (the model loaded once).
    pub started: bool,
    /// When the worker's current container started running (reset by every restart).
    pub running_since: Option<Timestamp>,
    /// Restarts of the worker container.
    pub restarts: i32,
    /// The worker is waiting in CrashLoopBackOff.
    pub crash_looping: bool,
    /// The worker's last exit: reason (`OOMKilled`, `Error`), exit code, message.
    pub last_exit: Option<Exit>,
    /// The pod is being deleted.
    pub terminating: bool,
    /// The model download (the init container) keeps failing: its restarts and last exit.
    pub download_failing: Option<(i32, Exit)>,
    /// The model download (the init container) is running now.
    pub downloading: bool,
    /// How far that download has got, from its log: the controller reads it, the pod object
    /// does not say.
    pub download_progress: Option<DownloadProgress>,
}

/// How a container last ended.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Exit {
    /// `OOMKilled`, `Error`, `Completed`...
    pub reason: String,
    /// The exit code.
    pub code: i32,
    /// The termination message (the last lines the worker wrote), if any.
    pub message: Option<String>,
}

impl Exit {
    /// How `t` ended; a blank termination message is none.
    fn of(t: &ContainerStateTerminated) -> Self {
        Self {
            reason: t.reason.clone().unwrap_or_default(),
            code: t.exit_code,
            message: t.message.clone().filter(|m| !m.trim().is_empty()),
        }
    }

    /// The kernel killed the worker for exceeding its memory limit.
    pub fn is_oom(&self) -> bool {
        self.reason == "OOMKilled" || (self.code == 137 && self.reason.is_empty())
    }

    /// `exit code N` and the termination message, if any, for a condition message.
    pub fn describe(&self) -> String {
        match self.message.as_deref() {
            Some(m) => format!("exit code {}: {}", self.code, m.trim()),
            None => format!("exit code {}", self.code),
        }
    }
}

/// Reads the facts of `pod`.
pub fn facts(pod: &Pod) -> PodFacts {
    let mut f = PodFacts {
        name: pod.metadata.name.clone().unwrap_or_default(),
        terminating: pod.metadata.deletion_timestamp.is_some(),
        ..Default::default()
    };
    let Some(status) = &pod.status else { return f };
    for c in status.conditions.iter().flatten() {
        match c.type_.as_str() {
            "PodScheduled"
                if c.status == "False" && c.reason.as_deref() == Some("Unschedulable") =>
            {
                f.unschedulable = Some(c.message.clone().unwrap_or_else(|| "no node fits".into()));
            }
            "Ready" => {
                f.ready = c.status == "True";
                f.ready_since = c.last_transition_time.as_ref().map(|t| t.0);
            }
            _ => {}
        }
    }
    let download =
        status.init_container_statuses.iter().flatten().find(|c| c.name == DOWNLOAD_CONTAINER);
    f.downloading = download.and_then(|c| c.state.as_ref()?.running.as_ref()).is_some();
    f.download_failing = download.and_then(|c| {
        let now = c.state.as_ref().and_then(terminated);
        if now.is_some_and(|t| t.exit_code == 0) {
            return None;
        }
        let last = now.or_else(|| c.last_state.as_ref().and_then(terminated))?;
        Some((c.restart_count, Exit::of(last)))
    });
    let worker = status.container_statuses.iter().flatten().find(|c| c.name == WORKER);
    if let Some(c) = worker {
        f.started = c.started == Some(true);
        f.running_since = c
            .state
            .as_ref()
            .and_then(|s| s.running.as_ref())
            .and_then(|r| r.started_at.as_ref())
            .map(|t| t.0);
        f.restarts = c.restart_count;
        let waiting = c.state.as_ref().and_then(|s| s.waiting.as_ref());
        f.crash_looping = waiting.and_then(|w| w.reason.as_deref()) == Some("CrashLoopBackOff");
        let term = c.last_state.as_ref().and_then(terminated);
        f.last_exit = term.or_else(|| c.state.as_ref().and_then(terminated)).map(Exit::of);
    }
    f
}

/// How a container ended, if it has.
fn terminated(s: &ContainerState) -> Option<&ContainerStateTerminated> {
    s.terminated.as_ref()
}

/// Whether a worker that was ready in its current container has since been unready for at
/// least `limit_s` seconds at `now`.
///
/// The clock is the pod's Ready condition, and it counts only when that went false after the
/// current container started running (so it was true in between): a worker loading its
/// model, in its first container or after a restart, never counts, however long the load
/// takes within the startup probe's budget. Nor does a worker that passed its startup probe
/// but has not yet had its first readiness probe (its Ready condition still dates from
/// before it started); one that fails readiness right after starting is left to its
/// liveness probe and to `spec.recovery.maxRestartsBeforeReplace`.
pub fn unready_too_long(f: &PodFacts, limit_s: i32, now: Timestamp) -> bool {
    if f.ready || !f.started || f.terminating {
        return false;
    }
    let (Some(unready), Some(running)) = (f.ready_since, f.running_since) else {
        return false;
    };
    unready > running && now.duration_since(unready).as_secs() >= i64::from(limit_s)
}
