//! `blaze-router`: the Blaze data-plane proxy.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use blaze_router::admin::{Admin, serve_admin};
use blaze_router::auth::Auth;
use blaze_router::config::{self, FileWatch};
use blaze_router::metrics::{Metrics, ReloadLabels, ReloadResult};
use blaze_router::proxy::{Proxy, serve};
use blaze_router::routes::Table;
use clap::{Parser, ValueEnum};
use prometheus_client::registry::Registry;

/// The Blaze router: proxies HTTP/1.1, HTTP/2 and gRPC (cleartext, one port) to inference
/// workers with balancing strategies, circuit breakers, health checks and retries.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Address the proxy listens on (HTTP/1.1 and HTTP/2 with prior knowledge).
    #[arg(long, env = "BLAZE_ROUTER_LISTEN", default_value = "0.0.0.0:8080")]
    listen: String,
    /// Routing configuration (YAML, the `routing.yaml` format); reloaded when it changes.
    #[arg(long, env = "BLAZE_ROUTER_CONFIG")]
    config: PathBuf,
    /// Address for `/metrics`, `/livez` and `/readyz`. Without it they are served on the
    /// proxy port.
    #[arg(long, env = "BLAZE_ROUTER_ADMIN_LISTEN")]
    admin_listen: Option<String>,
    /// Log format.
    #[arg(long, env = "BLAZE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Milliseconds a circuit breaker first stays open, overriding the configuration's
    /// whole seconds (for tests and benchmarks).
    #[arg(long, env = "BLAZE_ROUTER_BREAKER_OPEN_MS")]
    breaker_open_ms: Option<u64>,
    /// Seconds to let open requests finish after SIGTERM or Ctrl-C.
    #[arg(long, env = "BLAZE_ROUTER_DRAIN_SECONDS", default_value_t = 30)]
    drain_seconds: u64,
    /// Runtime worker threads (default: one per CPU).
    #[arg(long, env = "BLAZE_ROUTER_WORKER_THREADS")]
    worker_threads: Option<usize>,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    match args.log_format {
        LogFormat::Text => tracing_subscriber::fmt().with_env_filter(filter).init(),
        LogFormat::Json => tracing_subscriber::fmt().json().with_env_filter(filter).init(),
    }
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    rt.enable_all();
    if let Some(n) = args.worker_threads {
        anyhow::ensure!(n > 0, "--worker-threads must be at least 1");
        rt.worker_threads(n);
    }
    rt.build().context("starting the runtime")?.block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let cfg = config::load(&args.config)
        .with_context(|| format!("--config {}", args.config.display()))?;
    let auth = cfg.auth.as_ref().map(Auth::from_config).transpose().context("--config: auth")?;
    let mut registry = Registry::default();
    let metrics = Metrics::new(&mut registry);
    let open = args
        .breaker_open_ms
        .map(|ms| (Duration::from_millis(ms.max(1)), Duration::from_millis(ms.max(1) * 8)));
    let table = Arc::new(Table::new(cfg, metrics.clone(), open));
    let admin = Admin::new(registry, table.clone());
    let proxy_admin = match &args.admin_listen {
        Some(addr) => {
            let l = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("--admin-listen {addr}"))?;
            tokio::spawn(serve_admin(l, admin));
            None
        }
        None => Some(admin),
    };
    let proxy = Proxy::new(table.clone(), auth, proxy_admin);
    let watch_proxy = proxy.clone();
    let watch_table = table.clone();
    let watch_metrics = metrics.clone();
    tokio::spawn(FileWatch::new(args.config.clone()).run(
        move |cfg| {
            let auth = match cfg.auth.as_ref().map(Auth::from_config).transpose() {
                Ok(a) => a,
                Err(e) => {
                    tracing::error!(error = %e, "new configuration rejected: auth");
                    watch_metrics
                        .reloads
                        .get_or_create(&ReloadLabels { result: ReloadResult::Error })
                        .inc();
                    return;
                }
            };
            watch_proxy.set_auth(auth);
            watch_table.apply(cfg);
            watch_metrics.reloads.get_or_create(&ReloadLabels { result: ReloadResult::Ok }).inc();
        },
        move |e| {
            tracing::error!(error = %e, "new configuration rejected; keeping the last good one");
            metrics.reloads.get_or_create(&ReloadLabels { result: ReloadResult::Error }).inc();
        },
    ));
    tokio::spawn(blaze_router::health::run(table));
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("--listen {}", args.listen))?;
    tracing::info!(listen = %args.listen, "blaze-router serving");
    serve(listener, proxy, shutdown_signal(), Duration::from_secs(args.drain_seconds)).await;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => return ctrl_c.await.unwrap_or(()),
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
