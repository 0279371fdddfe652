//! Loading a quantized llama-family model from a GGUF file, tokenizer and chat template
//! included (they live in the file's metadata).

use std::path::Path;

use candle_core::quantized::{GgmlDType, QMatMul, QTensor, gguf_file};
use candle_core::{DType, Device};

use super::Weights;
use super::llama::{Block, Linear, Llama, LlamaConfig};
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
/// far below their own rounding) they use the AVX2 kernels.
const SCALAR_ON_CPU: &[GgmlDType] = &[GgmlDType::Q4_1, GgmlDType::Q5_0, GgmlDType::Q5_1];

/// The decode batch `dual` weighs its kernels at: the default --max-batch-size.
const DUAL_CHECK_ROWS: usize = 16;

/// GGUF architectures whose tensor layout is llama's.
const LLAMA_LIKE: &[&str] = &["llama", "mistral"];

/// Reads a GGUF file into a [`Llama`], holding the projection weights as `weights` says
/// (`Auto` is taken as `Stored`; resolve it first).
pub fn load(path: &Path, device: &Device, weights: Weights) -> Result<GgufModel> {
    let mut file = std::fs::File::open(path)?;
    let content = gguf_file::Content::read(&mut file)?;
    let arch = metadata_str(&content, "general.architecture")?;
    if !LLAMA_LIKE.contains(&arch.as_str()) {
        return Err(Error::Unsupported(format!(
            "GGUF architecture {arch} (supported: {LLAMA_LIKE:?})"
        )));
    }
    let num = |key: &str| -> Result<u32> {
        content
            .metadata
            .get(&format!("{arch}.{key}"))
            .ok_or_else(|| Error::Unsupported(format!("GGUF metadata {arch}.{key} missing")))?
            .to_u32()
            .map_err(Error::from)
    };
    let float = |key: &str, default: f32| -> f32 {
        content
            .metadata
            .get(&format!("{arch}.{key}"))
            .and_then(|v| v.to_f32().ok())
            .unwrap_or(default)
    };
    let config = LlamaConfig {
        hidden_size: num("embedding_length")? as usize,
        num_heads: num("attention.head_count")? as usize,
        num_kv_heads: num("attention.head_count_kv").unwrap_or(num("attention.head_count")?)
            as usize,
        rms_eps: f64::from(float("attention.layer_norm_rms_epsilon", 1e-5)),
        rope_theta: float("rope.freq_base", 10_000.0),
        max_seq_len: num("context_length")? as usize,
        rope_interleaved: true,
    };
    let layers = num("block_count")? as usize;
    let mut tensor = |name: &str| content.tensor(&mut file, name, device);
    let embed_q = tensor("token_embd.weight")?;
    let embed = embed_q.dequantize(device)?;
    let norm = tensor("output_norm.weight")?.dequantize(device)?;
    let matmul = |w: QTensor| -> Result<Linear> { linear(w, weights, device) };
    let lm_head = match tensor("output.weight") {
        Ok(w) => matmul(w)?,
        // Tied embeddings: the output projection is the embedding matrix.
        Err(_) => matmul(embed_q)?,
    };
    let mut blocks = Vec::with_capacity(layers);
    for i in 0..layers {
        let mut q =
            |name: &str| -> Result<Linear> { matmul(tensor(&format!("blk.{i}.{name}.weight"))?) };
        let (wq, wk, wv, wo) = (q("attn_q")?, q("attn_k")?, q("attn_v")?, q("attn_output")?);
        let (gate, up, down) = (q("ffn_gate")?, q("ffn_up")?, q("ffn_down")?);
        let attn_norm = tensor(&format!("blk.{i}.attn_norm.weight"))?.dequantize(device)?;
        let ffn_norm = tensor(&format!("blk.{i}.ffn_norm.weight"))?.dequantize(device)?;
        blocks.push(Block { attn_norm, wq, wk, wv, wo, ffn_norm, gate, up, down });
    }
    let mut llama = Llama::new(config, embed.to_dtype(DType::F32)?, blocks, norm, lm_head, device)?;
    if weights == Weights::Dual {
        llama.drop_slow_dense_copies(DUAL_CHECK_ROWS)?;
    }
    Ok(GgufModel { llama, content })
}

/// A projection held as `weights` says.
fn linear(w: QTensor, weights: Weights, device: &Device) -> Result<Linear> {
    let scalar = SCALAR_ON_CPU.contains(&w.dtype());
    // Q8_0 in place of a type with only scalar kernels; others as stored.
    let fast = |w: QTensor| -> Result<QMatMul> {
        let w =
            if scalar { QTensor::quantize(&w.dequantize(device)?, GgmlDType::Q8_0)? } else { w };
        Ok(QMatMul::from_qtensor(w)?)
    };
    match weights {
        Weights::F32 => Linear::dense(&w.dequantize(device)?),
        Weights::Q8_0 => Ok(Linear::quantized(fast(w)?)),
        Weights::Dual => {
            let dense = w.dequantize(device)?;
            Linear::dual(fast(w)?, &dense)
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
