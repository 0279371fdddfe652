//! The `blaze-worker` command line as the operator writes it: every flag in one place, so it
//! can be checked against the worker's `--help` in one look. DESIGN.md's contract is
//! `blaze-worker --model SOURCE --listen ADDR:PORT [--grpc-listen ADDR:PORT] [--kind KIND]`;
//! the rest follow the spec's field names.

use blaze_api::engine::{BlazeEngineSpec, Dtype, EngineKind, ModelFormat};

/// The port the worker serves HTTP (and gRPC, on the same port) on.
pub const WORKER_PORT: i32 = 8000;

/// Flag names.
pub mod flag {
    /// Model source as the worker can open it (after the operator mapped `pvc://`).
    pub const MODEL: &str = "--model";
    /// Directory of the hub download cache.
    pub const CACHE_DIR: &str = "--cache-dir";
    /// `ADDR:PORT` for HTTP (and gRPC, which shares the port).
    pub const LISTEN: &str = "--listen";
    /// `llm`, `embedding` or `diffusion`.
    pub const KIND: &str = "--kind";
    /// `safetensors` or `gguf`.
    pub const MODEL_FORMAT: &str = "--model-format";
    /// `auto`, `f32`, `f16` or `bf16`.
    pub const DTYPE: &str = "--dtype";
    /// In-situ quantization scheme.
    pub const QUANTIZATION: &str = "--quantization";
    /// `cpu` or `cuda`.
    pub const DEVICE: &str = "--device";
    /// Batching.
    pub const MAX_BATCH_SIZE: &str = "--max-batch-size";
    /// Batching.
    pub const MAX_WAIT_MS: &str = "--max-wait-ms";
    /// Batching.
    pub const MAX_BATCH_TOKENS: &str = "--max-batch-tokens";
    /// Admission queue bound.
    pub const MAX_QUEUE: &str = "--max-queue";
    /// Response cache in memory, bytes.
    pub const RESPONSE_CACHE_MEMORY_BYTES: &str = "--response-cache-memory-bytes";
    /// Response cache on disk, bytes.
    pub const RESPONSE_CACHE_DISK_BYTES: &str = "--response-cache-disk-bytes";
    /// Directory of the on-disk response cache.
    pub const RESPONSE_CACHE_DIR: &str = "--response-cache-dir";
    /// Response cache entry lifetime.
    pub const RESPONSE_CACHE_TTL_SECONDS: &str = "--response-cache-ttl-seconds";
    /// `true` or `false` (given as `--prefix-cache=VALUE`).
    pub const PREFIX_CACHE: &str = "--prefix-cache";
    /// Diffusion memory savers (present = on).
    pub const ATTENTION_SLICING: &str = "--attention-slicing";
    /// Diffusion memory savers (present = on).
    pub const VAE_SLICING: &str = "--vae-slicing";
    /// Diffusion memory savers (present = on).
    pub const CPU_OFFLOAD: &str = "--cpu-offload";
    /// Diffusion defaults.
    pub const IMAGE_WIDTH: &str = "--image-width";
    /// Diffusion defaults.
    pub const IMAGE_HEIGHT: &str = "--image-height";
    /// Diffusion defaults.
    pub const STEPS: &str = "--steps";
    /// `text` or `json`.
    pub const LOG_FORMAT: &str = "--log-format";
}

/// The flags today's `blaze-worker` accepts on its command line. Every other setting goes in
/// the environment as `BLAZE_<FLAG>` (DESIGN.md: every flag also reads `BLAZE_...`), which a
/// worker without that flag ignores instead of refusing to start, and which a worker that
/// gains the flag picks up unchanged. Add a flag here once the worker has it.
pub const WORKER_ACCEPTS: &[&str] = &[
    flag::MODEL,
    flag::CACHE_DIR,
    flag::LISTEN,
    flag::KIND,
    flag::MAX_BATCH_SIZE,
    flag::MAX_BATCH_TOKENS,
    flag::MAX_QUEUE,
    flag::LOG_FORMAT,
];

/// The environment variable a flag reads (`--max-wait-ms` is `BLAZE_MAX_WAIT_MS`).
pub fn env_name(flag: &str) -> String {
    format!("BLAZE_{}", flag.trim_start_matches('-').replace('-', "_").to_ascii_uppercase())
}

/// Splits `args` into what stays on the command line (flags in [`WORKER_ACCEPTS`], and a
/// leading subcommand) and `(NAME, VALUE)` environment variables for the rest; a flag without
/// a value becomes `true`.
pub fn split_for_worker(args: &[String]) -> (Vec<String>, Vec<(String, String)>) {
    let (mut keep, mut env) = (Vec::new(), Vec::new());
    let mut i = 0;
    while i < args.len() {
        let a = &args[i];
        if !a.starts_with("--") {
            keep.push(a.clone());
            i += 1;
            continue;
        }
        let (flag, value, used) = match a.split_once('=') {
            Some((f, v)) => (f.to_owned(), v.to_owned(), 1),
            None => match args.get(i + 1).filter(|v| !v.starts_with("--")) {
                Some(v) => (a.clone(), v.clone(), 2),
                None => (a.clone(), "true".to_owned(), 1),
            },
        };
        if WORKER_ACCEPTS.contains(&flag.as_str()) {
            keep.extend(args[i..i + used].iter().cloned());
        } else {
            env.push((env_name(&flag), value));
        }
        i += used;
    }
    (keep, env)
}

/// The worker subcommand the init container runs to fill the hub cache.
pub const DOWNLOAD_SUBCOMMAND: &str = "download";

/// Where the on-disk response cache lives in the pod.
pub const RESPONSE_CACHE_MOUNT: &str = "/var/cache/blaze/responses";

/// The worker's arguments for `spec`, with `model` the source as the pod sees it and
/// `hf_cache` the hub cache directory when the source is `hf://`.
/// `listen_host` is the host part of `--listen` (see [`super::Defaults::listen_host`]).
pub fn worker_args(
    spec: &BlazeEngineSpec,
    model: &str,
    hf_cache: Option<&str>,
    listen_host: &str,
) -> Vec<String> {
    let mut a = Args::default();
    a.kv(flag::MODEL, model);
    if let Some(dir) = hf_cache {
        a.kv(flag::CACHE_DIR, dir);
    }
    a.kv(flag::LISTEN, format!("{listen_host}:{WORKER_PORT}"));
    a.kv(flag::KIND, kind_str(spec.kind));
    a.kv(flag::MODEL_FORMAT, format_str(spec.model.effective_format()));
    a.kv(flag::DTYPE, dtype_str(spec.model.dtype));
    if let Some(q) = &spec.model.quantization {
        a.kv(flag::QUANTIZATION, q);
    }
    a.kv(flag::DEVICE, if spec.resources.gpus > 0 { "cuda" } else { "cpu" });
    let b = &spec.batching;
    a.kv(flag::MAX_BATCH_SIZE, b.max_batch_size);
    a.kv(flag::MAX_WAIT_MS, b.max_wait_ms);
    a.kv(flag::MAX_BATCH_TOKENS, b.max_batch_tokens);
    a.kv(flag::MAX_QUEUE, b.max_queue);
    cache_args(&mut a, spec);
    diffusion_args(&mut a, spec);
    a.kv(flag::LOG_FORMAT, "json");
    a.0
}

/// The init container's arguments that download the `hf://` source `model` (revision
/// included) into `cache_dir`.
pub fn download_args(model: &str, cache_dir: &str) -> Vec<String> {
    let mut a = Args::default();
    a.0.push(DOWNLOAD_SUBCOMMAND.to_owned());
    a.kv(flag::MODEL, model);
    a.kv(flag::CACHE_DIR, cache_dir);
    a.kv(flag::LOG_FORMAT, "json");
    a.0
}

fn cache_args(a: &mut Args, spec: &BlazeEngineSpec) {
    let c = &spec.cache;
    if c.memory_bytes > 0 {
        a.kv(flag::RESPONSE_CACHE_MEMORY_BYTES, c.memory_bytes);
    }
    if c.disk_bytes > 0 {
        a.kv(flag::RESPONSE_CACHE_DISK_BYTES, c.disk_bytes);
        a.kv(flag::RESPONSE_CACHE_DIR, RESPONSE_CACHE_MOUNT);
    }
    if c.memory_bytes > 0 || c.disk_bytes > 0 {
        a.kv(flag::RESPONSE_CACHE_TTL_SECONDS, c.ttl_seconds);
    }
    a.0.push(format!("{}={}", flag::PREFIX_CACHE, c.prefix_cache));
}

fn diffusion_args(a: &mut Args, spec: &BlazeEngineSpec) {
    let Some(d) = &spec.diffusion else { return };
    for (on, f) in [
        (d.attention_slicing, flag::ATTENTION_SLICING),
        (d.vae_slicing, flag::VAE_SLICING),
        (d.cpu_offload, flag::CPU_OFFLOAD),
    ] {
        if on {
            a.0.push(f.to_owned());
        }
    }
    a.kv(flag::IMAGE_WIDTH, d.width);
    a.kv(flag::IMAGE_HEIGHT, d.height);
    a.kv(flag::STEPS, d.steps);
}

#[derive(Default)]
struct Args(Vec<String>);

impl Args {
    fn kv(&mut self, flag: &str, value: impl ToString) {
        self.0.push(flag.to_owned());
        self.0.push(value.to_string());
    }
}

/// The spelling of an engine kind on the command line.
pub fn kind_str(k: EngineKind) -> &'static str {
    match k {
        EngineKind::Llm => "llm",
        EngineKind::Embedding => "embedding",
        EngineKind::Diffusion => "diffusion",
    }
}

fn format_str(f: ModelFormat) -> &'static str {
    match f {
        ModelFormat::Safetensors => "safetensors",
        ModelFormat::Gguf => "gguf",
    }
}

fn dtype_str(d: Dtype) -> &'static str {
    match d {
        Dtype::Auto => "auto",
        Dtype::F32 => "f32",
        Dtype::F16 => "f16",
        Dtype::Bf16 => "bf16",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn flags_the_worker_lacks_move_to_its_environment() {
        let args = strings(&[
            "download",
            "--model",
            "hf://a/b@main",
            "--dtype",
            "bf16",
            "--prefix-cache=false",
            "--attention-slicing",
            "--max-queue",
            "8",
        ]);
        let (keep, env) = split_for_worker(&args);
        assert_eq!(keep, strings(&["download", "--model", "hf://a/b@main", "--max-queue", "8"]));
        assert_eq!(
            env,
            vec![
                ("BLAZE_DTYPE".to_owned(), "bf16".to_owned()),
                ("BLAZE_PREFIX_CACHE".to_owned(), "false".to_owned()),
                ("BLAZE_ATTENTION_SLICING".to_owned(), "true".to_owned()),
            ]
        );
        assert_eq!(env_name(flag::MAX_WAIT_MS), "BLAZE_MAX_WAIT_MS");
    }
}
