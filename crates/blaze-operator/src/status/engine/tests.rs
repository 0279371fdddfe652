use std::collections::BTreeMap;

use blaze_api::conditions::find;
use k8s_openapi::api::apps::v1::DeploymentStatus;
use k8s_openapi::api::core::v1::Pod;
use serde_json::json;

use super::*;
use crate::status::pods::{Exit, facts};

fn t(s: &str) -> Timestamp {
    s.parse().unwrap()
}
const T0: &str = "2026-01-01T00:00:00Z";

fn engine(gpus: i32) -> BlazeEngine {
    let mut e: BlazeEngine = serde_json::from_value(json!({
        "apiVersion": "blaze.ai/v1alpha1", "kind": "BlazeEngine",
        "metadata": {"name": "chat", "namespace": "ml", "uid": "u", "generation": 2},
        "spec": {"kind": "llm", "model": {"source": "hf://org/chat"}, "replicas": 2,
                 "resources": {"gpus": gpus, "memory": "8Gi"}}
    }))
    .unwrap();
    e.status = None;
    e
}

fn deploy(replicas: i32, ready: i32, updated: i32) -> Deployment {
    Deployment {
        status: Some(DeploymentStatus {
            replicas: Some(replicas),
            ready_replicas: Some(ready),
            updated_replicas: Some(updated),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn ready_pod(name: &str) -> PodFacts {
    PodFacts { name: name.into(), ready: true, started: true, ..Default::default() }
}

fn status_of(
    e: &BlazeEngine,
    d: &Deployment,
    pods: &[PodFacts],
    desired: i32,
    now: &str,
) -> BlazeEngineStatus {
    let caches = BTreeMap::new();
    engine_status(
        e,
        &Observation { deployment: Some(d), pods, desired, now: t(now), caches: &caches },
    )
}

fn cond<'a>(s: &'a BlazeEngineStatus, ty: &str) -> (&'a str, &'a str, &'a str) {
    let c = find(&s.conditions, ty).unwrap();
    (c.status.as_str(), c.reason.as_str(), c.message.as_str())
}

#[test]
fn all_workers_ready_is_ready_loaded_stable_and_healthy() {
    let e = engine(1);
    let pods = [ready_pod("a"), ready_pod("b")];
    let s = status_of(&e, &deploy(2, 2, 2), &pods, 2, T0);
    assert_eq!(cond(&s, "Ready").0, "True");
    assert_eq!(cond(&s, "ModelLoaded").0, "True");
    assert_eq!(cond(&s, "Scaling").1, "Stable");
    assert_eq!(cond(&s, "Degraded").0, "False");
    assert_eq!(cond(&s, "Unschedulable").0, "False");
    assert_eq!(s.observed_generation, Some(2));
    assert_eq!((s.replicas, s.ready_replicas, s.desired_replicas), (2, 2, 2));
    assert_eq!(
        s.selector.as_deref(),
        Some("app.kubernetes.io/name=blaze-worker,blaze.ai/engine=chat")
    );
    assert!(s.conditions.iter().all(|c| c.observed_generation == Some(2)));
}

#[test]
fn cache_ready_comes_and_goes_with_the_caches_the_spec_turns_on() {
    use crate::status::cache::PodCache;
    let mut e = engine(0);
    let pods = [ready_pod("a")];
    let d = deploy(1, 1, 1);
    let s = status_of(&e, &d, &pods, 1, T0);
    assert!(find(&s.conditions, "CacheReady").is_none(), "no cache, no condition");

    e.spec.cache =
        serde_json::from_value(json!({"prefixCache": true, "redis": {"address": "redis:6379"}}))
            .unwrap();
    let caches: BTreeMap<_, _> =
        [("a".to_owned(), PodCache { redis_up: Some(false), prefix_capacity_bytes: Some(1e6) })]
            .into();
    let obs =
        Observation { deployment: Some(&d), pods: &pods, desired: 1, now: t(T0), caches: &caches };
    e.status = Some(engine_status(&e, &obs));
    let c = find(&e.status.as_ref().unwrap().conditions, "CacheReady").unwrap();
    assert_eq!((c.status.as_str(), c.reason.as_str()), ("False", "RedisUnreachable"));
    assert_eq!(c.observed_generation, Some(2));

    let loading = [PodFacts { name: "a".into(), ..Default::default() }];
    let s = status_of(&e, &deploy(1, 0, 1), &loading, 1, T0);
    assert_eq!(cond(&s, "CacheReady").1, "NoReadyPods");

    // Turning the caches off removes the condition from a status that had it.
    e.spec.cache = Default::default();
    let s = engine_status(&e, &obs);
    assert!(find(&s.conditions, "CacheReady").is_none());
    assert!(find(&s.conditions, "Ready").is_some());
}

#[test]
fn the_same_observation_twice_changes_nothing_and_a_flip_moves_only_its_time() {
    let mut e = engine(0);
    let loading = [PodFacts { name: "a".into(), ..Default::default() }];
    let s1 = status_of(&e, &deploy(1, 0, 1), &loading, 1, T0);
    assert_eq!(cond(&s1, "Ready"), ("False", "Loading", "workers are loading hf://org/chat"));
    e.status = Some(s1.clone());
    let s2 = status_of(&e, &deploy(1, 0, 1), &loading, 1, "2026-01-01T00:01:00Z");
    assert_eq!(s1, s2, "no change, so no status write");
    e.status = Some(s2);
    let s3 = status_of(&e, &deploy(1, 1, 1), &[ready_pod("a")], 1, "2026-01-01T00:02:00Z");
    let ready = find(&s3.conditions, "Ready").unwrap();
    assert_eq!(ready.last_transition_time.0, t("2026-01-01T00:02:00Z"));
    let degraded = find(&s3.conditions, "Degraded").unwrap();
    assert_eq!(degraded.last_transition_time.0, t(T0), "Degraded did not flip");
}

#[test]
fn too_many_gpus_is_unschedulable_with_advice() {
    let e = engine(4);
    let msg = "0/1 nodes are available: 1 Insufficient nvidia.com/gpu.";
    let pods =
        [PodFacts { name: "a".into(), unschedulable: Some(msg.into()), ..Default::default() }];
    let s = status_of(&e, &deploy(1, 0, 1), &pods, 1, T0);
    let (st, reason, message) = cond(&s, "Unschedulable");
    assert_eq!((st, reason), ("True", "InsufficientGPU"));
    assert!(message.contains(msg) && message.contains("spec.resources.gpus"), "{message}");
    assert_eq!(cond(&s, "Ready").1, "InsufficientGPU");
    assert_eq!(cond(&s, "ModelLoaded").1, "NotScheduled");
}

#[test]
fn a_model_that_cannot_load_says_why() {
    let e = engine(0);
    let exit = Exit {
        reason: "Error".into(),
        code: 1,
        message: Some("no such repository org/chat".into()),
    };
    let pods = [PodFacts {
        name: "a".into(),
        crash_looping: true,
        restarts: 3,
        last_exit: Some(exit),
        ..Default::default()
    }];
    let s = status_of(&e, &deploy(1, 0, 1), &pods, 1, T0);
    let (st, reason, message) = cond(&s, "ModelLoaded");
    assert_eq!((st, reason), ("False", "LoadFailed"));
    assert!(
        message.contains("exit code 1: no such repository") && message.contains("kubectl logs a"),
        "{message}"
    );
    assert_eq!(cond(&s, "Degraded").1, "CrashLoop");
    let oom = Exit { reason: "OOMKilled".into(), code: 137, message: None };
    let pods =
        [PodFacts { name: "a".into(), restarts: 1, last_exit: Some(oom), ..Default::default() }];
    let s = status_of(&e, &deploy(1, 0, 1), &pods, 1, T0);
    let (_, reason, message) = cond(&s, "ModelLoaded");
    assert_eq!(reason, "OutOfMemory");
    assert!(message.contains("8Gi") && message.contains("spec.resources.memory"), "{message}");
    assert!(replacements(&e, &pods, t(T0)).is_empty(), "no flapping while nothing is ready");

    let failed = Exit { reason: "Error".into(), code: 1, message: Some("HTTP 404".into()) };
    let pods =
        [PodFacts { name: "b".into(), download_failing: Some((2, failed)), ..Default::default() }];
    let s = status_of(&e, &deploy(1, 0, 1), &pods, 1, T0);
    let (st, reason, message) = cond(&s, "ModelLoaded");
    assert_eq!((st, reason), ("False", "DownloadFailed"));
    assert!(
        message.contains("(exit code 1: HTTP 404), 2 restarts")
            && message.contains("kubectl logs b -c model-download --previous"),
        "{message}"
    );
    let (st, reason, message) = cond(&s, "Degraded");
    assert_eq!((st, reason), ("True", "DownloadFailed"));
    assert!(message.contains("worker b cannot download its model (2 restarts)"), "{message}");
}

#[test]
fn a_download_in_progress_says_how_far_it_has_got() {
    let e = engine(0);
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "w-1"},
        "status": {"initContainerStatuses": [{
            "name": "model-download", "image": "i", "imageID": "", "ready": false,
            "restartCount": 0, "state": {"running": {"startedAt": T0}}
        }]}
    }))
    .unwrap();
    let mut f = facts(&pod);
    assert!(f.downloading && f.download_failing.is_none());
    let s = status_of(&e, &deploy(1, 0, 1), std::slice::from_ref(&f), 1, T0);
    let first = "worker w-1 is downloading hf://org/chat";
    assert_eq!(cond(&s, "ModelLoaded"), ("False", "Downloading", first));
    f.download_progress = Some(blaze_worker_cli::DownloadProgress {
        file: "model.safetensors".into(),
        bytes: 1 << 30,
        total: Some(4 << 30),
        bytes_per_second: 50.0 * 1048576.0,
    });
    let s = status_of(&e, &deploy(1, 0, 1), std::slice::from_ref(&f), 1, T0);
    let want = format!("{first} (model.safetensors: 1.0 GiB of 4.0 GiB (25%) at 50.0 MiB/s)");
    assert_eq!(cond(&s, "ModelLoaded"), ("False", "Downloading", want.as_str()));
    // Ready says it too: `kubectl get blaze` and `blaze dev up` show that condition.
    assert_eq!(cond(&s, "Ready"), ("False", "Downloading", want.as_str()));
}

#[test]
fn scaling_reasons_follow_the_deployment() {
    let e = engine(0);
    let two = [ready_pod("a"), ready_pod("b")];
    assert_eq!(cond(&status_of(&e, &deploy(2, 1, 2), &two[..1], 2, T0), "Scaling").1, "ScalingUp");
    assert_eq!(cond(&status_of(&e, &deploy(3, 3, 3), &two, 2, T0), "Scaling").1, "ScalingDown");
    assert_eq!(cond(&status_of(&e, &deploy(2, 2, 1), &two, 2, T0), "Scaling").1, "RollingOut");
    let zero = status_of(&e, &deploy(0, 0, 0), &[], 0, T0);
    assert_eq!(cond(&zero, "Ready").1, "ScaledToZero");
    assert_eq!(cond(&zero, "ModelLoaded").0, "Unknown");
}

#[test]
fn crash_looping_and_long_unready_workers_are_replaced_while_others_serve() {
    let e = engine(0);
    let now = t("2026-01-01T01:00:00Z");
    let looping = PodFacts {
        name: "b".into(),
        restarts: 5,
        crash_looping: true,
        started: true,
        ..Default::default()
    };
    let stuck = PodFacts { name: "c".into(), ..wedged_at("2026-01-01T00:10:00Z") };
    let fresh = PodFacts { name: "d".into(), ..wedged_at("2026-01-01T00:59:00Z") };
    let pods: Vec<_> = [
        ready_pod("a"),
        looping,
        stuck,
        fresh,
        ready_pod("e"),
        ready_pod("f"),
        ready_pod("g"),
        ready_pod("h"),
    ]
    .into();
    let r = replacements(&e, &pods, now);
    assert_eq!(
        r,
        vec![
            Replacement { pod: "b".into(), reason: "TooManyRestarts" },
            Replacement { pod: "c".into(), reason: "UnreadyTooLong" },
        ]
    );
    let s = engine_status(
        &e,
        &Observation {
            deployment: Some(&deploy(8, 6, 8)),
            pods: &pods,
            desired: 8,
            now,
            caches: &BTreeMap::new(),
        },
    );
    let (st, reason, message) = cond(&s, "Degraded");
    assert_eq!((st, reason), ("True", "CrashLoop"));
    assert!(message.contains("worker c has been unready for over 300s"), "{message}");
}

/// A worker whose container started at T0, loaded, served, and went unready at `when`.
fn wedged_at(when: &str) -> PodFacts {
    PodFacts {
        name: "w".into(),
        started: true,
        running_since: Some(t(T0)),
        ready_since: Some(t(when)),
        ..Default::default()
    }
}

fn replaced(r: &[Replacement]) -> Vec<(&str, &str)> {
    r.iter().map(|r| (r.pod.as_str(), r.reason)).collect()
}

#[test]
fn a_single_worker_unready_past_the_threshold_is_replaced_and_not_before() {
    let mut e = engine(1);
    e.spec.replicas = 1;
    let pods = [wedged_at("2026-01-01T00:10:00Z")];
    // unhealthyAfterSeconds defaults to 300: 00:15:00 is the threshold.
    assert!(replacements(&e, &pods, t("2026-01-01T00:14:59Z")).is_empty());
    assert_eq!(
        replaced(&replacements(&e, &pods, t("2026-01-01T00:15:00Z"))),
        [("w", "UnreadyTooLong")]
    );
    e.spec.recovery.unhealthy_after_seconds = 3600;
    assert!(replacements(&e, &pods, t("2026-01-01T01:09:59Z")).is_empty(), "the spec's limit");
    assert_eq!(replacements(&e, &pods, t("2026-01-01T01:10:00Z")).len(), 1);
    let s = status_of(&e, &deploy(1, 0, 1), &pods, 1, "2026-01-01T01:10:00Z");
    let (st, reason, message) = cond(&s, "Degraded");
    assert_eq!((st, reason), ("True", "WorkerUnhealthy"));
    assert!(message.ends_with("failing workers are replaced per spec.recovery"), "{message}");

    // Its successor loads while it drains: nothing more to do, however long that takes.
    let successor = PodFacts {
        name: "x".into(),
        running_since: Some(t("2026-01-01T01:10:05Z")),
        ready_since: Some(t("2026-01-01T01:10:00Z")),
        ..Default::default()
    };
    let draining = PodFacts { terminating: true, ..pods[0].clone() };
    let later = t("2026-01-01T01:40:00Z");
    assert!(replacements(&e, &[draining, successor.clone()], later).is_empty());
    // Started (startup probe passed) but before its first readiness probe: not yet counted.
    let started = PodFacts { started: true, ..successor };
    assert!(replacements(&e, &[started], later).is_empty());
}

#[test]
fn loading_restarted_and_download_failing_workers_are_not_replaced_as_unready() {
    let e = engine(0);
    let now = t("2026-01-01T01:00:00Z");
    // Loading its model for an hour, within the startup probe's budget.
    let loading = PodFacts {
        name: "loading".into(),
        running_since: Some(t(T0)),
        ready_since: Some(t(T0)),
        ..Default::default()
    };
    // Went unready at 00:10, restarted by the kubelet at 00:11, loaded again by 01:00.
    let restarted = PodFacts {
        name: "restarted".into(),
        started: true,
        restarts: 1,
        running_since: Some(t("2026-01-01T00:11:00Z")),
        ready_since: Some(t("2026-01-01T00:10:00Z")),
        ..Default::default()
    };
    let exit = Exit { reason: "Error".into(), code: 1, message: Some("HTTP 401".into()) };
    let downloading = PodFacts {
        name: "downloading".into(),
        ready_since: Some(t(T0)),
        download_failing: Some((9, exit)),
        restarts: 9,
        ..Default::default()
    };
    for p in [&loading, &restarted, &downloading] {
        assert!(replacements(&e, std::slice::from_ref(p), now).is_empty(), "{}", p.name);
    }
    // Even beside a ready worker, a failing download is not replaced: a new pod would
    // download from the same place.
    let pods = [ready_pod("a"), downloading];
    assert!(replacements(&e, &pods, now).is_empty());
}

#[test]
fn replacements_go_a_quarter_at_a_time_counting_workers_still_draining() {
    let e = engine(0);
    let now = t("2026-01-01T01:00:00Z");
    let mut pods: Vec<_> = (0..8)
        .map(|i| PodFacts { name: format!("w{i}"), ..wedged_at("2026-01-01T00:10:00Z") })
        .collect();
    assert_eq!(
        replaced(&replacements(&e, &pods, now)),
        [("w0", "UnreadyTooLong"), ("w1", "UnreadyTooLong")]
    );
    pods[0].terminating = true;
    pods.push(PodFacts { name: "new".into(), ..Default::default() });
    assert_eq!(replaced(&replacements(&e, &pods, now)), [("w1", "UnreadyTooLong")]);
    pods[1].terminating = true;
    assert!(replacements(&e, &pods, now).is_empty(), "two already going");
}

#[test]
fn pod_facts_read_scheduling_readiness_and_crashes() {
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "w-1"},
        "status": {
            "conditions": [
                {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": "0/2 nodes"},
                {"type": "Ready", "status": "False", "lastTransitionTime": T0}
            ],
            "containerStatuses": [{
                "name": "blaze-worker", "image": "i", "imageID": "", "ready": false, "restartCount": 4, "started": false,
                "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                "lastState": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}}
            }]
        }
    }))
    .unwrap();
    let f = facts(&pod);
    assert_eq!(f.unschedulable.as_deref(), Some("0/2 nodes"));
    assert!(!f.ready && f.crash_looping && !f.started);
    assert_eq!(f.restarts, 4);
    assert!(f.last_exit.unwrap().is_oom());
    assert_eq!(f.ready_since, Some(t(T0)));
    assert_eq!(f.running_since, None, "waiting, not running");
    let running: Pod = serde_json::from_value(json!({
        "metadata": {"name": "w-2"},
        "status": {"containerStatuses": [{
            "name": "blaze-worker", "image": "i", "imageID": "", "ready": false, "restartCount": 1,
            "started": true, "state": {"running": {"startedAt": "2026-01-01T00:11:00Z"}}
        }]}
    }))
    .unwrap();
    let f = facts(&running);
    assert_eq!(f.running_since, Some(t("2026-01-01T00:11:00Z")));
    assert!(f.started);
}
