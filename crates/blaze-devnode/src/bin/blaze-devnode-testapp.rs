//! A tiny program that stands in for a Blaze binary in the development kubelet's tests.
//!
//! It serves `/healthz` (liveness), `/readyz` (readiness), `/version` (the image it runs as)
//! and `/` on `--listen`, optionally `grpc.health.v1` on `--grpc-listen`, and can be told to
//! fail readiness or liveness or to exit, either by flags or at run time:
//! `POST /control/{fail-ready,pass-ready,fail-live,exit/CODE}`. With `--write-file` it writes
//! a file and exits, as an init container would.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use clap::Parser;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

/// Command line.
#[derive(Debug, Parser)]
struct Args {
    /// HTTP address.
    #[arg(long, env = "BLAZE_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// gRPC health address.
    #[arg(long, env = "BLAZE_GRPC_LISTEN")]
    grpc_listen: Option<SocketAddr>,
    /// Exit with `--exit-code` this many milliseconds after start.
    #[arg(long, env = "BLAZE_EXIT_AFTER_MS")]
    exit_after_ms: Option<u64>,
    /// The code for `--exit-after-ms`.
    #[arg(long, env = "BLAZE_EXIT_CODE", default_value_t = 1)]
    exit_code: i32,
    /// Report not ready until this many milliseconds after start.
    #[arg(long, env = "BLAZE_READY_AFTER_MS", default_value_t = 0)]
    ready_after_ms: u64,
    /// Ignore SIGTERM (to test the SIGKILL after the grace period).
    #[arg(long, env = "BLAZE_IGNORE_SIGTERM")]
    ignore_sigterm: bool,
    /// Start a copy of this program listening here, as the kubelet starts a container, and
    /// print its pid (to test that no process outlives its supervisor).
    #[arg(long, env = "BLAZE_SPAWN_CHILD_LISTEN")]
    spawn_child_listen: Option<SocketAddr>,
    /// Print this file at start (to test volumes).
    #[arg(long, env = "BLAZE_PRINT_FILE")]
    print_file: Option<std::path::PathBuf>,
    /// Write `--write-text` to this file and exit 0 at once, as an init container's task.
    #[arg(long, env = "BLAZE_WRITE_FILE")]
    write_file: Option<std::path::PathBuf>,
    /// What `--write-file` writes.
    #[arg(long, env = "BLAZE_WRITE_TEXT", default_value = "written")]
    write_text: String,
}

struct App {
    ready: AtomicBool,
    live: AtomicBool,
    health: HealthReporter,
}

impl App {
    async fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::SeqCst);
        let status = if ready { ServingStatus::Serving } else { ServingStatus::NotServing };
        self.health.set_service_status("", status).await;
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(path) = &args.write_file {
        std::fs::write(path, &args.write_text)?;
        println!("wrote {}", path.display());
        return Ok(());
    }
    if let Some(path) = &args.print_file {
        println!("{}: {}", path.display(), std::fs::read_to_string(path)?.trim_end());
    }
    let _child = match args.spawn_child_listen {
        Some(addr) => Some(spawn_child(addr)?),
        None => None,
    };
    let (health, health_service) = tonic_health::server::health_reporter();
    let app = Arc::new(App { ready: AtomicBool::new(false), live: AtomicBool::new(true), health });
    app.set_ready(args.ready_after_ms == 0).await;
    if args.ready_after_ms > 0 {
        let app = app.clone();
        let delay = Duration::from_millis(args.ready_after_ms);
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            app.set_ready(true).await;
        });
    }
    if let Some(ms) = args.exit_after_ms {
        let code = args.exit_code;
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            println!("exiting with {code} as asked");
            std::process::exit(code);
        });
    }
    if let Some(addr) = args.grpc_listen {
        let server = tonic::transport::Server::builder().add_service(health_service);
        tokio::spawn(server.serve(addr));
    }
    let router = axum::Router::new()
        .route(
            "/",
            get(|| async {
                format!("hello from {}\n", std::env::var("POD_NAME").unwrap_or_default())
            }),
        )
        .route("/version", get(|| async { std::env::var("BLAZE_IMAGE").unwrap_or_default() }))
        .route("/healthz", get(|State(app): State<Arc<App>>| async move { flag(&app.live) }))
        .route("/readyz", get(|State(app): State<Arc<App>>| async move { flag(&app.ready) }))
        .route("/control/{action}", post(control))
        .route("/control/exit/{code}", post(exit_now))
        .with_state(app);
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    println!("listening on {}", args.listen);
    let shutdown = shutdown_signal(args.ignore_sigterm);
    axum::serve(listener, router).with_graceful_shutdown(shutdown).await?;
    println!("stopped on SIGTERM");
    Ok(())
}

fn spawn_child(addr: SocketAddr) -> anyhow::Result<blaze_devnode::process::ContainerProcess> {
    let mut env = blaze_devnode::env::Env::default();
    env.set("PATH", std::env::var("PATH").unwrap_or_default());
    let spec = blaze_devnode::process::ProcessSpec {
        command: blaze_devnode::env::CommandLine {
            program: std::env::current_exe()?,
            args: vec![format!("--listen={addr}")],
        },
        env,
        cwd: std::env::temp_dir(),
        log_path: std::env::temp_dir()
            .join(format!("blaze-devnode-child-{}.log", std::process::id())),
    };
    let child = blaze_devnode::process::ContainerProcess::spawn(&spec)?;
    println!("child pid {}", child.pid());
    Ok(child)
}

async fn exit_now(Path(code): Path<i32>) -> StatusCode {
    println!("exiting with {code} as asked");
    std::process::exit(code)
}

fn flag(flag: &AtomicBool) -> StatusCode {
    if flag.load(Ordering::SeqCst) { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE }
}

async fn control(State(app): State<Arc<App>>, Path(action): Path<String>) -> StatusCode {
    match action.as_str() {
        "fail-ready" => app.set_ready(false).await,
        "pass-ready" => app.set_ready(true).await,
        "fail-live" => app.live.store(false, Ordering::SeqCst),
        _ => return StatusCode::NOT_FOUND,
    }
    StatusCode::NO_CONTENT
}

async fn shutdown_signal(ignore: bool) {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing a SIGTERM handler");
    loop {
        term.recv().await;
        if !ignore {
            return;
        }
        println!("ignoring SIGTERM");
    }
}
