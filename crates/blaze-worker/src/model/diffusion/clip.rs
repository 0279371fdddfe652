//! The CLIP text encoder of a pipeline (`CLIPTextModel`, and `CLIPTextModelWithProjection`
//! for SDXL's second encoder), built from its `config.json` and weights. The forward pass
//! returns what the pipelines condition on: the last layer's normalized output, the output
//! of the layer before the last (SDXL), and the projected pooled output (the end-of-text
//! token's state, SDXL's second encoder).

use candle_core::{D, DType, Device, IndexOp, Module, Tensor};
use candle_nn::{Embedding, LayerNorm, Linear, VarBuilder};

use super::config::ClipFile;
use crate::Result;

/// One encoder layer: pre-norm self-attention with a causal mask, then a pre-norm MLP.
struct Layer {
    norm1: LayerNorm,
    q: Linear,
    k: Linear,
    v: Linear,
    out: Linear,
    norm2: LayerNorm,
    fc1: Linear,
    fc2: Linear,
}

/// A CLIP text transformer.
pub struct ClipText {
    tokens: Embedding,
    positions: Embedding,
    layers: Vec<Layer>,
    final_norm: LayerNorm,
    projection: Option<Linear>,
    heads: usize,
    quick_gelu: bool,
}

/// The encoder's outputs for a batch of token rows.
pub struct Encoded {
    /// The last layer's output after the final layer norm: `[batch, tokens, hidden]`.
    pub last: Tensor,
    /// The output of the layer before the last, not normalized: `[batch, tokens, hidden]`.
    pub penultimate: Tensor,
    /// The end-of-text token's normalized state, projected when the encoder has a
    /// projection: `[batch, projection]`.
    pub pooled: Tensor,
}

impl ClipText {
    /// Builds the encoder from weights under `text_model.` (and `text_projection` when
    /// `with_projection`).
    pub fn new(vb: VarBuilder, config: &ClipFile, with_projection: bool) -> Result<Self> {
        let h = config.hidden_size;
        let eps = config.layer_norm_eps;
        let text = vb.pp("text_model");
        let embeddings = text.pp("embeddings");
        let tokens = candle_nn::embedding(config.vocab_size, h, embeddings.pp("token_embedding"))?;
        let positions = candle_nn::embedding(
            config.max_position_embeddings,
            h,
            embeddings.pp("position_embedding"),
        )?;
        let layers = (0..config.num_hidden_layers)
            .map(|i| {
                let l = text.pp(format!("encoder.layers.{i}"));
                let attn = l.pp("self_attn");
                Ok(Layer {
                    norm1: candle_nn::layer_norm(h, eps, l.pp("layer_norm1"))?,
                    q: candle_nn::linear(h, h, attn.pp("q_proj"))?,
                    k: candle_nn::linear(h, h, attn.pp("k_proj"))?,
                    v: candle_nn::linear(h, h, attn.pp("v_proj"))?,
                    out: candle_nn::linear(h, h, attn.pp("out_proj"))?,
                    norm2: candle_nn::layer_norm(h, eps, l.pp("layer_norm2"))?,
                    fc1: candle_nn::linear(h, config.intermediate_size, l.pp("mlp.fc1"))?,
                    fc2: candle_nn::linear(config.intermediate_size, h, l.pp("mlp.fc2"))?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let final_norm = candle_nn::layer_norm(h, eps, text.pp("final_layer_norm"))?;
        let projection = if with_projection {
            let width = config.projection_dim.unwrap_or(h);
            Some(candle_nn::linear_no_bias(h, width, vb.pp("text_projection"))?)
        } else {
            None
        };
        Ok(Self {
            tokens,
            positions,
            layers,
            final_norm,
            projection,
            heads: config.num_attention_heads,
            quick_gelu: config.hidden_act == "quick_gelu",
        })
    }

    /// Encodes rows of token ids (`[batch, tokens]`, u32); `eos` is each row's end-of-text
    /// position, where the pooled output is taken.
    pub fn forward(&self, ids: &Tensor, eos: &[usize]) -> Result<Encoded> {
        let (batch, n) = ids.dims2()?;
        let device = ids.device();
        let positions = Tensor::arange(0u32, n as u32, device)?;
        let mut xs =
            self.tokens.forward(ids)?.broadcast_add(&self.positions.forward(&positions)?)?;
        let mask = causal_mask(n, xs.dtype(), device)?;
        let mut penultimate = xs.clone();
        for (i, layer) in self.layers.iter().enumerate() {
            if i + 1 == self.layers.len() {
                penultimate = xs.clone();
            }
            xs = self.layer(layer, &xs, &mask, batch, n)?;
        }
        let last = self.final_norm.forward(&xs)?;
        let rows = eos
            .iter()
            .enumerate()
            .map(|(b, &p)| last.i((b, p)))
            .collect::<candle_core::Result<Vec<_>>>()?;
        let pooled = Tensor::stack(&rows, 0)?;
        let pooled = match &self.projection {
            Some(p) => p.forward(&pooled)?,
            None => pooled,
        };
        Ok(Encoded { last, penultimate, pooled })
    }

    fn layer(
        &self,
        l: &Layer,
        xs: &Tensor,
        mask: &Tensor,
        batch: usize,
        n: usize,
    ) -> Result<Tensor> {
        let h = xs.dim(D::Minus1)?;
        let head = h / self.heads;
        let residual = xs;
        let x = l.norm1.forward(xs)?;
        let split = |t: Tensor| -> candle_core::Result<Tensor> {
            t.reshape((batch, n, self.heads, head))?.transpose(1, 2)?.contiguous()
        };
        let q = split((l.q.forward(&x)? * (head as f64).powf(-0.5))?)?;
        let k = split(l.k.forward(&x)?)?;
        let v = split(l.v.forward(&x)?)?;
        let scores = q.matmul(&k.t()?)?.broadcast_add(mask)?;
        let weights = candle_nn::ops::softmax_last_dim(&scores)?;
        let attended = weights.matmul(&v)?.transpose(1, 2)?.reshape((batch, n, h))?;
        let xs = (residual + l.out.forward(&attended)?)?;
        let residual = &xs;
        let x = l.fc1.forward(&l.norm2.forward(&xs)?)?;
        let x = if self.quick_gelu {
            (&x * candle_nn::ops::sigmoid(&(&x * 1.702)?)?)?
        } else {
            x.gelu_erf()?
        };
        Ok((residual + l.fc2.forward(&x)?)?)
    }
}

/// `[n, n]`: 0 on and below the diagonal, the most negative value above it.
fn causal_mask(n: usize, dtype: DType, device: &Device) -> Result<Tensor> {
    let values: Vec<f32> =
        (0..n).flat_map(|i| (0..n).map(move |j| if j > i { f32::MIN } else { 0.0 })).collect();
    Ok(Tensor::from_vec(values, (n, n), device)?.to_dtype(dtype)?)
}
