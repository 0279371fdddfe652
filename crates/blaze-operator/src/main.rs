//! `blaze-operator`: reconciles BlazeEngines and BlazeRouters.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use blaze_operator::children::Defaults;
use blaze_operator::controller::{self, Context, leader};
use blaze_operator::dashboard::{self, ApiObjects, Dashboard};
use blaze_operator::history::History;
use blaze_operator::metrics::Metrics;
use blaze_operator::server::{self, Health};
use blaze_telemetry::LogArgs;
use clap::{Parser, Subcommand};
use prometheus_client::registry::Registry;
use tokio::sync::watch;
use tracing::{error, info};

/// The Blaze operator: turns BlazeEngines into GPU-scheduled worker pods and BlazeRouters into
/// router pods wired to them.
#[derive(Debug, Parser)]
#[command(name = "blaze-operator", version, about)]
struct Args {
    #[command(flatten)]
    logs: LogArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the controllers (while this replica holds the leader Lease).
    Run(RunArgs),
    /// Print the Blaze CustomResourceDefinitions as YAML (the same as `blaze crds`).
    Crds,
    /// Create many BlazeEngines with no workers, reconcile them in this process, and print the
    /// time until all are reconciled and the peak memory (needs a cluster or `blaze dev`).
    Bench(BenchArgs),
}

#[derive(Debug, clap::Args)]
struct BenchArgs {
    /// Engines to create.
    #[arg(long, env = "BLAZE_BENCH_ENGINES", default_value_t = 1000)]
    engines: usize,
    /// Namespace to create them in (it must exist; they are deleted afterwards).
    #[arg(long, env = "BLAZE_BENCH_NAMESPACE", default_value = "default")]
    namespace: String,
    /// Give up after this many seconds.
    #[arg(long, env = "BLAZE_BENCH_TIMEOUT_SECONDS", default_value_t = 300)]
    timeout_seconds: u64,
    /// Reconciles at once, as `run --max-concurrent-reconciles`.
    #[arg(long, env = "BLAZE_MAX_CONCURRENT_RECONCILES", default_value_t = controller::DEFAULT_CONCURRENCY)]
    max_concurrent_reconciles: u16,
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    /// Watch only this namespace (default: every namespace).
    #[arg(long, env = "BLAZE_NAMESPACE")]
    namespace: Option<String>,
    /// Address for `/metrics`, `/livez` and `/readyz`.
    #[arg(long, env = "BLAZE_METRICS_LISTEN", default_value = "0.0.0.0:8080")]
    metrics_listen: SocketAddr,
    /// Address of the read-only dashboard (engines, routers, the last hour's charts and scale
    /// decisions); off unless given. It lists BlazeEngines and BlazeRouters with the
    /// operator's rights, so expose it only to those who may see them.
    #[arg(long, env = "BLAZE_DASHBOARD_LISTEN")]
    dashboard_listen: Option<SocketAddr>,
    /// Namespace of the leader-election Lease (the operator's own namespace).
    #[arg(long, env = "BLAZE_LEASE_NAMESPACE", default_value = "default")]
    lease_namespace: String,
    /// Take part in leader election through a Lease (`false` for a single replica, or where
    /// the API server lacks Leases).
    #[arg(long, env = "BLAZE_LEADER_ELECT", default_value_t = true, action = clap::ArgAction::Set)]
    leader_elect: bool,
    /// This replica's identity in the Lease and in events (the pod name in a cluster).
    #[arg(long, env = "BLAZE_POD_NAME")]
    identity: Option<String>,
    /// Worker image for CPU engines (`spec.resources.gpus: 0`) without `spec.image`
    /// (default: `ghcr.io/blaze-ai/blaze-worker:VERSION`).
    #[arg(long, env = "BLAZE_WORKER_IMAGE")]
    worker_image: Option<String>,
    /// Worker image for GPU engines (`spec.resources.gpus` above 0) without `spec.image`: a
    /// CUDA build of the worker (default: `ghcr.io/blaze-ai/blaze-worker:VERSION-cuda`).
    #[arg(long, env = "BLAZE_WORKER_CUDA_IMAGE")]
    worker_cuda_image: Option<String>,
    /// Router image for routers without `spec.image`.
    #[arg(long, env = "BLAZE_ROUTER_IMAGE")]
    router_image: Option<String>,
    /// Host part of the addresses worker and router pods listen on: `0.0.0.0` in a cluster,
    /// `$(POD_IP)` where all pods share one network namespace (the development control plane).
    #[arg(long, env = "BLAZE_LISTEN_HOST", default_value = "0.0.0.0")]
    listen_host: String,
    /// Reconciles each controller runs at once (0: no bound). Each one in flight holds an API
    /// connection and its decoded children.
    #[arg(long, env = "BLAZE_MAX_CONCURRENT_RECONCILES", default_value_t = controller::DEFAULT_CONCURRENCY)]
    max_concurrent_reconciles: u16,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    args.logs.init("info");
    match args.command {
        Command::Crds => {
            let docs: Vec<String> =
                blaze_api::crds::render_all()?.into_iter().map(|(_, y)| y).collect();
            print!("{}", docs.join("---\n"));
            Ok(())
        }
        Command::Run(a) => tokio::runtime::Runtime::new()?.block_on(run(a)),
        Command::Bench(a) => tokio::runtime::Runtime::new()?.block_on(bench(a)),
    }
}

async fn run(a: RunArgs) -> anyhow::Result<()> {
    let mut defaults = Defaults { listen_host: a.listen_host, ..Defaults::default() };
    if let Some(i) = a.worker_image {
        defaults.worker_image = i;
    }
    if let Some(i) = a.worker_cuda_image {
        defaults.worker_cuda_image = i;
    }
    if let Some(i) = a.router_image {
        defaults.router_image = i;
    }
    let listener = server::bind(a.metrics_listen)
        .await
        .with_context(|| format!("--metrics-listen {}: cannot listen", a.metrics_listen))?;
    let dashboard_listener = match a.dashboard_listen {
        Some(addr) => Some(
            dashboard::bind(addr)
                .await
                .with_context(|| format!("--dashboard-listen {addr}: cannot listen"))?,
        ),
        None => None,
    };
    let client = kube::Client::try_default()
        .await
        .context("cannot reach the Kubernetes API (kubeconfig or in-cluster config)")?;
    let mut registry = Registry::default();
    let metrics = Metrics::new(&mut registry);
    let history = Arc::new(History::new(metrics.objects.clone()));
    let health = Health::new(registry);
    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let http = tokio::spawn(server::serve(listener, health.clone(), stopped(stop_rx.clone())));
    let board = dashboard_listener.map(|l| {
        info!(addr = ?a.dashboard_listen, "serving the dashboard");
        let objects =
            Arc::new(ApiObjects { client: client.clone(), namespace: a.namespace.clone() });
        let d = Dashboard::new(objects, Arc::clone(&history));
        tokio::spawn(d.serve(l, stopped(stop_rx.clone())))
    });
    let identity = a.identity.unwrap_or_else(|| format!("blaze-operator-{}", std::process::id()));
    let (mut leading, lease_task) = if a.leader_elect {
        let (rx, task) = leader::contend(client.clone(), &a.lease_namespace, &identity)
            .await
            .context("cannot set up leader election")?;
        (Some(rx), Some(task))
    } else {
        (None, None)
    };
    health.set_ready(true);
    let signal = shutdown_signal();
    tokio::pin!(signal);
    if let Some(rx) = leading.as_mut() {
        info!(%identity, "waiting to lead");
        let stop = tokio::select! {
            ok = leader::wait_leading(rx) => if ok { false } else { anyhow::bail!("leader election stopped") },
            () = &mut signal => true,
        };
        if stop {
            drop(leading);
            release(lease_task).await;
            let _ = stop_tx.send(true);
            let _ = http.await;
            if let Some(b) = board {
                let _ = b.await;
            }
            return Ok(());
        }
    }
    info!("leading: starting controllers");
    let ctx = Context::new(
        client,
        defaults,
        metrics,
        history,
        Some(identity),
        a.namespace,
        a.max_concurrent_reconciles,
    );
    let engines = tokio::spawn(controller::engine::run(Arc::clone(&ctx), stopped(stop_rx.clone())));
    let routers = tokio::spawn(controller::router::run(ctx, stopped(stop_rx.clone())));
    let lost = tokio::select! {
        () = async move {
            match leading {
                Some(rx) => leader::lost(rx).await,
                None => std::future::pending().await,
            }
        } => true,
        () = &mut signal => false,
    };
    let _ = stop_tx.send(true);
    let _ = tokio::join!(engines, routers);
    // The receiver went with the select above: hand the Lease over before the process goes.
    release(lease_task).await;
    let _ = http.await;
    if let Some(b) = board {
        let _ = b.await;
    }
    if lost {
        error!("lost the leader Lease; exiting so this replica restarts as a stand-by");
        std::process::exit(1);
    }
    info!("stopped");
    Ok(())
}

async fn release(task: Option<leader::LeaseTask>) {
    if let Some(t) = task {
        leader::release(t).await;
    }
}

async fn bench(a: BenchArgs) -> anyhow::Result<()> {
    let client = kube::Client::try_default()
        .await
        .context("cannot reach the Kubernetes API (kubeconfig or in-cluster config)")?;
    let timeout = std::time::Duration::from_secs(a.timeout_seconds);
    let r = blaze_operator::bench::run(
        client,
        &a.namespace,
        a.engines,
        a.max_concurrent_reconciles,
        timeout,
    )
    .await?;
    let mib =
        r.peak_rss_bytes.map_or("unknown".to_owned(), |b| format!("{:.1}", b as f64 / 1048576.0));
    println!("engines: {}", r.engines);
    println!("reconciled_seconds: {:.2}", r.seconds);
    println!("peak_rss_mib: {mib}");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(t) => t,
                Err(_) => return ctrl_c.await.unwrap_or(()),
            };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
