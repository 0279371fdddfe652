//! `blaze`: the command line of Blaze.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use blaze_telemetry::LogArgs;
use clap::{Parser, Subcommand};

use blaze::dev;

/// Blaze runs AI inference engines on Kubernetes.
#[derive(Debug, Parser)]
#[command(name = "blaze", version, about)]
struct Args {
    #[command(flatten)]
    logs: LogArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print the Blaze CustomResourceDefinitions as YAML, or write one file per CRD.
    Crds(CrdsArgs),
    /// The development control plane.
    #[command(subcommand)]
    Dev(DevCommand),
    /// Benchmarks that print numbers.
    #[command(subcommand)]
    Bench(BenchCommand),
}

#[derive(Debug, Subcommand)]
enum DevCommand {
    /// Run Blaze on the development control plane: API server, nodes, the operator as a pod
    /// and the quickstart, until Ctrl-C or `blaze dev down`.
    Up(dev::UpArgs),
    /// Stop a running `blaze dev up`.
    Down(dev::DirArgs),
    /// Show what a running `blaze dev up` runs and where to call it.
    Status(dev::DirArgs),
    /// Run the development Kubernetes API server alone until interrupted.
    Apiserver(ApiserverArgs),
}

#[derive(Debug, Subcommand)]
enum BenchCommand {
    /// Creates per second, watch events per second to 10 watchers, memory per 10,000 objects.
    Apiserver(BenchApiserverArgs),
}

#[derive(Debug, clap::Args)]
struct CrdsArgs {
    /// Write `NAME.yaml` files into this directory instead of printing to standard output.
    #[arg(long, env = "BLAZE_CRDS_OUTPUT_DIR")]
    output_dir: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
struct ApiserverArgs {
    /// Address to listen on (loopback by default; HTTPS, bearer-token auth).
    #[arg(long, env = "BLAZE_APISERVER_LISTEN", default_value = "127.0.0.1:6443")]
    listen: SocketAddr,
    /// Where to write the kubeconfig for kubectl and kube-rs.
    #[arg(long, env = "BLAZE_KUBECONFIG")]
    kubeconfig: PathBuf,
    /// Keep objects in this directory so they survive a restart.
    #[arg(long, env = "BLAZE_APISERVER_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Bearer token clients must send (random if unset).
    #[arg(long, env = "BLAZE_APISERVER_TOKEN")]
    token: Option<String>,
    /// Serve plain HTTP instead of HTTPS with a certificate made at start. kube-rs accepts
    /// it; kubectl then sends no bearer token.
    #[arg(long, env = "BLAZE_APISERVER_PLAIN_HTTP")]
    plain_http: bool,
}

#[derive(Debug, clap::Args)]
struct BenchApiserverArgs {
    /// Objects to create.
    #[arg(long, env = "BLAZE_BENCH_OBJECTS", default_value_t = 10_000)]
    objects: usize,
    /// Concurrent writers.
    #[arg(long, env = "BLAZE_BENCH_CONCURRENCY", default_value_t = 16)]
    concurrency: usize,
    /// Watchers receiving every event.
    #[arg(long, env = "BLAZE_BENCH_WATCHERS", default_value_t = 10)]
    watchers: usize,
    /// Also write the results as JSON to this file.
    #[arg(long, env = "BLAZE_BENCH_OUTPUT")]
    output: Option<PathBuf>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // `blaze dev up` shows its own progress lines; the controllers' routine logs would drown
    // them, so only warnings and errors are logged unless RUST_LOG asks for more.
    let level =
        if matches!(args.command, Command::Dev(DevCommand::Up(_))) { "warn" } else { "info" };
    args.logs.init(level);
    match args.command {
        Command::Crds(a) => crds(a),
        Command::Dev(DevCommand::Up(a)) => runtime()?.block_on(dev::up(a)),
        Command::Dev(DevCommand::Down(a)) => runtime()?.block_on(dev::down(a)),
        Command::Dev(DevCommand::Status(a)) => runtime()?.block_on(dev::status(a)),
        Command::Dev(DevCommand::Apiserver(a)) => runtime()?.block_on(apiserver(a)),
        Command::Bench(BenchCommand::Apiserver(a)) => runtime()?.block_on(bench_apiserver(a)),
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

async fn apiserver(args: ApiserverArgs) -> anyhow::Result<()> {
    let config = blaze_devcluster::Config {
        listen: args.listen,
        kubeconfig: Some(args.kubeconfig.clone()),
        data_dir: args.data_dir,
        token: args.token,
        tls: !args.plain_http,
        ..Default::default()
    };
    let server = blaze_devcluster::ApiServer::start(config)
        .await
        .with_context(|| format!("--listen {}: cannot start the API server", args.listen))?;
    eprintln!(
        "API server on {}; kubeconfig written to {}",
        server.url(),
        args.kubeconfig.display()
    );
    tokio::signal::ctrl_c().await.context("cannot wait for Ctrl-C")?;
    server.shutdown().await;
    Ok(())
}

async fn bench_apiserver(args: BenchApiserverArgs) -> anyhow::Result<()> {
    let cfg = blaze_devcluster::bench::BenchConfig {
        objects: args.objects,
        concurrency: args.concurrency.max(1),
        watchers: args.watchers,
    };
    let report = blaze_devcluster::bench::run(cfg).await.context("benchmark failed")?;
    println!("{report}");
    if let Some(path) = args.output {
        std::fs::write(&path, report.to_json())
            .with_context(|| format!("--output {}: cannot write it", path.display()))?;
    }
    Ok(())
}

fn crds(args: CrdsArgs) -> anyhow::Result<()> {
    let rendered = blaze_api::crds::render_all()?;
    match args.output_dir {
        None => {
            let docs: Vec<&str> = rendered.iter().map(|(_, y)| y.as_str()).collect();
            print!("{}", docs.join("---\n"));
        }
        Some(dir) => {
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("--output-dir {}: cannot create it", dir.display()))?;
            for (name, yaml) in rendered {
                let path = dir.join(name);
                std::fs::write(&path, yaml)
                    .with_context(|| format!("cannot write {}", path.display()))?;
            }
        }
    }
    Ok(())
}
