//! Loading a llama-family checkpoint in the Hugging Face layout: `config.json` and one or
//! more `*.safetensors` files.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use serde::Deserialize;

use super::llama::{Block, Linear, Llama, LlamaConfig};
use crate::{Error, Result};

/// The fields of `config.json` this loader reads.
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
    num_hidden_layers: usize,
    #[serde(default = "default_eps")]
    rms_norm_eps: f64,
    #[serde(default = "default_theta")]
    rope_theta: f32,
    #[serde(default = "default_positions")]
    max_position_embeddings: usize,
    #[serde(default)]
    tie_word_embeddings: bool,
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

/// Model types whose weights and forward pass are llama's (Qwen2 adds biases to the q/k/v
/// projections, which are read when present).
const LLAMA_LIKE: &[&str] = &["llama", "mistral", "qwen2"];

/// Loads `config.json` and the safetensors shards in `dir`, in `dtype`.
pub fn load(dir: &Path, dtype: DType, device: &Device) -> Result<Llama> {
    let config: HfConfig = serde_json::from_slice(&std::fs::read(dir.join("config.json"))?)?;
    let model_type = config.model_type.clone().unwrap_or_default();
    if !LLAMA_LIKE.contains(&model_type.as_str()) {
        return Err(Error::Unsupported(format!(
            "model_type {model_type:?} (architectures {:?}); supported: {LLAMA_LIKE:?}",
            config.architectures
        )));
    }
    let mut weights: HashMap<String, Tensor> = HashMap::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "safetensors") {
            weights.extend(candle_core::safetensors::load(&path, device)?);
        }
    }
    let mut take = |name: &str| -> Result<Tensor> {
        let t = weights.remove(name).ok_or_else(|| {
            Error::Unsupported(format!("weight {name} missing from the safetensors"))
        })?;
        Ok(t.to_dtype(dtype)?)
    };
    let mut blocks = Vec::with_capacity(config.num_hidden_layers);
    for i in 0..config.num_hidden_layers {
        let p = format!("model.layers.{i}");
        let mut lin = |name: &str| -> Result<Linear> {
            let linear = Linear::dense(&take(&format!("{p}.{name}.weight"))?)?;
            // Qwen2's q/k/v projections have biases; llama's have none.
            Ok(match take(&format!("{p}.{name}.bias")) {
                Ok(bias) => linear.with_bias(bias),
                Err(_) => linear,
            })
        };
        let (wq, wk, wv, wo) = (
            lin("self_attn.q_proj")?,
            lin("self_attn.k_proj")?,
            lin("self_attn.v_proj")?,
            lin("self_attn.o_proj")?,
        );
        let (gate, up, down) = (lin("mlp.gate_proj")?, lin("mlp.up_proj")?, lin("mlp.down_proj")?);
        let attn_norm = take(&format!("{p}.input_layernorm.weight"))?;
        let ffn_norm = take(&format!("{p}.post_attention_layernorm.weight"))?;
        blocks.push(Block { attn_norm, wq, wk, wv, wo, ffn_norm, gate, up, down });
    }
    let embed = take("model.embed_tokens.weight")?;
    let norm = take("model.norm.weight")?;
    let lm_head = if config.tie_word_embeddings {
        embed.clone()
    } else {
        take("lm_head.weight").or_else(|_| Ok::<_, Error>(embed.clone()))?
    };
    let llama_config = LlamaConfig {
        hidden_size: config.hidden_size,
        num_heads: config.num_attention_heads,
        num_kv_heads: config.num_key_value_heads.unwrap_or(config.num_attention_heads),
        rms_eps: config.rms_norm_eps,
        rope_theta: config.rope_theta,
        max_seq_len: config.max_position_embeddings,
        rope_interleaved: false,
    };
    Llama::new(llama_config, embed, blocks, norm, Linear::dense(&lm_head)?, device)
}
