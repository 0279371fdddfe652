//! The enumerated values of the worker's flags. Each displays as the spelling clap parses.

use std::fmt;

use clap::ValueEnum;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// What kind of model the worker serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Kind {
    /// Text generation (OpenAI completions and chat completions).
    Llm,
    /// Embeddings (OpenAI /v1/embeddings) with a BERT-family encoder.
    Embedding,
    /// Image generation (OpenAI /v1/images/generations) with a Stable Diffusion pipeline.
    Diffusion,
}

/// Log line format: every Blaze binary's.
pub use blaze_telemetry::LogFormat;

// The model's format, dtype and quantization are also BlazeEngine fields (`spec.model`): the
// API uses these types, so the CRD and the worker's flags spell them the same way.

/// Checkpoint file format.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, ValueEnum, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum ModelFormat {
    /// Hugging Face safetensors with `config.json` and `tokenizer.json`.
    Safetensors,
    /// A single GGUF file (quantized), tokenizer and chat template in its metadata.
    Gguf,
}

/// Numeric type of model weights in memory.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, ValueEnum, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Dtype {
    /// Fast on the device the worker finds: f32 on a CPU, bf16 on a GPU.
    #[default]
    Auto,
    /// 32-bit float.
    F32,
    /// 16-bit float.
    F16,
    /// bfloat16.
    Bf16,
}

/// Quantize safetensors projection weights when the worker loads them: `q8_0` (8.5 bits per
/// weight) or `q4k` (4.5 bits; the output head then gets q8_0). Not for GGUF, which is
/// quantized already.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, ValueEnum, Serialize, Deserialize, JsonSchema,
)]
pub enum Quantization {
    /// 8-bit blocks of 32 weights with an f16 scale.
    #[value(name = "q8_0")]
    #[serde(rename = "q8_0")]
    Q8_0,
    /// 4-bit k-quant superblocks of 256 weights.
    #[value(name = "q4k")]
    #[serde(rename = "q4k")]
    Q4K,
}

/// Where the worker computes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum Device {
    /// The first GPU when this build has CUDA and one is there, else the CPU.
    #[default]
    Auto,
    /// The CPU.
    Cpu,
    /// The first CUDA GPU; starting fails without one.
    Cuda,
}

/// How a GGUF file's quantized projection weights are held in memory.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum Weights {
    /// What decodes fastest on the device (the worker's `model::resolve_weights`).
    #[default]
    Auto,
    /// As stored in the file.
    Stored,
    /// Quantized kernels for every pass. On CPUs with AVX-512 VNNI, Q4_0 and Q4_1 stay as
    /// stored and Q8_0, Q5_0 and Q5_1 become Q8_0, all on Blaze's own kernels (weights
    /// repacked 16 output rows to a vector); other types (the k-quants) stay as stored on
    /// candle's. Elsewhere Q4_1, Q5_0 and Q5_1 are re-quantized to Q8_0 (candle has only
    /// scalar CPU kernels for them), others kept as stored.
    #[value(name = "q8_0")]
    Q8_0,
    /// Expanded to f32: f32 GEMM kernels, 4 bytes per weight.
    F32,
    /// `q8_0`, plus an f32 copy for prefill and decode steps of eight or more sequences of
    /// each projection that is on candle's kernels (Blaze's beat f32 GEMM at every batch
    /// size and get no copy). A sequence's greedy output can then depend on how many others
    /// share its decode steps (the two kernels round differently: rarely visible on a
    /// trained model, often on random weights); the other choices are batch-invariant.
    Dual,
}

macro_rules! display_as_value {
    ($($t:ty),*) => {$(
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                let value = self.to_possible_value().expect("no value is skipped");
                f.write_str(value.get_name())
            }
        }
    )*};
}

display_as_value!(Kind, ModelFormat, Dtype, Quantization, Device, Weights);

/// A prompt the worker prefills into its prefix cache before it reports ready: plain text
/// (tokenized like a completion's prompt) or chat messages (rendered with the model's chat
/// template, like a chat completion's). Exactly one of the two.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
// BlazeEngine's `spec.cache.warm` is a list of these: the CRD refuses what `from_str` refuses.
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "has(self.prompt) != has(self.messages)",
    "message": "a warm prompt has exactly one of prompt (text) and messages (chat messages)",
    "reason": "FieldValueInvalid"
}]))]
pub struct WarmPrompt {
    /// Text, as a completion's `prompt`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt: Option<String>,
    /// Messages, as a chat completion's (typically the system prompt conversations share).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub messages: Option<Vec<WarmMessage>>,
}

/// One chat message of a warm prompt.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WarmMessage {
    /// `system`, `user`, `assistant`, ...
    pub role: String,
    /// The message's text.
    pub content: String,
}

impl std::str::FromStr for WarmPrompt {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let warm: WarmPrompt = serde_json::from_str(s).map_err(|e| {
            format!(
                "not a warm prompt ({e}); expected {{\"prompt\": \"...\"}} or \
                 {{\"messages\": [{{\"role\": \"system\", \"content\": \"...\"}}]}}"
            )
        })?;
        match (&warm.prompt, &warm.messages) {
            (Some(_), Some(_)) => Err("a warm prompt has `prompt` or `messages`, not both".into()),
            (None, None) => Err("a warm prompt needs `prompt` or `messages`".into()),
            (_, Some(m)) if m.is_empty() => Err("a warm prompt's `messages` is empty".into()),
            _ => Ok(warm),
        }
    }
}

impl fmt::Display for WarmPrompt {
    /// Compact JSON, which [`FromStr`](std::str::FromStr) parses back.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let json = serde_json::to_string(self).map_err(|_| fmt::Error)?;
        f.write_str(&json)
    }
}
