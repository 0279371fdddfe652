//! A llama-family decoder whose forward pass takes a ragged batch: several sequences, each
//! with its own new tokens, positions and KV cache, in one pass. The weight matmuls (where a
//! decode step spends its memory bandwidth) run once over all the batch's tokens; attention,
//! which is per sequence anyway, runs sequence by sequence with its own causal mask.
//!
//! Stock candle-transformers models keep one KV cache inside the model and one position for
//! the whole batch, which is why this module exists.

use candle_core::quantized::QMatMul;
use candle_core::{D, DType, Device, Module, Tensor};

use super::kv_cache::KvCache;
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

/// Decode steps of at least this many sequences use the projections' dense copies when they
/// have them (prefill always does). On CPU, candle's Q8_0 kernel works row by row and is
/// compute-bound: it decodes one sequence about twice as fast as f32 GEMM (it reads 27% of
/// the bytes), and f32 GEMM catches up at about eight rows (blaze-worker-bench on
/// SmolLM2-135M, one thread: 59.5 vs 59.0 tokens/s at eight; 63 vs 84 at sixteen). Below
/// eight, a sequence takes the same kernels batched or alone (the SmolLM2 tests check
/// that greedy output is equal with four).
pub const DENSE_MIN_ROWS: usize = 8;

/// A projection's weights: quantized, dense, or both (quantized for decode steps of fewer
/// than [`DENSE_MIN_ROWS`] sequences, dense for prefill and larger steps).
///
/// The dense copy is held transposed, `[in, out]` and contiguous, and multiplied as is: the
/// GEMM then reads it in place. Held `[out, in]` (candle's layout, multiplied through a
/// transposed view) GEMM packed the whole matrix on every call, a quarter of a 16-sequence
/// decode step's time.
pub struct Linear {
    quantized: Option<QMatMul>,
    dense_t: Option<Tensor>,
    bias: Option<Tensor>,
}

impl Linear {
    /// Quantized weights (or any [`QMatMul`]) for every pass.
    pub(crate) fn quantized(weights: QMatMul) -> Self {
        Self { quantized: Some(weights), dense_t: None, bias: None }
    }

    /// Dense `[out, in]` weights for every pass.
    pub(crate) fn dense(weights: &Tensor) -> Result<Self> {
        Ok(Self { quantized: None, dense_t: Some(weights.t()?.contiguous()?), bias: None })
    }

    /// `quantized` for small decode steps, dense `[out, in]` weights for the other passes.
    pub(crate) fn dual(quantized: QMatMul, weights: &Tensor) -> Result<Self> {
        let dense_t = Some(weights.t()?.contiguous()?);
        Ok(Self { quantized: Some(quantized), dense_t, bias: None })
    }

    /// Adds `bias` (`[out]`) to every output row.
    pub(crate) fn with_bias(self, bias: Tensor) -> Self {
        Self { bias: Some(bias), ..self }
    }

    /// `x` is `[rows, in]`; `dense` prefers the dense copy.
    fn forward(&self, x: &Tensor, dense: bool) -> Result<Tensor> {
        let y = self.forward_weights(x, dense)?;
        match &self.bias {
            Some(bias) => Ok(y.broadcast_add(bias)?),
            None => Ok(y),
        }
    }

    fn forward_weights(&self, x: &Tensor, dense: bool) -> Result<Tensor> {
        match (&self.quantized, &self.dense_t) {
            (Some(q), None) => Ok(q.forward(x)?),
            (Some(q), Some(_)) if !dense => Ok(q.forward(x)?),
            (_, Some(w)) => Ok(x.matmul(w)?),
            (None, None) => unreachable!("a Linear holds weights"),
        }
    }

    /// Whether the dense copy beats the quantized weights over `rows` rows (best of three
    /// alternating timings, so a busy machine misleads it less). True without both copies.
    fn dense_is_faster(&self, rows: usize) -> Result<bool> {
        let (Some(q), Some(w)) = (&self.quantized, &self.dense_t) else { return Ok(true) };
        let x = Tensor::randn(0f32, 1f32, (rows, w.dim(0)?), w.device())?;
        let (mut quantized, mut dense) = (f64::MAX, f64::MAX);
        for _ in 0..3 {
            let start = std::time::Instant::now();
            q.forward(&x)?;
            quantized = quantized.min(start.elapsed().as_secs_f64());
            let start = std::time::Instant::now();
            x.matmul(w)?;
            dense = dense.min(start.elapsed().as_secs_f64());
        }
        Ok(dense < quantized)
    }

    /// What the weights are, for logs and for grouping projections of one shape.
    fn kind(&self) -> String {
        let quantized = match &self.quantized {
            Some(QMatMul::QTensor(t)) => format!("{:?} {:?}", t.dtype(), t.shape().dims()),
            Some(QMatMul::Tensor(t) | QMatMul::TensorF16(t)) => format!("{:?}", t.shape().dims()),
            None => "-".into(),
        };
        let dense = self.dense_t.as_ref().map(|t| format!("{:?}", t.shape().dims()));
        format!("{quantized} / dense {}", dense.unwrap_or_else(|| "-".into()))
    }

    fn bytes(&self, dense: bool) -> u64 {
        let tensor = |t: &Tensor| (t.elem_count() * t.dtype().size_in_bytes()) as u64;
        match (&self.quantized, &self.dense_t) {
            (Some(q), d) if d.is_none() || !dense => match q {
                QMatMul::QTensor(t) => t.storage_size_in_bytes() as u64,
                QMatMul::Tensor(t) | QMatMul::TensorF16(t) => tensor(t),
            },
            (_, Some(w)) => tensor(w),
            (_, None) => 0,
        }
    }
}

/// One transformer block's weights.
pub struct Block {
    pub(crate) attn_norm: Tensor,
    pub(crate) wq: Linear,
    pub(crate) wk: Linear,
    pub(crate) wv: Linear,
    pub(crate) wo: Linear,
    pub(crate) ffn_norm: Tensor,
    pub(crate) gate: Linear,
    pub(crate) up: Linear,
    pub(crate) down: Linear,
}

/// A loaded llama-family model. Holds no per-request state, so one model serves any number
/// of sequences.
pub struct Llama {
    pub(crate) config: LlamaConfig,
    pub(crate) embed: Tensor,
    pub(crate) blocks: Vec<Block>,
    pub(crate) norm: Tensor,
    pub(crate) lm_head: Linear,
    cos: Tensor,
    sin: Tensor,
    device: Device,
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
        lm_head: Linear,
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

    /// Drops the dense copies that are slower than their quantized weights even on the
    /// largest decode step (`rows` sequences), measured once per shape. On AVX-512 VNNI
    /// machines candle repacks Q8_0 matrices whose input width is a multiple of 256 (the
    /// MLP's down projection) and runs them faster than f32 GEMM at any batch; the 49152-row
    /// output head of SmolLM2 also stays faster quantized. Each dropped copy is memory saved.
    pub(crate) fn drop_slow_dense_copies(&mut self, rows: usize) -> Result<()> {
        let mut verdicts: std::collections::HashMap<String, bool> = Default::default();
        let linears = self
            .blocks
            .iter_mut()
            .flat_map(|b| {
                [&mut b.wq, &mut b.wk, &mut b.wv, &mut b.wo, &mut b.gate, &mut b.up, &mut b.down]
            })
            .chain(std::iter::once(&mut self.lm_head));
        for linear in linears {
            let kind = linear.kind();
            let keep = match verdicts.get(&kind) {
                Some(&keep) => keep,
                None => {
                    let keep = linear.dense_is_faster(rows)?;
                    tracing::info!(weights = %kind, rows, dense = keep, "kernel choice for large steps");
                    verdicts.insert(kind, keep);
                    keep
                }
            };
            if !keep && linear.quantized.is_some() {
                linear.dense_t = None;
            }
        }
        Ok(())
    }

    /// Bytes of weights a decode step over `batch` sequences reads: every projection, the
    /// output head and the norms (the embedding table is only indexed). Over the memory
    /// bandwidth, this bounds decode steps per second.
    pub fn weight_bytes_per_step(&self, batch: usize) -> u64 {
        let dense = batch >= DENSE_MIN_ROWS;
        let dense_bytes = |t: &Tensor| (t.elem_count() * t.dtype().size_in_bytes()) as u64;
        let blocks: u64 = self
            .blocks
            .iter()
            .map(|b| {
                let projections = [&b.wq, &b.wk, &b.wv, &b.wo, &b.gate, &b.up, &b.down];
                projections.into_iter().map(|l| l.bytes(dense)).sum::<u64>()
                    + dense_bytes(&b.attn_norm)
                    + dense_bytes(&b.ffn_norm)
            })
            .sum();
        blocks + self.lm_head.bytes(dense) + dense_bytes(&self.norm)
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
        // Prefill, or a decode step big enough for GEMM to beat the row-by-row kernels.
        let dense = seqs.len() >= DENSE_MIN_ROWS || seqs.iter().any(|s| s.tokens.len() > 1);
        for (layer, block) in self.blocks.iter().enumerate() {
            let h = candle_nn::ops::rms_norm(&x, &block.attn_norm, self.config.rms_eps as f32)?;
            let attn = self.attention(layer, block, &h, seqs, dense)?;
            x = (x + block.wo.forward(&attn, dense)?)?;
            let h = candle_nn::ops::rms_norm(&x, &block.ffn_norm, self.config.rms_eps as f32)?;
            let gated = (candle_nn::ops::silu(&block.gate.forward(&h, dense)?)?
                * block.up.forward(&h, dense)?)?;
            x = (x + block.down.forward(&gated, dense)?)?;
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
        self.lm_head.forward(&x, dense)
    }

    fn attention(
        &self,
        layer: usize,
        block: &Block,
        h: &Tensor,
        seqs: &mut [SeqInput<'_>],
        dense: bool,
    ) -> Result<Tensor> {
        let (nh, nkv, hd) =
            (self.config.num_heads, self.config.num_kv_heads, self.config.head_dim());
        let q = block.wq.forward(h, dense)?;
        let k = block.wk.forward(h, dense)?;
        let v = block.wv.forward(h, dense)?;
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
            let (k, v) = seq.cache.append(layer, &k, &v)?;
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
