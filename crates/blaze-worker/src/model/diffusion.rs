//! Text-to-image pipelines in the diffusers folder layout (`model_index.json`, `unet/`,
//! `vae/`, `text_encoder/`, `text_encoder_2/`, `tokenizer/`, `tokenizer_2/`, `scheduler/`):
//! Stable Diffusion 1.x and 2.x, SDXL, and their few-step Turbo variants, on
//! candle-transformers' UNet and autoencoder blocks.
//!
//! A generation is a [`Denoising`]: started for a batch of images that share a size and a
//! step count ([`DiffusionModel::start`]: text encoded, initial noise drawn from each image's
//! seed), stepped ([`DiffusionModel::step`]) and decoded ([`DiffusionModel::finish`]); the
//! engine reports progress and drops cancelled images between steps. Each image draws its
//! noise from its own generator, so an image is the same alone or in a batch (up to float
//! rounding in kernels of another batch size) and the same seed gives the same image.
//!
//! Memory options ([`MemoryOptions`]): attention in slices of half a block's heads; the
//! autoencoder one image at a time, or in tiles; and offloading, where a component (text
//! encoders, UNet, autoencoder) is built on the device from its weight files only while it
//! runs and dropped after, so the device holds one component's weights at a time (the files
//! stay in the host's page cache, so a rebuild reads memory, not disk).

mod clip;
pub mod config;
pub mod scheduler;
pub mod tiny;
mod tokenizer;
mod unet;
pub mod vae;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::stable_diffusion::vae::AutoEncoderKL;
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand_distr::{Distribution, StandardNormal};

use self::clip::ClipText;
pub use self::config::PipelineKind;
use self::config::{ClipFile, UnetFile, VaeFile};
use self::scheduler::{Schedule, SchedulerConfig};
use self::tokenizer::ClipTokenizer;
use self::unet::{Conditioning, Unet};
pub use self::vae::Pixels;
use crate::{Error, Result};

/// How a pipeline trades speed for memory.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MemoryOptions {
    /// Attention computed for half of a block's heads at a time.
    pub attention_slicing: bool,
    /// The autoencoder decodes one image at a time.
    pub vae_slicing: bool,
    /// The autoencoder decodes images larger than it was trained at in overlapping tiles.
    pub vae_tiling: bool,
    /// Components are on the device only while they run.
    pub cpu_offload: bool,
}

/// A component, held or built when needed.
enum Component<T> {
    Resident(Arc<T>),
    Offloaded(Box<dyn Fn() -> Result<T> + Send + Sync>),
}

impl<T> Component<T> {
    fn new(offload: bool, build: impl Fn() -> Result<T> + Send + Sync + 'static) -> Result<Self> {
        Ok(if offload {
            Component::Offloaded(Box::new(build))
        } else {
            Component::Resident(Arc::new(build()?))
        })
    }

    fn get(&self) -> Result<Arc<T>> {
        match self {
            Component::Resident(c) => Ok(c.clone()),
            Component::Offloaded(build) => Ok(Arc::new(build()?)),
        }
    }
}

/// The weights in `files`, read onto `device` and held as `dtype`.
fn var_builder(files: &[PathBuf], dtype: DType, device: &Device) -> Result<VarBuilder<'static>> {
    let mut tensors = std::collections::HashMap::new();
    for file in files {
        tensors.extend(candle_core::safetensors::load(file, device)?);
    }
    Ok(VarBuilder::from_tensors(tensors, dtype, device))
}

/// One text encoder with its tokenizer.
struct Encoder {
    tokenizer: ClipTokenizer,
    model: Component<ClipText>,
}

/// A loaded pipeline.
pub struct DiffusionModel {
    kind: PipelineKind,
    device: Device,
    dtype: DType,
    encoders: Vec<Encoder>,
    unet: Component<Unet>,
    vae: Component<AutoEncoderKL>,
    vae_file: VaeFile,
    unet_file: UnetFile,
    scheduler: SchedulerConfig,
    options: MemoryOptions,
    force_zeros: bool,
}

/// One image to generate.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageSpec {
    /// What to draw.
    pub prompt: String,
    /// What to steer away from (empty: nothing).
    pub negative_prompt: String,
    /// Width in pixels, a multiple of 8.
    pub width: usize,
    /// Height in pixels, a multiple of 8.
    pub height: usize,
    /// Denoising steps.
    pub steps: usize,
    /// Classifier-free guidance scale; 1 or less turns guidance off.
    pub guidance_scale: f64,
    /// The seed of this image's noise.
    pub seed: u64,
}

impl ImageSpec {
    /// Whether classifier-free guidance runs (a second, unconditional pass per step).
    pub fn guided(&self) -> bool {
        self.guidance_scale > 1.0
    }
}

/// A batch being denoised.
pub struct Denoising {
    schedule: Schedule,
    latents: Tensor,
    /// Text states: unconditional rows first when guided, then conditional.
    text: Tensor,
    /// SDXL: pooled text (same order as `text`) and size ids.
    text_time: Option<(Tensor, Tensor)>,
    guidance: Option<Tensor>,
    rngs: Vec<StdRng>,
    unet: Arc<Unet>,
    step: usize,
    height: usize,
    width: usize,
}

impl Denoising {
    /// Steps done.
    pub fn done(&self) -> usize {
        self.step
    }

    /// Steps in all.
    pub fn steps(&self) -> usize {
        self.schedule.len()
    }

    /// Images in the batch.
    pub fn len(&self) -> usize {
        self.rngs.len()
    }

    /// Whether every image was dropped.
    pub fn is_empty(&self) -> bool {
        self.rngs.is_empty()
    }
}

impl DiffusionModel {
    /// Loads the pipeline in `dir` on `device`; weights in `dtype` (the autoencoder in f32
    /// when `dtype` is f16, whose range its activations overflow).
    pub fn load(dir: &Path, device: &Device, dtype: DType, options: MemoryOptions) -> Result<Self> {
        let kind = config::pipeline_kind(dir)?;
        let folders: &[(&str, &str)] = match kind {
            PipelineKind::StableDiffusion => &[("text_encoder", "tokenizer")],
            PipelineKind::StableDiffusionXl => {
                &[("text_encoder", "tokenizer"), ("text_encoder_2", "tokenizer_2")]
            }
        };
        let mut encoders = Vec::new();
        for (i, (folder, tokenizer)) in folders.iter().enumerate() {
            let file = ClipFile::read(dir, folder)?;
            let tokenizer = ClipTokenizer::load(dir, tokenizer, file.max_position_embeddings)?;
            let files = config::weight_files(dir, folder)?;
            let device = device.clone();
            // SDXL's second encoder also gives the pooled, projected text.
            let projected = kind == PipelineKind::StableDiffusionXl && i == 1;
            let model = Component::new(options.cpu_offload, move || {
                ClipText::new(var_builder(&files, dtype, &device)?, &file, projected)
            })?;
            encoders.push(Encoder { tokenizer, model });
        }
        let unet_file = UnetFile::read(dir)?;
        let unet = {
            let files = config::weight_files(dir, "unet")?;
            let (device, file) = (device.clone(), unet_file.clone());
            Component::new(options.cpu_offload, move || {
                Unet::new(var_builder(&files, dtype, &device)?, &file, options.attention_slicing)
            })?
        };
        let vae_file = VaeFile::read(dir)?;
        let vae = {
            let files = config::weight_files(dir, "vae")?;
            let (device, config) = (device.clone(), vae_file.config());
            let vae_dtype = if dtype == DType::F16 { DType::F32 } else { dtype };
            Component::new(options.cpu_offload, move || {
                Ok(AutoEncoderKL::new(
                    var_builder(&files, vae_dtype, &device)?,
                    3,
                    3,
                    config.clone(),
                )?)
            })?
        };
        let scheduler = SchedulerConfig::read(dir)?;
        if let Some(class) = &scheduler.substituted {
            tracing::info!(scheduler = %class, "no implementation of this scheduler; running DDIM over its noise schedule");
        }
        if kind == PipelineKind::StableDiffusionXl && unet_file.addition_embed_type.is_none() {
            return Err(Error::Unsupported(format!(
                "{}: an SDXL pipeline's UNet needs addition_embed_type text_time",
                dir.join("unet/config.json").display()
            )));
        }
        let force_zeros =
            kind == PipelineKind::StableDiffusionXl && config::force_zeros_for_empty_prompt(dir)?;
        Ok(Self {
            kind,
            device: device.clone(),
            dtype,
            encoders,
            unet,
            vae,
            vae_file,
            unet_file,
            scheduler,
            options,
            force_zeros,
        })
    }

    /// Which pipeline this is.
    pub fn kind(&self) -> PipelineKind {
        self.kind
    }

    /// The most prompt tokens the text encoder reads (start and end tokens included); the
    /// rest of a longer prompt is cut.
    pub fn prompt_tokens(&self) -> usize {
        self.encoders.first().map_or(0, |e| e.tokenizer.length())
    }

    /// The scheduler settings.
    pub fn scheduler(&self) -> &SchedulerConfig {
        &self.scheduler
    }

    /// The memory options it runs with.
    pub fn options(&self) -> MemoryOptions {
        self.options
    }

    /// The guidance scale a request that gives none gets: off for few-step (Turbo) models,
    /// else diffusers' defaults (7.5, and 5 for SDXL).
    pub fn default_guidance(&self) -> f64 {
        match (self.scheduler.few_step(), self.kind) {
            (true, _) => 0.0,
            (false, PipelineKind::StableDiffusion) => 7.5,
            (false, PipelineKind::StableDiffusionXl) => 5.0,
        }
    }

    /// How many times smaller than the image its latents are; sizes must be multiples of it.
    pub fn size_multiple(&self) -> usize {
        self.vae_file.downscale()
    }

    /// The image side the model was trained at, when its config says.
    pub fn native_side(&self) -> Option<usize> {
        self.unet_file.sample_size.map(|s| s * self.vae_file.downscale())
    }

    /// Starts denoising `images`, which must share their size, steps and whether they are
    /// guided.
    pub fn start(&self, images: &[ImageSpec]) -> Result<Denoising> {
        let first = images.first().ok_or_else(|| Error::Unsupported("no images".into()))?;
        if images.iter().any(|i| {
            (i.width, i.height, i.steps, i.guided())
                != (first.width, first.height, first.steps, first.guided())
        }) {
            return Err(Error::Unsupported(
                "a batch must share size, steps and guidance on or off".into(),
            ));
        }
        let schedule = self.scheduler.schedule(first.steps)?;
        let guided = first.guided();
        let (text, pooled) = self.encode(images, guided)?;
        let factor = self.vae_file.downscale();
        let (h, w) = (first.height / factor, first.width / factor);
        let channels = self.unet_file.in_channels;
        let mut rngs: Vec<StdRng> = images.iter().map(|i| StdRng::seed_from_u64(i.seed)).collect();
        let noise = self.noise(&mut rngs, (channels, h, w))?;
        let latents = (noise * schedule.init_noise_sigma())?;
        let text_time = match pooled {
            Some(pooled) => {
                let (hh, ww) = (first.height as f32, first.width as f32);
                // Original size, crop top-left, target size.
                let row = [hh, ww, 0.0, 0.0, hh, ww];
                let rows = if guided { 2 * images.len() } else { images.len() };
                let ids: Vec<f32> = (0..rows).flat_map(|_| row).collect();
                let ids = Tensor::from_vec(ids, (rows, 6), &self.device)?;
                Some((pooled, ids))
            }
            None => None,
        };
        let guidance = if guided {
            let g: Vec<f32> = images.iter().map(|i| i.guidance_scale as f32).collect();
            Some(Tensor::from_vec(g, (images.len(), 1, 1, 1), &self.device)?.to_dtype(self.dtype)?)
        } else {
            None
        };
        Ok(Denoising {
            schedule,
            latents,
            text,
            text_time,
            guidance,
            rngs,
            unet: self.unet.get()?,
            step: 0,
            height: first.height,
            width: first.width,
        })
    }

    /// The standard normal noise an image starts from (before the scheduler scales it),
    /// `[1, channels, height / 8, width / 8]`: the first draws of its seed's generator.
    pub fn initial_noise(&self, spec: &ImageSpec) -> Result<Tensor> {
        let factor = self.vae_file.downscale();
        let shape = (self.unet_file.in_channels, spec.height / factor, spec.width / factor);
        self.noise(&mut [StdRng::seed_from_u64(spec.seed)], shape)
    }

    /// Standard normal noise of `shape` per image, from each image's generator.
    fn noise(&self, rngs: &mut [StdRng], shape: (usize, usize, usize)) -> Result<Tensor> {
        let per = shape.0 * shape.1 * shape.2;
        let mut values = Vec::with_capacity(per * rngs.len());
        for rng in rngs.iter_mut() {
            values.extend((0..per).map(|_| -> f32 { StandardNormal.sample(rng) }));
        }
        let t = Tensor::from_vec(values, (rngs.len(), shape.0, shape.1, shape.2), &self.device)?;
        Ok(t.to_dtype(self.dtype)?)
    }

    /// Text states for the batch (unconditional rows first when guided) and, for SDXL, the
    /// pooled text in the same order.
    fn encode(&self, images: &[ImageSpec], guided: bool) -> Result<(Tensor, Option<Tensor>)> {
        let mut texts: Vec<&str> = Vec::new();
        if guided {
            texts.extend(images.iter().map(|i| i.negative_prompt.as_str()));
        }
        texts.extend(images.iter().map(|i| i.prompt.as_str()));
        let sdxl = self.kind == PipelineKind::StableDiffusionXl;
        let mut states = Vec::new();
        let mut pooled = None;
        for (e, encoder) in self.encoders.iter().enumerate() {
            let rows =
                texts.iter().map(|t| encoder.tokenizer.row(t)).collect::<Result<Vec<_>>>()?;
            let n = rows[0].ids.len();
            let ids: Vec<u32> = rows.iter().flat_map(|r| r.ids.iter().copied()).collect();
            let ids = Tensor::from_vec(ids, (rows.len(), n), &self.device)?;
            let ends: Vec<usize> = rows.iter().map(|r| r.end).collect();
            let model = encoder.model.get()?;
            let out = model.forward(&ids, &ends)?;
            states.push(if sdxl { out.penultimate } else { out.last });
            if sdxl && e == 1 {
                pooled = Some(out.pooled);
            }
        }
        let mut text = Tensor::cat(&states, 2)?;
        if guided && sdxl && self.force_zeros {
            // An empty negative prompt conditions on zeros, not on the empty text's states.
            let empty: Vec<bool> = images.iter().map(|i| i.negative_prompt.is_empty()).collect();
            if empty.iter().any(|e| *e) {
                let keep: Vec<f32> = empty
                    .iter()
                    .map(|e| if *e { 0.0 } else { 1.0 })
                    .chain(std::iter::repeat_n(1.0, images.len()))
                    .collect();
                let keep = Tensor::from_vec(keep, (2 * images.len(), 1, 1), &self.device)?
                    .to_dtype(text.dtype())?;
                text = text.broadcast_mul(&keep)?;
                if let Some(p) = pooled.as_mut() {
                    *p = p.broadcast_mul(&keep.squeeze(2)?)?;
                }
            }
        }
        Ok((text, pooled))
    }

    /// Runs the next step of `d`.
    pub fn step(&self, d: &mut Denoising) -> Result<()> {
        let i = d.step;
        let guided = d.guidance.is_some();
        let input = d.schedule.scale_input(&d.latents, i)?;
        let input = if guided { Tensor::cat(&[&input, &input], 0)? } else { input };
        let text_time = d.text_time.as_ref().map(|(p, ids)| (p, ids));
        let cond = Conditioning { text: &d.text, text_time };
        let out = d.unet.forward(&input, d.schedule.timestep(i), &cond)?;
        let out = match &d.guidance {
            Some(g) => {
                let n = d.len();
                let (uncond, text) = (out.narrow(0, 0, n)?, out.narrow(0, n, n)?);
                (&uncond + (text - &uncond)?.broadcast_mul(g)?)?
            }
            None => out,
        };
        let noise = if d.schedule.needs_noise() {
            let (_, c, h, w) = d.latents.dims4()?;
            Some(self.noise(&mut d.rngs, (c, h, w))?)
        } else {
            None
        };
        d.latents = d.schedule.step(i, &out, &d.latents, noise.as_ref())?;
        d.step += 1;
        Ok(())
    }

    /// Drops the images whose `keep` is false from `d`.
    pub fn retain(&self, d: &mut Denoising, keep: &[bool]) -> Result<()> {
        let n = d.len();
        let kept: Vec<u32> = (0..n as u32).filter(|&i| keep[i as usize]).collect();
        if kept.len() == n {
            return Ok(());
        }
        let guided = d.guidance.is_some();
        let rows: Vec<u32> = if guided {
            kept.iter().copied().chain(kept.iter().map(|&i| i + n as u32)).collect()
        } else {
            kept.clone()
        };
        let at = |ids: &[u32]| Tensor::new(ids, &self.device);
        let (kept_ids, rows_ids) = (at(&kept)?, at(&rows)?);
        if kept.is_empty() {
            d.rngs.clear();
            return Ok(());
        }
        d.latents = d.latents.index_select(&kept_ids, 0)?;
        d.text = d.text.index_select(&rows_ids, 0)?;
        if let Some((p, ids)) = d.text_time.as_mut() {
            *p = p.index_select(&rows_ids, 0)?;
            *ids = ids.index_select(&rows_ids, 0)?;
        }
        if let Some(g) = d.guidance.as_mut() {
            *g = g.index_select(&kept_ids, 0)?;
        }
        let mut i = 0;
        d.rngs.retain(|_| {
            i += 1;
            keep[i - 1]
        });
        Ok(())
    }

    /// Decodes the finished latents; the UNet is let go first (offloaded, it leaves the
    /// device before the autoencoder comes).
    pub fn finish(&self, d: Denoising) -> Result<Vec<Pixels>> {
        let Denoising { latents, unet, width, height, .. } = d;
        drop(unet);
        let latents = (latents / self.vae_file.scaling_factor)?;
        let vae = self.vae.get()?;
        let tile = self
            .options
            .vae_tiling
            .then(|| self.vae_file.sample_size.unwrap_or(512) / self.vae_file.downscale());
        let how = vae::Decoding { slicing: self.options.vae_slicing, tile };
        let dtype = if self.dtype == DType::F16 { DType::F32 } else { self.dtype };
        let images = vae::decode(&vae, &latents, how, dtype)?;
        debug_assert!(images.iter().all(|i| i.width == width && i.height == height));
        Ok(images)
    }

    /// Generates `images` in one batch, start to finish.
    pub fn generate(&self, images: &[ImageSpec]) -> Result<Vec<Pixels>> {
        let mut d = self.start(images)?;
        while d.done() < d.steps() {
            self.step(&mut d)?;
        }
        self.finish(d)
    }
}

/// Encodes an image as PNG.
pub fn png(image: &Pixels) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut encoder = png::Encoder::new(&mut out, image.width as u32, image.height as u32);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    let png_error = |e: png::EncodingError| Error::Unsupported(format!("PNG encoding: {e}"));
    let mut writer = encoder.write_header().map_err(png_error)?;
    writer.write_image_data(&image.rgb).map_err(png_error)?;
    writer.finish().map_err(png_error)?;
    Ok(out)
}
