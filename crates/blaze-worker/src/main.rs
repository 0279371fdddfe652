//! `blaze-worker`: loads a model and serves it over HTTP and gRPC until SIGTERM.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::Context;
use blaze_proto::generate::generate_server::GenerateServer;
use blaze_proto::inference::grpc_inference_service_server::GrpcInferenceServiceServer;
use blaze_worker::args::{Args, Command, DownloadArgs, Kind};
use blaze_worker::auth::Tokens;
use blaze_worker::cache::ResponseCache;
use blaze_worker::engine::diffusion::{DiffusionConfig, DiffusionEngine, DiffusionMetrics};
use blaze_worker::engine::embedding::{EmbeddingConfig, EmbeddingEngine, EmbeddingMetrics};
use blaze_worker::engine::llm::{LlmEngine, SchedulerConfig};
use blaze_worker::engine::{Engine, Health, Served};
use blaze_worker::grpc::GenerateService;
use blaze_worker::grpc::oip::OipService;
use blaze_worker::metrics::Metrics;
use blaze_worker::model::diffusion::{DiffusionModel, MemoryOptions};
use blaze_worker::model::{LoadOptions, LoadedModel};
use blaze_worker::server::{self, AppState};
use blaze_worker::source::{HubOptions, ModelSource};
use candle_core::Device;
use clap::Parser;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // SAFETY: no other thread exists yet; the async runtime starts below.
    #[allow(unsafe_code)]
    unsafe {
        blaze_worker::threads::configure(args.threads);
    }
    tokio::runtime::Builder::new_multi_thread().enable_all().build()?.block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    if let Some(Command::Download(download_args)) = &args.command {
        blaze_telemetry::logs::init(download_args.log_format, "info");
        return download(download_args).await;
    }
    if let Err(message) = blaze_worker::args::validate(&args) {
        eprintln!("error: {message}");
        std::process::exit(2);
    }
    blaze_telemetry::logs::init(args.log_format, "info");
    let tokens = match args.auth_token_dir.as_deref().map(Tokens::open).transpose() {
        Ok(tokens) => tokens,
        Err(message) => {
            eprintln!("error: {message}");
            std::process::exit(2);
        }
    };
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = Metrics::register(&mut registry);
    let cache = blaze_worker::cache::Config {
        memory_bytes: args.response_cache_memory_bytes,
        disk_bytes: args.response_cache_disk_bytes,
        dir: args.response_cache_dir.clone(),
        ttl: Duration::from_secs(args.response_cache_ttl_seconds),
        redis: args.response_cache_redis.clone().map(|address| {
            blaze_worker::cache::redis::Config {
                address,
                password_file: args.response_cache_redis_password_file.clone(),
                timeout: Duration::from_millis(args.response_cache_redis_timeout_ms),
            }
        }),
    };
    let response_cache =
        ResponseCache::open(&cache, &mut registry).context("the response cache")?;
    let embedding_metrics =
        (args.kind == Kind::Embedding).then(|| EmbeddingMetrics::register(&mut registry));
    let diffusion_metrics =
        (args.kind == Kind::Diffusion).then(|| DiffusionMetrics::register(&mut registry));
    let state = AppState {
        kind: args.kind,
        model_name: args.model_name().into(),
        engine: Arc::new(OnceLock::new()),
        draining: Arc::default(),
        registry: Arc::new(registry),
        request_timeout: Duration::from_secs(args.request_timeout_seconds),
        default_max_tokens: args.default_max_tokens,
        model_info: Arc::default(),
        response_cache,
    };
    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_service_status("", ServingStatus::NotServing).await;
    let mut grpc = tonic::service::Routes::new(GenerateService::server(state.clone()))
        .add_service(OipService::server(state.clone()))
        .add_service(health_service)
        .into_axum_router();
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut http = server::router(state.clone());
    if let Some(tokens) = &tokens {
        http = blaze_worker::auth::protect(http, tokens.clone());
        grpc = blaze_worker::auth::protect(grpc, tokens.clone());
        tokio::spawn(tokens.clone().watch());
    }
    let mut servers = Vec::new();
    match &args.grpc_listen {
        Some(addr) if *addr == args.listen => http = http.merge(grpc),
        Some(addr) => servers.push(serve(addr, grpc, stop_rx.clone()).await?),
        None => {}
    }
    servers.push(serve(&args.listen, http, stop_rx).await?);
    let grpc = args.grpc_listen.as_ref().map(ToString::to_string);
    let auth = tokens.is_some();
    tracing::info!(listen = %args.listen, ?grpc, auth, model = %args.model(), "serving; loading the model");

    let own = OwnMetrics { embedding: embedding_metrics, diffusion: diffusion_metrics };
    let loader = tokio::spawn(load(args.clone(), state.clone(), metrics, own, health.clone()));
    tokio::select! {
        loaded = loader => loaded.context("model loader panicked")?.context("loading the model")?,
        () = shutdown_signal() => {
            tracing::info!("signal during load; exiting");
            return Ok(());
        }
    }
    shutdown_signal().await;
    drain(&state, &health, Duration::from_secs(args.grace_period_seconds)).await;
    let _ = stop_tx.send(true);
    for s in servers {
        let _ = s.await;
    }
    tracing::info!("stopped");
    Ok(())
}

/// The metrics of the engine `--kind` names, beside the shared ones.
struct OwnMetrics {
    embedding: Option<EmbeddingMetrics>,
    diffusion: Option<DiffusionMetrics>,
}

async fn load(
    args: Args,
    state: AppState,
    metrics: Metrics,
    own: OwnMetrics,
    health: HealthReporter,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let source = ModelSource::parse(args.model())?;
    let hub = hub_options(args.cache_dir.as_ref());
    let path = blaze_worker::source::resolve(&source, &args.pvc_root, &hub).await?;
    let device = blaze_worker::model::select_device(args.device)?;
    let device_name = blaze_worker::model::device_name(&device);
    tracing::info!(device = %device_name, requested = %args.device, "computing on {device_name}");
    let served = match own {
        OwnMetrics { embedding: Some(own), .. } => {
            load_embedding(&args, path, device, &state, metrics, own).await?
        }
        OwnMetrics { diffusion: Some(own), .. } => {
            load_diffusion(&args, path, device, &state, metrics, own).await?
        }
        _ => Served::Llm(load_llm(&args, path, device, &state, metrics).await?),
    };
    let _ = state.engine.set(served.clone());
    health.set_service_status("", ServingStatus::Serving).await;
    health.set_serving::<GrpcInferenceServiceServer<OipService>>().await;
    match served {
        Served::Llm(_) => health.set_serving::<GenerateServer<GenerateService>>().await,
        Served::Embedding(_) | Served::Diffusion(_) => {
            health.set_not_serving::<GenerateServer<GenerateService>>().await
        }
    }
    tokio::spawn(not_serving_once_failed(served, health));
    tracing::info!(seconds = started.elapsed().as_secs_f64(), name = %args.model_name(), "model ready");
    Ok(())
}

async fn load_llm(
    args: &Args,
    path: PathBuf,
    device: Device,
    state: &AppState,
    metrics: Metrics,
) -> anyhow::Result<Arc<dyn Engine>> {
    let options = LoadOptions {
        weights: args.weights,
        format: args.model_format,
        dtype: args.dtype,
        quantization: args.quantization,
    };
    // On a GPU every kernel launch counts: a decode step's attention is one batched call
    // over slotted caches there, instead of a few per sequence.
    let kv_slots = !device.is_cpu();
    let device_name = blaze_worker::model::device_name(&device);
    let model = tokio::task::spawn_blocking(move || {
        blaze_worker::model::load_with(&path, &device, options)
    })
    .await??;
    let _ = state.model_info.set(serde_json::json!({
        "source": args.model(),
        "weights": args.weights.to_string(),
        "device": device_name,
        "dtype": args.dtype.to_string(),
        "quantization": args.quantization.map(|q| q.to_string()),
    }));
    let model = warm_up(model, kv_slots).await?;
    let config = SchedulerConfig {
        max_batch_size: args.max_batch_size,
        max_queue: args.max_queue,
        max_batch_tokens: args.max_batch_tokens,
        max_wait: Duration::from_millis(args.max_wait_ms),
        stall_timeout: Duration::from_secs(args.stall_timeout_seconds),
        prefix_cache_bytes: args.prefix_cache_bytes,
        kv_slots,
    };
    let engine: Arc<dyn Engine> =
        Arc::new(LlmEngine::start(args.model_name(), model, config, metrics));
    if !args.warm_prompts.is_empty() {
        let warming = Instant::now();
        let tokens = blaze_worker::engine::llm::warm(engine.as_ref(), &args.warm_prompts)
            .await
            .map_err(|e| anyhow::anyhow!("--warm-prompt: {e}"))?;
        let seconds = warming.elapsed().as_secs_f64();
        tracing::info!(prompts = args.warm_prompts.len(), tokens, seconds, "prefix cache warmed");
    }
    Ok(engine)
}

/// Loads an embedding model, embeds one input to warm it up, and starts its engine. The
/// batching flags mean what they say for inputs (--max-batch-size inputs, --max-batch-tokens
/// tokens with padding per forward pass); the caches of text generation are refused at start.
async fn load_embedding(
    args: &Args,
    path: PathBuf,
    device: Device,
    state: &AppState,
    metrics: Metrics,
    own: EmbeddingMetrics,
) -> anyhow::Result<Served> {
    let dtype = blaze_worker::model::resolve_dtype(args.dtype, &device);
    let device_name = blaze_worker::model::device_name(&device);
    let model = tokio::task::spawn_blocking(move || -> blaze_worker::Result<_> {
        let model = blaze_worker::model::embedding::load(&path, &device, dtype)?;
        let took = EmbeddingEngine::warm_up(&model)?;
        tracing::info!(seconds = took.as_secs_f64(), "warm-up forward pass done");
        Ok(model)
    })
    .await
    .map_err(|e| anyhow::anyhow!("loading the embedding model panicked: {e}"))??;
    let sentence = model.sentence();
    let _ = state.model_info.set(serde_json::json!({
        "source": args.model(),
        "kind": "embedding",
        "device": device_name,
        "dtype": args.dtype.to_string(),
        "model_type": model.model_type(),
        "dimensions": model.dimensions(),
        "pooling": format!("{:?}", sentence.pooling).to_lowercase(),
        "normalized": sentence.normalize,
        "matryoshka": sentence.matryoshka,
    }));
    let config = EmbeddingConfig {
        max_batch_size: args.max_batch_size,
        max_batch_tokens: args.max_batch_tokens,
        max_queue: args.max_queue,
        max_wait: Duration::from_millis(args.max_wait_ms),
        stall_timeout: Duration::from_secs(args.stall_timeout_seconds),
    };
    let engine = EmbeddingEngine::start(args.model_name(), model, config, metrics, own);
    Ok(Served::Embedding(Arc::new(engine)))
}

/// Loads a diffusion pipeline with the memory options the flags set, generates one small
/// image to warm it up, and starts its engine. --max-batch-size counts images.
async fn load_diffusion(
    args: &Args,
    path: PathBuf,
    device: Device,
    state: &AppState,
    metrics: Metrics,
    own: DiffusionMetrics,
) -> anyhow::Result<Served> {
    let dtype = blaze_worker::model::resolve_dtype(args.dtype, &device);
    let device_name = blaze_worker::model::device_name(&device);
    let options = MemoryOptions {
        attention_slicing: args.attention_slicing,
        vae_slicing: args.vae_slicing,
        vae_tiling: args.vae_tiling,
        cpu_offload: args.cpu_offload,
    };
    let model = tokio::task::spawn_blocking(move || -> blaze_worker::Result<_> {
        let model = DiffusionModel::load(&path, &device, dtype, options)?;
        let took = DiffusionEngine::warm_up(&model)?;
        tracing::info!(seconds = took.as_secs_f64(), "warm-up image done");
        Ok(model)
    })
    .await
    .map_err(|e| anyhow::anyhow!("loading the diffusion pipeline panicked: {e}"))??;
    let scheduler = model.scheduler();
    let _ = state.model_info.set(serde_json::json!({
        "source": args.model(),
        "kind": "diffusion",
        "device": device_name,
        "dtype": args.dtype.to_string(),
        "pipeline": model.kind().as_str(),
        "scheduler": format!("{:?}", scheduler.method),
        "scheduler_substituted_for": scheduler.substituted,
        "default_guidance_scale": model.default_guidance(),
        "default_size": format!("{}x{}", args.default_width, args.default_height),
        "default_steps": args.default_steps,
        "attention_slicing": options.attention_slicing,
        "vae_slicing": options.vae_slicing,
        "vae_tiling": options.vae_tiling,
        "cpu_offload": options.cpu_offload,
    }));
    let config = DiffusionConfig {
        max_batch_size: args.max_batch_size,
        max_queue: args.max_queue,
        max_wait: Duration::from_millis(args.max_wait_ms),
        stall_timeout: Duration::from_secs(args.stall_timeout_seconds),
        max_side: args.max_image_side,
        max_steps: args.max_steps,
        default_size: (args.default_width, args.default_height),
        default_steps: args.default_steps,
    };
    let engine = DiffusionEngine::start(args.model_name(), model, config, metrics, own);
    Ok(Served::Diffusion(Arc::new(engine)))
}

/// Runs the warm-up forward pass (off the async runtime) before the worker reports ready;
/// a failure fails the load.
async fn warm_up(model: LoadedModel, kv_slots: bool) -> anyhow::Result<LoadedModel> {
    tokio::task::spawn_blocking(move || {
        let took = LlmEngine::warm_up(&model, kv_slots)?;
        tracing::info!(seconds = took.as_secs_f64(), "warm-up forward pass done");
        anyhow::Ok(model)
    })
    .await
    .map_err(|e| anyhow::anyhow!("the warm-up forward pass panicked: {e}"))?
    .context("the warm-up forward pass failed")
}

/// Reports NOT_SERVING over gRPC health once the engine fails (the watchdog tripped), as
/// `/livez` and `/readyz` then answer 503.
async fn not_serving_once_failed(engine: Served, health: HealthReporter) {
    let mut changes = engine.watch_health();
    if changes.wait_for(|h| *h == Health::Failed).await.is_ok() {
        health.set_service_status("", ServingStatus::NotServing).await;
        health.set_not_serving::<GenerateServer<GenerateService>>().await;
        health.set_not_serving::<GrpcInferenceServiceServer<OipService>>().await;
    }
}

/// `blaze-worker download`: fills the hub cache for an `hf://` source and exits.
async fn download(args: &DownloadArgs) -> anyhow::Result<()> {
    let source = ModelSource::parse(&args.model).context("--model")?;
    let ModelSource::Hub { repo, revision, file } = &source else {
        tracing::info!(model = %args.model, "not an hf:// source; nothing to download");
        return Ok(());
    };
    let hub = hub_options(args.cache_dir.as_ref());
    let started = Instant::now();
    match blaze_worker::source::hub::download(repo, revision, file.as_deref(), &hub).await {
        Ok(path) => {
            let seconds = started.elapsed().as_secs_f64();
            tracing::info!(model = %args.model, path = %path.display(), seconds, "model in the cache");
            Ok(())
        }
        Err(e) => {
            tracing::error!(model = %args.model, error = %e, "download failed");
            Err(anyhow::Error::new(e).context(format!("downloading {}", args.model)))
        }
    }
}

fn hub_options(cache_dir: Option<&std::path::PathBuf>) -> HubOptions {
    let mut hub = HubOptions::from_env();
    if let Some(dir) = cache_dir {
        hub.cache_dir = dir.clone();
    }
    hub
}

/// Stops admissions and waits (bounded by `grace`) for in-flight requests to finish.
async fn drain(state: &AppState, health: &HealthReporter, grace: Duration) {
    state.draining.store(true, Ordering::SeqCst);
    health.set_service_status("", ServingStatus::NotServing).await;
    let Some(engine) = state.engine.get() else { return };
    engine.drain();
    let deadline = Instant::now() + grace;
    tracing::info!(in_flight = engine.in_flight(), "draining");
    // A failed engine ended its requests already; none of them will finish.
    while engine.in_flight() > 0 && engine.health() != Health::Failed && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tracing::info!(left = engine.in_flight(), "drained");
}

async fn serve(
    addr: &blaze_worker::args::HostPort,
    app: axum::Router,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let listener = TcpListener::bind((addr.host.as_str(), addr.port))
        .await
        .with_context(|| format!("binding {addr}"))?;
    let addr = addr.to_string();
    Ok(tokio::spawn(async move {
        let shutdown = async move {
            let _ = stop.wait_for(|s| *s).await;
        };
        if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(shutdown).await {
            tracing::error!(error = %e, %addr, "server failed");
        }
    }))
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("installing the SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
