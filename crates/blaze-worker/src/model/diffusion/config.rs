//! The configuration files of a pipeline in the diffusers folder layout, read into what the
//! components are built from. Fields a file leaves out take the defaults diffusers gives
//! them; a field that has no meaning here (a UNet option this worker does not implement) is
//! refused with its file and name rather than ignored.

use std::path::{Path, PathBuf};

use candle_transformers::models::stable_diffusion::vae;
use serde::Deserialize;
use serde_json::Value;

use crate::{Error, Result};

/// Which pipeline a folder holds, from `model_index.json`'s `_class_name`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PipelineKind {
    /// `StableDiffusionPipeline`: one CLIP text encoder (SD 1.x, 2.x, SD-Turbo).
    StableDiffusion,
    /// `StableDiffusionXLPipeline`: two text encoders, pooled text and size conditioning
    /// (SDXL, SDXL-Turbo).
    StableDiffusionXl,
}

impl PipelineKind {
    /// The name `/v1/models` shows.
    pub fn as_str(self) -> &'static str {
        match self {
            PipelineKind::StableDiffusion => "stable-diffusion",
            PipelineKind::StableDiffusionXl => "stable-diffusion-xl",
        }
    }
}

/// Reads `dir/name` as JSON, naming the file when it is missing or malformed.
pub(crate) fn read_json<T: for<'de> Deserialize<'de>>(dir: &Path, name: &str) -> Result<T> {
    let path = dir.join(name);
    let text = std::fs::read_to_string(&path).map_err(|e| {
        Error::Unsupported(format!("{}: {e} (a diffusers pipeline folder has it)", path.display()))
    })?;
    serde_json::from_str(&text).map_err(|e| Error::Unsupported(format!("{}: {e}", path.display())))
}

/// `model_index.json`: the pipeline class and its components.
pub fn pipeline_kind(dir: &Path) -> Result<PipelineKind> {
    let index: Value = read_json(dir, "model_index.json")?;
    match index["_class_name"].as_str() {
        Some("StableDiffusionPipeline") => Ok(PipelineKind::StableDiffusion),
        Some("StableDiffusionXLPipeline") => Ok(PipelineKind::StableDiffusionXl),
        other => Err(Error::Unsupported(format!(
            "{}: _class_name {}: this worker runs StableDiffusionPipeline and \
             StableDiffusionXLPipeline",
            dir.join("model_index.json").display(),
            other.map_or("(missing)".to_owned(), |c| format!("{c:?}")),
        ))),
    }
}

/// Whether `model_index.json` asks for zeros as the unconditional text of an empty negative
/// prompt (`force_zeros_for_empty_prompt`, SDXL's default).
pub fn force_zeros_for_empty_prompt(dir: &Path) -> Result<bool> {
    let index: Value = read_json(dir, "model_index.json")?;
    Ok(index["force_zeros_for_empty_prompt"].as_bool().unwrap_or(true))
}

/// An integer or one per block, as diffusers writes `attention_head_dim` and
/// `transformer_layers_per_block`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum PerBlock {
    One(usize),
    Each(Vec<usize>),
}

impl PerBlock {
    fn get(&self, i: usize) -> usize {
        match self {
            PerBlock::One(v) => *v,
            PerBlock::Each(v) => v.get(i).copied().unwrap_or(v.last().copied().unwrap_or(1)),
        }
    }
}

/// `unet/config.json`, the fields this worker reads.
#[derive(Debug, Clone, Deserialize)]
pub struct UnetFile {
    #[serde(default = "four")]
    pub in_channels: usize,
    #[serde(default = "four")]
    pub out_channels: usize,
    pub block_out_channels: Vec<usize>,
    pub down_block_types: Vec<String>,
    #[serde(default)]
    up_block_types: Option<Vec<String>>,
    #[serde(default = "two")]
    pub layers_per_block: usize,
    #[serde(default = "one")]
    pub downsample_padding: usize,
    #[serde(default = "one_f")]
    pub mid_block_scale_factor: f64,
    #[serde(default = "thirty_two")]
    pub norm_num_groups: usize,
    #[serde(default = "norm_eps")]
    pub norm_eps: f64,
    pub cross_attention_dim: usize,
    attention_head_dim: PerBlock,
    #[serde(default)]
    transformer_layers_per_block: Option<PerBlock>,
    #[serde(default)]
    pub use_linear_projection: bool,
    #[serde(default = "yes")]
    pub flip_sin_to_cos: bool,
    #[serde(default)]
    pub freq_shift: f64,
    #[serde(default)]
    pub center_input_sample: bool,
    /// `text_time` for SDXL: pooled text and size conditioning added to the time embedding.
    #[serde(default)]
    pub addition_embed_type: Option<String>,
    #[serde(default)]
    pub addition_time_embed_dim: Option<usize>,
    #[serde(default)]
    pub projection_class_embeddings_input_dim: Option<usize>,
    /// Latent side the model was trained at (64 for 512-pixel images).
    #[serde(default)]
    pub sample_size: Option<usize>,
    #[serde(default)]
    class_embed_type: Option<String>,
    #[serde(default)]
    time_cond_proj_dim: Option<usize>,
    #[serde(default)]
    encoder_hid_dim: Option<usize>,
}

fn four() -> usize {
    4
}
fn two() -> usize {
    2
}
fn thirty_two() -> usize {
    32
}
fn one_f() -> f64 {
    1.0
}
fn norm_eps() -> f64 {
    1e-5
}
fn yes() -> bool {
    true
}

impl UnetFile {
    /// Reads and checks `dir/unet/config.json`.
    pub fn read(dir: &Path) -> Result<Self> {
        let file: Self = read_json(dir, "unet/config.json")?;
        let name = dir.join("unet/config.json");
        let refuse = |field: &str, why: &str| {
            Error::Unsupported(format!("{}: {field}: {why}", name.display()))
        };
        if let Some(t) = &file.class_embed_type {
            return Err(refuse("class_embed_type", &format!("{t:?} is not supported")));
        }
        if file.time_cond_proj_dim.is_some() {
            return Err(refuse("time_cond_proj_dim", "guidance-distilled UNets are not supported"));
        }
        if file.encoder_hid_dim.is_some() {
            return Err(refuse("encoder_hid_dim", "is not supported"));
        }
        if file.block_out_channels.len() != file.down_block_types.len() {
            return Err(refuse("down_block_types", "needs one entry per block_out_channels"));
        }
        if let Some(up) = &file.up_block_types {
            let mirrored = file.down_block_types.iter().rev().map(|d| d.replace("Down", "Up"));
            if !up.iter().cloned().eq(mirrored) {
                return Err(refuse(
                    "up_block_types",
                    "must mirror down_block_types (CrossAttnUpBlock2D for CrossAttnDownBlock2D, \
                     UpBlock2D for DownBlock2D, deepest first)",
                ));
            }
        }
        for t in &file.down_block_types {
            if t != "CrossAttnDownBlock2D" && t != "DownBlock2D" {
                return Err(refuse("down_block_types", &format!("{t:?} is not supported")));
            }
        }
        let text_time_dims = file.addition_time_embed_dim.is_some()
            && file.projection_class_embeddings_input_dim.is_some();
        match file.addition_embed_type.as_deref() {
            None => {}
            Some("text_time") if text_time_dims => {}
            Some("text_time") => {
                return Err(refuse(
                    "addition_embed_type",
                    "text_time needs addition_time_embed_dim and \
                     projection_class_embeddings_input_dim",
                ));
            }
            Some(t) => {
                return Err(refuse("addition_embed_type", &format!("{t:?} is not supported")));
            }
        }
        Ok(file)
    }

    /// Attention heads of level `i` (diffusers' `attention_head_dim`, which counts heads).
    pub fn heads(&self, i: usize) -> usize {
        self.attention_head_dim.get(i).max(1)
    }

    /// Transformer blocks per attention of level `i`.
    pub fn transformer_layers(&self, i: usize) -> usize {
        self.transformer_layers_per_block.as_ref().map_or(1, |t| t.get(i))
    }

    /// Whether level `i` has cross-attention.
    pub fn cross_attention(&self, i: usize) -> bool {
        self.down_block_types[i] == "CrossAttnDownBlock2D"
    }
}

/// `vae/config.json`.
#[derive(Debug, Clone, Deserialize)]
pub struct VaeFile {
    pub block_out_channels: Vec<usize>,
    #[serde(default = "one")]
    pub layers_per_block: usize,
    #[serde(default = "four")]
    pub latent_channels: usize,
    #[serde(default = "thirty_two")]
    pub norm_num_groups: usize,
    #[serde(default = "yes")]
    pub use_quant_conv: bool,
    #[serde(default = "yes")]
    pub use_post_quant_conv: bool,
    #[serde(default = "scaling_factor")]
    pub scaling_factor: f64,
    /// Image side the autoencoder was trained at: the tile size of tiled decoding.
    #[serde(default)]
    pub sample_size: Option<usize>,
}

fn one() -> usize {
    1
}
fn scaling_factor() -> f64 {
    0.18215
}

impl VaeFile {
    /// Reads `dir/vae/config.json`.
    pub fn read(dir: &Path) -> Result<Self> {
        read_json(dir, "vae/config.json")
    }

    /// The autoencoder's configuration.
    pub fn config(&self) -> vae::AutoEncoderKLConfig {
        vae::AutoEncoderKLConfig {
            block_out_channels: self.block_out_channels.clone(),
            layers_per_block: self.layers_per_block,
            latent_channels: self.latent_channels,
            norm_num_groups: self.norm_num_groups,
            use_quant_conv: self.use_quant_conv,
            use_post_quant_conv: self.use_post_quant_conv,
        }
    }

    /// How many times smaller than the image the latents are.
    pub fn downscale(&self) -> usize {
        1 << (self.block_out_channels.len().saturating_sub(1))
    }
}

/// `text_encoder*/config.json` (a CLIP text model).
#[derive(Debug, Clone, Deserialize)]
pub struct ClipFile {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    #[serde(default = "seventy_seven")]
    pub max_position_embeddings: usize,
    #[serde(default = "quick_gelu")]
    pub hidden_act: String,
    #[serde(default = "layer_norm_eps")]
    pub layer_norm_eps: f64,
    /// Width of the projected pooled output (`text_projection`, SDXL's second encoder).
    #[serde(default)]
    pub projection_dim: Option<usize>,
}

fn seventy_seven() -> usize {
    77
}
fn quick_gelu() -> String {
    "quick_gelu".into()
}
fn layer_norm_eps() -> f64 {
    1e-5
}

impl ClipFile {
    /// Reads `dir/folder/config.json` and checks its activation.
    pub fn read(dir: &Path, folder: &str) -> Result<Self> {
        let file: Self = read_json(dir, &format!("{folder}/config.json"))?;
        if !matches!(file.hidden_act.as_str(), "quick_gelu" | "gelu") {
            return Err(Error::Unsupported(format!(
                "{}/{folder}/config.json: hidden_act {:?}: quick_gelu or gelu",
                dir.display(),
                file.hidden_act
            )));
        }
        if file.num_attention_heads == 0
            || !file.hidden_size.is_multiple_of(file.num_attention_heads)
        {
            return Err(Error::Unsupported(format!(
                "{}/{folder}/config.json: hidden_size {} is not a multiple of \
                 num_attention_heads {}",
                dir.display(),
                file.hidden_size,
                file.num_attention_heads
            )));
        }
        Ok(file)
    }
}

/// The safetensors files of one component: the plain ones when there are any, else those
/// of one variant (`*.fp16.safetensors`), so that a folder holding both loads once.
pub fn weight_files(dir: &Path, folder: &str) -> Result<Vec<PathBuf>> {
    let sub = dir.join(folder);
    let entries = std::fs::read_dir(&sub).map_err(|e| {
        Error::Unsupported(format!("{}: {e} (the pipeline's {folder} weights)", sub.display()))
    })?;
    let mut plain = Vec::new();
    let mut variants = Vec::new();
    for entry in entries {
        let path = entry?.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else { continue };
        let Some(stem) = name.strip_suffix(".safetensors") else { continue };
        // `model.fp16`, `diffusion_pytorch_model.fp16`, or their shards `...-00001-of-00002`.
        let base = stem.split('-').next().unwrap_or(stem);
        if base.contains('.') { variants.push(path) } else { plain.push(path) }
    }
    let mut files = if plain.is_empty() { variants } else { plain };
    files.sort();
    if files.is_empty() {
        return Err(Error::Unsupported(format!(
            "{}: no .safetensors weights (only safetensors pipelines load)",
            sub.display()
        )));
    }
    Ok(files)
}
