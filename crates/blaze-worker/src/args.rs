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
    match args.kind {
        Kind::Llm => {}
        Kind::Embedding => {
            if args.model_format == Some(ModelFormat::Gguf) {
                return Err("--model-format gguf: embedding models are served from safetensors \
                            folders (--kind embedding)"
                    .to_owned());
            }
            if let Some(q) = args.quantization {
                return Err(format!(
                    "--quantization {q}: embedding models are served unquantized (--kind embedding)"
                ));
            }
            let caches = [
                ("--prefix-cache-bytes", args.prefix_cache_bytes > 0),
                ("--warm-prompt", !args.warm_prompts.is_empty()),
                ("--response-cache-memory-bytes", args.response_cache_memory_bytes > 0),
                ("--response-cache-disk-bytes", args.response_cache_disk_bytes > 0),
                ("--response-cache-redis", args.response_cache_redis.is_some()),
            ];
            if let Some((flag, _)) = caches.iter().find(|(_, set)| *set) {
                return Err(format!(
                    "{flag}: embedding workers keep no prefix or response cache (--kind embedding)"
                ));
            }
        }
        Kind::Diffusion => {
            return Err(
                "--kind diffusion: this build serves --kind llm and --kind embedding".to_owned()
            );
        }
    }
    args.validate()?;
    crate::source::ModelSource::parse(args.model()).map_err(|e| format!("--model: {e}"))?;
    Ok(())
}
