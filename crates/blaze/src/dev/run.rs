//! `blaze dev down`, `blaze dev status` and the process plumbing they share with `up`.

use std::time::{Duration, Instant};

use anyhow::Context;
use kube::config::{KubeConfigOptions, Kubeconfig};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::progress::Snapshot;
use super::{DirArgs, RunInfo};

/// Whether process `pid` exists and has not exited (a zombie whose parent has not reaped it
/// yet counts as stopped).
pub fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|stat| !stat.rsplit(')').next().unwrap_or("").trim_start().starts_with('Z'))
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// Stops a running `blaze dev up` (SIGTERM, then waits up to 90 s for it to stop its pods).
pub async fn down(args: DirArgs) -> anyhow::Result<()> {
    let Some(info) = RunInfo::read(&args.dir).filter(|i| alive(i.pid)) else {
        println!("blaze dev is not running (no live process in {})", args.dir.display());
        return Ok(());
    };
    kill(Pid::from_raw(info.pid as i32), Signal::SIGTERM)
        .with_context(|| format!("cannot signal pid {}", info.pid))?;
    let deadline = Instant::now() + Duration::from_secs(90);
    while alive(info.pid) {
        anyhow::ensure!(
            Instant::now() < deadline,
            "blaze dev (pid {}) did not stop within 90 s",
            info.pid
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!("stopped blaze dev (pid {})", info.pid);
    Ok(())
}

/// Prints the running control plane's nodes' pods, engines and routers, and where to call.
/// Fails when nothing runs.
pub async fn status(args: DirArgs) -> anyhow::Result<()> {
    let Some(info) = RunInfo::read(&args.dir).filter(|i| alive(i.pid)) else {
        anyhow::bail!("blaze dev is not running (no live process in {})", args.dir.display());
    };
    let kc = Kubeconfig::read_from(&info.kubeconfig)?;
    let config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await?;
    let client = kube::Client::try_from(config)?;
    let snap = Snapshot::read(&client)
        .await
        .with_context(|| format!("the API server at {} does not answer", info.apiserver))?;
    println!("blaze dev is running (pid {}), API server {}", info.pid, info.apiserver);
    println!("kubeconfig: {}", info.kubeconfig.display());
    for (router, url) in &info.routers {
        println!("BlazeRouter {router}: {url}");
    }
    if let Some(url) = &info.dashboard {
        println!("operator dashboard: {url}");
    }
    if let Some(addr) = &info.redis {
        println!("Redis (spec.cache.redis.address): {addr}");
    }
    println!();
    for line in snap.lines.values() {
        println!("{line}");
    }
    Ok(())
}
