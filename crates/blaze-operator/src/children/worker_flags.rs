//! The `blaze-worker` command line for an engine, built as the worker's own typed
//! [`blaze_worker_cli::Args`] and rendered by it: a setting the worker does not read cannot
//! be passed, and every field of the spec that reaches the worker does so here.
//!
//! Spec fields that never reach the worker: `replicas`, `autoscaling`, `scheduling`,
//! `recovery`, `image` and `podTemplate` (the operator acts on them), `resources` (the pod's
//! requests; `gpus` also picks `--device`). `diffusion` reaches the worker for kind
//! `diffusion` only (the API refuses it on other kinds). The caches' bytes in memory (`cache.memoryBytes`,
//! `cache.prefixCacheBytes`) count within `resources.memory` and add nothing to the pod's
//! requests: the memory given is the memory the container may use, caches included.

use blaze_api::engine::{BlazeEngineSpec, EngineKind};
use blaze_worker_cli as cli;

/// The port the worker serves HTTP and gRPC on (one port: HTTP/1.1, HTTP/2 and gRPC).
pub const WORKER_PORT: i32 = 8000;
/// Where the worker keeps cached answers on disk (`spec.cache.diskBytes`).
pub const RESPONSE_CACHE_MOUNT: &str = "/var/cache/blaze/responses";
/// Where the Redis password Secret is mounted (`spec.cache.redis.passwordSecret`).
pub const REDIS_PASSWORD_MOUNT: &str = "/var/run/secrets/blaze/redis";
/// The file in it that holds the password.
pub const REDIS_PASSWORD_FILE: &str = "password";

/// The worker's arguments for `spec`, with `model` the source as the pod sees it and
/// `hf_cache` the hub cache directory when the source is `hf://`.
/// `listen_host` is the host part of `--listen` (see [`super::Defaults::listen_host`]).
pub fn worker_args(
    spec: &BlazeEngineSpec,
    model: &str,
    hf_cache: Option<&str>,
    listen_host: &str,
) -> Vec<String> {
    worker_command(spec, model, hf_cache, listen_host).to_args()
}

/// [`worker_args`] before rendering.
pub fn worker_command(
    spec: &BlazeEngineSpec,
    model: &str,
    hf_cache: Option<&str>,
    listen_host: &str,
) -> cli::Args {
    let mut a = cli::Args::serve(model);
    a.cache_dir = hf_cache.map(Into::into);
    let listen = cli::HostPort::new(listen_host, WORKER_PORT as u16);
    a.grpc_listen = Some(listen.clone());
    a.listen = listen;
    a.kind = kind(spec.kind);
    a.model_format = Some(spec.model.effective_format());
    a.dtype = spec.model.dtype;
    a.quantization = spec.model.quantization;
    a.device = if spec.resources.gpus > 0 { cli::Device::Cuda } else { cli::Device::Cpu };
    a.threads = cpu_threads(spec);
    let b = &spec.batching;
    // The schema bounds these (all at least 0, or 1 where 0 means nothing).
    a.max_batch_size = b.max_batch_size.max(1) as usize;
    a.max_wait_ms = b.max_wait_ms.max(0) as u64;
    a.max_batch_tokens = b.max_batch_tokens.max(1) as usize;
    a.max_queue = b.max_queue.max(1) as usize;
    let c = &spec.cache;
    a.response_cache_memory_bytes = c.memory_bytes.max(0) as u64;
    a.response_cache_disk_bytes = c.disk_bytes.max(0) as u64;
    a.response_cache_dir = (c.disk_bytes > 0).then(|| RESPONSE_CACHE_MOUNT.into());
    a.response_cache_ttl_seconds = c.ttl_seconds.max(1) as u64;
    if let Some(r) = &c.redis {
        a.response_cache_redis = Some(r.address.clone());
        a.response_cache_redis_timeout_ms = r.timeout_ms.max(1) as u64;
        a.response_cache_redis_password_file = r
            .password_secret
            .as_ref()
            .map(|_| format!("{REDIS_PASSWORD_MOUNT}/{REDIS_PASSWORD_FILE}").into());
    }
    // `prefixCacheBytes` has a schema default, so it only counts when the cache is on; warm
    // prompts without it are refused at admission (and by the worker).
    a.prefix_cache_bytes = if c.prefix_cache { c.prefix_cache_bytes.max(0) as u64 } else { 0 };
    a.warm_prompts = if c.prefix_cache { c.warm.clone() } else { Vec::new() };
    if spec.kind == EngineKind::Diffusion {
        let d = spec.diffusion.clone().unwrap_or_default();
        a.attention_slicing = d.attention_slicing;
        a.vae_slicing = d.vae_slicing;
        a.vae_tiling = d.vae_tiling;
        a.cpu_offload = d.cpu_offload;
        // The schema bounds these (sides from 64, steps from 1).
        a.default_width = d.width.max(64) as usize;
        a.default_height = d.height.max(64) as usize;
        a.default_steps = d.steps.max(1) as usize;
        a.max_image_side = d.max_image_side.max(64) as usize;
        a.max_steps = d.max_steps.max(1) as usize;
    }
    a.log_format = cli::LogFormat::Json;
    a
}

/// The init container's arguments that download the `hf://` source `model` (revision
/// included) into `cache_dir`.
pub fn download_args(model: &str, cache_dir: &str) -> Vec<String> {
    cli::DownloadArgs {
        model: model.to_owned(),
        cache_dir: Some(cache_dir.into()),
        log_format: cli::LogFormat::Json,
    }
    .to_args()
}

/// Threads for a CPU-only worker: its CPU request rounded up, at least 1. More threads than
/// the CPUs it really gets makes candle's kernels wait on descheduled threads.
fn cpu_threads(spec: &BlazeEngineSpec) -> Option<usize> {
    if spec.resources.gpus > 0 {
        return None;
    }
    let q = spec.resources.cpu.as_ref()?.0.trim().to_owned();
    let millis = match q.strip_suffix('m') {
        Some(m) => m.parse::<f64>().ok()?,
        None => q.parse::<f64>().ok()? * 1000.0,
    };
    Some(((millis / 1000.0).ceil() as usize).max(1))
}

fn kind(k: EngineKind) -> cli::Kind {
    match k {
        EngineKind::Llm => cli::Kind::Llm,
        EngineKind::Embedding => cli::Kind::Embedding,
        EngineKind::Diffusion => cli::Kind::Diffusion,
    }
}

#[cfg(test)]
mod tests;
