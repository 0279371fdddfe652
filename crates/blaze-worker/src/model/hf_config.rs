//! A Hugging Face `config.json`, read into the [`LlamaConfig`] the forward pass takes.

use serde::Deserialize;
use serde_json::Value;

use super::family::{Activation, Family};
use super::llama::LlamaConfig;
use super::rope::RopeScaling;
use crate::Result;

/// The fields of `config.json` the loader reads.
#[derive(Debug, Deserialize)]
pub struct HfConfig {
    /// `architectures`, e.g. `["LlamaForCausalLM"]`.
    #[serde(default)]
    pub architectures: Vec<String>,
    /// `model_type`, e.g. `llama`.
    #[serde(default)]
    pub model_type: Option<String>,
    hidden_size: usize,
    num_attention_heads: usize,
    num_key_value_heads: Option<usize>,
    /// Number of transformer blocks.
    pub num_hidden_layers: usize,
    head_dim: Option<usize>,
    #[serde(default = "default_eps")]
    rms_norm_eps: f64,
    #[serde(default = "default_theta")]
    rope_theta: f32,
    #[serde(default = "default_positions")]
    max_position_embeddings: usize,
    /// Whether the output head is the embedding matrix.
    #[serde(default)]
    pub tie_word_embeddings: bool,
    hidden_act: Option<String>,
    hidden_activation: Option<String>,
    partial_rotary_factor: Option<f64>,
    sliding_window: Option<usize>,
    use_sliding_window: Option<bool>,
    #[serde(default)]
    rope_scaling: Value,
    original_max_position_embeddings: Option<usize>,
}

fn default_eps() -> f64 {
    1e-6
}
fn default_theta() -> f32 {
    10_000.0
}
fn default_positions() -> usize {
    4096
}

impl HfConfig {
    /// The checkpoint's family, or an error naming the `model_type` and those supported.
    pub fn family(&self) -> Result<Family> {
        Family::from_model_type(self.model_type.as_deref().unwrap_or(""), &self.architectures)
    }

    /// The forward pass's configuration.
    ///
    /// Sliding-window attention (mistral and phi3 when `sliding_window` is set, qwen when
    /// `use_sliding_window` is true) caps the served context at the window: up to it the
    /// window masks nothing, so every position's attention is exact, and longer prompts are
    /// refused as too long for the context instead of being answered with full attention.
    pub fn llama_config(&self) -> Result<LlamaConfig> {
        let family = self.family()?;
        // YaRN and other kinds fail here, naming the scaling.
        let (context, original) =
            (self.max_position_embeddings, self.original_max_position_embeddings);
        let rope_scaling = RopeScaling::from_hf(&self.rope_scaling, context, original)?;
        let head_dim = self.head_dim.unwrap_or(self.hidden_size / self.num_attention_heads);
        let rotary_dim = match self.partial_rotary_factor {
            Some(factor) => (factor * head_dim as f64) as usize,
            None => head_dim,
        };
        let windowed = match family {
            Family::Mistral | Family::Phi3 => true,
            Family::Qwen2 | Family::Qwen3 => self.use_sliding_window == Some(true),
            Family::Llama | Family::Gemma => false,
        };
        let window = self.sliding_window.filter(|&w| windowed && w > 0);
        let mut max_seq_len = window.map_or(context, |w| w.min(context));
        if let (RopeScaling::LongRope { .. }, Some(original)) = (&rope_scaling, original) {
            // Past the pretraining context LongRoPE switches to its long factors, which
            // would re-rotate every cached key; the worker serves up to the switch.
            max_seq_len = max_seq_len.min(original);
        }
        let activation = match family {
            // Gemma's MLP is GELU (tanh) whatever `hidden_act` says, as in transformers.
            Family::Gemma => match &self.hidden_activation {
                Some(name) => Activation::from_hf(name)?,
                None => Activation::GeluTanh,
            },
            _ => Activation::from_hf(self.hidden_act.as_deref().unwrap_or("silu"))?,
        };
        Ok(LlamaConfig {
            family,
            hidden_size: self.hidden_size,
            num_heads: self.num_attention_heads,
            num_kv_heads: self.num_key_value_heads.unwrap_or(self.num_attention_heads),
            head_dim,
            rotary_dim,
            rms_eps: self.rms_norm_eps,
            rope_theta: self.rope_theta,
            rope_scaling,
            max_seq_len,
            rope_interleaved: false,
            activation,
            embed_scale: (family == Family::Gemma).then(|| (self.hidden_size as f64).sqrt()),
        })
    }
}
