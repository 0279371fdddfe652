//! Loading a checkpoint in the Hugging Face layout, `config.json` and one or more
//! `*.safetensors` files: llama, mistral, qwen2, qwen3, phi3 and gemma.

use std::collections::HashMap;
use std::path::Path;

use candle_core::quantized::GgmlDType;
use candle_core::{DType, Device, Tensor};

use super::family::Family;
pub use super::hf_config::HfConfig;
use super::linear;
use super::llama::{Block, Linear, Llama, LlamaConfig};
use crate::{Error, Result};
use blaze_worker_cli::Quantization;

/// Loads `config.json` and the safetensors shards in `dir`, every weight in `dtype`.
pub fn load(dir: &Path, dtype: DType, device: &Device) -> Result<Llama> {
    load_with(dir, dtype, None, device)
}

/// Loads `config.json` and the safetensors shards in `dir`. Projection weights (attention,
/// MLP and the output head) are held in `dtype`, or quantized as `quantization` says;
/// embeddings, norms and biases stay f32, as activations are computed in f32.
///
/// With `q4k` the output head is quantized to Q8_0 instead: one wide projection whose
/// error every generated token sees (as llama.cpp's 4-bit presets keep it at 6 or 8 bits).
pub fn load_with(
    dir: &Path,
    dtype: DType,
    quantization: Option<Quantization>,
    device: &Device,
) -> Result<Llama> {
    let config: HfConfig = serde_json::from_slice(&std::fs::read(dir.join("config.json"))?)?;
    let llama_config = config.llama_config()?;
    let mut weights: HashMap<String, Tensor> = HashMap::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "safetensors") {
            weights.extend(candle_core::safetensors::load(&path, device)?);
        }
    }
    let mut weights = Weights { map: weights, dtype, quantization, family: llama_config.family };
    let blocks = (0..config.num_hidden_layers)
        .map(|i| weights.block(i, &llama_config))
        .collect::<Result<Vec<_>>>()?;
    let embed = weights.take("model.embed_tokens.weight")?;
    let norm = weights.norm("model.norm.weight")?;
    // Gemma's output head is always the embedding matrix.
    let lm_head = if config.tie_word_embeddings || llama_config.family == Family::Gemma {
        embed.clone()
    } else {
        weights.take("lm_head.weight").or_else(|_| Ok::<_, Error>(embed.clone()))?
    };
    let head = match quantization {
        Some(_) => linear::quantized(&lm_head, GgmlDType::Q8_0)?,
        None => Linear::dense(&lm_head.to_dtype(dtype)?)?,
    };
    Llama::new(llama_config, embed, blocks, norm, head, device)
}

/// A checkpoint's tensors by name, taken out one at a time.
struct Weights {
    map: HashMap<String, Tensor>,
    /// What projection weights are held in.
    dtype: DType,
    quantization: Option<Quantization>,
    family: Family,
}

impl Weights {
    /// A tensor, in f32.
    fn take(&mut self, name: &str) -> Result<Tensor> {
        let t = self.map.remove(name).ok_or_else(|| {
            Error::Unsupported(format!("weight {name} missing from the safetensors"))
        })?;
        Ok(t.to_dtype(DType::F32)?)
    }

    /// `w` (`[out, in]`, f32) as a projection held the way the load asked for.
    fn projection(&self, w: &Tensor) -> Result<Linear> {
        match self.quantization {
            Some(Quantization::Q8_0) => linear::quantized(w, GgmlDType::Q8_0),
            Some(Quantization::Q4K) => linear::quantized(w, GgmlDType::Q4K),
            None => Linear::dense(&w.to_dtype(self.dtype)?),
        }
    }

    /// An RMSNorm weight; gemma's scale by `1 + w`, folded in here.
    fn norm(&mut self, name: &str) -> Result<Tensor> {
        let w = self.take(name)?;
        Ok(if self.family == Family::Gemma { (w + 1.0)? } else { w })
    }

    /// A projection, with its bias when the checkpoint has one (Qwen2's q/k/v).
    fn linear(&mut self, name: &str) -> Result<Linear> {
        let w = self.take(&format!("{name}.weight"))?;
        let linear = self.projection(&w)?;
        Ok(match self.take(&format!("{name}.bias")) {
            Ok(bias) => linear.with_bias(bias),
            Err(_) => linear,
        })
    }

    /// `rows` consecutive row blocks of a fused projection (phi3's `qkv_proj`,
    /// `gate_up_proj`), each as its own projection.
    fn split(&mut self, name: &str, rows: &[usize]) -> Result<Vec<Linear>> {
        let fused = self.take(&format!("{name}.weight"))?;
        if fused.dim(0)? != rows.iter().sum::<usize>() {
            return Err(Error::Unsupported(format!(
                "{name} has {} rows, expected {rows:?}",
                fused.dim(0)?
            )));
        }
        let mut start = 0;
        rows.iter()
            .map(|&n| {
                let part = fused.narrow(0, start, n)?;
                start += n;
                self.projection(&part)
            })
            .collect()
    }

    fn block(&mut self, i: usize, config: &LlamaConfig) -> Result<Block> {
        let p = format!("model.layers.{i}");
        let (q_rows, kv_rows) =
            (config.num_heads * config.head_dim, config.num_kv_heads * config.head_dim);
        let (wq, wk, wv, gate, up) = if self.family == Family::Phi3 {
            let qkv_rows = [q_rows, kv_rows, kv_rows];
            let mut qkv = self.split(&format!("{p}.self_attn.qkv_proj"), &qkv_rows)?;
            // Gate and up fused, gate first.
            let gate_up = format!("{p}.mlp.gate_up_proj");
            let rows = self.map.get(&format!("{gate_up}.weight")).map(|t| t.dim(0));
            let half = rows.transpose()?.unwrap_or(0) / 2;
            let mut gate_up = self.split(&gate_up, &[half, half])?;
            let (up, gate) = (gate_up.remove(1), gate_up.remove(0));
            let (v, k, q) = (qkv.remove(2), qkv.remove(1), qkv.remove(0));
            (q, k, v, gate, up)
        } else {
            (
                self.linear(&format!("{p}.self_attn.q_proj"))?,
                self.linear(&format!("{p}.self_attn.k_proj"))?,
                self.linear(&format!("{p}.self_attn.v_proj"))?,
                self.linear(&format!("{p}.mlp.gate_proj"))?,
                self.linear(&format!("{p}.mlp.up_proj"))?,
            )
        };
        let qk_norm = if self.family == Family::Qwen3 {
            let q = self.take(&format!("{p}.self_attn.q_norm.weight"))?;
            Some((q, self.take(&format!("{p}.self_attn.k_norm.weight"))?))
        } else {
            None
        };
        Ok(Block {
            attn_norm: self.norm(&format!("{p}.input_layernorm.weight"))?,
            wq,
            wk,
            wv,
            wo: self.linear(&format!("{p}.self_attn.o_proj"))?,
            ffn_norm: self.norm(&format!("{p}.post_attention_layernorm.weight"))?,
            gate,
            up,
            down: self.linear(&format!("{p}.mlp.down_proj"))?,
            qk_norm,
        })
    }
}
