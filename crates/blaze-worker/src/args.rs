//! The worker's command line: the typed structure shared with the operator
//! (`blaze-worker-cli`), and the checks that need the worker's own code.

pub use blaze_worker_cli::{
    Args, Command, Device, DownloadArgs, Dtype, HostPort, Kind, LogFormat, ModelFormat,
    Quantization, Weights,
};

/// Everything [`Args::validate`] checks, and what only the worker knows: which kinds this
/// build serves and which model sources it can open. The message names the flag.
pub fn validate(args: &Args) -> Result<(), String> {
    if args.kind != Kind::Llm {
        return Err(format!("--kind {}: this build serves only --kind llm", args.kind));
    }
    args.validate()?;
    crate::source::ModelSource::parse(args.model()).map_err(|e| format!("--model: {e}"))?;
    Ok(())
}
