//! The worker's command line: the typed structure shared with the operator
//! (`blaze-worker-cli`), and the checks that need the worker's own code.

pub use blaze_worker_cli::{
    Args, Command, Device, DownloadArgs, Dtype, HostPort, Kind, LogFormat, ModelFormat,
    Quantization, Weights,
};

/// Everything [`Args::validate`] checks, and what only the worker knows: which kinds this
/// build serves, in which forms, and which model sources it can open. The message names the
/// flag.
pub fn validate(args: &Args) -> Result<(), String> {
    let caches = [
        ("--prefix-cache-bytes", args.prefix_cache_bytes > 0),
        ("--warm-prompt", !args.warm_prompts.is_empty()),
        ("--response-cache-memory-bytes", args.response_cache_memory_bytes > 0),
        ("--response-cache-disk-bytes", args.response_cache_disk_bytes > 0),
        ("--response-cache-redis", args.response_cache_redis.is_some()),
    ];
    let memory = [
        ("--attention-slicing", args.attention_slicing),
        ("--vae-slicing", args.vae_slicing),
        ("--vae-tiling", args.vae_tiling),
        ("--cpu-offload", args.cpu_offload),
    ];
    let (name, flag) = match args.kind {
        Kind::Llm => ("llm", "--kind llm"),
        Kind::Embedding => ("embedding", "--kind embedding"),
        Kind::Diffusion => ("diffusion", "--kind diffusion"),
    };
    if let Some((option, _)) = memory.iter().find(|(_, set)| *set)
        && args.kind != Kind::Diffusion
    {
        return Err(format!("{option}: only diffusion pipelines have it ({flag})"));
    }
    if args.kind != Kind::Llm {
        if args.model_format == Some(ModelFormat::Gguf) {
            return Err(format!(
                "--model-format gguf: {name} models are served from safetensors folders ({flag})"
            ));
        }
        if let Some(q) = args.quantization {
            return Err(format!(
                "--quantization {q}: {name} models are served unquantized ({flag})"
            ));
        }
        if let Some((option, _)) = caches.iter().find(|(_, set)| *set) {
            return Err(format!(
                "{option}: {name} workers keep no prefix or response cache ({flag})"
            ));
        }
    }
    args.validate()?;
    crate::source::ModelSource::parse(args.model()).map_err(|e| format!("--model: {e}"))?;
    Ok(())
}
