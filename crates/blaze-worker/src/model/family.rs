//! The model families the worker serves, and the names checkpoints give them: `model_type`
//! in a Hugging Face `config.json`, `general.architecture` in a GGUF file.

use crate::{Error, Result};

/// A decoder family. All are llama-shaped (pre-norm blocks, RoPE attention, a gated MLP);
/// each differs in a few numerics that [`super::llama::LlamaConfig`] and the loaders carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// Llama 2/3, SmolLM and the many llama-architecture checkpoints.
    Llama,
    /// Mistral: llama's layout; a `sliding_window` caps the served context at the window
    /// (see [`super::safetensors::HfConfig::llama_config`]).
    Mistral,
    /// Qwen2 / Qwen2.5: biases on the q/k/v projections.
    Qwen2,
    /// Qwen3: RMSNorm over each query and key head before RoPE, `head_dim` from the config.
    Qwen3,
    /// Phi-3: fused qkv and gate/up projections (split at load), optionally partial
    /// rotary; a `sliding_window` caps the context as for mistral. LongRoPE is refused.
    Phi3,
    /// Gemma: GELU (tanh) MLP, RMSNorm scaling by `1 + w`, embeddings scaled by
    /// `sqrt(hidden_size)`, tied output head, `head_dim` from the config.
    Gemma,
}

/// `model_type` values of the Hugging Face safetensors checkpoints the worker loads.
pub const HF_MODEL_TYPES: &[&str] = &["llama", "mistral", "qwen2", "qwen3", "phi3", "gemma"];

/// `general.architecture` values of the GGUF files the worker loads.
pub const GGUF_ARCHITECTURES: &[&str] = &["llama", "mistral", "qwen2", "qwen3", "phi3"];

impl Family {
    /// The family of a `config.json` `model_type`.
    pub fn from_model_type(model_type: &str, architectures: &[String]) -> Result<Family> {
        Family::named(model_type).filter(|_| HF_MODEL_TYPES.contains(&model_type)).ok_or_else(
            || {
                Error::Unsupported(format!(
                    "model_type {model_type:?} (architectures {architectures:?}); \
                     supported: {HF_MODEL_TYPES:?}"
                ))
            },
        )
    }

    /// The family of a GGUF `general.architecture`.
    pub fn from_gguf_architecture(arch: &str) -> Result<Family> {
        Family::named(arch).filter(|_| GGUF_ARCHITECTURES.contains(&arch)).ok_or_else(|| {
            Error::Unsupported(format!(
                "GGUF architecture {arch:?}; supported: {GGUF_ARCHITECTURES:?}"
            ))
        })
    }

    fn named(name: &str) -> Option<Family> {
        Some(match name {
            "llama" => Family::Llama,
            "mistral" => Family::Mistral,
            "qwen2" => Family::Qwen2,
            "qwen3" => Family::Qwen3,
            "phi3" => Family::Phi3,
            "gemma" => Family::Gemma,
            _ => return None,
        })
    }

    /// The family's name, as `model_type` spells it.
    pub fn name(self) -> &'static str {
        match self {
            Family::Llama => "llama",
            Family::Mistral => "mistral",
            Family::Qwen2 => "qwen2",
            Family::Qwen3 => "qwen3",
            Family::Phi3 => "phi3",
            Family::Gemma => "gemma",
        }
    }
}

/// The MLP's gate activation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// `x * sigmoid(x)`: llama, mistral, qwen, phi3.
    Silu,
    /// GELU, tanh approximation (`gelu_pytorch_tanh`): gemma.
    GeluTanh,
    /// GELU, exact (erf).
    Gelu,
}

impl Activation {
    /// The activation a `config.json` names (`hidden_act` / `hidden_activation`).
    pub fn from_hf(name: &str) -> Result<Activation> {
        match name {
            "silu" | "swish" => Ok(Activation::Silu),
            "gelu_pytorch_tanh" | "gelu_new" | "gelu_fast" => Ok(Activation::GeluTanh),
            "gelu" => Ok(Activation::Gelu),
            other => Err(Error::Unsupported(format!(
                "activation {other:?} (supported: silu, gelu, gelu_pytorch_tanh)"
            ))),
        }
    }
}
