//! The Open Inference Protocol (v2), as KServe and Triton define it: what its REST form
//! (`server::oip`) and gRPC form (`grpc::oip`, `inference.GRPCInferenceService`) share.
//! The transports turn their messages into an [`InferRequest`] and an [`InferResponse`]
//! back into theirs; the checks, and the work, are here.
//!
//! The worker serves one model, under its served name, unversioned (a request naming a
//! version is refused as an unknown model). `ModelInfer`:
//! - embedding workers: one BYTES input of shape `[n]` or `[n, 1]` (the texts; any name,
//!   `text` in the metadata) gives the FP32 output `embedding` of shape `[n, d]`. Parameters
//!   `truncate` (bool) and `dimensions` (int) mean what they mean on `/v1/embeddings`.
//! - text-generation workers: the BYTES input `text_input` (one prompt, shape `[1]` or
//!   `[1, 1]`) gives the BYTES output `text_output` (the completion), as Triton's vLLM
//!   backend names them; sampling from the request's parameters ([`params`]) or, as that
//!   backend also takes it, a BYTES input `sampling_parameters` holding a JSON object (the
//!   request's parameters win). The optional BOOL inputs `stream` (false only: stream with
//!   `/v1/completions` or the generate RPC) and `exclude_input_in_output` (true by default;
//!   false puts the prompt before the completion) are the backend's too.
//!
//! Errors name the field at fault (`inputs[0].shape: ...`): `Invalid` is gRPC
//! `INVALID_ARGUMENT` and HTTP 400. The engines count the requests in the vLLM-named
//! metrics, as for the OpenAI API.

mod infer;
pub mod params;
pub mod tensor;

use blaze_worker_cli::Kind;

pub use self::infer::infer;
use self::params::Params;
use self::tensor::{Input, Output};
use crate::engine::{EngineError, Health, Served, SubmitError};
use crate::server::AppState;

/// Why a request got no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OipError {
    /// The request is malformed; the message starts with the field at fault (gRPC
    /// `INVALID_ARGUMENT`, HTTP 400).
    #[error("{0}")]
    Invalid(String),
    /// No such model or version here (`NOT_FOUND`, 404).
    #[error("{0}")]
    NotFound(String),
    /// Not ready: loading, draining or failed (`UNAVAILABLE`, 503).
    #[error("{0}")]
    Unavailable(String),
    /// The admission queue is full (`RESOURCE_EXHAUSTED`, 429).
    #[error("{0}")]
    Exhausted(String),
    /// The engine failed on the request (`INTERNAL`, 500).
    #[error("{0}")]
    Internal(String),
}

impl OipError {
    /// An `Invalid` about `field`.
    pub fn invalid(field: &str, message: impl AsRef<str>) -> Self {
        OipError::Invalid(format!("{field}: {}", message.as_ref()))
    }

    /// Says which element of a tensor the message is about.
    fn in_element(self, i: usize) -> Self {
        match self {
            OipError::Invalid(m) => match m.split_once(": ") {
                Some((field, rest)) => OipError::Invalid(format!("{field}: element {i}: {rest}")),
                None => OipError::Invalid(m),
            },
            other => other,
        }
    }

    /// A short, stable label for metrics and logs.
    pub fn metric_label(&self) -> &'static str {
        match self {
            OipError::Invalid(_) => "invalid",
            OipError::NotFound(_) => "not_found",
            OipError::Unavailable(_) => "unavailable",
            OipError::Exhausted(_) => "exhausted",
            OipError::Internal(_) => "internal",
        }
    }

    /// A refused admission, the engine's field for the input (`input`, `prompt`) named as
    /// the tensor `field`, its others as parameters.
    fn submit(e: SubmitError, field: &str) -> Self {
        match e {
            SubmitError::QueueFull(_) => OipError::Exhausted(e.to_string()),
            SubmitError::Unavailable(_) => OipError::Unavailable(e.to_string()),
            SubmitError::Invalid { field: "input" | "prompt", message } => {
                OipError::invalid(field, message)
            }
            SubmitError::Invalid { field: other, message } => {
                OipError::invalid(&format!("parameters.{other}"), message)
            }
        }
    }
}

impl From<EngineError> for OipError {
    fn from(e: EngineError) -> Self {
        if e.is_retriable() {
            OipError::Unavailable(e.to_string())
        } else {
            OipError::Internal(e.to_string())
        }
    }
}

/// An output the client asks for.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestedOutput {
    /// `name`.
    pub name: String,
}

/// A `ModelInfer` request.
#[derive(Debug, Clone, PartialEq)]
pub struct InferRequest {
    /// The model asked for (empty: the one served).
    pub model: String,
    /// The version asked for (empty: any).
    pub version: String,
    /// `id`, echoed in the answer.
    pub id: String,
    /// `parameters`.
    pub parameters: Params,
    /// `inputs`.
    pub inputs: Vec<Input>,
    /// `outputs` (empty: all).
    pub outputs: Vec<RequestedOutput>,
}

/// A `ModelInfer` answer.
#[derive(Debug, Clone, PartialEq)]
pub struct InferResponse {
    /// The model's name.
    pub model: String,
    /// The request's `id`.
    pub id: String,
    /// The outputs, in the order asked for.
    pub outputs: Vec<Output>,
}

/// A tensor in the model's metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorMetadata {
    /// Its name.
    pub name: &'static str,
    /// Its datatype.
    pub datatype: &'static str,
    /// Its shape, -1 for a dimension that varies.
    pub shape: Vec<i64>,
}

/// `ModelMetadata`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelMetadata {
    /// The served name.
    pub name: String,
    /// The model's platform: `blaze`.
    pub platform: &'static str,
    /// What `ModelInfer` takes.
    pub inputs: Vec<TensorMetadata>,
    /// What it gives.
    pub outputs: Vec<TensorMetadata>,
}

/// The server's name in `ServerMetadata`.
pub const SERVER_NAME: &str = "blaze";
/// The protocol extensions served: Triton's binary tensor data (REST) and parameters.
pub const EXTENSIONS: [&str; 2] = ["binary_tensor_data", "parameters"];
/// The platform every model reports.
pub const PLATFORM: &str = "blaze";

/// Whether the server is live: not failed (loading and draining are live).
pub fn live(state: &AppState) -> bool {
    state.engine.get().is_none_or(|e| e.health() != Health::Failed)
}

/// Whether the server takes inference requests.
pub fn ready(state: &AppState) -> bool {
    state.ready().is_some()
}

/// Whether `name` (at `version`) is ready; `NotFound` when it is not served here.
pub fn model_ready(state: &AppState, name: &str, version: &str) -> Result<bool, OipError> {
    check_model(state, name, version)?;
    Ok(ready(state))
}

/// `ModelMetadata` of `name` (at `version`).
pub fn model_metadata(
    state: &AppState,
    name: &str,
    version: &str,
) -> Result<ModelMetadata, OipError> {
    check_model(state, name, version)?;
    let tensor = |name, datatype, shape| TensorMetadata { name, datatype, shape };
    let (inputs, outputs) = match state.kind {
        Kind::Embedding => {
            let width = match state.engine.get() {
                Some(Served::Embedding(e)) => e.model().dimensions() as i64,
                _ => -1,
            };
            (
                vec![tensor("text", "BYTES", vec![-1])],
                vec![tensor("embedding", "FP32", vec![-1, width])],
            )
        }
        Kind::Diffusion => {
            (vec![tensor("prompt", "BYTES", vec![1])], vec![tensor("image", "BYTES", vec![-1])])
        }
        _ => (
            vec![tensor("text_input", "BYTES", vec![1])],
            vec![tensor("text_output", "BYTES", vec![1])],
        ),
    };
    Ok(ModelMetadata { name: state.model_name.to_string(), platform: PLATFORM, inputs, outputs })
}

/// `NotFound` unless `name` is the served model (or empty) and `version` is empty.
pub(crate) fn check_model(state: &AppState, name: &str, version: &str) -> Result<(), OipError> {
    let served = &*state.model_name;
    if !name.is_empty() && name != served {
        return Err(OipError::NotFound(format!(
            "model {name:?} is not served here; this worker serves {served:?}"
        )));
    }
    if !version.is_empty() {
        return Err(OipError::NotFound(format!(
            "model {served:?} has no version {version:?}: it is served unversioned (leave the \
             version out)"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
