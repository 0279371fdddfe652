//! The worker's command line. Every flag also reads a `BLAZE_...` environment variable.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

/// What kind of model the worker serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Kind {
    /// Text generation (OpenAI completions and chat completions).
    Llm,
    /// Embeddings (not served by this build yet).
    Embedding,
    /// Image generation (not served by this build yet).
    Diffusion,
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable.
    Text,
    /// One JSON object per line.
    Json,
}

/// Blaze's inference worker. Serves the OpenAI-compatible HTTP API, /livez, /readyz and
/// /metrics on --listen, and the gRPC generate service with grpc.health.v1 on --grpc-listen
/// (give both the same address to serve HTTP and gRPC on one port).
///
/// `blaze-worker download --model hf://... --cache-dir DIR` fills the hub cache and exits,
/// so that a worker started later with the same --model and --cache-dir needs no network.
#[derive(Debug, Clone, Parser)]
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
    /// HTTP address.
    #[arg(long, env = "BLAZE_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,
    /// gRPC address; the same as --listen shares one port.
    #[arg(long, env = "BLAZE_GRPC_LISTEN")]
    pub grpc_listen: Option<SocketAddr>,
    /// What the model is.
    #[arg(long, env = "BLAZE_KIND", value_enum, default_value = "llm")]
    pub kind: Kind,
    /// Where pvc:// claims are mounted.
    #[arg(long, env = "BLAZE_PVC_ROOT", default_value = crate::source::DEFAULT_PVC_ROOT)]
    pub pvc_root: PathBuf,
    /// Hub cache folder for hf:// sources (default: HF_HUB_CACHE, $HF_HOME/hub, ~/.cache/huggingface/hub).
    #[arg(long, env = "BLAZE_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,
    /// How quantized GGUF weights are held: `stored`, `q8_0` (re-quantize types candle has
    /// only scalar CPU kernels for), `f32`, `dual` (q8_0 for small decode steps, f32 for
    /// prefill and batches of 8 or more), or `auto` (what decodes fastest: on CPU `dual`
    /// while the f32 copies stay under 2 GiB, else `q8_0`; on a GPU `stored`).
    #[arg(long, env = "BLAZE_WEIGHTS", value_enum, default_value = "auto")]
    pub weights: crate::model::Weights,
    /// Threads candle computes with (default: the CPUs this process may use; explicit
    /// CANDLE_NUM_THREADS / RAYON_NUM_THREADS are kept then). Fewer than the CPUs that are
    /// really free makes decoding slower; more than that makes it much slower (candle's
    /// quantized kernels spin on a barrier), so on a busy shared node give fewer.
    #[arg(long, env = "BLAZE_THREADS")]
    pub threads: Option<usize>,
    /// Most sequences decoded together.
    #[arg(long, env = "BLAZE_MAX_BATCH_SIZE", default_value_t = 16)]
    pub max_batch_size: usize,
    /// Most requests waiting for a slot; more get 429 at once.
    #[arg(long, env = "BLAZE_MAX_QUEUE", default_value_t = 64)]
    pub max_queue: usize,
    /// Most prompt tokens prefilled between two decode steps.
    #[arg(long, env = "BLAZE_MAX_BATCH_TOKENS", default_value_t = 2048)]
    pub max_batch_tokens: usize,
    /// max_tokens for requests that give none.
    #[arg(long, env = "BLAZE_DEFAULT_MAX_TOKENS", default_value_t = 256)]
    pub default_max_tokens: usize,
    /// A request's deadline, in seconds.
    #[arg(long, env = "BLAZE_REQUEST_TIMEOUT_SECONDS", default_value_t = 600)]
    pub request_timeout_seconds: u64,
    /// On SIGTERM, how long in-flight requests get to finish.
    #[arg(long, env = "BLAZE_GRACE_PERIOD_SECONDS", default_value_t = 30)]
    pub grace_period_seconds: u64,
    /// Log format.
    #[arg(long, env = "BLAZE_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
}

/// Subcommands.
#[derive(Debug, Clone, Subcommand)]
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
#[derive(Debug, Clone, clap::Args)]
pub struct DownloadArgs {
    /// The model: hf://org/name[@revision][/file]. Other sources need no download.
    #[arg(long, env = "BLAZE_MODEL")]
    pub model: String,
    /// Hub cache folder (default: HF_HUB_CACHE, $HF_HOME/hub, ~/.cache/huggingface/hub).
    #[arg(long, env = "BLAZE_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Log format.
    #[arg(long, env = "BLAZE_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
}

impl Args {
    /// The model source (clap makes --model required when serving).
    pub fn model(&self) -> &str {
        self.model.as_deref().unwrap_or_default()
    }

    /// Checks values clap cannot; the message names the flag.
    pub fn validate(&self) -> Result<(), String> {
        if self.kind != Kind::Llm {
            return Err(
                format!("--kind {:?}: this build serves only --kind llm", self.kind).to_lowercase()
            );
        }
        if self.threads == Some(0) {
            return Err("--threads must be at least 1".into());
        }
        if self.max_batch_size == 0 {
            return Err("--max-batch-size must be at least 1".into());
        }
        if self.max_queue == 0 {
            return Err("--max-queue must be at least 1".into());
        }
        if self.max_batch_tokens == 0 {
            return Err("--max-batch-tokens must be at least 1".into());
        }
        if self.default_max_tokens == 0 {
            return Err("--default-max-tokens must be at least 1".into());
        }
        crate::source::ModelSource::parse(self.model()).map_err(|e| format!("--model: {e}"))?;
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
