//! A llama-shaped decoder whose forward pass takes a ragged batch: several sequences, each
//! with its own new tokens, positions and KV cache, in one pass. The weight matmuls (where a
//! decode step spends its memory bandwidth) run once over all the batch's tokens; attention,
//! which is per sequence anyway, runs sequence by sequence with its own causal mask. In a
//! decode step (one new token per sequence) RoPE and the head layout are done for the whole
//! batch at once; the cache append and the attention itself stay per sequence, unless the
//! caches are slots of one [`KvPool`] (on a GPU), where they are one batched call each.
//!
//! One forward pass serves every [`Family`]: the families differ in a few numerics the
//! config carries (q/k norms, activation, embedding scale, partial rotary, head size) and in
//! checkpoint layout, which the loaders undo (fused projections are split at load).
//!
//! Stock candle-transformers models keep one KV cache inside the model and one position for
//! the whole batch, which is why this module exists.

use std::sync::Arc;

use candle_core::{D, DType, Device, Tensor};

use super::family::{Activation, Family};
use super::kv_cache::KvCache;
use super::kv_pool::{KvPool, Plan};
pub use super::linear::Linear;
use super::linear::Pass;
use super::rope::RopeScaling;
use crate::{Error, Result};

/// Shape and numerics of a model.
#[derive(Debug, Clone)]
pub struct LlamaConfig {
    /// Which family the checkpoint is.
    pub family: Family,
    /// Model width.
    pub hidden_size: usize,
    /// Attention heads.
    pub num_heads: usize,
    /// Key/value heads (grouped-query attention when fewer than `num_heads`).
    pub num_kv_heads: usize,
    /// Width of one attention head (`hidden_size / num_heads` unless the config says).
    pub head_dim: usize,
    /// Leading dimensions of each head that RoPE rotates (`head_dim` but for partial
    /// rotary); the rest pass through.
    pub rotary_dim: usize,
    /// RMS norm epsilon.
    pub rms_eps: f64,
    /// RoPE base frequency.
    pub rope_theta: f32,
    /// How the checkpoint rescales RoPE's frequencies.
    pub rope_scaling: RopeScaling,
    /// Longest sequence (prompt plus generated tokens) the model takes.
    pub max_seq_len: usize,
    /// GGUF llama checkpoints store q/k permuted for interleaved RoPE; HF checkpoints and
    /// GGUF files of the other families use halves.
    pub rope_interleaved: bool,
    /// The MLP's gate activation.
    pub activation: Activation,
    /// Factor the token embeddings are multiplied by (gemma: `sqrt(hidden_size)`).
    pub embed_scale: Option<f64>,
}

/// Decode steps of at least this many sequences use the projections' dense copies when they
/// have them (prefill always does). On CPU, candle's Q8_0 kernel works row by row and is
/// compute-bound: it decodes one sequence about twice as fast as f32 GEMM (it reads 27% of
/// the bytes), and f32 GEMM catches up at about eight rows (blaze-worker-bench on
/// SmolLM2-135M, one thread: 59.5 vs 59.0 tokens/s at eight; 63 vs 84 at sixteen). Below
/// eight, a sequence takes the same kernels batched or alone (the SmolLM2 tests check
/// that greedy output is equal with four). On AVX-512 VNNI CPUs Blaze's kernels take the
/// Q4 and Q8 projections for every pass (they beat f32 GEMM at any batch), with no dense
/// copy.
pub const DENSE_MIN_ROWS: usize = 8;

/// One transformer block's weights.
#[derive(Clone)]
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
    /// Qwen3: RMSNorm weights applied to each query and key head before RoPE.
    pub(crate) qk_norm: Option<(Tensor, Tensor)>,
}

impl Block {
    fn linears(&self) -> [&Linear; 7] {
        [&self.wq, &self.wk, &self.wv, &self.wo, &self.gate, &self.up, &self.down]
    }

    fn linears_mut(&mut self) -> [&mut Linear; 7] {
        let b = self;
        [&mut b.wq, &mut b.wk, &mut b.wv, &mut b.wo, &mut b.gate, &mut b.up, &mut b.down]
    }
}

/// A loaded llama-family model. Holds no per-request state, so one model serves any number
/// of sequences. A clone shares the weights (and the kernel choices made at load).
#[derive(Clone)]
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
        let c = &config;
        if c.num_kv_heads == 0 || !c.num_heads.is_multiple_of(c.num_kv_heads) {
            return Err(Error::Unsupported(format!(
                "{} attention heads do not group over {} key/value heads",
                c.num_heads, c.num_kv_heads
            )));
        }
        let factors = c.rope_scaling.factor_count();
        if !c.rotary_dim.is_multiple_of(2)
            || c.rotary_dim > c.head_dim
            || factors.is_some_and(|n| n != c.rotary_dim / 2)
        {
            return Err(Error::Unsupported(format!(
                "rotary dimension {} of a {}-wide head ({factors:?} RoPE factors)",
                c.rotary_dim, c.head_dim
            )));
        }
        tracing::info!(
            family = c.family.name(),
            layers = blocks.len(),
            hidden = c.hidden_size,
            heads = c.num_heads,
            kv_heads = c.num_kv_heads,
            head_dim = c.head_dim,
            context = c.max_seq_len,
            "model shape"
        );
        let half = config.rotary_dim / 2;
        let inv_freq = config.rope_scaling.inv_freq(config.rotary_dim, config.rope_theta);
        let inv_freq = Tensor::from_vec(inv_freq, (1, half), device)?;
        let positions = Tensor::arange(0u32, config.max_seq_len as u32, device)?
            .to_dtype(DType::F32)?
            .reshape((config.max_seq_len, 1))?;
        let freqs = positions.matmul(&inv_freq)?;
        let factor = f64::from(config.rope_scaling.attention_factor());
        let scale =
            |t: Tensor| -> Result<Tensor> { Ok(if factor == 1.0 { t } else { (t * factor)? }) };
        Ok(Self {
            cos: scale(freqs.cos()?)?,
            sin: scale(freqs.sin()?)?,
            config,
            embed,
            blocks,
            norm,
            lm_head,
            device: device.clone(),
        })
    }

    /// The model with its activations (and so its keys and values) in `dtype`: the
    /// embeddings, norms, biases and RoPE tables converted, logits still returned in f32.
    /// For dense projections only: the quantized kernels take f32 activations.
    /// On a GPU the load computes in the weights' type (bf16 by default), which halves the
    /// bytes of every activation and cached position and drops the two conversions around
    /// each matmul; on the CPU activations stay f32.
    pub fn with_activations(mut self, dtype: DType) -> Result<Self> {
        if self.embed.dtype() == dtype {
            return Ok(self);
        }
        let to = |t: &Tensor| -> Result<Tensor> { Ok(t.to_dtype(dtype)?) };
        self.embed = to(&self.embed)?;
        self.norm = to(&self.norm)?;
        self.cos = to(&self.cos)?;
        self.sin = to(&self.sin)?;
        self.lm_head.convert_bias(dtype)?;
        for block in &mut self.blocks {
            block.attn_norm = to(&block.attn_norm)?;
            block.ffn_norm = to(&block.ffn_norm)?;
            if let Some((q, k)) = &block.qk_norm {
                block.qk_norm = Some((to(q)?, to(k)?));
            }
            for linear in block.linears_mut() {
                linear.convert_bias(dtype)?;
            }
        }
        Ok(self)
    }

    /// An empty pool of KV slots for this model and batches of `max_batch` sequences, for
    /// caches whose decode steps attend in one batched call (see [`KvPool`]).
    pub fn kv_pool(&self, max_batch: usize) -> Arc<KvPool> {
        let c = &self.config;
        let (layers, dtype, device) = (self.blocks.len(), self.embed.dtype(), &self.device);
        KvPool::new(layers, c.num_kv_heads, c.head_dim, dtype, device, c.max_seq_len, max_batch)
    }

    /// The model's configuration.
    pub fn config(&self) -> &LlamaConfig {
        &self.config
    }

    /// How the projections are held and multiplied (see [`Linear::kind`]), with how many
    /// projections are held each way: for the load's log.
    pub(crate) fn projection_kinds(&self) -> std::collections::BTreeMap<String, usize> {
        let mut kinds = std::collections::BTreeMap::new();
        let linears = self.blocks.iter().flat_map(Block::linears).chain([&self.lm_head]);
        for linear in linears {
            *kinds.entry(linear.kind()).or_default() += 1;
        }
        kinds
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
                let norms = b.qk_norm.as_ref().map_or(0, |(q, k)| dense_bytes(q) + dense_bytes(k));
                b.linears().into_iter().map(|l| l.bytes(dense)).sum::<u64>()
                    + dense_bytes(&b.attn_norm)
                    + dense_bytes(&b.ffn_norm)
                    + norms
            })
            .sum();
        blocks + self.lm_head.bytes(dense) + dense_bytes(&self.norm)
    }

    /// The device the weights live on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Bytes one position of a sequence's cache takes: keys and values of every layer.
    pub fn kv_bytes_per_token(&self) -> usize {
        let c = &self.config;
        self.blocks.len() * 2 * c.num_kv_heads * c.head_dim * self.embed.dtype().size_in_bytes()
    }

    /// Runs one forward pass over a ragged batch and returns the logits of each sequence's
    /// last new token, shape `[batch, vocab]`. Appends to every sequence's cache.
    pub fn forward(&self, seqs: &mut [SeqInput<'_>]) -> Result<Tensor> {
        self.pass(seqs, false)
    }

    /// [`Self::forward`] for prompts: the prefill kernels even where a sequence brings one
    /// token (its prompt's prefix came from the prefix cache), so that its numbers are
    /// those of a prefill of the whole prompt.
    pub fn prefill(&self, seqs: &mut [SeqInput<'_>]) -> Result<Tensor> {
        self.pass(seqs, true)
    }

    /// On the CPU the pass runs on a thread of [`PASS`], so that candle's operations that
    /// split their work over rayon do it inside that pool.
    fn pass(&self, seqs: &mut [SeqInput<'_>], prefill: bool) -> Result<Tensor> {
        if self.device.is_cpu() && rayon::current_thread_index().is_none() {
            let moved =
                PASS.with(|pool| pool.as_ref().map(|p| p.install(|| self.run(seqs, prefill))));
            if let Some(done) = moved {
                return done;
            }
        }
        self.run(seqs, prefill)
    }

    fn run(&self, seqs: &mut [SeqInput<'_>], prefill: bool) -> Result<Tensor> {
        let all: Vec<u32> = seqs.iter().flat_map(|s| s.tokens.iter().copied()).collect();
        let total = all.len();
        let ids = Tensor::from_vec(all, total, &self.device)?;
        let mut x = self.embed.index_select(&ids, 0)?;
        if let Some(scale) = self.config.embed_scale {
            x = (x * scale)?;
        }
        let pass = if prefill || seqs.iter().any(|s| s.tokens.len() > 1) {
            Pass::Prefill
        } else if seqs.len() >= DENSE_MIN_ROWS {
            Pass::LargeDecode
        } else {
            Pass::SmallDecode
        };
        // A decode step turns every sequence's one new position at once: the rotation
        // angles of each sequence's position, gathered once for all layers, and where the
        // sequences' caches are slots of one pool, the plan of its batched attention.
        let step = match pass {
            Pass::Prefill => None,
            Pass::SmallDecode | Pass::LargeDecode => {
                Some(DecodeStep { turns: self.turns(seqs)?, slots: slot_plan(seqs)? })
            }
        };
        for (layer, block) in self.blocks.iter().enumerate() {
            let h = candle_nn::ops::rms_norm(&x, &block.attn_norm, self.config.rms_eps as f32)?;
            let attn = match &step {
                Some(step) => self.decode_attention(layer, block, &h, seqs, pass, step)?,
                None => self.attention(layer, block, &h, seqs, pass)?,
            };
            x = (x + block.wo.forward(&attn, pass)?)?;
            let h = candle_nn::ops::rms_norm(&x, &block.ffn_norm, self.config.rms_eps as f32)?;
            let gate = block.gate.forward(&h, pass)?;
            let gate = match self.config.activation {
                Activation::Silu => candle_nn::ops::silu(&gate)?,
                Activation::GeluTanh => gate.gelu()?,
                Activation::Gelu => gate.gelu_erf()?,
            };
            let gated = (gate * block.up.forward(&h, pass)?)?;
            x = (x + block.down.forward(&gated, pass)?)?;
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
        Ok(self.lm_head.forward(&x, pass)?.to_dtype(DType::F32)?)
    }

    fn attention(
        &self,
        layer: usize,
        block: &Block,
        h: &Tensor,
        seqs: &mut [SeqInput<'_>],
        pass: Pass,
    ) -> Result<Tensor> {
        let (nh, nkv, hd) = (self.config.num_heads, self.config.num_kv_heads, self.config.head_dim);
        let (q, k, v) = self.qkv(block, h, pass)?;
        let offsets: Vec<usize> = seqs
            .iter()
            .scan(0, |at, s| {
                *at += s.tokens.len();
                Some(*at - s.tokens.len())
            })
            .collect();
        let outputs = self.per_sequence(seqs, |i, seq| {
            let (n, offset) = (seq.tokens.len(), offsets[i]);
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
            Ok(probs.matmul(&v)?.reshape((1, nh, n, hd))?.transpose(1, 2)?.reshape((n, nh * hd))?)
        })?;
        Ok(Tensor::cat(&outputs, 0)?)
    }

    /// The query, key and value projections of `h`'s rows (`[rows, heads * head_dim]`), with
    /// the per-head norms of the families that have them.
    fn qkv(&self, block: &Block, h: &Tensor, pass: Pass) -> Result<(Tensor, Tensor, Tensor)> {
        let (nh, nkv, hd) = (self.config.num_heads, self.config.num_kv_heads, self.config.head_dim);
        let mut q = block.wq.forward(h, pass)?;
        let mut k = block.wk.forward(h, pass)?;
        if let Some((q_norm, k_norm)) = &block.qk_norm {
            let eps = self.config.rms_eps as f32;
            let rows = h.dim(0)?;
            let per_head = |t: &Tensor, w: &Tensor, heads: usize| -> Result<Tensor> {
                let t = t.reshape((rows, heads, hd))?;
                Ok(candle_nn::ops::rms_norm(&t, w, eps)?.reshape((rows, heads * hd))?)
            };
            q = per_head(&q, q_norm, nh)?;
            k = per_head(&k, k_norm, nkv)?;
        }
        Ok((q, k, block.wv.forward(h, pass)?))
    }

    /// `one(i, sequence)` for every sequence, in order. On the CPU (inside [`PASS`]) the
    /// sequences are spread over the pool's threads; elsewhere they run one by one.
    fn per_sequence(
        &self,
        seqs: &mut [SeqInput<'_>],
        one: impl Fn(usize, &mut SeqInput<'_>) -> Result<Tensor> + Sync,
    ) -> Result<Vec<Tensor>> {
        let alone = |seqs: &mut [SeqInput<'_>]| -> Result<Vec<Tensor>> {
            seqs.iter_mut().enumerate().map(|(i, seq)| one(i, seq)).collect()
        };
        if !self.device.is_cpu() || rayon::current_thread_index().is_none() {
            return alone(seqs);
        }
        use rayon::prelude::*;
        seqs.par_iter_mut().enumerate().map(|(i, seq)| one(i, seq)).collect()
    }

    /// Attention for a decode step (one new token per sequence). The projections' rows are
    /// already one per sequence in head order, so the heads need no transposing copy, and
    /// RoPE turns all the sequences' queries and keys in one call each, every row by the
    /// angle of its own sequence's position. When the caches are slots of one pool, the
    /// appends and the attention are one batched call each for the whole batch (see
    /// [`KvPool`]). Otherwise they stay per sequence, with the same kernels, shapes and
    /// numbers as [`Self::attention`] gives a one-token step; on the CPU the sequences are
    /// spread over the threads of [`PASS`].
    fn decode_attention(
        &self,
        layer: usize,
        block: &Block,
        h: &Tensor,
        seqs: &mut [SeqInput<'_>],
        pass: Pass,
        step: &DecodeStep,
    ) -> Result<Tensor> {
        let (nh, nkv, hd) = (self.config.num_heads, self.config.num_kv_heads, self.config.head_dim);
        let b = seqs.len();
        let (q, k, v) = self.qkv(block, h, pass)?;
        let v = v.reshape((b, nkv, 1, hd))?;
        let (cos, sin) = &step.turns;
        let q = self.rotate(&q.reshape((b, nh, 1, hd))?, cos, sin)?;
        let k = self.rotate(&k.reshape((b, nkv, 1, hd))?, cos, sin)?;
        let groups = nh / nkv;
        let one = |i: usize, seq: &mut SeqInput<'_>| -> Result<Tensor> {
            let (keys, values) =
                seq.cache.append(layer, &k.narrow(0, i, 1)?, &v.narrow(0, i, 1)?)?;
            let q = q.narrow(0, i, 1)?.reshape((1, nkv, groups, hd))?;
            let scores = (q.matmul(&keys.t()?)? / (hd as f64).sqrt())?;
            let probs = candle_nn::ops::softmax_last_dim(&scores)?;
            Ok(probs.matmul(&values)?.reshape((1, nh * hd))?)
        };
        let Some(slotted) = &step.slots else {
            let outputs = self.per_sequence(seqs, one)?;
            return Ok(Tensor::cat(&outputs, 0)?);
        };
        let (q2, k2, v2) =
            (q.reshape((b, nh * hd))?, k.reshape((b, nkv * hd))?, v.reshape((b, nkv * hd))?);
        let Some(mixed) = &slotted.mixed else {
            return slotted.pool.attend(&slotted.plan, layer, &q2, &k2, &v2);
        };
        // Some sequences keep caches of their own (longer than a slot holds): the slotted
        // ones attend in one call, the others one by one, and the answers go back in order.
        let pick = |t: &Tensor| t.index_select(&mixed.picks, 0);
        let (pq, pk, pv) = (pick(&q2)?, pick(&k2)?, pick(&v2)?);
        let mut parts = vec![slotted.pool.attend(&slotted.plan, layer, &pq, &pk, &pv)?];
        for (i, seq) in seqs.iter_mut().enumerate().filter(|(i, _)| !mixed.in_pool[*i]) {
            parts.push(one(i, seq)?);
        }
        Ok(Tensor::cat(&parts, 0)?.index_select(&mixed.order, 0)?)
    }

    /// Cosines and sines of every sequence's next position, `[batch, 1, rotary / 2]` each,
    /// for [`Self::rotate`] in a decode step.
    fn turns(&self, seqs: &[SeqInput<'_>]) -> Result<(Tensor, Tensor)> {
        let positions: Vec<u32> = seqs.iter().map(|s| s.cache.len as u32).collect();
        let ids = Tensor::from_vec(positions, seqs.len(), &self.device)?;
        let half = self.config.rotary_dim / 2;
        let pick = |t: &Tensor| -> Result<Tensor> {
            Ok(t.index_select(&ids, 0)?.reshape((seqs.len(), 1, half))?)
        };
        Ok((pick(&self.cos)?, pick(&self.sin)?))
    }

    fn rope(&self, x: &Tensor, pos: usize, n: usize) -> Result<Tensor> {
        let cos = self.cos.narrow(0, pos, n)?;
        let sin = self.sin.narrow(0, pos, n)?;
        self.rotate(x, &cos, &sin)
    }

    /// Turns `x` (`[batch, heads, positions, head_dim]`) by `cos` and `sin`
    /// (`[positions, rotary / 2]`, or `[batch, positions, rotary / 2]` per batch row).
    fn rotate(&self, x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
        let rotate = |x: &Tensor| -> Result<Tensor> {
            Ok(if self.config.rope_interleaved {
                candle_nn::rotary_emb::rope_i(x, cos, sin)?
            } else {
                candle_nn::rotary_emb::rope(x, cos, sin)?
            })
        };
        let (rotary, head) = (self.config.rotary_dim, self.config.head_dim);
        if rotary == head {
            return rotate(x);
        }
        // Partial rotary: the leading `rotary` dimensions turn, the rest pass through.
        let turned = rotate(&x.narrow(D::Minus1, 0, rotary)?.contiguous()?)?;
        let kept = x.narrow(D::Minus1, rotary, head - rotary)?;
        Ok(Tensor::cat(&[&turned, &kept], D::Minus1)?.contiguous()?)
    }

    /// Mask for `n` new queries at positions `pos..pos + n` over `pos + n` keys.
    fn causal_mask(&self, pos: usize, n: usize) -> Result<Tensor> {
        let keys = pos + n;
        let mask: Vec<f32> = (0..n)
            .flat_map(|i| (0..keys).map(move |j| if j > pos + i { f32::NEG_INFINITY } else { 0.0 }))
            .collect();
        Ok(Tensor::from_vec(mask, (n, keys), &self.device)?.to_dtype(self.embed.dtype())?)
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

/// What every layer of a decode step shares.
struct DecodeStep {
    /// Cosines and sines of each sequence's new position (see [`Llama::turns`]).
    turns: (Tensor, Tensor),
    /// The pool holding sequences' caches, and the step's plan over them, when some are
    /// in one.
    slots: Option<Slotted>,
}

/// The sequences of a decode step whose caches are slots of one pool.
struct Slotted {
    pool: Arc<KvPool>,
    plan: Plan,
    /// Set when some sequences are not in the pool.
    mixed: Option<Mixed>,
}

/// How the batch rows of a decode step split between a pool and caches of their own.
struct Mixed {
    /// Per batch row, whether its cache is in the pool.
    in_pool: Vec<bool>,
    /// The batch rows in the pool, in order.
    picks: Tensor,
    /// For each batch row, where its answer is among the pool's answers followed by the
    /// others'.
    order: Tensor,
}

/// The plan of a batched decode step over the sequences whose caches are slots of the
/// first sequence's pool (the scheduler has one), if any.
fn slot_plan(seqs: &[SeqInput<'_>]) -> Result<Option<Slotted>> {
    let Some(first) = seqs.iter().find_map(|s| s.cache.slot.as_ref()) else { return Ok(None) };
    let pool = first.pool.clone();
    let place = |seq: &SeqInput<'_>| {
        let slot = seq.cache.slot.as_ref().filter(|s| Arc::ptr_eq(&s.pool, &pool))?;
        Some((slot.index, seq.cache.len))
    };
    let places: Vec<Option<(usize, usize)>> = seqs.iter().map(place).collect();
    let plan = pool.plan(&places.iter().flatten().copied().collect::<Vec<_>>())?;
    if places.iter().all(Option::is_some) {
        return Ok(Some(Slotted { pool, plan, mixed: None }));
    }
    let in_pool: Vec<bool> = places.iter().map(Option::is_some).collect();
    let picks: Vec<u32> = (0..seqs.len() as u32).filter(|&i| in_pool[i as usize]).collect();
    let m = picks.len() as u32;
    let (mut pooled, mut own) = (0u32, m);
    let order: Vec<u32> = in_pool
        .iter()
        .map(|&p| {
            let at = if p { &mut pooled } else { &mut own };
            *at += 1;
            *at - 1
        })
        .collect();
    let device = pool.device();
    let mixed = Mixed {
        in_pool,
        picks: Tensor::from_vec(picks, m as usize, device)?,
        order: Tensor::from_vec(order, seqs.len(), device)?,
    };
    Ok(Some(Slotted { pool, plan, mixed: Some(mixed) }))
}

thread_local! {
    /// A rayon pool per calling thread, as many threads as the worker computes with, that
    /// forward passes on the CPU run on; attention spreads a pass's sequences over its
    /// threads. candle splits several operations over rayon's pool (softmax, RMS norm, f32
    /// GEMM): called from outside any pool, each call waited for the global pool's threads,
    /// 30 softmax calls per sequence and 61 norms per step for SmolLM2. Inside this pool
    /// small ones run inline, and a pass hands over once. `None` where the threads could
    /// not be started: passes then run on the caller as before.
    static PASS: Option<rayon::ThreadPool> = rayon::ThreadPoolBuilder::new()
        .num_threads(candle_core::utils::get_num_threads())
        .thread_name(|i| format!("blaze-pass-{i}"))
        .build()
        .ok();
}

#[cfg(test)]
mod tests {
    use candle_core::{DType, Device, Tensor};

    use super::*;

    /// Three sequences of different lengths, each with a prompt already in its cache.
    fn caches(llama: &Llama) -> Vec<KvCache> {
        [&[1u32, 2, 3][..], &[4, 5, 6, 7, 8], &[9]]
            .iter()
            .map(|prompt| {
                let mut cache = KvCache::default();
                llama.forward_one(prompt, &mut cache).unwrap();
                cache
            })
            .collect()
    }

    fn inputs<'a>(caches: &'a mut [KvCache], tokens: &'a [[u32; 1]]) -> Vec<SeqInput<'a>> {
        caches.iter_mut().zip(tokens).map(|(cache, t)| SeqInput { tokens: t, cache }).collect()
    }

    /// A decode step's attention (RoPE for the batch, sequences spread over the pass pool)
    /// gives every sequence exactly the numbers of the general per-sequence attention, and
    /// leaves the same keys and values in its cache.
    #[test]
    fn decode_attention_equals_the_general_path_bit_for_bit() {
        let dir = tempfile::tempdir().unwrap();
        crate::testing::write_tiny_llama(dir.path(), 64).unwrap();
        let llama = super::super::safetensors::load(dir.path(), DType::F32, &Device::Cpu).unwrap();
        let tokens = [[10u32], [11], [12]];
        let h = Tensor::randn(0f32, 1f32, (3, llama.config.hidden_size), &Device::Cpu).unwrap();
        let (mut general, mut decode) = (caches(&llama), caches(&llama));
        let block = &llama.blocks[0];
        let pass = Pass::SmallDecode;
        let want = llama.attention(0, block, &h, &mut inputs(&mut general, &tokens), pass).unwrap();
        let mut seqs = inputs(&mut decode, &tokens);
        let step = DecodeStep { turns: llama.turns(&seqs).unwrap(), slots: None };
        let pool = PASS.with(|p| p.is_some());
        assert!(pool, "the pass pool starts");
        let got = PASS
            .with(|p| {
                p.as_ref()
                    .unwrap()
                    .install(|| llama.decode_attention(0, block, &h, &mut seqs, pass, &step))
            })
            .unwrap();
        let flat = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(flat(&got), flat(&want));
        for (g, d) in general.iter().zip(&decode) {
            let (gk, gv) = g.layers[0].as_ref().unwrap();
            let (dk, dv) = d.layers[0].as_ref().unwrap();
            assert_eq!(flat(gk), flat(dk));
            assert_eq!(flat(gv), flat(dv));
        }
    }

    /// Decode steps over caches in slots of one pool (one batched attention per layer)
    /// give the logits that per-sequence caches give, step after step, while sequences
    /// finish and a new one takes the freed slot (slots stay packed), with a sequence that
    /// keeps its own cache in the same steps (mixed) and then without it.
    #[test]
    fn slotted_decode_steps_equal_per_sequence_caches() {
        let dir = tempfile::tempdir().unwrap();
        crate::testing::write_tiny_llama(dir.path(), 64).unwrap();
        let llama = super::super::safetensors::load(dir.path(), DType::F32, &Device::Cpu).unwrap();
        let pool = llama.kv_pool(4);
        let prompts: [&[u32]; 3] = [&[1, 2, 3], &[4, 5, 6, 7, 8], &[9]];
        let prefill = |cache: &mut KvCache, prompt: &[u32]| {
            llama.forward_one(prompt, cache).unwrap();
        };
        let mut own: Vec<KvCache> = Vec::new();
        let mut slotted: Vec<KvCache> = Vec::new();
        for (i, prompt) in prompts.into_iter().enumerate() {
            // The last one keeps its own cache, as a sequence longer than a slot does.
            let (mut a, mut b) =
                (KvCache::default(), if i < 2 { pool.cache() } else { KvCache::default() });
            prefill(&mut a, prompt);
            prefill(&mut b, prompt);
            own.push(a);
            slotted.push(b);
        }
        let slots = |caches: &[KvCache]| -> Vec<Option<usize>> {
            caches.iter().map(|c| c.slot.as_ref().map(|s| s.index)).collect()
        };
        assert_eq!(slots(&slotted), [Some(0), Some(1), None]);
        let max_diff = |a: &Tensor, b: &Tensor| -> f32 {
            (a - b).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap()
        };
        for step in 0..40u32 {
            if step == 5 {
                // The middle sequence ends; a new one takes its slot, packed at the front.
                own.remove(1);
                slotted.remove(1);
                let (mut a, mut b) = (KvCache::default(), pool.cache());
                assert_eq!(b.slot.as_ref().unwrap().index, 1, "the lowest free slot");
                prefill(&mut a, &[20, 21]);
                prefill(&mut b, &[20, 21]);
                own.push(a);
                slotted.push(b);
                assert_eq!(slots(&slotted), [Some(0), None, Some(1)]);
            }
            if step == 20 {
                // The one with its own cache ends: every sequence is in the pool.
                own.remove(1);
                slotted.remove(1);
            }
            let tokens: Vec<[u32; 1]> = (0..own.len() as u32).map(|i| [30 + i + step]).collect();
            let want = llama.forward(&mut inputs(&mut own, &tokens)).unwrap();
            let mut seqs = inputs(&mut slotted, &tokens);
            let plan = slot_plan(&seqs).unwrap().expect("the batched path");
            assert_eq!(plan.mixed.is_some(), step < 20, "step {step}");
            let got = llama.forward(&mut seqs).unwrap();
            let diff = max_diff(&got, &want);
            assert!(diff < 1e-4, "step {step}: logits differ by {diff}");
            assert_eq!(Llama::argmax(&got).unwrap(), Llama::argmax(&want).unwrap());
        }
        // 64 positions a slot, as a cache of its own has for 43.
        assert_eq!(slotted[0].len(), 43);
        assert_eq!(slotted[0].bytes(), own[0].bytes());
        let spans = (slotted[0].copy_span(0, 43).unwrap(), own[0].copy_span(0, 43).unwrap());
        for ((sk, sv), (ok, ov)) in spans.0.iter().zip(&spans.1) {
            assert!(max_diff(sk, ok) < 1e-4 && max_diff(sv, ov) < 1e-4);
        }
    }

    /// Activations in bf16, as a GPU computes (bf16 weights, norms, RoPE tables, keys and
    /// values, masks): logits come back in f32 and close to the f32 model's, through a
    /// prefill and decode steps on per-sequence caches and on slotted ones alike.
    #[test]
    fn bf16_activations_follow_the_f32_model() {
        let dir = tempfile::tempdir().unwrap();
        crate::testing::write_tiny_llama(dir.path(), 64).unwrap();
        let load = super::super::safetensors::load;
        let f32_model = load(dir.path(), DType::F32, &Device::Cpu).unwrap();
        let bf16 = load(dir.path(), DType::BF16, &Device::Cpu)
            .unwrap()
            .with_activations(DType::BF16)
            .unwrap();
        assert_eq!(bf16.embed.dtype(), DType::BF16);
        let pool = bf16.kv_pool(2);
        let prompts: [&[u32]; 2] = [&[1, 2, 3, 4, 5, 6, 7], &[8, 9]];
        let mut caches: [Vec<KvCache>; 3] = Default::default();
        for _ in prompts {
            caches[0].push(KvCache::default());
            caches[1].push(KvCache::default());
            caches[2].push(pool.cache());
        }
        let models = [&f32_model, &bf16, &bf16];
        let relative = |got: &Tensor, want: &Tensor| -> f32 {
            let err = (got - want).unwrap().sqr().unwrap().mean_all().unwrap();
            let norm = want.sqr().unwrap().mean_all().unwrap();
            (err.to_scalar::<f32>().unwrap() / norm.to_scalar::<f32>().unwrap()).sqrt()
        };
        for step in 0..6u32 {
            let mut logits = Vec::new();
            for (model, caches) in models.iter().zip(caches.iter_mut()) {
                let tokens: Vec<Vec<u32>> = if step == 0 {
                    prompts.iter().map(|p| p.to_vec()).collect()
                } else {
                    vec![vec![40 + step], vec![50 + step]]
                };
                let mut seqs: Vec<SeqInput<'_>> = caches
                    .iter_mut()
                    .zip(&tokens)
                    .map(|(cache, t)| SeqInput { tokens: t, cache })
                    .collect();
                let out = model.forward(&mut seqs).unwrap();
                assert_eq!(out.dtype(), DType::F32);
                logits.push(out);
            }
            let (to_f32, slotted) =
                (relative(&logits[1], &logits[0]), relative(&logits[2], &logits[1]));
            assert!(to_f32 < 0.05, "step {step}: bf16 against f32, relative error {to_f32}");
            assert!(slotted < 1e-3, "step {step}: slotted against own caches, {slotted}");
        }
        assert!(caches[2][0].bytes() * 2 == caches[0][0].bytes(), "bf16 positions take half");
    }
}
