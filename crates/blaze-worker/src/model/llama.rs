//! A llama-family decoder whose forward pass takes a ragged batch: several sequences, each
//! with its own new tokens, positions and KV cache, in one pass. The weight matmuls (where a
//! decode step spends its memory bandwidth) run once over all the batch's tokens; attention,
//! which is per sequence anyway, runs sequence by sequence with its own causal mask.
//!
//! Stock candle-transformers models keep one KV cache inside the model and one position for
//! the whole batch, which is why this module exists.

use candle_core::quantized::QMatMul;
use candle_core::{D, DType, Device, Module, Tensor};

use crate::Result;

/// Shape and numerics of a llama-family model.
#[derive(Debug, Clone)]
pub struct LlamaConfig {
    /// Model width.
    pub hidden_size: usize,
    /// Attention heads.
    pub num_heads: usize,
    /// Key/value heads (grouped-query attention when fewer than `num_heads`).
    pub num_kv_heads: usize,
    /// RMS norm epsilon.
    pub rms_eps: f64,
    /// RoPE base frequency.
    pub rope_theta: f32,
    /// Longest sequence (prompt plus generated tokens) the model takes.
    pub max_seq_len: usize,
    /// GGUF checkpoints store q/k permuted for interleaved RoPE; HF checkpoints use halves.
    pub rope_interleaved: bool,
}

impl LlamaConfig {
    fn head_dim(&self) -> usize {
        self.hidden_size / self.num_heads
    }
}

/// One transformer block's weights.
pub struct Block {
    pub(crate) attn_norm: Tensor,
    pub(crate) wq: QMatMul,
    pub(crate) wk: QMatMul,
    pub(crate) wv: QMatMul,
    pub(crate) wo: QMatMul,
    pub(crate) ffn_norm: Tensor,
    pub(crate) gate: QMatMul,
    pub(crate) up: QMatMul,
    pub(crate) down: QMatMul,
}

/// A loaded llama-family model. Holds no per-request state, so one model serves any number
/// of sequences.
pub struct Llama {
    pub(crate) config: LlamaConfig,
    pub(crate) embed: Tensor,
    pub(crate) blocks: Vec<Block>,
    pub(crate) norm: Tensor,
    pub(crate) lm_head: QMatMul,
    cos: Tensor,
    sin: Tensor,
    device: Device,
}

/// The keys and values one sequence has produced so far, per layer.
#[derive(Debug, Clone, Default)]
pub struct KvCache {
    layers: Vec<Option<(Tensor, Tensor)>>,
    len: usize,
}

impl KvCache {
    /// How many positions the cache holds.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True before the first forward pass.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes the cache occupies.
    pub fn bytes(&self) -> usize {
        self.layers
            .iter()
            .flatten()
            .map(|(k, v)| (k.elem_count() + v.elem_count()) * k.dtype().size_in_bytes())
            .sum()
    }
}

/// One sequence's share of a forward pass.
pub struct SeqInput<'a> {
    /// The tokens this pass appends (the whole prompt at prefill, one token at decode).
    pub tokens: &'a [u32],
    /// The sequence's cache; its length is the position of `tokens[0]`.
    pub cache: &'a mut KvCache,
}

impl Llama {
    /// Assembles a model from its weights and precomputes the RoPE tables.
    pub(crate) fn new(
        config: LlamaConfig,
        embed: Tensor,
        blocks: Vec<Block>,
        norm: Tensor,
        lm_head: QMatMul,
        device: &Device,
    ) -> Result<Self> {
        let half = config.head_dim() / 2;
        let inv_freq: Vec<f32> = (0..half)
            .map(|i| 1.0 / config.rope_theta.powf(2.0 * i as f32 / config.head_dim() as f32))
            .collect();
        let inv_freq = Tensor::from_vec(inv_freq, (1, half), device)?;
        let positions = Tensor::arange(0u32, config.max_seq_len as u32, device)?
            .to_dtype(DType::F32)?
            .reshape((config.max_seq_len, 1))?;
        let freqs = positions.matmul(&inv_freq)?;
        Ok(Self {
            cos: freqs.cos()?,
            sin: freqs.sin()?,
            config,
            embed,
            blocks,
            norm,
            lm_head,
            device: device.clone(),
        })
    }

    /// The model's configuration.
    pub fn config(&self) -> &LlamaConfig {
        &self.config
    }

    /// The device the weights live on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Runs one forward pass over a ragged batch and returns the logits of each sequence's
    /// last new token, shape `[batch, vocab]`. Appends to every sequence's cache.
    pub fn forward(&self, seqs: &mut [SeqInput<'_>]) -> Result<Tensor> {
        let all: Vec<u32> = seqs.iter().flat_map(|s| s.tokens.iter().copied()).collect();
        let total = all.len();
        let ids = Tensor::from_vec(all, total, &self.device)?;
        let mut x = self.embed.index_select(&ids, 0)?;
        for (layer, block) in self.blocks.iter().enumerate() {
            let h = candle_nn::ops::rms_norm(&x, &block.attn_norm, self.config.rms_eps as f32)?;
            let attn = self.attention(layer, block, &h, seqs)?;
            x = (x + block.wo.forward(&attn)?)?;
            let h = candle_nn::ops::rms_norm(&x, &block.ffn_norm, self.config.rms_eps as f32)?;
            let gated =
                (candle_nn::ops::silu(&block.gate.forward(&h)?)? * block.up.forward(&h)?)?;
            x = (x + block.down.forward(&gated)?)?;
        }
        let mut last = Vec::with_capacity(seqs.len());
        let mut offset = 0;
        for seq in seqs.iter_mut() {
            offset += seq.tokens.len();
            last.push(offset as u32 - 1);
            seq.cache.len += seq.tokens.len();
        }
        let last = Tensor::from_vec(last, seqs.len(), &self.device)?;
        let x = x.index_select(&last, 0)?;
        let x = candle_nn::ops::rms_norm(&x, &self.norm, self.config.rms_eps as f32)?;
        Ok(self.lm_head.forward(&x)?)
    }

    fn attention(
        &self,
        layer: usize,
        block: &Block,
        h: &Tensor,
        seqs: &mut [SeqInput<'_>],
    ) -> Result<Tensor> {
        let (nh, nkv, hd) =
            (self.config.num_heads, self.config.num_kv_heads, self.config.head_dim());
        let q = block.wq.forward(h)?;
        let k = block.wk.forward(h)?;
        let v = block.wv.forward(h)?;
        let mut outputs = Vec::with_capacity(seqs.len());
        let mut offset = 0;
        for seq in seqs.iter_mut() {
            let n = seq.tokens.len();
            let pos = seq.cache.len;
            let heads = |t: &Tensor, count: usize| -> Result<Tensor> {
                Ok(t.narrow(0, offset, n)?
                    .reshape((1, n, count, hd))?
                    .transpose(1, 2)?
                    .contiguous()?)
            };
            let q = self.rope(&heads(&q, nh)?, pos, n)?;
            let k = self.rope(&heads(&k, nkv)?, pos, n)?;
            let v = heads(&v, nkv)?;
            if seq.cache.layers.len() <= layer {
                seq.cache.layers.resize(layer + 1, None);
            }
            let (k, v) = match seq.cache.layers[layer].take() {
                Some((pk, pv)) => (Tensor::cat(&[&pk, &k], 2)?, Tensor::cat(&[&pv, &v], 2)?),
                None => (k, v),
            };
            seq.cache.layers[layer] = Some((k.clone(), v.clone()));
            // Grouped-query attention without copying the cache per query head: the query
            // heads that share a KV head become extra rows, [1, kv, groups * n, hd].
            let groups = nh / nkv;
            let q = q.reshape((1, nkv, groups * n, hd))?;
            let scores = (q.matmul(&k.t()?)? / (hd as f64).sqrt())?;
            let scores = if n > 1 {
                let mask = self.causal_mask(pos, n)?;
                let mask = if groups > 1 { mask.repeat((groups, 1))? } else { mask };
                scores.broadcast_add(&mask)?
            } else {
                scores
            };
            let probs = candle_nn::ops::softmax_last_dim(&scores)?;
            let out = probs
                .matmul(&v)?
                .reshape((1, nh, n, hd))?
                .transpose(1, 2)?
                .reshape((n, nh * hd))?;
            outputs.push(out);
            offset += n;
        }
        Ok(Tensor::cat(&outputs, 0)?)
    }

    fn rope(&self, x: &Tensor, pos: usize, n: usize) -> Result<Tensor> {
        let cos = self.cos.narrow(0, pos, n)?;
        let sin = self.sin.narrow(0, pos, n)?;
        Ok(if self.config.rope_interleaved {
            candle_nn::rotary_emb::rope_i(x, &cos, &sin)?
        } else {
            candle_nn::rotary_emb::rope(x, &cos, &sin)?
        })
    }

    /// Mask for `n` new queries at positions `pos..pos + n` over `pos + n` keys.
    fn causal_mask(&self, pos: usize, n: usize) -> Result<Tensor> {
        let keys = pos + n;
        let mask: Vec<f32> = (0..n)
            .flat_map(|i| (0..keys).map(move |j| if j > pos + i { f32::NEG_INFINITY } else { 0.0 }))
            .collect();
        Ok(Tensor::from_vec(mask, (n, keys), &self.device)?)
    }

    /// Logits for a whole prompt in one sequence, for tests and the baseline benchmark.
    pub fn forward_one(&self, tokens: &[u32], cache: &mut KvCache) -> Result<Tensor> {
        let logits = self.forward(&mut [SeqInput { tokens, cache }])?;
        Ok(logits.squeeze(0)?)
    }

    /// Index of the largest logit per row.
    pub fn argmax(logits: &Tensor) -> Result<Vec<u32>> {
        Ok(logits.argmax(D::Minus1)?.to_vec1::<u32>()?)
    }
}
