//! `blaze dev up`.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use blaze_devcluster::{ApiServer, Config};
use blaze_devnode::backoff::BackoffConfig;
use blaze_devnode::image::ImageMap;
use blaze_devnode::ipam::AddressPool;
use blaze_devnode::k8s::node::NodeConfig;
use blaze_devnode::k8s::plane::NodeSide;
use blaze_devnode::k8s::service_proxy::{self, ServiceTarget};
use blaze_devnode::pod::RuntimeConfig;
use blaze_devnode::service_account::ApiAccess;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::DynamicObject;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, ResourceExt};

use super::progress::Snapshot;
use super::redis::Redis;
use super::{RunInfo, UpArgs, apply, install, run};

/// The quickstart's model file, looked for in the model cache.
const QUICKSTART_MODEL: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";

/// Runs the development control plane until Ctrl-C or `blaze dev down`.
pub async fn up(args: UpArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let dir = std::path::absolute(&args.dir)?;
    std::fs::create_dir_all(&dir).with_context(|| format!("--dir {}", dir.display()))?;
    if let Some(info) = RunInfo::read(&dir)
        && run::alive(info.pid)
    {
        bail!(
            "blaze dev is already running from {} (pid {}); `blaze dev down` stops it",
            dir.display(),
            info.pid
        );
    }
    // First, so that a missing redis-server or a taken port stops us before anything runs.
    let redis = if args.redis {
        Some(Redis::start(args.redis_port, &dir.join("redis")).await?)
    } else {
        None
    };
    if let Some(r) = &redis {
        println!(
            "redis-server on {} (no persistence; log in {})",
            r.addr(),
            dir.join("redis").display()
        );
    }
    let kubeconfig = dir.join("kubeconfig");
    let config = Config {
        listen: args.listen,
        kubeconfig: Some(kubeconfig.clone()),
        data_dir: Some(dir.join("state")),
        ..Default::default()
    };
    let server = ApiServer::start(config)
        .await
        .with_context(|| format!("--listen {}: cannot start the API server", args.listen))?;
    let client = client_from(&kubeconfig).await?;
    let nodes = NodeSide::start(
        client.clone(),
        (0..args.nodes.max(1))
            .map(|i| NodeConfig {
                cpu_millis: i64::from(args.cpus_per_node) * 1000,
                ..NodeConfig::new(format!("blaze-dev-{i}"), args.gpus_per_node)
            })
            .collect(),
        runtime_config(&dir, &server),
        address_pool(&args.pod_addresses)?,
    )
    .await
    .context("cannot start the nodes")?;
    server.state().set_log_source(nodes.log_fn());
    install::crds(&client).await?;
    println!(
        "control plane ready in {:.2} s: API server {}, {} node(s) with {} GPU(s) each",
        started.elapsed().as_secs_f64(),
        server.url(),
        args.nodes.max(1),
        args.gpus_per_node
    );
    let mut info = RunInfo {
        pid: std::process::id(),
        apiserver: server.url(),
        kubeconfig: kubeconfig.clone(),
        routers: Vec::new(),
        dashboard: None,
        redis: redis.as_ref().map(|r| r.addr().to_string()),
    };
    write_info(&dir, &info)?;
    let result = serve(&args, &dir, &client, &mut info, started).await;
    let redis_too = if redis.is_some() { ", then Redis" } else { "" };
    println!("stopping: pods first, then the control plane{redis_too}");
    nodes.shutdown().await;
    server.shutdown().await;
    if let Some(r) = redis {
        r.stop().await;
    }
    let _ = std::fs::remove_file(RunInfo::path(&dir));
    result
}

/// Installs the operator and examples, exposes routers, reports progress until a signal.
async fn serve(
    args: &UpArgs,
    dir: &Path,
    client: &Client,
    info: &mut RunInfo,
    started: Instant,
) -> anyhow::Result<()> {
    if args.no_operator {
        println!("the operator is not installed (--no-operator): the control plane alone runs");
    } else {
        install::operator(client).await?;
        println!("operator installed (manifests/install.yaml, namespace blaze-system)");
    }
    let models = args.models.clone().unwrap_or_else(|| dir.join("models"));
    install::models_claim(client, dir, &models, "default").await?;
    let objects = examples(args)?;
    if objects.iter().any(|o| kind_of(o) == "BlazeEngine")
        && !models.join(QUICKSTART_MODEL).is_file()
    {
        println!(
            "note: {} has no {QUICKSTART_MODEL}; scripts/fetch-models.sh fetches it (make dev runs it)",
            models.display()
        );
    }
    apply::apply_all(client, &objects).await?;
    let mut forwards = Vec::new();
    if !args.no_operator {
        let target = ServiceTarget {
            namespace: install::OPERATOR_NAMESPACE.into(),
            name: install::DASHBOARD_SERVICE.into(),
            port: IntOrString::Int(i32::from(install::DASHBOARD_PORT)),
        };
        let port = args.dashboard_port.unwrap_or(if args.port == 0 { 0 } else { 8090 });
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("--dashboard-port: cannot listen on {addr}"))?;
        let url = format!("http://{}", listener.local_addr()?);
        println!("operator dashboard at {url} (once the operator pod is ready)");
        info.dashboard = Some(url);
        forwards.push(tokio::spawn(service_proxy::forward(client.clone(), target, listener)));
    }
    for (i, r) in objects.iter().filter(|o| kind_of(o) == "BlazeRouter").enumerate() {
        let ns = r.namespace().unwrap_or_else(|| "default".into());
        // A router with `spec.tls` serves TLS on a port named `https`; the local port passes
        // its bytes through, so the URL is https too.
        let tls = !r.data["spec"]["tls"].is_null();
        let (port, scheme) = if tls { ("https", "https") } else { ("http", "http") };
        let target = ServiceTarget {
            namespace: ns.clone(),
            name: blaze_operator::labels::router_child_name(&r.name_any()),
            port: IntOrString::String(port.into()),
        };
        let addr = SocketAddr::from(([127, 0, 0, 1], args.port.saturating_add(i as u16)));
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("--port: cannot listen on {addr}"))?;
        let url = format!("{scheme}://{}", listener.local_addr()?);
        info.routers.push((format!("{ns}/{}", r.name_any()), url));
        forwards.push(tokio::spawn(service_proxy::forward(client.clone(), target, listener)));
    }
    write_info(dir, info)?;
    let wanted: Vec<String> = objects
        .iter()
        .filter(|o| matches!(kind_of(o).as_str(), "BlazeEngine" | "BlazeRouter"))
        .map(|o| format!("{}/{}", o.namespace().unwrap_or_else(|| "default".into()), o.name_any()))
        .collect();
    // The curl the banner prints asks for the first engine applied (a router's clients name
    // the engine as the model).
    let model = objects
        .iter()
        .find(|o| kind_of(o) == "BlazeEngine")
        .map_or_else(|| "smollm2".to_owned(), ResourceExt::name_any);
    let result = watch_progress(client, &wanted, info, &model, started).await;
    for f in forwards {
        f.abort();
    }
    result
}

/// Prints what changes until a signal; once everything wanted is ready, prints how to use it.
async fn watch_progress(
    client: &Client,
    wanted: &[String],
    info: &RunInfo,
    model: &str,
    started: Instant,
) -> anyhow::Result<()> {
    let signal = run::shutdown_signal();
    tokio::pin!(signal);
    let mut last = Snapshot::default();
    let mut announced = false;
    loop {
        match Snapshot::read(client).await {
            Ok(snap) => {
                for line in snap.changes(&last) {
                    println!("[{:>6.1}s] {line}", started.elapsed().as_secs_f64());
                }
                if !announced && wanted.iter().all(|w| snap.ready.contains(w)) {
                    announced = true;
                    println!("{}", ready_banner(info, model, started.elapsed()));
                }
                last = snap;
            }
            Err(e) => tracing::warn!(error = %e, "cannot read the cluster state"),
        }
        tokio::select! {
            () = &mut signal => return Ok(()),
            () = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
    }
}

fn ready_banner(info: &RunInfo, model: &str, elapsed: Duration) -> String {
    let mut out = format!("\nready in {:.1} s.\n", elapsed.as_secs_f64());
    for (router, url) in &info.routers {
        out.push_str(&format!("\nBlazeRouter {router} is served at {url}\n"));
    }
    if let Some(url) = &info.dashboard {
        out.push_str(&format!("\nThe operator's dashboard is at {url}\n"));
    }
    if let Some(addr) = &info.redis {
        out.push_str(&format!("\nRedis (spec.cache.redis.address) is at {addr}\n"));
    }
    if let Some((_, url)) = info.routers.first() {
        out.push_str(&format!(
            "\n  curl -s {url}/v1/chat/completions -H 'content-type: application/json' \\\n    \
             -d '{{\"model\": \"{model}\", \"messages\": [{{\"role\": \"system\", \"content\": \
             \"You are a helpful assistant.\"}}, {{\"role\": \"user\", \"content\": \
             \"What is the capital of France?\"}}], \"temperature\": 0, \"max_tokens\": 32}}'\n"
        ));
    }
    out.push_str(&format!(
        "\n  export KUBECONFIG={}\n  kubectl get pods -A\n  kubectl get blaze\n\n\
         Ctrl-C or `blaze dev down` stops everything.",
        info.kubeconfig.display()
    ));
    out
}

fn examples(args: &UpArgs) -> anyhow::Result<Vec<DynamicObject>> {
    if args.no_examples {
        return Ok(Vec::new());
    }
    if args.apply.is_empty() {
        return apply::parse(install::QUICKSTART_YAML, "manifests/examples/quickstart.yaml");
    }
    let mut out = Vec::new();
    for path in &args.apply {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("--apply {}: cannot read it", path.display()))?;
        out.extend(apply::parse(&text, &path.display().to_string())?);
    }
    Ok(out)
}

fn kind_of(o: &DynamicObject) -> String {
    o.types.as_ref().map(|t| t.kind.clone()).unwrap_or_default()
}

async fn client_from(kubeconfig: &Path) -> anyhow::Result<Client> {
    let kc = Kubeconfig::read_from(kubeconfig)
        .with_context(|| format!("cannot read {}", kubeconfig.display()))?;
    let config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await?;
    Ok(Client::try_from(config)?)
}

/// How pods run: binaries from `$BLAZE_BIN_DIR`, beside this one or the target directory;
/// every pod reaches the API server as its own ServiceAccount (the operator and routers with
/// the RBAC the install manifest grants them), never with the admin's kubeconfig.
fn runtime_config(dir: &Path, server: &ApiServer) -> RuntimeConfig {
    let api = server.addr();
    RuntimeConfig {
        root: dir.join("node"),
        images: ImageMap::from_env(),
        backoff: BackoffConfig::default(),
        pod_env: vec![
            ("KUBERNETES_SERVICE_HOST".into(), api.ip().to_string()),
            ("KUBERNETES_SERVICE_PORT".into(), api.port().to_string()),
        ],
        api: Some(ApiAccess { server: server.url(), ca_pem: server.ca_pem().map(str::to_owned) }),
    }
}

fn address_pool(range: &str) -> anyhow::Result<AddressPool> {
    let parse = |s: &str| -> anyhow::Result<Ipv4Addr> {
        let ip: Ipv4Addr =
            s.trim().parse().with_context(|| format!("{s:?} is not an IPv4 address"))?;
        anyhow::ensure!(ip.is_loopback(), "{ip} is not a loopback address (127.0.0.0/8)");
        Ok(ip)
    };
    let (first, last) = range
        .split_once('-')
        .with_context(|| format!("--pod-addresses {range:?}: expected FIRST-LAST"))?;
    let (first, last) = (parse(first)?, parse(last)?);
    anyhow::ensure!(first <= last, "--pod-addresses {range:?}: FIRST is after LAST");
    Ok(AddressPool::new(first, last))
}

fn write_info(dir: &Path, info: &RunInfo) -> anyhow::Result<()> {
    let path: PathBuf = RunInfo::path(dir);
    std::fs::write(&path, serde_json::to_string_pretty(info)?)
        .with_context(|| format!("cannot write {}", path.display()))
}
