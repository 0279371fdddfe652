//! A failure of one part costs no more than it must: a killed worker, a frozen worker, a
//! frozen only worker, a restarted operator.

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context as _, Result, ensure};
use blaze_e2e::pods::{pid, pids};
use blaze_e2e::{Quickstart, closed_loop as cl, http, until};
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::json;

use crate::Fixture;

/// A worker process killed with SIGKILL is restarted in its pod, and the engine serves from
/// a new process.
pub async fn a_killed_worker_is_restarted_and_the_engine_is_whole_again(
    f: Arc<Fixture>,
) -> Result<()> {
    let q = Quickstart::deploy(f.cluster().await?, "killed-worker").await?;
    let victim = pids(&q.ready(1).await?).first().copied().context("the worker's process")?;
    kill(Pid::from_raw(victim), Signal::SIGKILL)?;
    until("the killed worker restarted", 120, async || {
        let restarted = q
            .workers()
            .await
            .ok()?
            .iter()
            .flat_map(|p| p.status.iter().flat_map(|s| s.container_statuses.iter().flatten()))
            .any(|c| c.restart_count >= 1);
        restarted.then_some(())
    })
    .await?;
    let recovered = q.ready(1).await?;
    ensure!(!pids(&recovered).contains(&victim), "the killed process is still listed");
    q.serving(1).await
}

/// The only worker freezes (SIGSTOP: alive, but answering nothing): once it has been unready
/// for `spec.recovery.unhealthyAfterSeconds`, the operator replaces it, although no other
/// worker is ready, and the engine serves again from the new one.
pub async fn a_frozen_only_worker_is_replaced_and_the_engine_serves_again(
    f: Arc<Fixture>,
) -> Result<()> {
    let q = Quickstart::deploy(f.cluster().await?, "frozen-only").await?;
    q.patch_engine(json!({"recovery": {"unhealthyAfterSeconds": 10}})).await?;
    let first = q.ready(1).await?.remove(0);
    let frozen = pid(&first).context("the worker's process")?;
    kill(Pid::from_raw(frozen), Signal::SIGSTOP)?;
    let stopped = Instant::now();
    let replacement = until("a new worker ready in place of the frozen one", 180, async || {
        let list = q.ready_workers().await.ok()?;
        list.into_iter().find(|p| p.uid() != first.uid())
    })
    .await?;
    eprintln!("the frozen worker was replaced, its successor ready after {:?}", stopped.elapsed());
    ensure!(pid(&replacement) != Some(frozen), "the replacement is the frozen process");
    // The operator deletes the old pod (the kubelet's liveness probe would take a minute to
    // restart it in place); a stopped process cannot act on SIGTERM, so it lingers until its
    // grace period ends: end it now.
    let old = q.api::<Pod>().get_opt(&first.name_any()).await?;
    ensure!(old.is_none_or(|p| p.metadata.deletion_timestamp.is_some()), "not deleted");
    let _ =
        Command::new("kill").args(["-KILL", &frozen.to_string()]).stderr(Stdio::null()).status();
    let body = r#"{"model": "smollm2", "prompt": "Hello", "max_tokens": 4, "temperature": 0}"#;
    until("a completion from the replacement", 60, async || {
        let out = http::request(&q.url, "POST", "/v1/completions", body).await.ok()?;
        out.starts_with("HTTP/1.1 200").then_some(())
    })
    .await?;
    Ok(())
}

/// One of two workers frozen for 20 s under load: no request fails, and none takes longer
/// than 10 s plus a normal request's time.
pub async fn a_frozen_worker_costs_no_request_and_at_most_10_s(f: Arc<Fixture>) -> Result<()> {
    let q = Quickstart::deploy(f.cluster().await?, "frozen-worker").await?;
    let r = cl::frozen_worker(&q, 20).await?;
    eprintln!("{r:?}");
    ensure!(r.failures == 0, "{r:?}");
    ensure!(r.worst_s <= 10.0 + r.normal_s, "a request took {:.1} s: {r:?}", r.worst_s);
    Ok(())
}

/// Deleting the operator's pod under steady load changes nothing: the new leader keeps the
/// worker count for longer than a stable window plus the scale-down delay, rewrites no
/// Deployment, and no request fails.
pub async fn an_operator_restart_rewrites_nothing_and_keeps_the_worker_count_under_load(
    f: Arc<Fixture>,
) -> Result<()> {
    let cluster = f.cluster().await?;
    let q = Quickstart::deploy(cluster, "operator-restart").await?;
    let r = cl::operator_restart(cluster, &q, 45).await?;
    eprintln!("{r:?}");
    ensure!(r.after == vec![r.before], "the count changed after the restart: {r:?}");
    ensure!(
        r.deployments_after == r.deployments_before,
        "a Deployment was replaced or its spec rewritten: {r:?}"
    );
    ensure!(r.failures == 0, "{r:?}");
    Ok(())
}
