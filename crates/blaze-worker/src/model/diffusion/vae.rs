//! Latents to pixels: the autoencoder's decoder, all images at once, one at a time (VAE
//! slicing), or in overlapping tiles blended where they meet (VAE tiling, for images larger
//! than the autoencoder was trained at: the decoder's memory grows with the tile, not the
//! image).

use candle_core::{DType, IndexOp, Tensor};
use candle_transformers::models::stable_diffusion::vae::AutoEncoderKL;

use crate::Result;

/// How latents are decoded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Decoding {
    /// One image at a time.
    pub slicing: bool,
    /// In tiles of this many latent rows and columns when the latents are larger (`None`:
    /// whole).
    pub tile: Option<usize>,
}

/// An RGB image, rows top to bottom, 3 bytes a pixel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pixels {
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
    /// `height * width * 3` bytes.
    pub rgb: Vec<u8>,
}

/// Decodes `latents` (`[batch, channels, h, w]`, already divided by the scaling factor).
pub fn decode(
    vae: &AutoEncoderKL,
    latents: &Tensor,
    how: Decoding,
    dtype: DType,
) -> Result<Vec<Pixels>> {
    let latents = latents.to_dtype(dtype)?;
    let batch = latents.dim(0)?;
    let mut images = Vec::with_capacity(batch);
    if how.slicing || how.tile.is_some() {
        for b in 0..batch {
            let one = latents.narrow(0, b, 1)?;
            let decoded = match how.tile {
                Some(tile) => tiled(vae, &one, tile)?,
                None => vae.decode(&one)?,
            };
            images.extend(to_pixels(&decoded)?);
        }
    } else {
        images = to_pixels(&vae.decode(&latents)?)?;
    }
    Ok(images)
}

/// `[batch, 3, h, w]` in [-1, 1] to bytes.
fn to_pixels(images: &Tensor) -> Result<Vec<Pixels>> {
    let images = ((images.to_dtype(DType::F32)? + 1.0)? * 127.5)?.clamp(0.0, 255.0)?;
    let (batch, _, height, width) = images.dims4()?;
    let hwc = images.permute((0, 2, 3, 1))?.round()?.to_dtype(DType::U8)?;
    (0..batch)
        .map(|b| {
            let rgb = hwc.i(b)?.flatten_all()?.to_vec1::<u8>()?;
            Ok(Pixels { width, height, rgb })
        })
        .collect()
}

/// Decodes one image's latents in tiles of `tile` latent rows and columns, a quarter of a
/// tile overlapping its neighbours; in the overlap the tiles' pixels are averaged with
/// weights that fall linearly to zero toward each tile's inner edge, so no seam shows.
fn tiled(vae: &AutoEncoderKL, latents: &Tensor, tile: usize) -> Result<Tensor> {
    let (_, _, h, w) = latents.dims4()?;
    if h <= tile && w <= tile {
        return Ok(vae.decode(latents)?);
    }
    let overlap = (tile / 4).max(1);
    let starts = |size: usize| -> Vec<usize> {
        if size <= tile {
            return vec![0];
        }
        let stride = tile - overlap;
        let mut s: Vec<usize> =
            (0..).map(|k| k * stride).take_while(|&p| p + tile < size).collect();
        s.push(size - tile);
        s
    };
    let (rows, cols) = (starts(h), starts(w));
    let mut sum: Option<Vec<f32>> = None;
    let mut weight: Vec<f32> = Vec::new();
    let (mut height, mut width, mut scale) = (0, 0, 0);
    for &y in &rows {
        for &x in &cols {
            let (th, tw) = (tile.min(h), tile.min(w));
            let part = latents.narrow(2, y, th)?.narrow(3, x, tw)?;
            let image = vae.decode(&part)?.to_dtype(DType::F32)?;
            let (_, channels, ph, pw) = image.dims4()?;
            if sum.is_none() {
                scale = ph / th;
                height = h * scale;
                width = w * scale;
                sum = Some(vec![0.0; channels * height * width]);
                weight = vec![0.0; height * width];
            }
            let Some(sum) = sum.as_mut() else { unreachable!("set above") };
            let values = image.flatten_all()?.to_vec1::<f32>()?;
            let ramp = (overlap * scale) as f32;
            let (oy, ox) = (y * scale, x * scale);
            // A tile's edge only fades where a neighbour overlaps it.
            let fade = |at: usize, len: usize, first: bool, last: bool| -> f32 {
                let from_start = if first { f32::INFINITY } else { (at as f32 + 0.5) / ramp };
                let from_end = if last { f32::INFINITY } else { ((len - at) as f32 - 0.5) / ramp };
                from_start.min(from_end).min(1.0)
            };
            for py in 0..ph {
                let wy = fade(py, ph, y == 0, y + th >= h);
                for px in 0..pw {
                    let wgt = wy * fade(px, pw, x == 0, x + tw >= w);
                    let out = (oy + py) * width + ox + px;
                    weight[out] += wgt;
                    for c in 0..channels {
                        sum[c * height * width + out] += wgt * values[(c * ph + py) * pw + px];
                    }
                }
            }
        }
    }
    let Some(mut sum) = sum else { unreachable!("at least one tile") };
    let plane = height * width;
    for (i, v) in sum.iter_mut().enumerate() {
        *v /= weight[i % plane].max(f32::EPSILON);
    }
    let channels = sum.len() / plane;
    Ok(Tensor::from_vec(sum, (1, channels, height, width), latents.device())?)
}
