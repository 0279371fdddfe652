//! Loading a quantized model (llama, mistral, qwen2, qwen3, phi3) from a GGUF file, tokenizer and chat template
//! included (they live in the file's metadata).

use std::borrow::Cow;
use std::path::Path;

use candle_core::quantized::{GgmlDType, QMatMul, QStorage, QTensor, gguf_file};
use candle_core::{DType, Device, Tensor};

use super::family::{Activation, Family};
use super::llama::{Block, Linear, Llama, LlamaConfig};
use super::rope::{RopeScaling, longrope_attention_factor};
use super::{Weights, linear};
use crate::{Error, Result};

/// What a GGUF file holds: the model and the metadata the tokenizer and chat template need.
pub struct GgufModel {
    /// The model.
    pub llama: Llama,
    /// The file's metadata.
    pub content: gguf_file::Content,
}

/// Quantizations candle 0.11 has only scalar CPU dot products for. Re-quantized to Q8_0
/// (their 4 or 5 bits fit in 8 with a per-block error under 1/250 of the block's range,
/// far below their own rounding) they use the AVX2 kernels. (On AVX-512 VNNI CPUs Blaze's
/// kernels take Q4_1 as stored and Q5_0 and Q5_1 as Q8_0: see `linear::packed`.)
const SCALAR_ON_CPU: &[GgmlDType] = &[GgmlDType::Q4_1, GgmlDType::Q5_0, GgmlDType::Q5_1];

/// Reads a GGUF file into a [`Llama`], holding the projection weights as `weights` says
/// (`Auto` is taken as `Stored`; resolve it first).
pub fn load(path: &Path, device: &Device, weights: Weights) -> Result<GgufModel> {
    let mut file = std::fs::File::open(path)?;
    let content = gguf_file::Content::read(&mut file)?;
    let arch = metadata_str(&content, "general.architecture")?;
    let family = Family::from_gguf_architecture(&arch)?;
    let meta = Meta { content: &content, arch: &arch };
    let mut config = config(&meta, family)?;
    let layers = meta.num("block_count")?;
    let mut reader = TensorReader { content: &content, file: &mut file, device, weights };
    rope_factors(&meta, &mut reader, &mut config)?;
    let embed_q = reader.tensor("token_embd.weight")?;
    let embed = embed_q.dequantize(device)?;
    let norm = reader.tensor("output_norm.weight")?.dequantize(device)?;
    let lm_head = match reader.tensor("output.weight") {
        Ok(w) => linear(w, weights, device)?,
        // Tied embeddings: the output projection is the embedding matrix.
        Err(_) => linear(embed_q, weights, device)?,
    };
    let blocks = (0..layers).map(|i| reader.block(i, &config)).collect::<Result<Vec<_>>>()?;
    let llama = Llama::new(config, embed.to_dtype(DType::F32)?, blocks, norm, lm_head, device)?;
    tracing::info!(%weights, kinds = ?llama.projection_kinds(), "projection weights");
    Ok(GgufModel { llama, content })
}

/// RoPE rescalings llama.cpp stores as tensors: Llama 3.1's divisors (`rope_freqs`), and
/// Phi-3.5 / Phi-4's LongRoPE (`rope_factors_short` / `_long`, served up to the
/// pretraining context, where the short factors hold).
fn rope_factors(
    meta: &Meta<'_>,
    reader: &mut TensorReader<'_>,
    config: &mut LlamaConfig,
) -> Result<()> {
    if reader.has("rope_freqs.weight") {
        config.rope_scaling = RopeScaling::Divisors(reader.factors("rope_freqs.weight")?);
    } else if reader.has("rope_factors_short.weight") {
        let original = meta.num("rope.scaling.original_context_length")?;
        let context = meta.num("context_length")?;
        let attention_factor = meta
            .get("rope.scaling.attn_factor")
            .and_then(|v| v.to_f32().ok())
            .unwrap_or_else(|| longrope_attention_factor(context, original));
        let short_factor = reader.factors("rope_factors_short.weight")?;
        config.rope_scaling = RopeScaling::LongRope { short_factor, attention_factor };
        config.max_seq_len = config.max_seq_len.min(original);
    }
    Ok(())
}

/// The `{arch}.*` metadata of a file.
struct Meta<'a> {
    content: &'a gguf_file::Content,
    arch: &'a str,
}

impl Meta<'_> {
    fn get(&self, key: &str) -> Option<&gguf_file::Value> {
        self.content.metadata.get(&format!("{}.{key}", self.arch))
    }

    fn num(&self, key: &str) -> Result<usize> {
        let missing = || Error::Unsupported(format!("GGUF metadata {}.{key} missing", self.arch));
        Ok(self.get(key).ok_or_else(missing)?.to_u32()? as usize)
    }

    fn float(&self, key: &str, default: f32) -> f32 {
        self.get(key).and_then(|v| v.to_f32().ok()).unwrap_or(default)
    }
}

/// llama.cpp's metadata for a family, read into a [`LlamaConfig`].
fn config(meta: &Meta<'_>, family: Family) -> Result<LlamaConfig> {
    let hidden_size = meta.num("embedding_length")?;
    let num_heads = meta.num("attention.head_count")?;
    let head_dim = meta.num("attention.key_length").unwrap_or(hidden_size / num_heads);
    let context = meta.num("context_length")?;
    // Past a sliding window the model attends to the window only; up to it, attention is
    // full. Serving up to the window keeps every position's attention exact.
    let window = meta.num("attention.sliding_window").ok().filter(|&w| w > 0);
    let scaling = meta.get("rope.scaling.type").and_then(|v| v.to_string().ok());
    let rope_scaling = match scaling.map(String::as_str) {
        None | Some("none") => RopeScaling::None,
        Some("linear") => RopeScaling::Linear(meta.float("rope.scaling.factor", 1.0)),
        Some(other) => {
            return Err(Error::Unsupported(format!(
                "GGUF {}.rope.scaling.type {other:?} (supported: none, linear)",
                meta.arch
            )));
        }
    };
    Ok(LlamaConfig {
        family,
        hidden_size,
        num_heads,
        num_kv_heads: meta.num("attention.head_count_kv").unwrap_or(num_heads),
        head_dim,
        rotary_dim: meta.num("rope.dimension_count").unwrap_or(head_dim),
        rms_eps: f64::from(meta.float("attention.layer_norm_rms_epsilon", 1e-5)),
        rope_theta: meta.float("rope.freq_base", 10_000.0),
        rope_scaling,
        max_seq_len: window.map_or(context, |w| w.min(context)),
        // llama.cpp permutes llama's q/k rows for interleaved RoPE; qwen and phi3 files
        // keep the Hugging Face order (rotate halves).
        rope_interleaved: matches!(family, Family::Llama | Family::Mistral),
        activation: Activation::Silu,
        embed_scale: None,
    })
}

/// Reads a file's tensors onto the device.
struct TensorReader<'a> {
    content: &'a gguf_file::Content,
    file: &'a mut std::fs::File,
    device: &'a Device,
    weights: Weights,
}

impl TensorReader<'_> {
    fn tensor(&mut self, name: &str) -> Result<QTensor> {
        Ok(self.content.tensor(self.file, name, self.device)?)
    }

    fn has(&self, name: &str) -> bool {
        self.content.tensor_infos.contains_key(name)
    }

    fn dense(&mut self, name: &str) -> Result<Tensor> {
        Ok(self.tensor(name)?.dequantize(self.device)?)
    }

    /// A 1-D tensor's values.
    fn factors(&mut self, name: &str) -> Result<Vec<f32>> {
        Ok(self.dense(name)?.to_dtype(DType::F32)?.to_vec1()?)
    }

    fn linear(&self, w: QTensor) -> Result<Linear> {
        linear(w, self.weights, self.device)
    }

    /// The projection stored as `name`.
    fn proj(&mut self, name: &str) -> Result<Linear> {
        let w = self.tensor(name)?;
        self.linear(w)
    }

    /// Block `i`, its fused projections (phi3's `attn_qkv`, `ffn_up`) split.
    fn block(&mut self, i: usize, config: &LlamaConfig) -> Result<Block> {
        let p = format!("blk.{i}");
        let (q_rows, kv_rows) =
            (config.num_heads * config.head_dim, config.num_kv_heads * config.head_dim);
        let [wq, wk, wv] = if self.has(&format!("{p}.attn_qkv.weight")) {
            let qkv = self.tensor(&format!("{p}.attn_qkv.weight"))?;
            let parts = split_rows(&qkv, &[q_rows, kv_rows, kv_rows], self.device)?;
            let [q, k, v] = <[QTensor; 3]>::try_from(parts).map_err(|_| split_error())?;
            [self.linear(q)?, self.linear(k)?, self.linear(v)?]
        } else {
            let mut get = |n: &str| -> Result<Linear> {
                let linear = self.proj(&format!("{p}.{n}.weight"))?;
                // Qwen2's q/k/v projections have biases; the others have none.
                let bias = format!("{p}.{n}.bias");
                Ok(if self.has(&bias) { linear.with_bias(self.dense(&bias)?) } else { linear })
            };
            [get("attn_q")?, get("attn_k")?, get("attn_v")?]
        };
        let (gate, up) = if self.has(&format!("{p}.ffn_gate.weight")) {
            (self.proj(&format!("{p}.ffn_gate.weight"))?, self.proj(&format!("{p}.ffn_up.weight"))?)
        } else {
            // Gate and up fused in `ffn_up`, gate first.
            let fused = self.tensor(&format!("{p}.ffn_up.weight"))?;
            let half = fused.shape().dims2()?.0 / 2;
            let parts = split_rows(&fused, &[half, half], self.device)?;
            let [gate, up] = <[QTensor; 2]>::try_from(parts).map_err(|_| split_error())?;
            (self.linear(gate)?, self.linear(up)?)
        };
        let qk_norm = if self.has(&format!("{p}.attn_q_norm.weight")) {
            let q = self.dense(&format!("{p}.attn_q_norm.weight"))?;
            Some((q, self.dense(&format!("{p}.attn_k_norm.weight"))?))
        } else {
            None
        };
        Ok(Block {
            attn_norm: self.dense(&format!("{p}.attn_norm.weight"))?,
            wq,
            wk,
            wv,
            wo: self.proj(&format!("{p}.attn_output.weight"))?,
            ffn_norm: self.dense(&format!("{p}.ffn_norm.weight"))?,
            gate,
            up,
            down: self.proj(&format!("{p}.ffn_down.weight"))?,
            qk_norm,
        })
    }
}

fn split_error() -> Error {
    Error::Unsupported("fused GGUF projection of an unexpected shape".into())
}

/// Splits `w` (`[out, in]`) into consecutive blocks of rows, byte for byte: quantized
/// blocks run along a row, so rows split without re-quantizing.
fn split_rows(w: &QTensor, rows: &[usize], device: &Device) -> Result<Vec<QTensor>> {
    let (total, cols) = w.shape().dims2()?;
    if rows.iter().sum::<usize>() != total {
        return Err(Error::Unsupported(format!(
            "fused GGUF projection has {total} rows, expected {rows:?}"
        )));
    }
    let dtype = w.dtype();
    let row_bytes = cols / dtype.block_size() * dtype.type_size();
    let data = w.data()?;
    let mut start = 0;
    rows.iter()
        .map(|&n| {
            let bytes = &data[start * row_bytes..(start + n) * row_bytes];
            start += n;
            let storage = QStorage::from_data(Cow::Borrowed(bytes), device, dtype)?;
            Ok(QTensor::new(storage, (n, cols))?)
        })
        .collect()
}

/// A projection held as `weights` says. `q8_0` and `dual` put the types Blaze's kernels
/// take on them where the CPU runs them (`linear::packed`), for every pass; otherwise
/// `q8_0` widens the types candle has only scalar kernels for to Q8_0, and `dual` adds a
/// dense copy for prefill and large steps.
fn linear(w: QTensor, weights: Weights, device: &Device) -> Result<Linear> {
    if matches!(weights, Weights::Q8_0 | Weights::Dual)
        && let Some(m) = linear::packed(&w, device)?
    {
        return Ok(Linear::packed(m));
    }
    let fast = |w: QTensor| -> Result<Linear> {
        if device.is_cpu() && SCALAR_ON_CPU.contains(&w.dtype()) {
            return linear::quantized(&w.dequantize(device)?, GgmlDType::Q8_0);
        }
        Ok(Linear::quantized(QMatMul::from_qtensor(w)?))
    };
    match weights {
        Weights::F32 => Linear::dense(&w.dequantize(device)?),
        Weights::Q8_0 => fast(w),
        Weights::Dual => {
            let dense = w.dequantize(device)?;
            fast(w)?.with_dense(&dense)
        }
        Weights::Auto | Weights::Stored => Ok(Linear::quantized(QMatMul::from_qtensor(w)?)),
    }
}

/// Bytes of weights a decode step over the file as stored reads: every tensor but the
/// token embedding table, which is only indexed (unless the output head shares it).
pub fn stored_bytes_per_step(path: &Path) -> Result<u64> {
    let content = gguf_file::Content::read(&mut std::fs::File::open(path)?)?;
    let tied = !content.tensor_infos.contains_key("output.weight");
    Ok(content
        .tensor_infos
        .iter()
        .filter(|(name, _)| tied || name.as_str() != "token_embd.weight")
        .map(|(_, t)| {
            (t.shape.elem_count() / t.ggml_dtype.block_size() * t.ggml_dtype.type_size()) as u64
        })
        .sum())
}

/// Bytes the file's tensors take as f32.
pub fn f32_bytes(path: &Path) -> Result<u64> {
    let content = gguf_file::Content::read(&mut std::fs::File::open(path)?)?;
    Ok(content.tensor_infos.values().map(|t| t.shape.elem_count() as u64 * 4).sum())
}

/// A string metadata value.
pub fn metadata_str(content: &gguf_file::Content, key: &str) -> Result<String> {
    content
        .metadata
        .get(key)
        .ok_or_else(|| Error::Unsupported(format!("GGUF metadata {key} missing")))?
        .to_string()
        .cloned()
        .map_err(Error::from)
}
