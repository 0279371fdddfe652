//! BERT's forward pass, on the weights and `config.json` (candle-transformers'
//! [`bert::Config`]) of a Hugging Face checkpoint.
//!
//! Why not candle-transformers' `BertEncoder`, which computes the same thing: measured with
//! blaze-worker-bench on all-MiniLM-L6-v2 (one thread, batches of 32 inputs of 64 tokens),
//! its exact GELU (candle's scalar f64 `erf`, 17 ns an element) took as long as the largest
//! matmul of a layer, a quarter of the pass, and its softmax (the generic one) twice
//! `softmax_last_dim`'s time; the encoder ran at three quarters of sentence-transformers'
//! speed on PyTorch. Here the GELU is [`gelu_erf`], vectorized and within 5e-7 of the exact
//! one, the softmax `softmax_last_dim`, and the query, key and value projections one matmul.
//! The attention mask is the dtype's most negative value where a key is padding (candle's is
//! `f32::MIN` times a 0/1 mask, which is `0 * -inf = NaN` once cast to f16 or bf16).

use candle_core::{CpuStorage, CustomOp1, DType, Layout, Module, Shape, Tensor};
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
    up: Linear,
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
        let weights = ["query", "key", "value"].map(|p| s.pp(p).get((h, h), "weight"));
        let biases = ["query", "key", "value"].map(|p| s.pp(p).get(h, "bias"));
        let qkv = Linear::new(
            Tensor::cat(&weights.into_iter().collect::<candle_core::Result<Vec<_>>>()?, 0)?,
            Some(Tensor::cat(&biases.into_iter().collect::<candle_core::Result<Vec<_>>>()?, 0)?),
        );
        Ok(Self {
            qkv,
            out: candle_nn::linear(h, h, a.pp("output.dense"))?,
            attention_norm: candle_nn::layer_norm(h, eps, a.pp("output.LayerNorm"))?,
            up: candle_nn::linear(h, i, vb.pp("intermediate.dense"))?,
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
        let scores = (q.matmul(&k.t()?)? * (1.0 / (head as f64).sqrt()))?.broadcast_add(mask)?;
        let probs = candle_nn::ops::softmax_last_dim(&scores)?;
        let context = probs.matmul(&v)?.transpose(1, 2)?.reshape((batch, tokens, hidden))?;
        let x = self.attention_norm.forward(&(self.out.forward(&context)? + x)?)?;
        let up = self.up.forward(&x)?;
        let up = match self.activation {
            bert::HiddenAct::Gelu => gelu_erf(&up)?,
            bert::HiddenAct::GeluApproximate => up.gelu()?,
            bert::HiddenAct::Relu => up.relu()?,
        };
        Ok(self.norm.forward(&(self.down.forward(&up)? + x)?)?)
    }
}

/// The exact (erf) GELU: [`GeluErf`] for f32 on the CPU, candle's own elsewhere.
pub(super) fn gelu_erf(x: &Tensor) -> Result<Tensor> {
    if x.device().is_cpu() && x.dtype() == DType::F32 {
        Ok(x.contiguous()?.apply_op1_no_bwd(&GeluErf)?)
    } else {
        Ok(x.gelu_erf()?)
    }
}

/// `0.5 x (1 + erf(x / sqrt 2))` over f32, in a loop the compiler vectorizes: erf by
/// Abramowitz and Stegun's 7.1.26 (absolute error below 1.5e-7), its `exp` by Cephes'
/// `expf` polynomial with the power of two written into the exponent bits.
pub(super) struct GeluErf;

impl CustomOp1 for GeluErf {
    fn name(&self) -> &'static str {
        "gelu-erf-f32"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (CpuStorage::F32(data), Some((start, end))) = (storage, layout.contiguous_offsets())
        else {
            candle_core::bail!("gelu-erf-f32 takes contiguous f32 tensors")
        };
        let out: Vec<f32> = data[start..end].iter().map(|&x| gelu(x)).collect();
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

/// `e^x` for `x <= 0` (below -87 it is 0 to f32's precision anyway).
#[inline(always)]
fn exp_negative(x: f32) -> f32 {
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
    p * f32::from_bits(((n as i32 + 127) as u32) << 23)
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
    fn the_op_matches_candles_gelu_erf() {
        let x = Tensor::randn(0f32, 3.0, (4, 257), &candle_core::Device::Cpu).unwrap();
        let fast = gelu_erf(&x).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let candle = x.gelu_erf().unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        for (a, b) in fast.iter().zip(&candle) {
            assert!((a - b).abs() <= 1e-6 * b.abs().max(1.0), "{a} vs {b}");
        }
    }
}
