//! Pod phase and conditions from container statuses.

use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateWaiting, ContainerStatus, PodCondition, PodIP, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::container::RestartPolicy;
use crate::env::PodIdentity;

/// The current time as a Kubernetes `Time`.
pub fn now() -> Time {
    let since_epoch =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let ts = k8s_openapi::jiff::Timestamp::new(
        since_epoch.as_secs() as i64,
        since_epoch.subsec_nanos() as i32,
    )
    .unwrap_or_default();
    Time(ts)
}

/// The phase the kubelet reports: `Pending` until a container has run, `Running` while any
/// runs or will be restarted, `Succeeded`/`Failed` once all have terminated for good.
pub fn phase(containers: &[ContainerStatus], policy: RestartPolicy) -> &'static str {
    let terminated: Vec<i32> = containers
        .iter()
        .filter_map(|c| c.state.as_ref()?.terminated.as_ref().map(|t| t.exit_code))
        .collect();
    let ever_ran = containers.iter().any(|c| {
        c.restart_count > 0
            || c.last_state.as_ref().is_some_and(|s| s.terminated.is_some())
            || c.state.as_ref().is_some_and(|s| s.running.is_some() || s.terminated.is_some())
    });
    if !containers.is_empty() && terminated.len() == containers.len() {
        let all_ok = terminated.iter().all(|&code| code == 0);
        return match (policy, all_ok) {
            (RestartPolicy::Always, _) => "Running",
            (_, true) => "Succeeded",
            (RestartPolicy::OnFailure, false) => "Running",
            (RestartPolicy::Never, false) => "Failed",
        };
    }
    if ever_ran { "Running" } else { "Pending" }
}

/// A pod's container statuses: init containers and the others, one per container of the
/// spec (see [`pending_after`]).
#[derive(Debug, Clone, Default)]
pub struct Containers {
    /// Init containers, in order.
    pub init: Vec<ContainerStatus>,
    /// The others.
    pub main: Vec<ContainerStatus>,
    /// Every init container exited 0 (or there are none).
    pub initialised: bool,
}

/// `started` statuses followed by a wait with `reason` (`PodInitializing` behind init
/// containers, else `ContainerCreating`) for each container of `names` (with its image from
/// `images`) not started yet.
pub fn pending_after(
    mut started: Vec<ContainerStatus>,
    names: &[String],
    images: &[String],
    reason: &str,
) -> Vec<ContainerStatus> {
    for (i, name) in names.iter().enumerate().skip(started.len()) {
        started.push(ContainerStatus {
            name: name.clone(),
            image: images.get(i).cloned().unwrap_or_default(),
            started: Some(false),
            state: Some(ContainerState {
                waiting: Some(ContainerStateWaiting { reason: Some(reason.into()), message: None }),
                ..Default::default()
            }),
            ..Default::default()
        });
    }
    started
}

/// The phase while init containers run: `Failed` once one failed for good (`restartPolicy:
/// Never`), else `Pending`.
fn init_phase(init: &[ContainerStatus], policy: RestartPolicy) -> &'static str {
    let failed = init.iter().any(|c| {
        c.state.as_ref().and_then(|s| s.terminated.as_ref()).is_some_and(|t| t.exit_code != 0)
    });
    if failed && policy == RestartPolicy::Never { "Failed" } else { "Pending" }
}

/// The pod status the kubelet writes (without `PodScheduled`, which the scheduler owns).
pub fn pod_status(
    id: &PodIdentity,
    all: Containers,
    policy: RestartPolicy,
    start_time: &Time,
) -> PodStatus {
    let Containers { init, main: containers, initialised } = all;
    let incomplete: Vec<&str> = init
        .iter()
        .filter(|c| {
            c.state.as_ref().and_then(|s| s.terminated.as_ref()).is_none_or(|t| t.exit_code != 0)
        })
        .map(|c| c.name.as_str())
        .collect();
    let initialised = initialised && incomplete.is_empty();
    let all_ready = !containers.is_empty() && containers.iter().all(|c| c.ready);
    let not_ready: Vec<&str> =
        containers.iter().filter(|c| !c.ready).map(|c| c.name.as_str()).collect();
    let t = now();
    // A condition that is True, or False with the reason and the containers holding it back.
    let condition =
        |type_: &str, ok: bool, reason: &str, what: &str, names: &[&str]| PodCondition {
            type_: type_.into(),
            status: if ok { "True" } else { "False" }.into(),
            last_transition_time: Some(t.clone()),
            reason: (!ok).then(|| reason.to_string()),
            message: (!ok).then(|| format!("containers with {what} status: [{}]", names.join(" "))),
            ..Default::default()
        };
    let ready =
        |type_: &str| condition(type_, all_ready, "ContainersNotReady", "unready", &not_ready);
    let ip = id.pod_ip.to_string();
    let phase = if initialised { phase(&containers, policy) } else { init_phase(&init, policy) };
    let initialized = condition(
        "Initialized",
        initialised,
        "ContainersNotInitialized",
        "incomplete",
        &incomplete,
    );
    PodStatus {
        phase: Some(phase.into()),
        pod_ip: Some(ip.clone()),
        pod_ips: Some(vec![PodIP { ip: ip.clone() }]),
        host_ip: Some(ip.clone()),
        host_ips: None,
        start_time: Some(start_time.clone()),
        conditions: Some(vec![initialized, ready("ContainersReady"), ready("Ready")]),
        init_container_statuses: (!init.is_empty()).then_some(init),
        container_statuses: Some(containers),
        ..Default::default()
    }
}

/// Folds `fresh` conditions into `old` ones: a condition keeps its `lastTransitionTime`
/// unless its status flipped, and conditions the kubelet does not own (`PodScheduled`,
/// readiness gates) are kept.
pub fn merge_conditions(old: &[PodCondition], fresh: Vec<PodCondition>) -> Vec<PodCondition> {
    let mut out: Vec<PodCondition> =
        old.iter().filter(|o| !fresh.iter().any(|f| f.type_ == o.type_)).cloned().collect();
    for mut f in fresh {
        if let Some(o) = old.iter().find(|o| o.type_ == f.type_ && o.status == f.status) {
            f.last_transition_time = o.last_transition_time.clone();
        }
        out.push(f);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        ContainerState, ContainerStateRunning, ContainerStateTerminated,
    };

    fn terminated(code: i32) -> ContainerStatus {
        ContainerStatus {
            state: Some(ContainerState {
                terminated: Some(ContainerStateTerminated {
                    exit_code: code,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn phases() {
        let running = ContainerStatus {
            state: Some(ContainerState {
                running: Some(ContainerStateRunning::default()),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(phase(&[ContainerStatus::default()], RestartPolicy::Always), "Pending");
        assert_eq!(phase(&[running.clone(), terminated(1)], RestartPolicy::Never), "Running");
        assert_eq!(phase(&[terminated(0), terminated(0)], RestartPolicy::Never), "Succeeded");
        assert_eq!(phase(&[terminated(0), terminated(2)], RestartPolicy::Never), "Failed");
        assert_eq!(phase(&[terminated(2)], RestartPolicy::OnFailure), "Running");
        assert_eq!(phase(&[terminated(0)], RestartPolicy::Always), "Running");
    }

    #[test]
    fn transition_times_survive_unless_the_status_flips() {
        let at = |secs| Some(Time(k8s_openapi::jiff::Timestamp::from_second(secs).unwrap()));
        let cond = |t: &str, s: &str, time| PodCondition {
            type_: t.into(),
            status: s.into(),
            last_transition_time: time,
            ..Default::default()
        };
        let old = vec![
            cond("PodScheduled", "True", at(1)),
            cond("Ready", "False", at(2)),
            cond("Initialized", "True", at(2)),
        ];
        let fresh = vec![cond("Initialized", "True", at(9)), cond("Ready", "True", at(9))];
        let merged = merge_conditions(&old, fresh);
        let time_of =
            |t: &str| merged.iter().find(|c| c.type_ == t).unwrap().last_transition_time.clone();
        assert_eq!(time_of("PodScheduled"), at(1));
        assert_eq!(time_of("Initialized"), at(2));
        assert_eq!(time_of("Ready"), at(9));
    }
}
