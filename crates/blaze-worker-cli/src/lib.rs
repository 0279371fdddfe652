//! The `blaze-worker` command line, shared by the worker (which parses it) and the operator
//! (which renders it for pods). A setting exists here or nowhere: the operator builds an
//! [`Args`] value and calls [`Args::to_args`], the worker calls `Args::parse`, and the
//! round-trip test below fails if a field is rendered differently from how it is parsed, or
//! not at all. Every flag also reads a `BLAZE_...` environment variable.

mod host_port;
mod progress;
mod values;

use std::path::PathBuf;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

pub use host_port::HostPort;
pub use progress::DownloadProgress;
pub use values::{
    Device, Dtype, Kind, LogFormat, ModelFormat, Quantization, WarmMessage, WarmPrompt, Weights,
};

/// Where `pvc://CLAIM/PATH` sources are found: claims are mounted at `ROOT/CLAIM`.
pub const DEFAULT_PVC_ROOT: &str = "/mnt/models";

/// The port the worker listens on when none is given.
pub const DEFAULT_PORT: u16 = 8080;

/// Blaze's inference worker. Serves the OpenAI-compatible HTTP API, /livez, /readyz and
/// /metrics on --listen, and the gRPC generate service with grpc.health.v1 on --grpc-listen
/// (give both the same address to serve HTTP/1.1, HTTP/2 and gRPC on one port).
///
/// `blaze-worker download --model hf://... --cache-dir DIR` fills the hub cache and exits,
/// so that a worker started later with the same --model and --cache-dir needs no network.
#[derive(Debug, Clone, PartialEq, Parser)]
#[command(name = "blaze-worker", version, subcommand_negates_reqs = true)]
pub struct Args {
    /// Something other than serving.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// The model: hf://org/name[@revision][/file.gguf], pvc://claim/path, file:///path or a
    /// path. A .gguf file (or a folder holding one) or a Hugging Face folder (config.json,
    /// *.safetensors, tokenizer.json).
    #[arg(long, env = "BLAZE_MODEL", required = true)]
    pub model: Option<String>,
    /// The name clients use for the model (default: the source's last path component).
    #[arg(long, env = "BLAZE_SERVED_MODEL_NAME")]
    pub served_model_name: Option<String>,
    /// HTTP address, HOST:PORT (IPv6 hosts in brackets).
    #[arg(long, env = "BLAZE_LISTEN", default_value_t = HostPort::any(DEFAULT_PORT))]
    pub listen: HostPort,
    /// gRPC address; the same as --listen serves gRPC on the HTTP port (HTTP/2).
    #[arg(long, env = "BLAZE_GRPC_LISTEN")]
    pub grpc_listen: Option<HostPort>,
    /// What the model is: `llm` serves completions and chat completions, `embedding`
    /// /v1/embeddings (a BERT-family encoder folder), `diffusion` /v1/images/generations (a
    /// pipeline folder in the diffusers layout).
    #[arg(long, env = "BLAZE_KIND", value_enum, default_value_t = Kind::Llm)]
    pub kind: Kind,
    /// The checkpoint format the model must be in; the worker refuses to start when the
    /// source holds another. Unset: whatever the source holds (a .gguf file, or a folder with
    /// one, is GGUF; otherwise safetensors).
    #[arg(long, env = "BLAZE_MODEL_FORMAT", value_enum)]
    pub model_format: Option<ModelFormat>,
    /// Numeric type of safetensors weights in memory (`auto`: f32 on CPU, bf16 on a GPU).
    /// f16 and bf16 halve the weights' memory; on a GPU bf16 weights compute in bf16 unless
    /// quantized, everything else in f32. GGUF files
    /// take `auto` only (their blocks are held as --weights says).
    #[arg(long, env = "BLAZE_DTYPE", value_enum, default_value_t = Dtype::Auto)]
    pub dtype: Dtype,
    /// Quantize safetensors projection weights at load: `q8_0` (8.5 bits per weight) or
    /// `q4k` (4.5 bits). Not for GGUF files, which are quantized already.
    #[arg(long, env = "BLAZE_QUANTIZATION", value_enum)]
    pub quantization: Option<Quantization>,
    /// Where to compute: `cuda` (the first GPU; start fails without one), `cpu`, or `auto`
    /// (a GPU when this build has CUDA and one is there).
    #[arg(long, env = "BLAZE_DEVICE", value_enum, default_value_t = Device::Auto)]
    pub device: Device,
    /// Where pvc:// claims are mounted.
    #[arg(long, env = "BLAZE_PVC_ROOT", default_value = DEFAULT_PVC_ROOT)]
    pub pvc_root: PathBuf,
    /// Hub cache folder for hf:// sources (default: HF_HUB_CACHE, $HF_HOME/hub, ~/.cache/huggingface/hub).
    #[arg(long, env = "BLAZE_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,
    /// How quantized GGUF weights are held: `stored`, `q8_0` (re-quantize types candle has
    /// only scalar CPU kernels for), `f32`, `dual` (q8_0 for small decode steps, f32 for
    /// prefill and batches of 8 or more), or `auto` (what decodes fastest: on CPU `dual`
    /// while the f32 copies stay under 2 GiB, else `q8_0`; on a GPU `stored`).
    #[arg(long, env = "BLAZE_WEIGHTS", value_enum, default_value_t = Weights::Auto)]
    pub weights: Weights,
    /// Threads candle computes with (default: the CPUs this process may use; explicit
    /// CANDLE_NUM_THREADS / RAYON_NUM_THREADS are kept then). Fewer than the CPUs that are
    /// really free makes decoding slower; more than that makes it much slower (candle's
    /// quantized kernels spin on a barrier), so on a busy shared node give fewer.
    #[arg(long, env = "BLAZE_THREADS")]
    pub threads: Option<usize>,
    /// Most sequences decoded together (--kind embedding: most inputs in one forward pass).
    #[arg(long, env = "BLAZE_MAX_BATCH_SIZE", default_value_t = 16)]
    pub max_batch_size: usize,
    /// Longest time, in milliseconds, an idle scheduler holds a first request so that others
    /// arriving meanwhile are prefilled (or embedded) in the same pass (0: start at once).
    #[arg(long, env = "BLAZE_MAX_WAIT_MS", default_value_t = 5)]
    pub max_wait_ms: u64,
    /// Most prompt tokens prefilled between two decode steps (bounds the stall running
    /// sequences see when new ones arrive): a longer prompt is prefilled in chunks, one per
    /// step, and a short prompt arriving behind it passes it. --kind embedding: most tokens in
    /// one forward pass, padding included (inputs of similar length are batched together).
    #[arg(long, env = "BLAZE_MAX_BATCH_TOKENS", default_value_t = 2048)]
    pub max_batch_tokens: usize,
    /// Most requests waiting for a slot; more get 429 at once.
    #[arg(long, env = "BLAZE_MAX_QUEUE", default_value_t = 64)]
    pub max_queue: usize,
    /// max_tokens for requests that give none.
    #[arg(long, env = "BLAZE_DEFAULT_MAX_TOKENS", default_value_t = 256)]
    pub default_max_tokens: usize,
    /// A request's deadline, in seconds.
    #[arg(long, env = "BLAZE_REQUEST_TIMEOUT_SECONDS", default_value_t = 600)]
    pub request_timeout_seconds: u64,
    /// On SIGTERM, how long in-flight requests get to finish.
    #[arg(long, env = "BLAZE_GRACE_PERIOD_SECONDS", default_value_t = 30)]
    pub grace_period_seconds: u64,
    /// Seconds the scheduler may go without progress while requests are queued or running
    /// before the worker declares itself failed: /livez and /readyz answer 503, gRPC
    /// health says NOT_SERVING, requests in flight end with a retriable error (HTTP 503,
    /// gRPC UNAVAILABLE), so the kubelet restarts the container. The longest step, one
    /// prefill of --max-batch-tokens (or of a single prompt longer than that), must fit with
    /// room to spare: a timeout it exceeds fails a healthy worker, and the retried request
    /// then fails the next one. On the shared 2-core development machine (release build)
    /// SmolLM2-135M prefilled 512 tokens in 1.6 s, 2048 (the default --max-batch-tokens) in
    /// 17 s, and its whole 8192-token context in about 400 s; a model ten times larger takes
    /// about ten times longer, a GPU well under a second. The default leaves room for a
    /// 2048-token prefill of models up to a few hundred million parameters on a small CPU;
    /// raise it for larger models or long prompts on CPU.
    #[arg(long, env = "BLAZE_STALL_TIMEOUT_SECONDS", default_value_t = 120)]
    pub stall_timeout_seconds: u64,
    /// Bytes of memory for answers to deterministic requests (greedy, or with a seed), kept
    /// to answer the same request again without the model (0: off).
    #[arg(long, env = "BLAZE_RESPONSE_CACHE_MEMORY_BYTES", default_value_t = 0)]
    pub response_cache_memory_bytes: u64,
    /// Bytes of disk for such answers, in --response-cache-dir; they outlive a restart of
    /// the worker (0: off).
    #[arg(long, env = "BLAZE_RESPONSE_CACHE_DISK_BYTES", default_value_t = 0)]
    pub response_cache_disk_bytes: u64,
    /// Folder of the disk response cache (needed with --response-cache-disk-bytes).
    #[arg(long, env = "BLAZE_RESPONSE_CACHE_DIR")]
    pub response_cache_dir: Option<PathBuf>,
    /// Seconds a cached answer stays valid.
    #[arg(long, env = "BLAZE_RESPONSE_CACHE_TTL_SECONDS", default_value_t = 300)]
    pub response_cache_ttl_seconds: u64,
    /// Redis (HOST:PORT) shared by the engine's workers as a third cache level.
    #[arg(long, env = "BLAZE_RESPONSE_CACHE_REDIS")]
    pub response_cache_redis: Option<String>,
    /// A file holding the Redis password (a mounted Secret; read at each new connection).
    #[arg(long, env = "BLAZE_RESPONSE_CACHE_REDIS_PASSWORD_FILE")]
    pub response_cache_redis_password_file: Option<PathBuf>,
    /// Longest a Redis command may take, connecting included, in milliseconds; a slower or
    /// failed one is a miss, and Redis is left alone for a second.
    #[arg(long, env = "BLAZE_RESPONSE_CACHE_REDIS_TIMEOUT_MS", default_value_t = 50)]
    pub response_cache_redis_timeout_ms: u64,
    /// Bytes of memory for the keys and values of recent prompts, kept in blocks of
    /// tokens so that a request sharing a prefix with an earlier one skips prefilling it
    /// (0: off). Least recently used blocks are evicted first, the ends of prompts before
    /// their beginnings.
    #[arg(long, env = "BLAZE_PREFIX_CACHE_BYTES", default_value_t = 0)]
    pub prefix_cache_bytes: u64,
    /// A prompt prefilled into the prefix cache before the worker reports ready, as JSON:
    /// `{"prompt": "..."}` or `{"messages": [{"role": "system", "content": "..."}]}`.
    /// Repeat the flag for several.
    #[arg(long = "warm-prompt", env = "BLAZE_WARM_PROMPT")]
    pub warm_prompts: Vec<WarmPrompt>,
    /// --kind diffusion: compute attention for half of a block's heads at a time (less
    /// memory for large images, somewhat slower).
    #[arg(long, env = "BLAZE_ATTENTION_SLICING")]
    pub attention_slicing: bool,
    /// --kind diffusion: decode a batch's images one at a time.
    #[arg(long, env = "BLAZE_VAE_SLICING")]
    pub vae_slicing: bool,
    /// --kind diffusion: decode images larger than the autoencoder was trained at in
    /// overlapping tiles, blended where they meet.
    #[arg(long, env = "BLAZE_VAE_TILING")]
    pub vae_tiling: bool,
    /// --kind diffusion: keep each component (text encoders, UNet, autoencoder) on the
    /// device only while it runs, built from its weight files each time.
    #[arg(long, env = "BLAZE_CPU_OFFLOAD")]
    pub cpu_offload: bool,
    /// --kind diffusion: image width when a request gives no size.
    #[arg(long, env = "BLAZE_DEFAULT_WIDTH", default_value_t = 512)]
    pub default_width: usize,
    /// --kind diffusion: image height when a request gives no size.
    #[arg(long, env = "BLAZE_DEFAULT_HEIGHT", default_value_t = 512)]
    pub default_height: usize,
    /// --kind diffusion: denoising steps when a request gives none.
    #[arg(long, env = "BLAZE_DEFAULT_STEPS", default_value_t = 30)]
    pub default_steps: usize,
    /// --kind diffusion: the largest width or height a request may ask for.
    #[arg(long, env = "BLAZE_MAX_IMAGE_SIDE", default_value_t = 2048)]
    pub max_image_side: usize,
    /// --kind diffusion: the most denoising steps a request may ask for.
    #[arg(long, env = "BLAZE_MAX_STEPS", default_value_t = 150)]
    pub max_steps: usize,
    /// A folder of bearer tokens (a mounted Secret: one token per file; names starting with a
    /// dot, such as the kubelet's `..data`, are skipped). With it, every inference route
    /// (HTTP `/v1/...` and `/v2/...`, and the gRPC services) needs `Authorization: Bearer
    /// TOKEN` with one of the tokens, and answers 401 (gRPC UNAUTHENTICATED) otherwise;
    /// `/livez`, `/readyz`, `/metrics` and gRPC health stay open. The folder is read again
    /// every second, so a rotated Secret takes effect without a restart; to rotate without
    /// refusing anyone, add the new token beside the old one first. The start fails when the
    /// folder holds no token.
    #[arg(long, env = "BLAZE_AUTH_TOKEN_DIR")]
    pub auth_token_dir: Option<PathBuf>,
    /// Log format.
    #[arg(long, env = "BLAZE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// Subcommands.
#[derive(Debug, Clone, PartialEq, Subcommand)]
pub enum Command {
    /// Download an hf:// model into the hub cache and exit.
    ///
    /// Exits 0 once every file is in place (at once, without network, when the cache
    /// already is complete), non-zero with a message naming the repository and file
    /// otherwise. Files land under a temporary name
    /// and are renamed when complete; an interrupted download resumes. Reads HF_ENDPOINT
    /// and HF_TOKEN.
    Download(DownloadArgs),
}

/// `blaze-worker download`.
#[derive(Debug, Clone, PartialEq, clap::Args)]
pub struct DownloadArgs {
    /// The model: hf://org/name[@revision][/file]. Other sources need no download.
    #[arg(long, env = "BLAZE_MODEL")]
    pub model: String,
    /// Hub cache folder (default: HF_HUB_CACHE, $HF_HOME/hub, ~/.cache/huggingface/hub).
    #[arg(long, env = "BLAZE_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Log format.
    #[arg(long, env = "BLAZE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// The name of the download subcommand.
pub const DOWNLOAD_SUBCOMMAND: &str = "download";

impl Args {
    /// Serving arguments for `model` with every other setting at its default (the
    /// defaults written on the flags; `BLAZE_...` variables of the calling process are not
    /// read).
    pub fn serve(model: impl Into<String>) -> Self {
        let command = Self::command().mut_args(|a| a.env(None::<&str>));
        let matches = command.get_matches_from(["blaze-worker", "--model", "x"]);
        let mut args = Self::from_arg_matches(&matches).expect("the defaults parse");
        args.model = Some(model.into());
        args
    }

    /// The model source (clap makes --model required when serving).
    pub fn model(&self) -> &str {
        self.model.as_deref().unwrap_or_default()
    }

    /// The command line (without the program name) that parses back to `self`. Every
    /// setting is written out, defaults included, so that what a pod runs is what its spec
    /// asked for even if a later worker changes a default.
    pub fn to_args(&self) -> Vec<String> {
        if let Some(Command::Download(d)) = &self.command {
            return d.to_args();
        }
        let mut a = Render::default();
        a.opt("--model", self.model.as_ref());
        a.opt("--served-model-name", self.served_model_name.as_ref());
        a.kv("--listen", &self.listen);
        a.opt("--grpc-listen", self.grpc_listen.as_ref());
        a.kv("--kind", self.kind);
        a.opt("--model-format", self.model_format.as_ref());
        a.kv("--dtype", self.dtype);
        a.opt("--quantization", self.quantization.as_ref());
        a.kv("--device", self.device);
        a.kv("--pvc-root", self.pvc_root.display());
        a.opt("--cache-dir", self.cache_dir.as_ref().map(|p| p.display()));
        a.kv("--weights", self.weights);
        a.opt("--threads", self.threads.as_ref());
        a.kv("--max-batch-size", self.max_batch_size);
        a.kv("--max-wait-ms", self.max_wait_ms);
        a.kv("--max-batch-tokens", self.max_batch_tokens);
        a.kv("--max-queue", self.max_queue);
        a.kv("--default-max-tokens", self.default_max_tokens);
        a.kv("--request-timeout-seconds", self.request_timeout_seconds);
        a.kv("--grace-period-seconds", self.grace_period_seconds);
        a.kv("--stall-timeout-seconds", self.stall_timeout_seconds);
        a.kv("--response-cache-memory-bytes", self.response_cache_memory_bytes);
        a.kv("--response-cache-disk-bytes", self.response_cache_disk_bytes);
        a.opt("--response-cache-dir", self.response_cache_dir.as_ref().map(|p| p.display()));
        a.kv("--response-cache-ttl-seconds", self.response_cache_ttl_seconds);
        a.opt("--response-cache-redis", self.response_cache_redis.as_ref());
        let password = self.response_cache_redis_password_file.as_ref();
        a.opt("--response-cache-redis-password-file", password.map(|p| p.display()));
        a.kv("--response-cache-redis-timeout-ms", self.response_cache_redis_timeout_ms);
        a.kv("--prefix-cache-bytes", self.prefix_cache_bytes);
        for warm in &self.warm_prompts {
            a.kv("--warm-prompt", warm);
        }
        a.flag("--attention-slicing", self.attention_slicing);
        a.flag("--vae-slicing", self.vae_slicing);
        a.flag("--vae-tiling", self.vae_tiling);
        a.flag("--cpu-offload", self.cpu_offload);
        a.kv("--default-width", self.default_width);
        a.kv("--default-height", self.default_height);
        a.kv("--default-steps", self.default_steps);
        a.kv("--max-image-side", self.max_image_side);
        a.kv("--max-steps", self.max_steps);
        a.opt("--auth-token-dir", self.auth_token_dir.as_ref().map(|p| p.display()));
        a.kv("--log-format", self.log_format);
        a.0
    }

    /// Checks what clap cannot; the message names the flag.
    pub fn validate(&self) -> Result<(), String> {
        let at_least_one = [
            ("--threads", self.threads.unwrap_or(1)),
            ("--max-batch-size", self.max_batch_size),
            ("--max-queue", self.max_queue),
            ("--max-batch-tokens", self.max_batch_tokens),
            ("--default-max-tokens", self.default_max_tokens),
            ("--stall-timeout-seconds", self.stall_timeout_seconds as usize),
            ("--response-cache-ttl-seconds", self.response_cache_ttl_seconds as usize),
            ("--response-cache-redis-timeout-ms", self.response_cache_redis_timeout_ms as usize),
            ("--default-steps", self.default_steps),
            ("--max-steps", self.max_steps),
        ];
        if let Some((flag, _)) = at_least_one.iter().find(|(_, v)| *v == 0) {
            return Err(format!("{flag} must be at least 1"));
        }
        if self.default_steps > self.max_steps {
            return Err(format!(
                "--default-steps {} is more than --max-steps {}",
                self.default_steps, self.max_steps
            ));
        }
        for (flag, side) in
            [("--default-width", self.default_width), ("--default-height", self.default_height)]
        {
            if side < 64 || side > self.max_image_side || side % 8 != 0 {
                return Err(format!(
                    "{flag} {side}: a multiple of 8 from 64 to --max-image-side ({})",
                    self.max_image_side
                ));
            }
        }
        if !self.warm_prompts.is_empty() && self.prefix_cache_bytes == 0 {
            return Err("--warm-prompt needs --prefix-cache-bytes".to_owned());
        }
        if self.response_cache_disk_bytes > 0 && self.response_cache_dir.is_none() {
            return Err("--response-cache-disk-bytes needs --response-cache-dir".to_owned());
        }
        if self.model_format == Some(ModelFormat::Gguf) {
            if self.dtype != Dtype::Auto {
                return Err(format!(
                    "--dtype {}: GGUF weights are held as --weights says; use --dtype auto",
                    self.dtype
                ));
            }
            if let Some(q) = self.quantization {
                return Err(format!(
                    "--quantization {q}: GGUF files are quantized already; use --weights to \
                     re-quantize their blocks"
                ));
            }
        }
        if let (Some(q), Dtype::F16 | Dtype::Bf16) = (self.quantization, self.dtype) {
            return Err(format!(
                "--quantization {q} with --dtype {}: quantized weights are multiplied in f32; \
                 use --dtype auto or f32",
                self.dtype
            ));
        }
        Ok(())
    }

    /// The served model name.
    pub fn model_name(&self) -> String {
        self.served_model_name.clone().unwrap_or_else(|| {
            let trimmed = self.model().trim_end_matches('/');
            let last = trimmed.rsplit('/').next().unwrap_or(trimmed);
            last.split('@').next().unwrap_or(last).to_string()
        })
    }
}

impl DownloadArgs {
    /// The command line (subcommand first, without the program name) that parses back to
    /// `Args { command: Some(Command::Download(self)), .. }`.
    pub fn to_args(&self) -> Vec<String> {
        let mut a = Render(vec![DOWNLOAD_SUBCOMMAND.to_owned()]);
        a.kv("--model", &self.model);
        a.opt("--cache-dir", self.cache_dir.as_ref().map(|p| p.display()));
        a.kv("--log-format", self.log_format);
        a.0
    }
}

#[derive(Default)]
struct Render(Vec<String>);

impl Render {
    fn kv(&mut self, flag: &str, value: impl std::fmt::Display) {
        self.0.push(flag.to_owned());
        self.0.push(value.to_string());
    }

    fn flag(&mut self, flag: &str, on: bool) {
        if on {
            self.0.push(flag.to_owned());
        }
    }

    fn opt(&mut self, flag: &str, value: Option<impl std::fmt::Display>) {
        if let Some(v) = value {
            self.kv(flag, v);
        }
    }
}

#[cfg(test)]
mod tests;
