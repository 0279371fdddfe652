use super::*;

fn shell(script: &str, dir: &std::path::Path) -> ProcessSpec {
    let mut env = Env::default();
    env.set("PATH", std::env::var("PATH").unwrap_or_default());
    env.set("GREETING", "hello");
    ProcessSpec {
        command: CommandLine { program: "/bin/sh".into(), args: vec!["-c".into(), script.into()] },
        env,
        cwd: dir.to_path_buf(),
        log_path: dir.join("logs/0.log"),
    }
}

pub(crate) fn alive(pid: u32) -> bool {
    // A zombie has exited; only count processes that still run.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat.rsplit(')').next().unwrap_or("").trim_start().starts_with('Z'),
        Err(_) => false,
    }
}

#[tokio::test]
async fn output_goes_to_the_log_and_the_exit_code_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let spec = shell("echo $GREETING; echo oops >&2; pwd; exit 3", dir.path());
    let mut p = ContainerProcess::spawn(&spec).unwrap();
    let exit = p.wait().await;
    assert_eq!(exit.code, Some(3));
    assert_eq!(exit.container_exit_code(), 3);
    let log = std::fs::read_to_string(&spec.log_path).unwrap();
    let cwd = dir.path().canonicalize().unwrap();
    assert_eq!(log, format!("hello\noops\n{}\n", cwd.display()));
}

#[tokio::test]
async fn terminate_escalates_to_sigkill_after_the_grace_period() {
    let dir = tempfile::tempdir().unwrap();
    let spec = shell("trap '' TERM; echo ready; while true; do sleep 0.05; done", dir.path());
    let mut p = ContainerProcess::spawn(&spec).unwrap();
    wait_for_log(&spec.log_path, "ready").await;
    let started = Instant::now();
    let exit = p.terminate(Duration::from_millis(300)).await;
    assert_eq!(exit.signal, Some(Signal::SIGKILL as i32));
    assert_eq!(exit.container_exit_code(), 137);
    assert!(started.elapsed() >= Duration::from_millis(300));
}

#[tokio::test]
async fn sigterm_is_enough_for_a_cooperative_process() {
    let dir = tempfile::tempdir().unwrap();
    let spec = shell("trap 'exit 0' TERM; echo ready; while true; do sleep 0.05; done", dir.path());
    let mut p = ContainerProcess::spawn(&spec).unwrap();
    wait_for_log(&spec.log_path, "ready").await;
    let exit = p.terminate(Duration::from_secs(20)).await;
    assert_eq!(exit.code, Some(0));
}

#[tokio::test]
async fn grandchildren_die_with_the_container() {
    let dir = tempfile::tempdir().unwrap();
    let spec = shell("sleep 300 & echo $!; wait", dir.path());
    let mut p = ContainerProcess::spawn(&spec).unwrap();
    let grandchild: u32 = wait_for_log(&spec.log_path, "").await.trim().parse().unwrap();
    assert!(alive(grandchild));
    p.terminate(Duration::from_secs(5)).await;
    poll_dead(grandchild).await;
}

#[tokio::test]
async fn dropping_the_handle_kills_the_group() {
    let dir = tempfile::tempdir().unwrap();
    let spec = shell("sleep 300 & echo $!; wait", dir.path());
    let p = ContainerProcess::spawn(&spec).unwrap();
    let (leader, grandchild) =
        (p.pid(), wait_for_log(&spec.log_path, "").await.trim().parse().unwrap());
    drop(p);
    poll_dead(leader).await;
    poll_dead(grandchild).await;
}

pub(crate) async fn poll_dead(pid: u32) {
    let what = format!("process {pid} to end");
    blaze_testing::eventually(&what, 10, async || (!alive(pid)).then_some(())).await
}

async fn wait_for_log(path: &std::path::Path, needle: &str) -> String {
    let what = format!("the log to contain {needle:?}");
    blaze_testing::eventually(&what, 10, async || {
        let log = std::fs::read_to_string(path).unwrap_or_default();
        (log.ends_with('\n') && log.contains(needle)).then_some(log)
    })
    .await
}
