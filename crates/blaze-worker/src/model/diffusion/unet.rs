//! The conditional UNet (diffusers' `UNet2DConditionModel`), as `unet/config.json`
//! describes it: ResNet blocks (candle-transformers'), our own spatial transformers, whose
//! attention can run in slices of heads (attention slicing), and SDXL's additional
//! conditioning (`addition_embed_type: text_time`: the pooled text and the image's size,
//! embedded and added to the time embedding).

use candle_core::{D, DType, Module, Tensor};
use candle_nn::{Conv2d, Conv2dConfig, GroupNorm, LayerNorm, Linear, VarBuilder};
use candle_transformers::models::stable_diffusion::embeddings::{TimestepEmbedding, Timesteps};
use candle_transformers::models::stable_diffusion::resnet::{ResnetBlock2D, ResnetBlock2DConfig};

use super::config::UnetFile;
use crate::Result;

/// Multi-head attention (self or cross), computed for all heads at once or `slice` heads
/// (of all images) at a time: the scores of one slice are all that is held.
struct Attention {
    q: Linear,
    k: Linear,
    v: Linear,
    out: Linear,
    heads: usize,
    slice: Option<usize>,
}

impl Attention {
    fn new(
        vb: VarBuilder,
        dim: usize,
        context: usize,
        heads: usize,
        slice: Option<usize>,
    ) -> Result<Self> {
        Ok(Self {
            q: candle_nn::linear_no_bias(dim, dim, vb.pp("to_q"))?,
            k: candle_nn::linear_no_bias(context, dim, vb.pp("to_k"))?,
            v: candle_nn::linear_no_bias(context, dim, vb.pp("to_v"))?,
            out: candle_nn::linear(dim, dim, vb.pp("to_out.0"))?,
            heads,
            slice,
        })
    }

    fn forward(&self, xs: &Tensor, context: Option<&Tensor>) -> Result<Tensor> {
        let (batch, n, dim) = xs.dims3()?;
        let head = dim / self.heads;
        let context = context.unwrap_or(xs);
        let to_heads = |t: Tensor| -> candle_core::Result<Tensor> {
            let m = t.dim(1)?;
            t.reshape((batch, m, self.heads, head))?
                .transpose(1, 2)?
                .reshape((batch * self.heads, m, head))?
                .to_dtype(DType::F32)
        };
        let q = to_heads((self.q.forward(xs)? * (head as f64).powf(-0.5))?)?;
        let k = to_heads(self.k.forward(context)?)?;
        let v = to_heads(self.v.forward(context)?)?;
        let rows = batch * self.heads;
        let attend = |q: &Tensor, k: &Tensor, v: &Tensor| -> candle_core::Result<Tensor> {
            let scores = q.matmul(&k.t()?)?;
            candle_nn::ops::softmax_last_dim(&scores)?.matmul(v)
        };
        let out = match self.slice {
            Some(slice) if slice < rows => {
                let mut parts = Vec::with_capacity(rows.div_ceil(slice));
                for start in (0..rows).step_by(slice) {
                    let len = slice.min(rows - start);
                    let (q, k, v) = (
                        q.narrow(0, start, len)?,
                        k.narrow(0, start, len)?,
                        v.narrow(0, start, len)?,
                    );
                    parts.push(attend(&q, &k, &v)?);
                }
                Tensor::cat(&parts, 0)?
            }
            _ => attend(&q, &k, &v)?,
        };
        let out = out
            .to_dtype(xs.dtype())?
            .reshape((batch, self.heads, n, head))?
            .transpose(1, 2)?
            .reshape((batch, n, dim))?;
        Ok(self.out.forward(&out)?)
    }
}

/// Self-attention, cross-attention to the text, and a GEGLU feed-forward, each pre-norm
/// with a residual.
struct TransformerBlock {
    norm1: LayerNorm,
    attn1: Attention,
    norm2: LayerNorm,
    attn2: Attention,
    norm3: LayerNorm,
    ff_in: Linear,
    ff_out: Linear,
}

impl TransformerBlock {
    fn new(
        vb: VarBuilder,
        dim: usize,
        context: usize,
        heads: usize,
        slice: Option<usize>,
    ) -> Result<Self> {
        let inner = dim * 4;
        Ok(Self {
            norm1: candle_nn::layer_norm(dim, 1e-5, vb.pp("norm1"))?,
            attn1: Attention::new(vb.pp("attn1"), dim, dim, heads, slice)?,
            norm2: candle_nn::layer_norm(dim, 1e-5, vb.pp("norm2"))?,
            attn2: Attention::new(vb.pp("attn2"), dim, context, heads, slice)?,
            norm3: candle_nn::layer_norm(dim, 1e-5, vb.pp("norm3"))?,
            ff_in: candle_nn::linear(dim, inner * 2, vb.pp("ff.net.0.proj"))?,
            ff_out: candle_nn::linear(inner, dim, vb.pp("ff.net.2"))?,
        })
    }

    fn forward(&self, xs: &Tensor, text: &Tensor) -> Result<Tensor> {
        let xs = (self.attn1.forward(&self.norm1.forward(xs)?, None)? + xs)?;
        let xs = (self.attn2.forward(&self.norm2.forward(&xs)?, Some(text))? + xs)?;
        let h = self.ff_in.forward(&self.norm3.forward(&xs)?)?;
        let halves = h.chunk(2, D::Minus1)?;
        let h = (&halves[0] * halves[1].gelu_erf()?)?;
        Ok((self.ff_out.forward(&h)? + xs)?)
    }
}

/// A projection into and out of the transformer: 1x1 convolution or linear.
enum Projection {
    Conv(Conv2d),
    Linear(Linear),
}

/// diffusers' `Transformer2DModel`: the feature map as a sequence of pixels.
struct SpatialTransformer {
    norm: GroupNorm,
    proj_in: Projection,
    blocks: Vec<TransformerBlock>,
    proj_out: Projection,
}

impl SpatialTransformer {
    fn new(vb: VarBuilder, channels: usize, depth: usize, heads: usize, s: &Shape) -> Result<Self> {
        let projection = |name: &str| -> Result<Projection> {
            Ok(if s.linear_projection {
                Projection::Linear(candle_nn::linear(channels, channels, vb.pp(name))?)
            } else {
                Projection::Conv(candle_nn::conv2d(
                    channels,
                    channels,
                    1,
                    Default::default(),
                    vb.pp(name),
                )?)
            })
        };
        let blocks = (0..depth)
            .map(|i| {
                let slice = s.slicing.then_some((heads / 2).max(1));
                TransformerBlock::new(
                    vb.pp(format!("transformer_blocks.{i}")),
                    channels,
                    s.context,
                    heads,
                    slice,
                )
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            norm: candle_nn::group_norm(s.groups, channels, 1e-6, vb.pp("norm"))?,
            proj_in: projection("proj_in")?,
            blocks,
            proj_out: projection("proj_out")?,
        })
    }

    fn forward(&self, xs: &Tensor, text: &Tensor) -> Result<Tensor> {
        let (batch, channels, h, w) = xs.dims4()?;
        let x = self.norm.forward(xs)?;
        let to_seq = |t: Tensor| t.permute((0, 2, 3, 1))?.reshape((batch, h * w, channels));
        let mut x = match &self.proj_in {
            Projection::Conv(c) => to_seq(c.forward(&x)?)?,
            Projection::Linear(l) => l.forward(&to_seq(x)?)?,
        };
        for block in &self.blocks {
            x = block.forward(&x, text)?;
        }
        let to_map = |t: Tensor| t.reshape((batch, h, w, channels))?.permute((0, 3, 1, 2));
        let x = match &self.proj_out {
            Projection::Conv(c) => c.forward(&to_map(x)?.contiguous()?)?,
            Projection::Linear(l) => to_map(l.forward(&x)?)?,
        };
        Ok((x + xs)?)
    }
}

/// What every block is built with.
struct Shape {
    temb: usize,
    groups: usize,
    eps: f64,
    context: usize,
    linear_projection: bool,
    slicing: bool,
}

impl Shape {
    fn resnet(&self, vb: VarBuilder, input: usize, output: usize) -> Result<ResnetBlock2D> {
        let config = ResnetBlock2DConfig {
            out_channels: Some(output),
            temb_channels: Some(self.temb),
            groups: self.groups,
            eps: self.eps,
            ..Default::default()
        };
        Ok(ResnetBlock2D::new(vb, input, config)?)
    }
}

/// One level of the UNet: ResNet blocks, each followed by a transformer in cross-attention
/// levels, and a down- or upsampling convolution.
struct Level {
    resnets: Vec<ResnetBlock2D>,
    attentions: Vec<SpatialTransformer>,
    resample: Option<Conv2d>,
}

/// SDXL's `add_time_proj` and `add_embedding`.
struct TextTime {
    time_proj: Timesteps,
    embedding: TimestepEmbedding,
}

/// What a denoising step conditions on besides the latents.
pub struct Conditioning<'a> {
    /// Text states, `[batch, tokens, cross_attention_dim]`.
    pub text: &'a Tensor,
    /// SDXL: pooled text `[batch, width]` and size ids `[batch, 6]`.
    pub text_time: Option<(&'a Tensor, &'a Tensor)>,
}

/// The UNet.
pub struct Unet {
    conv_in: Conv2d,
    time_proj: Timesteps,
    time_embedding: TimestepEmbedding,
    text_time: Option<TextTime>,
    down: Vec<Level>,
    mid: (ResnetBlock2D, SpatialTransformer, ResnetBlock2D),
    up: Vec<Level>,
    norm_out: GroupNorm,
    conv_out: Conv2d,
    center_input: bool,
}

impl Unet {
    /// Builds the UNet from its weights, attention sliced when `slicing`.
    pub fn new(vb: VarBuilder, file: &UnetFile, slicing: bool) -> Result<Self> {
        let channels = &file.block_out_channels;
        let n = channels.len();
        let first = channels[0];
        let temb = first * 4;
        let s = Shape {
            temb,
            groups: file.norm_num_groups,
            eps: file.norm_eps,
            context: file.cross_attention_dim,
            linear_projection: file.use_linear_projection,
            slicing,
        };
        let pad1 = Conv2dConfig { padding: 1, ..Default::default() };
        let conv_in = candle_nn::conv2d(file.in_channels, first, 3, pad1, vb.pp("conv_in"))?;
        let time_proj = Timesteps::new(first, file.flip_sin_to_cos, file.freq_shift);
        let time_embedding = TimestepEmbedding::new(vb.pp("time_embedding"), first, temb)?;
        let text_time =
            match (file.addition_time_embed_dim, file.projection_class_embeddings_input_dim) {
                (Some(dim), Some(input))
                    if file.addition_embed_type.as_deref() == Some("text_time") =>
                {
                    Some(TextTime {
                        time_proj: Timesteps::new(dim, file.flip_sin_to_cos, file.freq_shift),
                        embedding: TimestepEmbedding::new(vb.pp("add_embedding"), input, temb)?,
                    })
                }
                _ => None,
            };
        let heads = |i: usize| file.heads(i);
        let depth = |i: usize| file.transformer_layers(i);
        // The transformers after each ResNet block of a cross-attention level.
        let attentions = |vb: &VarBuilder, level: usize, count: usize, channels: usize| {
            if !file.cross_attention(level) {
                return Ok(Vec::new());
            }
            (0..count)
                .map(|j| {
                    let vb = vb.pp(format!("attentions.{j}"));
                    SpatialTransformer::new(vb, channels, depth(level), heads(level), &s)
                })
                .collect::<Result<Vec<_>>>()
        };
        let mut down = Vec::with_capacity(n);
        for i in 0..n {
            let vb = vb.pp(format!("down_blocks.{i}"));
            let input = if i == 0 { first } else { channels[i - 1] };
            let output = channels[i];
            let resnets = (0..file.layers_per_block)
                .map(|j| {
                    s.resnet(
                        vb.pp(format!("resnets.{j}")),
                        if j == 0 { input } else { output },
                        output,
                    )
                })
                .collect::<Result<Vec<_>>>()?;
            let attentions = attentions(&vb, i, file.layers_per_block, output)?;
            let resample = if i + 1 < n {
                let config = Conv2dConfig {
                    stride: 2,
                    padding: file.downsample_padding,
                    ..Default::default()
                };
                Some(candle_nn::conv2d(output, output, 3, config, vb.pp("downsamplers.0.conv"))?)
            } else {
                None
            };
            down.push(Level { resnets, attentions, resample });
        }
        let last = channels[n - 1];
        let mid_vb = vb.pp("mid_block");
        let mid = (
            s.resnet(mid_vb.pp("resnets.0"), last, last)?,
            SpatialTransformer::new(
                mid_vb.pp("attentions.0"),
                last,
                depth(n - 1),
                heads(n - 1),
                &s,
            )?,
            s.resnet(mid_vb.pp("resnets.1"), last, last)?,
        );
        let mut up = Vec::with_capacity(n);
        for i in 0..n {
            // Up levels mirror the down levels, deepest first.
            let level = n - 1 - i;
            let vb = vb.pp(format!("up_blocks.{i}"));
            let output = channels[level];
            let previous = if i == 0 { last } else { channels[level + 1] };
            let skip = channels[level.saturating_sub(1)];
            let layers = file.layers_per_block + 1;
            let resnets = (0..layers)
                .map(|j| {
                    let from_skip = if j + 1 == layers { skip } else { output };
                    let input = if j == 0 { previous } else { output };
                    s.resnet(vb.pp(format!("resnets.{j}")), input + from_skip, output)
                })
                .collect::<Result<Vec<_>>>()?;
            let attentions = attentions(&vb, level, layers, output)?;
            let resample = if i + 1 < n {
                Some(candle_nn::conv2d(output, output, 3, pad1, vb.pp("upsamplers.0.conv"))?)
            } else {
                None
            };
            up.push(Level { resnets, attentions, resample });
        }
        let norm_out = candle_nn::group_norm(
            file.norm_num_groups,
            first,
            file.norm_eps,
            vb.pp("conv_norm_out"),
        )?;
        let conv_out = candle_nn::conv2d(first, file.out_channels, 3, pad1, vb.pp("conv_out"))?;
        Ok(Self {
            conv_in,
            time_proj,
            time_embedding,
            text_time,
            down,
            mid,
            up,
            norm_out,
            conv_out,
            center_input: file.center_input_sample,
        })
    }

    /// Predicts from `xs` (`[batch, channels, h, w]`) at `timestep`.
    pub fn forward(&self, xs: &Tensor, timestep: f64, cond: &Conditioning<'_>) -> Result<Tensor> {
        let batch = xs.dim(0)?;
        let device = xs.device();
        let xs = if self.center_input { ((xs * 2.0)? - 1.0)? } else { xs.clone() };
        // Sinusoidal embeddings of timesteps and sizes in f32 (bf16 cannot hold 999), then
        // the model's type.
        let dtype = xs.dtype();
        let t = (Tensor::ones(batch, DType::F32, device)? * timestep)?;
        let t = self.time_proj.forward(&t)?.to_dtype(dtype)?;
        let mut emb = self.time_embedding.forward(&t)?;
        if let (Some(text_time), Some((pooled, ids))) = (&self.text_time, cond.text_time) {
            let ids = ids.flatten_all()?.to_dtype(DType::F32)?;
            let ids = text_time.time_proj.forward(&ids)?.reshape((batch, ()))?;
            let input = Tensor::cat(&[pooled, &ids.to_dtype(pooled.dtype())?], 1)?;
            emb = (emb + text_time.embedding.forward(&input)?)?;
        }
        let text = cond.text;
        let mut xs = self.conv_in.forward(&xs)?;
        let mut skips = vec![xs.clone()];
        for level in &self.down {
            for (j, resnet) in level.resnets.iter().enumerate() {
                xs = resnet.forward(&xs, Some(&emb))?;
                if let Some(attention) = level.attentions.get(j) {
                    xs = attention.forward(&xs, text)?;
                }
                skips.push(xs.clone());
            }
            if let Some(conv) = &level.resample {
                xs = conv.forward(&xs)?;
                skips.push(xs.clone());
            }
        }
        let (r1, attention, r2) = &self.mid;
        xs = r2.forward(&attention.forward(&r1.forward(&xs, Some(&emb))?, text)?, Some(&emb))?;
        for level in &self.up {
            for (j, resnet) in level.resnets.iter().enumerate() {
                let skip =
                    skips.pop().ok_or_else(|| crate::Error::Unsupported("UNet skips".into()))?;
                xs = resnet.forward(&Tensor::cat(&[&xs, &skip], 1)?, Some(&emb))?;
                if let Some(attention) = level.attentions.get(j) {
                    xs = attention.forward(&xs, text)?;
                }
            }
            if let Some(conv) = &level.resample {
                // Upsample to the size of the skip connection it meets (odd sizes do not
                // halve evenly).
                let (h, w) = match skips.last() {
                    Some(s) => (s.dim(2)?, s.dim(3)?),
                    None => (xs.dim(2)? * 2, xs.dim(3)? * 2),
                };
                xs = conv.forward(&xs.upsample_nearest2d(h, w)?)?;
            }
        }
        let xs = candle_nn::ops::silu(&self.norm_out.forward(&xs)?)?;
        Ok(self.conv_out.forward(&xs)?)
    }
}
