use super::*;
use crate::env::{CommandLine, Env};
use crate::process::tests::{alive, poll_dead};
use k8s_openapi::api::core::v1::ExecAction;
use std::net::Ipv4Addr;
use std::path::Path;
use std::time::Instant;

fn config(dir: &Path, script: &str) -> ContainerConfig {
    let mut env = Env::default();
    env.set("PATH", std::env::var("PATH").unwrap_or_default());
    ContainerConfig {
        name: "main".into(),
        image: "test:v1".into(),
        process: ProcessSpec {
            command: CommandLine {
                program: "/bin/sh".into(),
                args: vec!["-c".into(), script.into()],
            },
            env: env.clone(),
            cwd: dir.to_path_buf(),
            log_path: PathBuf::new(),
        },
        log_dir: dir.join("logs"),
        startup: None,
        readiness: None,
        liveness: None,
        probe_target: ProbeTarget {
            pod_ip: Ipv4Addr::LOCALHOST,
            ports: Default::default(),
            env,
            cwd: dir.to_path_buf(),
        },
        restart_policy: RestartPolicy::Always,
        backoff: BackoffConfig {
            initial: Duration::from_millis(300),
            max: Duration::from_secs(2),
            reset_after: Duration::from_secs(60),
        },
        grace: Duration::from_secs(2),
    }
}

/// An exec probe that passes while `file` exists in the working directory.
fn file_probe(file: &str) -> Probe {
    Probe {
        exec: Some(ExecAction { command: Some(vec!["test".into(), "-f".into(), file.into()]) }),
        period_seconds: Some(1),
        failure_threshold: Some(1),
        ..Default::default()
    }
}

async fn wait_status(
    rx: &mut watch::Receiver<ContainerStatus>,
    what: &str,
    f: impl Fn(&ContainerStatus) -> bool,
) -> ContainerStatus {
    let result = tokio::time::timeout(Duration::from_secs(15), async {
        rx.wait_for(|s| f(s)).await.map(|s| s.clone())
    })
    .await;
    match result {
        Ok(Ok(s)) => s,
        _ => panic!("timed out waiting for {what}: {:?}", rx.borrow()),
    }
}

fn waiting_reason(s: &ContainerStatus) -> Option<&str> {
    s.state.as_ref()?.waiting.as_ref()?.reason.as_deref()
}

fn running(s: &ContainerStatus) -> bool {
    s.state.as_ref().is_some_and(|st| st.running.is_some())
}

#[tokio::test]
async fn an_exiting_container_restarts_with_growing_backoff_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let (tx, mut events) = mpsc::unbounded_channel();
    let handle = ContainerHandle::start(config(dir.path(), "echo run; exit 3"), tx);
    let mut rx = handle.subscribe();

    let s =
        wait_status(&mut rx, "CrashLoopBackOff", |s| waiting_reason(s) == Some("CrashLoopBackOff"))
            .await;
    let last = s.last_state.as_ref().unwrap().terminated.as_ref().unwrap();
    assert_eq!((last.exit_code, last.reason.as_deref()), (3, Some("Error")));
    assert_eq!(s.restart_count, 0);
    let message = s.state.unwrap().waiting.unwrap().message.unwrap();
    assert_eq!(message, "back-off 300ms restarting failed container=main");

    let t1 = Instant::now();
    wait_status(&mut rx, "first restart", |s| s.restart_count == 1).await;
    let first_gap = t1.elapsed();
    wait_status(&mut rx, "second back-off", |s| {
        s.restart_count == 1 && waiting_reason(s) == Some("CrashLoopBackOff")
    })
    .await;
    let t2 = Instant::now();
    wait_status(&mut rx, "second restart", |s| s.restart_count == 2).await;
    let second_gap = t2.elapsed();
    assert!(first_gap >= Duration::from_millis(250), "{first_gap:?}");
    assert!(second_gap >= Duration::from_millis(550), "backoff did not double: {second_gap:?}");

    assert_eq!(std::fs::read_to_string(handle.log_path(true).unwrap()).unwrap(), "run\n");
    let final_status = handle.stop(Duration::from_secs(1)).await;
    assert!(final_status.restart_count >= 2);
    let mut reasons = Vec::new();
    while let Ok(e) = events.try_recv() {
        reasons.push(e.reason);
    }
    assert_eq!(&reasons[..3], ["Started", "BackOff", "Started"]);
}

#[tokio::test]
async fn restart_policy_never_leaves_a_completed_container() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), "exit 0");
    cfg.restart_policy = RestartPolicy::Never;
    let (tx, _events) = mpsc::unbounded_channel();
    let handle = ContainerHandle::start(cfg, tx);
    let mut rx = handle.subscribe();
    let s = wait_status(&mut rx, "terminated", |s| {
        s.state.as_ref().is_some_and(|st| st.terminated.is_some())
    })
    .await;
    let t = s.state.unwrap().terminated.unwrap();
    assert_eq!((t.exit_code, t.reason.as_deref()), (0, Some("Completed")));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(handle.status().restart_count, 0);
    handle.stop(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn readiness_follows_the_probe_and_startup_gates_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), "echo $$ > pid; exec sleep 300");
    cfg.startup = Some(file_probe("started"));
    cfg.readiness = Some(file_probe("ready"));
    cfg.startup.as_mut().unwrap().failure_threshold = Some(30);
    let (tx, _events) = mpsc::unbounded_channel();
    let handle = ContainerHandle::start(cfg, tx);
    let mut rx = handle.subscribe();
    wait_status(&mut rx, "running", running).await;
    std::fs::write(dir.path().join("ready"), b"").unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let s = handle.status();
    assert_eq!((s.started, s.ready), (Some(false), false), "readiness ran before startup passed");

    std::fs::write(dir.path().join("started"), b"").unwrap();
    wait_status(&mut rx, "ready", |s| s.ready && s.started == Some(true)).await;
    std::fs::remove_file(dir.path().join("ready")).unwrap();
    wait_status(&mut rx, "unready", |s| !s.ready).await;
    assert!(running(&handle.status()), "a readiness failure must not restart");
    std::fs::write(dir.path().join("ready"), b"").unwrap();
    wait_status(&mut rx, "ready again", |s| s.ready).await;

    let pid: u32 = std::fs::read_to_string(dir.path().join("pid")).unwrap().trim().parse().unwrap();
    let s = handle.stop(Duration::from_secs(2)).await;
    let t = s.state.unwrap().terminated.unwrap();
    assert_eq!(t.exit_code, 143, "SIGTERM ends sleep");
    poll_dead(pid).await;
}

#[tokio::test]
async fn a_failing_liveness_probe_kills_and_restarts_the_container() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), "exec sleep 300");
    cfg.liveness = Some(file_probe("alive"));
    let (tx, mut events) = mpsc::unbounded_channel();
    let handle = ContainerHandle::start(cfg, tx);
    let mut rx = handle.subscribe();
    let s = wait_status(&mut rx, "restart after liveness failure", |s| s.restart_count == 1).await;
    let last = s.last_state.unwrap().terminated.unwrap();
    assert_eq!(last.exit_code, 143);
    assert_eq!(last.message.as_deref(), Some("killed after the liveness probe failed"));
    let mut seen = Vec::new();
    while let Ok(e) = events.try_recv() {
        seen.push((e.reason, e.message));
    }
    assert!(
        seen.iter().any(|(r, m)| r == "Unhealthy" && m.starts_with("Liveness probe failed")),
        "{seen:?}"
    );
    assert!(seen.iter().any(|(r, _)| r == "Killing"), "{seen:?}");
    let s = wait_status(&mut rx, "running again", |s| s.restart_count == 1 && running(s)).await;
    let pid = s.container_id.unwrap().trim_start_matches("process://").parse().unwrap();
    assert!(alive(pid));
    handle.stop(Duration::from_secs(2)).await;
    poll_dead(pid).await;
}
