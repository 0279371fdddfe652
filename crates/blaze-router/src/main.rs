//! `blaze-router`: the Blaze data-plane proxy.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use blaze_api::routing::RoutingConfig;
use blaze_router::admin::{Admin, serve_admin};
use blaze_router::auth::Auth;
use blaze_router::config::{self, FileWatch};
use blaze_router::kube_watch;
use blaze_router::metrics::{Metrics, ReloadLabels, ReloadResult};
use blaze_router::proxy::{Http1Server, Proxy, serve};
use blaze_router::routes::Table;
use blaze_router::tls::{Tls, TlsFiles};
use blaze_router::worker_tokens::WorkerTokens;
use blaze_telemetry::LogArgs;
use clap::Parser;
use k8s_openapi::api::core::v1::ConfigMap;
use prometheus_client::registry::Registry;

/// mimalloc: every request allocates a few small, short-lived buffers and headers, the case
/// it is built for; measured about 7% less user CPU per proxied request than glibc's malloc
/// (7.8 against 8.4 microseconds, `blaze-router-bench` load, one thread).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The Blaze router: proxies HTTP/1.1, HTTP/2 and gRPC (one port: cleartext, or TLS with
/// `--tls-cert` and `--tls-key`) to inference workers with balancing strategies, circuit
/// breakers, health checks and retries.
#[derive(Parser, Debug)]
#[command(version)]
#[command(group(clap::ArgGroup::new("source").required(true).args(["config", "config_map"])))]
struct Args {
    /// Address the proxy listens on (HTTP/1.1 and HTTP/2 with prior knowledge, or over TLS
    /// with `--tls-cert`).
    #[arg(long, env = "BLAZE_ROUTER_LISTEN", default_value = "0.0.0.0:8080")]
    listen: String,
    /// PEM certificate chain (leaf first): the proxy port then speaks TLS only, offering
    /// HTTP/2 and HTTP/1.1 by ALPN. Re-read when it changes (a renewed Secret). Needs
    /// `--tls-key`.
    #[arg(long, env = "BLAZE_ROUTER_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key of `--tls-cert`.
    #[arg(long, env = "BLAZE_ROUTER_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Routing configuration (YAML, the `routing.yaml` format); reloaded when it changes.
    /// Standalone mode; give this or `--config-map`.
    #[arg(long, env = "BLAZE_ROUTER_CONFIG")]
    config: Option<PathBuf>,
    /// In a cluster: the ConfigMap the operator renders for this router (`NAME-routing`),
    /// watched through the API server.
    #[arg(long, env = "BLAZE_ROUTER_CONFIG_MAP")]
    config_map: Option<String>,
    /// Namespace of `--config-map` (default: the client's namespace, the pod's own in a
    /// cluster).
    #[arg(long, env = "BLAZE_ROUTER_NAMESPACE")]
    namespace: Option<String>,
    /// `ENGINE=FILE`: present the token in FILE (re-read every second) to the workers of
    /// the BlazeEngine ENGINE, as `Authorization: Bearer TOKEN`; repeat for each engine. With
    /// any, the client's own `Authorization` is never passed to a worker. The operator sets
    /// one per engine the router serves, each file from that engine's token Secret.
    #[arg(long = "worker-token", env = "BLAZE_ROUTER_WORKER_TOKENS", value_delimiter = ',',
          value_parser = blaze_router::worker_tokens::parse_flag)]
    worker_tokens: Vec<(String, PathBuf)>,
    /// Address for `/metrics`, `/livez` and `/readyz`. Without it they are served on the
    /// proxy port.
    #[arg(long, env = "BLAZE_ROUTER_ADMIN_LISTEN")]
    admin_listen: Option<String>,
    #[command(flatten)]
    logs: LogArgs,
    /// Milliseconds a circuit breaker first stays open, overriding the configuration's
    /// whole seconds (for tests and benchmarks).
    #[arg(long, env = "BLAZE_ROUTER_BREAKER_OPEN_MS")]
    breaker_open_ms: Option<u64>,
    /// Seconds to let open requests finish after SIGTERM or Ctrl-C.
    #[arg(long, env = "BLAZE_ROUTER_DRAIN_SECONDS", default_value_t = 30)]
    drain_seconds: u64,
    /// Threads serving requests (default: one per CPU). Each runs its own single-threaded
    /// runtime with its own endpoint connections, and takes connections from the shared
    /// listener, as HAProxy's `nbthread` does.
    #[arg(long, env = "BLAZE_ROUTER_WORKER_THREADS")]
    worker_threads: Option<usize>,
    /// The server for cleartext HTTP/1.1: the router's own (`router`, which hands anything
    /// but small requests of known length to hyper's) or hyper's for everything (`hyper`).
    #[arg(long, env = "BLAZE_ROUTER_HTTP1_SERVER", value_enum, default_value_t)]
    http1_server: Http1Server,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    args.logs.init("info");
    if args.worker_threads == Some(0) {
        anyhow::bail!("--worker-threads must be at least 1");
    }
    runtime()?.block_on(run(args))
}

/// A worker thread's runtime: single-threaded, so a request and the endpoint connection it
/// uses are driven by the same thread, without locks or cross-thread wake-ups.
fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")
}

enum Source {
    File(PathBuf),
    ConfigMap(Box<kube::Api<ConfigMap>>, String),
}

async fn initial(args: &Args) -> anyhow::Result<(RoutingConfig, Source)> {
    if let Some(path) = &args.config {
        let cfg = config::load(path).with_context(|| format!("--config {}", path.display()))?;
        return Ok((cfg, Source::File(path.clone())));
    }
    let name = args.config_map.clone().context("--config or --config-map is required")?;
    let client = kube::Client::try_default().await.context("--config-map: no Kubernetes client")?;
    let ns = args.namespace.clone().unwrap_or_else(|| client.default_namespace().to_owned());
    let api = kube::Api::namespaced(client, &ns);
    // A new router's RoleBinding (or the ConfigMap itself) may reach the API server a moment
    // after its pod starts: keep asking for a while before giving up.
    let deadline = tokio::time::Instant::now() + STARTUP_WAIT;
    let mut wait = Duration::from_millis(250);
    let cfg = loop {
        match kube_watch::fetch(&api, &name).await {
            Ok(cfg) => break cfg,
            Err(e) if tokio::time::Instant::now() + wait < deadline => {
                tracing::warn!(error = %e, retry_in = ?wait, "routing ConfigMap not readable yet");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(4));
            }
            Err(e) => return Err(e).with_context(|| format!("--config-map {ns}/{name}")),
        }
    };
    Ok((cfg, Source::ConfigMap(Box::new(api), name)))
}

/// How long a router started with `--config-map` keeps trying to read it before it exits.
const STARTUP_WAIT: Duration = Duration::from_secs(30);

async fn run(args: Args) -> anyhow::Result<()> {
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => {
            Some(Tls::load(TlsFiles { cert: cert.clone(), key: key.clone() })?)
        }
        _ => None,
    };
    let (cfg, source) = initial(&args).await?;
    let auth =
        cfg.auth.as_ref().map(Auth::from_config).transpose().context("configuration: auth")?;
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
    let tokens = Arc::new(WorkerTokens::new(args.worker_tokens.iter().cloned()));
    if !tokens.is_empty() {
        tokio::spawn(tokens.clone().watch());
    }
    let proxy = Proxy::with_worker_tokens(table.clone(), auth, proxy_admin, Some(tokens));
    let (auth_tx, auth_rx) = tokio::sync::watch::channel(table.load().config.auth.clone());
    let (set_auth, m) = (proxy.clone(), metrics.clone());
    tokio::spawn(blaze_router::auth::watch(
        auth_rx,
        move |a| set_auth.set_auth(a),
        move |e| {
            tracing::error!(error = %e, "API keys not reloaded; keeping the last good ones");
            m.reloads.get_or_create(&ReloadLabels { result: ReloadResult::Error }).inc();
        },
    ));
    let (apply, on_error) = reloader(proxy.clone(), table.clone(), metrics.clone(), auth_tx);
    match source {
        Source::File(path) => tokio::spawn(FileWatch::new(path).run(apply, on_error)),
        Source::ConfigMap(api, name) => {
            tokio::spawn(kube_watch::watch(*api, name, apply, on_error))
        }
    };
    tokio::spawn(blaze_router::health::run(table.clone()));
    tokio::spawn(blaze_router::stall::run(table));
    if let Some(tls) = &tls {
        let m = metrics.clone();
        tokio::spawn(tls.clone().watch(move |e| {
            let result = if e.is_some() { ReloadResult::Error } else { ReloadResult::Ok };
            m.tls_reloads.get_or_create(&ReloadLabels { result }).inc();
        }));
    }
    let listener = std::net::TcpListener::bind(&args.listen)
        .and_then(|l| l.set_nonblocking(true).map(|()| l))
        .with_context(|| format!("--listen {}", args.listen))?;
    let threads = args
        .worker_threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from));
    let drain = Duration::from_secs(args.drain_seconds);
    let http1 = args.http1_server;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut workers = Vec::new();
    for i in 1..threads {
        let (l, proxy, mut stop) = (listener.try_clone()?, proxy.clone(), stop_rx.clone());
        let tls = tls.clone();
        let worker = std::thread::Builder::new().name(format!("blaze-router-{i}")).spawn(
            move || -> anyhow::Result<()> {
                runtime()?.block_on(async move {
                    let l = tokio::net::TcpListener::from_std(l)?;
                    let stopped = async move { drop(stop.wait_for(|s| *s).await) };
                    serve(l, proxy, tls, stopped, drain, http1).await;
                    Ok(())
                })
            },
        )?;
        workers.push(worker);
    }
    tracing::info!(listen = %args.listen, threads, tls = tls.is_some(), "blaze-router serving");
    let stopped = async move {
        shutdown_signal().await;
        let _ = stop_tx.send(true);
    };
    let l = tokio::net::TcpListener::from_std(listener)?;
    serve(l, proxy, tls, stopped, drain, args.http1_server).await;
    for w in workers {
        w.join().map_err(|_| anyhow::anyhow!("a worker thread panicked"))??;
    }
    Ok(())
}

/// What to do with each new routing document, and with each bad one.
fn reloader(
    proxy: Arc<Proxy>,
    table: Arc<Table>,
    metrics: Metrics,
    auth_tx: tokio::sync::watch::Sender<Option<blaze_api::routing::RoutingAuth>>,
) -> (impl Fn(RoutingConfig) + Send + 'static, impl Fn(&blaze_router::Error) + Send + 'static) {
    let m = metrics.clone();
    let apply = move |cfg: RoutingConfig| {
        let auth = match cfg.auth.as_ref().map(Auth::from_config).transpose() {
            Ok(a) => a,
            Err(e) => {
                tracing::error!(error = %e, "new configuration rejected: auth");
                m.reloads.get_or_create(&ReloadLabels { result: ReloadResult::Error }).inc();
                return;
            }
        };
        proxy.set_auth(auth);
        // The key watch follows the new key files from now on.
        auth_tx.send_if_modified(|a| {
            let changed = *a != cfg.auth;
            a.clone_from(&cfg.auth);
            changed
        });
        table.apply(cfg);
        m.reloads.get_or_create(&ReloadLabels { result: ReloadResult::Ok }).inc();
    };
    let on_error = move |e: &blaze_router::Error| {
        tracing::error!(error = %e, "new configuration rejected; keeping the last good one");
        metrics.reloads.get_or_create(&ReloadLabels { result: ReloadResult::Error }).inc();
    };
    (apply, on_error)
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
