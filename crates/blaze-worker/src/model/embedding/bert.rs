//! BERT's forward pass, on the weights and `config.json` (candle-transformers'
//! [`bert::Config`]) of a Hugging Face checkpoint.
//!
//! Why not candle-transformers' `BertEncoder`, which computes the same thing: measured with
//! blaze-worker-bench on all-MiniLM-L6-v2 (one thread, batches of 32 inputs of 64 tokens),
//! its exact GELU (candle's scalar f64 `erf`, 17 ns an element) took as long as the largest
//! matmul of a layer, a quarter of the pass, and its softmax (the generic one) twice
//! `softmax_last_dim`'s time; the encoder ran at three quarters of sentence-transformers'
//! speed on PyTorch. Here the GELU is exact to 5e-7, vectorized and fused with its bias
//! ([`bias_gelu`]), the softmax has a vectorized `exp`, the query projection is scaled by
//! 1/sqrt(head size) at load, and the query, key and value projections are one matmul.
//! The attention mask is the dtype's most negative value where a key is padding (candle's is
//! `f32::MIN` times a 0/1 mask, which is `0 * -inf = NaN` once cast to f16 or bf16).

use candle_core::{CpuStorage, CustomOp1, CustomOp2, DType, Layout, Module, Shape, Tensor};
use candle_nn::{Embedding, LayerNorm, Linear, VarBuilder};
use candle_transformers::models::bert;

use crate::Result;

/// The most negative finite f16 and bf16 values (`half::f16::MIN`, `half::bf16::MIN`).
const F16_MIN: f64 = -65504.0;
const BF16_MIN: f64 = -3.3895313892515355e38;

pub(super) struct Bert {
    word: Embedding,
    /// `[max_positions, hidden]`.
    positions: Tensor,
    /// The token type 0 row, `[hidden]`: inputs are single sequences.
    token_type: Tensor,
    norm: LayerNorm,
    layers: Vec<Layer>,
    pub(super) config: bert::Config,
    dtype: DType,
}

struct Layer {
    /// Query, key and value projections stacked: `[3 hidden, hidden]`.
    qkv: Linear,
    out: Linear,
    attention_norm: LayerNorm,
    /// The intermediate projection without its bias, which [`bias_gelu`] adds.
    up: Linear,
    up_bias: Tensor,
    down: Linear,
    norm: LayerNorm,
    heads: usize,
    activation: bert::HiddenAct,
}

impl Bert {
    pub(super) fn load(vb: VarBuilder, config: bert::Config, dtype: DType) -> Result<Self> {
        let h = config.hidden_size;
        let e = vb.pp("embeddings");
        let word = candle_nn::embedding(config.vocab_size, h, e.pp("word_embeddings"))?;
        let positions =
            e.pp("position_embeddings").get((config.max_position_embeddings, h), "weight")?;
        let token_type =
            e.pp("token_type_embeddings").get((config.type_vocab_size, h), "weight")?.get(0)?;
        let norm = candle_nn::layer_norm(h, config.layer_norm_eps, e.pp("LayerNorm"))?;
        let layers = (0..config.num_hidden_layers)
            .map(|i| Layer::load(vb.pp(format!("encoder.layer.{i}")), &config))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self { word, positions, token_type, norm, layers, config, dtype })
    }

    /// States `[batch, tokens, hidden]` of `ids` (`[batch, tokens]`), attending to the
    /// positions where `mask` (`[batch, tokens]`, f32) is 1.
    pub(super) fn forward(&self, ids: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let (batch, tokens) = ids.dims2()?;
        let positions = self.positions.narrow(0, 0, tokens)?;
        let x =
            self.word.forward(ids)?.broadcast_add(&positions)?.broadcast_add(&self.token_type)?;
        let mut x = self.norm.forward(&x)?;
        // (1 - mask) times the dtype's most negative value, added to every attention score.
        let most_negative = match self.dtype {
            DType::F16 => F16_MIN,
            DType::BF16 => BF16_MIN,
            _ => f64::from(f32::MIN),
        };
        let additive = mask
            .affine(-most_negative, most_negative)?
            .to_dtype(self.dtype)?
            .reshape((batch, 1, 1, tokens))?;
        for layer in &self.layers {
            x = layer.forward(&x, &additive)?;
        }
        Ok(x)
    }
}

impl Layer {
    fn load(vb: VarBuilder, config: &bert::Config) -> Result<Self> {
        let (h, i, eps) = (config.hidden_size, config.intermediate_size, config.layer_norm_eps);
        let a = vb.pp("attention");
        let s = a.pp("self");
        // The query projection scaled by 1/sqrt(head size) here, once, instead of every
        // attention score in every pass.
        let scale = 1.0 / ((h / config.num_attention_heads) as f64).sqrt();
        let mut weights = Vec::new();
        let mut biases = Vec::new();
        for (name, by) in [("query", scale), ("key", 1.0), ("value", 1.0)] {
            weights.push((s.pp(name).get((h, h), "weight")? * by)?);
            biases.push((s.pp(name).get(h, "bias")? * by)?);
        }
        let qkv = Linear::new(Tensor::cat(&weights, 0)?, Some(Tensor::cat(&biases, 0)?));
        let up = vb.pp("intermediate.dense");
        Ok(Self {
            qkv,
            out: candle_nn::linear(h, h, a.pp("output.dense"))?,
            attention_norm: candle_nn::layer_norm(h, eps, a.pp("output.LayerNorm"))?,
            up: Linear::new(up.get((i, h), "weight")?, None),
            up_bias: up.get(i, "bias")?,
            down: candle_nn::linear(i, h, vb.pp("output.dense"))?,
            norm: candle_nn::layer_norm(h, eps, vb.pp("output.LayerNorm"))?,
            heads: config.num_attention_heads,
            activation: config.hidden_act,
        })
    }

    fn forward(&self, x: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let (batch, tokens, hidden) = x.dims3()?;
        let head = hidden / self.heads;
        // [batch, tokens, 3, heads, head] -> [3, batch, heads, tokens, head]
        let qkv = self.qkv.forward(x)?.reshape((batch, tokens, 3, self.heads, head))?;
        let qkv = qkv.permute((2, 0, 3, 1, 4))?.contiguous()?;
        let (q, k, v) = (qkv.get(0)?, qkv.get(1)?, qkv.get(2)?);
        let scores = q.matmul(&k.t()?)?.broadcast_add(mask)?;
        let probs = softmax(&scores)?;
        let context = probs.matmul(&v)?.transpose(1, 2)?.reshape((batch, tokens, hidden))?;
        let x = self.attention_norm.forward(&(self.out.forward(&context)? + x)?)?;
        let up = self.up.forward(&x)?;
        let up = match self.activation {
            bert::HiddenAct::Gelu => bias_gelu(&up, &self.up_bias)?,
            bert::HiddenAct::GeluApproximate => up.broadcast_add(&self.up_bias)?.gelu()?,
            bert::HiddenAct::Relu => up.broadcast_add(&self.up_bias)?.relu()?,
        };
        Ok(self.norm.forward(&(self.down.forward(&up)? + x)?)?)
    }
}

/// `gelu(x + bias)`, the exact (erf) GELU: [`BiasGelu`] in one pass for f32 on the CPU,
/// candle's own elsewhere.
pub(super) fn bias_gelu(x: &Tensor, bias: &Tensor) -> Result<Tensor> {
    if x.device().is_cpu() && x.dtype() == DType::F32 {
        Ok(x.contiguous()?.apply_op2_no_bwd(&bias.contiguous()?, &BiasGelu)?)
    } else {
        Ok(x.broadcast_add(bias)?.gelu_erf()?)
    }
}

/// Softmax over the last dimension: [`Softmax`] for f32 on the CPU, candle's elsewhere.
fn softmax(x: &Tensor) -> Result<Tensor> {
    if x.device().is_cpu() && x.dtype() == DType::F32 {
        Ok(x.contiguous()?.apply_op1_no_bwd(&Softmax)?)
    } else {
        Ok(candle_nn::ops::softmax_last_dim(x)?)
    }
}

/// The f32 data of a contiguous tensor.
fn contiguous_f32<'a>(storage: &'a CpuStorage, layout: &Layout) -> candle_core::Result<&'a [f32]> {
    match (storage, layout.contiguous_offsets()) {
        (CpuStorage::F32(data), Some((start, end))) => Ok(&data[start..end]),
        _ => candle_core::bail!("the fast CPU kernels take contiguous f32 tensors"),
    }
}

/// `0.5 y (1 + erf(y / sqrt 2))` with `y = x + bias` (the bias along the last dimension),
/// over f32, in a loop the compiler vectorizes: erf by Abramowitz and Stegun's 7.1.26
/// (absolute error below 1.5e-7), its `exp` by Cephes' `expf` polynomial with the power of
/// two written into the exponent bits.
pub(super) struct BiasGelu;

impl CustomOp2 for BiasGelu {
    fn name(&self) -> &'static str {
        "bias-gelu-erf-f32"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (x, bias) = (contiguous_f32(s1, l1)?, contiguous_f32(s2, l2)?);
        if bias.is_empty() || x.len() % bias.len() != 0 {
            candle_core::bail!("bias-gelu: a bias of {} for {} values", bias.len(), x.len());
        }
        let mut out = Vec::with_capacity(x.len());
        for row in x.chunks_exact(bias.len()) {
            out.extend(row.iter().zip(bias).map(|(&x, &b)| gelu(x + b)));
        }
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}

/// Softmax over the last dimension of f32 values, its `exp` vectorized as the GELU's. A
/// value more than 87 below its row's largest (a padded key's score) weighs exactly 0.
struct Softmax;

impl CustomOp1 for Softmax {
    fn name(&self) -> &'static str {
        "softmax-last-dim-f32"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(storage, layout)?;
        let n = layout.shape().dims().last().copied().unwrap_or(1).max(1);
        let mut out = Vec::with_capacity(x.len());
        for row in x.chunks_exact(n) {
            let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let start = out.len();
            out.extend(row.iter().map(|&v| exp_negative(v - max)));
            let sum: f32 = out[start..].iter().sum();
            out[start..].iter_mut().for_each(|e| *e /= sum);
        }
        Ok((CpuStorage::F32(out), layout.shape().clone()))
    }
}

#[inline(always)]
fn gelu(x: f32) -> f32 {
    0.5 * x * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2))
}

#[inline(always)]
fn erf(x: f32) -> f32 {
    const P: f32 = 0.327_591_1;
    const A: [f32; 5] = [0.254_829_6, -0.284_496_74, 1.421_413_8, -1.453_152, 1.061_405_4];
    let z = x.abs();
    let t = 1.0 / (1.0 + P * z);
    let poly = ((((A[4] * t + A[3]) * t + A[2]) * t + A[1]) * t + A[0]) * t;
    (1.0 - poly * exp_negative(-z * z)).copysign(x)
}

/// `e^x` for `x <= 0`; 0 below -87 (where f32 has no normal number for it).
#[inline(always)]
fn exp_negative(x: f32) -> f32 {
    let underflow = x < -87.0;
    let x = x.max(-87.0);
    let n = (x * std::f32::consts::LOG2_E + 0.5).floor();
    let r = x - n * 0.693_359_4 + n * 2.121_944_4e-4;
    let p = (((((1.987_569_1e-4 * r + 1.398_199_9e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2)
        * r
        + 1.666_666_5e-1)
        * r
        + 0.5)
        * r
        * r
        + r
        + 1.0;
    let e = p * f32::from_bits(((n as i32 + 127) as u32) << 23);
    if underflow { 0.0 } else { e }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `erf` in f64 (Abramowitz and Stegun 7.1.28 is too coarse; a series and a continued
    /// fraction are exact enough here).
    fn erf64(x: f64) -> f64 {
        let z = x.abs();
        let value = if z < 3.0 {
            // Maclaurin series.
            let (mut term, mut sum, mut n) = (z, z, 0.0);
            while term.abs() > 1e-17 {
                n += 1.0;
                term *= -z * z / n;
                sum += term / (2.0 * n + 1.0);
            }
            sum * 2.0 / std::f64::consts::PI.sqrt()
        } else {
            // erfc by its continued fraction.
            let mut f = 0.0;
            for k in (1..60).rev() {
                f = (k as f64 / 2.0) / (z + f);
            }
            1.0 - (-z * z).exp() / (std::f64::consts::PI.sqrt() * (z + f))
        };
        value.copysign(x)
    }

    #[test]
    fn the_fast_gelu_is_the_exact_one_to_f32_precision() {
        let mut worst: f64 = 0.0;
        for i in -120_000..=120_000 {
            let x = i as f64 / 10_000.0;
            let exact = 0.5 * x * (1.0 + erf64(x / std::f64::consts::SQRT_2));
            let error = (f64::from(gelu(x as f32)) - exact).abs() / exact.abs().max(1.0);
            worst = worst.max(error);
        }
        assert!(worst < 5e-7, "worst error {worst}");
        assert_eq!(gelu(-100.0), 0.0);
        assert_eq!(gelu(100.0), 100.0);
    }

    #[test]
    fn the_ops_match_candles() {
        let device = candle_core::Device::Cpu;
        let x = Tensor::randn(0f32, 3.0, (4, 257), &device).unwrap();
        let bias = Tensor::randn(0f32, 1.0, 257, &device).unwrap();
        let values = |t: Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let fast = values(bias_gelu(&x, &bias).unwrap());
        let candle = values(x.broadcast_add(&bias).unwrap().gelu_erf().unwrap());
        for (a, b) in fast.iter().zip(&candle) {
            assert!((a - b).abs() <= 1e-6 * b.abs().max(1.0), "{a} vs {b}");
        }
        // A padded key's score: weighs exactly nothing.
        let mask = Tensor::new(&[0f32, 0., f32::MIN, 0.], &device).unwrap();
        let scores =
            (Tensor::randn(0f32, 4.0, (3, 4), &device).unwrap()).broadcast_add(&mask).unwrap();
        let fast = values(softmax(&scores).unwrap());
        let candle = values(candle_nn::ops::softmax_last_dim(&scores).unwrap());
        for (a, b) in fast.iter().zip(&candle) {
            assert!((a - b).abs() <= 1e-6, "{a} vs {b}");
        }
        assert!(fast.chunks(4).all(|row| row[2] == 0.0), "{fast:?}");
    }
}
