//! Tiny random-weight pipelines in the diffusers layout, for tests, benchmarks and trying
//! the diffusion engine without a download: every file a real pipeline folder has
//! (`model_index.json`, component configs, safetensors weights, a CLIP tokenizer as
//! `vocab.json` and `merges.txt`), with components a few hundred kilobytes each. The weights
//! come from a seed, so two folders written with the same seed are the same.

use std::collections::BTreeMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand_distr::{Distribution, StandardNormal};
use serde_json::{Value, json};

use super::clip::ClipText;
use super::config::{ClipFile, UnetFile, VaeFile};
use super::unet::Unet;
use crate::{Error, Result};

/// Which pipeline to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    /// Stable Diffusion 1.x-style: one text encoder, DDIM.
    Sd,
    /// SDXL-style: two text encoders, pooled text and size conditioning, Euler.
    Sdxl,
    /// SDXL-Turbo-style: SDXL with Euler ancestral at trailing timesteps (few steps, no
    /// guidance).
    Turbo,
}

impl std::str::FromStr for Variant {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "sd" => Ok(Variant::Sd),
            "sdxl" => Ok(Variant::Sdxl),
            "turbo" => Ok(Variant::Turbo),
            other => Err(format!("{other:?}: sd, sdxl or turbo")),
        }
    }
}

/// Hidden width of the tiny text encoders.
const TEXT_WIDTH: usize = 32;

/// Writes a tiny `variant` pipeline into `dir` (created if missing), weights drawn from
/// `seed`.
pub fn write(dir: &Path, variant: Variant, seed: u64) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    let xl = variant != Variant::Sd;
    let (class, scheduler) = match variant {
        Variant::Sd => ("StableDiffusionPipeline", "DDIMScheduler"),
        Variant::Sdxl => ("StableDiffusionXLPipeline", "EulerDiscreteScheduler"),
        Variant::Turbo => ("StableDiffusionXLPipeline", "EulerAncestralDiscreteScheduler"),
    };
    let mut index = json!({
        "_class_name": class,
        "_diffusers_version": "0.31.0",
        "scheduler": ["diffusers", scheduler],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
    });
    if xl {
        index["text_encoder_2"] = json!(["transformers", "CLIPTextModelWithProjection"]);
        index["tokenizer_2"] = json!(["transformers", "CLIPTokenizer"]);
        index["force_zeros_for_empty_prompt"] = json!(true);
    }
    write_json(dir, "model_index.json", &index)?;
    let mut rng = StdRng::seed_from_u64(seed);

    let vocab = vocabulary();
    let vocab_size = vocab.len();
    let tokenizers: &[(&str, &str)] = if xl {
        &[("tokenizer", "<|endoftext|>"), ("tokenizer_2", "!")]
    } else {
        &[("tokenizer", "<|endoftext|>")]
    };
    for (folder, pad) in tokenizers {
        write_tokenizer(dir, folder, &vocab, pad)?;
    }
    let encoders: &[(&str, bool)] = if xl {
        &[("text_encoder", false), ("text_encoder_2", true)]
    } else {
        &[("text_encoder", false)]
    };
    for (folder, projected) in encoders {
        let config = json!({
            "architectures": [if *projected { "CLIPTextModelWithProjection" } else { "CLIPTextModel" }],
            "vocab_size": vocab_size,
            "hidden_size": TEXT_WIDTH,
            "intermediate_size": 2 * TEXT_WIDTH,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "max_position_embeddings": 77,
            "hidden_act": if xl { "gelu" } else { "quick_gelu" },
            "layer_norm_eps": 1e-5,
            "projection_dim": TEXT_WIDTH,
            "bos_token_id": vocab_size - 2,
            "eos_token_id": vocab_size - 1,
            "pad_token_id": 1,
        });
        write_json(dir, &format!("{folder}/config.json"), &config)?;
        let file = ClipFile::read(dir, folder)?;
        save(dir, &format!("{folder}/model.safetensors"), &mut rng, |vb| {
            ClipText::new(vb, &file, *projected).map(drop)
        })?;
    }

    let mut unet = json!({
        "_class_name": "UNet2DConditionModel",
        "sample_size": 32,
        "in_channels": 4,
        "out_channels": 4,
        "block_out_channels": [32, 64],
        "layers_per_block": 1,
        "norm_num_groups": 32,
        "cross_attention_dim": TEXT_WIDTH,
        "attention_head_dim": 2,
        "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"],
        "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"],
    });
    if xl {
        unet["cross_attention_dim"] = json!(2 * TEXT_WIDTH);
        unet["down_block_types"] = json!(["DownBlock2D", "CrossAttnDownBlock2D"]);
        unet["up_block_types"] = json!(["CrossAttnUpBlock2D", "UpBlock2D"]);
        unet["transformer_layers_per_block"] = json!([1, 2]);
        unet["use_linear_projection"] = json!(true);
        unet["addition_embed_type"] = json!("text_time");
        unet["addition_time_embed_dim"] = json!(8);
        unet["projection_class_embeddings_input_dim"] = json!(TEXT_WIDTH + 6 * 8);
    }
    write_json(dir, "unet/config.json", &unet)?;
    let file = UnetFile::read(dir)?;
    save(dir, "unet/diffusion_pytorch_model.safetensors", &mut rng, |vb| {
        Unet::new(vb, &file, false).map(drop)
    })?;

    let vae = json!({
        "_class_name": "AutoencoderKL",
        "in_channels": 3,
        "out_channels": 3,
        "block_out_channels": [32, 32, 32, 32],
        "down_block_types": ["DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D"],
        "up_block_types": ["UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D"],
        "act_fn": "silu",
        "layers_per_block": 1,
        "latent_channels": 4,
        "norm_num_groups": 32,
        "sample_size": 128,
        "scaling_factor": if xl { 0.13025 } else { 0.18215 },
    });
    write_json(dir, "vae/config.json", &vae)?;
    let file = VaeFile::read(dir)?;
    save(dir, "vae/diffusion_pytorch_model.safetensors", &mut rng, |vb| {
        candle_transformers::models::stable_diffusion::vae::AutoEncoderKL::new(
            vb,
            3,
            3,
            file.config(),
        )
        .map(drop)
        .map_err(Error::from)
    })?;

    let mut scheduler_config = json!({
        "_class_name": scheduler,
        "num_train_timesteps": 1000,
        "beta_start": 0.00085,
        "beta_end": 0.012,
        "beta_schedule": "scaled_linear",
        "prediction_type": "epsilon",
        "steps_offset": 1,
        "set_alpha_to_one": false,
        "clip_sample": false,
    });
    scheduler_config["timestep_spacing"] = json!(match variant {
        Variant::Sd | Variant::Sdxl => "leading",
        Variant::Turbo => "trailing",
    });
    write_json(dir, "scheduler/scheduler_config.json", &scheduler_config)?;
    Ok(())
}

fn write_json(dir: &Path, name: &str, value: &Value) -> Result<()> {
    let path = dir.join(name);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(path, serde_json::to_string_pretty(value)?)?;
    Ok(())
}

/// Builds a component on a variable map (which creates its weights), draws every weight
/// that is not a constant (norm scales and zero biases stay as built) again from `rng`,
/// and saves the map.
fn save(
    dir: &Path,
    name: &str,
    rng: &mut StdRng,
    build: impl FnOnce(VarBuilder) -> Result<()>,
) -> Result<()> {
    let map = VarMap::new();
    build(VarBuilder::from_varmap(&map, DType::F32, &Device::Cpu))?;
    let vars: BTreeMap<String, candle_core::Var> = map
        .data()
        .lock()
        .map_err(|_| Error::Unsupported("poisoned".into()))?
        .clone()
        .into_iter()
        .collect();
    for var in vars.values() {
        let values = var.as_tensor().flatten_all()?.to_vec1::<f32>()?;
        if values.iter().all(|v| *v == values[0]) {
            continue;
        }
        // The spread of a fan-in scaled initialization, from the shape alone (the builder's
        // own draws are not seeded): matrices and kernels 1/sqrt(fan-in), vectors 0.02.
        let dims = var.shape().dims();
        let fan_in: usize = dims.iter().skip(1).product();
        let spread = if dims.len() >= 2 { (fan_in as f32).sqrt().recip() } else { 0.02 };
        let drawn: Vec<f32> = values
            .iter()
            .map(|_| -> f32 { StandardNormal.sample(rng) })
            .map(|z: f32| z * spread)
            .collect();
        var.set(&Tensor::from_vec(drawn, var.shape(), &Device::Cpu)?)?;
    }
    let path = dir.join(name);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    map.save(&path)?;
    Ok(())
}

/// GPT-2's byte-to-character table: printable bytes stand for themselves, the others for
/// characters from U+0100 up.
fn byte_chars() -> Vec<char> {
    let printable = |b: u32| {
        (0x21..=0x7e).contains(&b) || (0xa1..=0xac).contains(&b) || (0xae..=0xff).contains(&b)
    };
    let mut next = 0x100;
    (0..256u32)
        .map(|b| {
            if printable(b) {
                char::from_u32(b).unwrap_or('?')
            } else {
                next += 1;
                char::from_u32(next - 1).unwrap_or('?')
            }
        })
        .collect()
}

/// A few merges of common English pairs, so that the tokenizer really merges.
const MERGES: &[(&str, &str)] = &[
    ("t", "h"),
    ("th", "e</w>"),
    ("a", "n"),
    ("an", "d</w>"),
    ("i", "n"),
    ("o", "n</w>"),
    ("e", "r"),
    ("r", "e"),
];

/// The vocabulary: each byte's character, then the same ending a word, the merges, then the
/// start and end tokens (CLIP's order).
fn vocabulary() -> Vec<String> {
    let chars = byte_chars();
    let mut vocab: Vec<String> = chars.iter().map(|c| c.to_string()).collect();
    vocab.extend(chars.iter().map(|c| format!("{c}</w>")));
    vocab.extend(MERGES.iter().map(|(a, b)| format!("{a}{b}")));
    vocab.push("<|startoftext|>".into());
    vocab.push("<|endoftext|>".into());
    vocab
}

fn write_tokenizer(dir: &Path, folder: &str, vocab: &[String], pad: &str) -> Result<()> {
    let ids: serde_json::Map<String, Value> =
        vocab.iter().enumerate().map(|(i, t)| (t.clone(), json!(i))).collect();
    write_json(dir, &format!("{folder}/vocab.json"), &Value::Object(ids))?;
    let mut merges = String::from("#version: 0.2\n");
    for (a, b) in MERGES {
        merges.push_str(&format!("{a} {b}\n"));
    }
    std::fs::write(dir.join(folder).join("merges.txt"), merges)?;
    let specials = json!({
        "bos_token": "<|startoftext|>",
        "eos_token": "<|endoftext|>",
        "unk_token": "<|endoftext|>",
        "pad_token": pad,
    });
    write_json(dir, &format!("{folder}/special_tokens_map.json"), &specials)?;
    let mut config = specials.clone();
    config["model_max_length"] = json!(77);
    config["do_lower_case"] = json!(true);
    write_json(dir, &format!("{folder}/tokenizer_config.json"), &config)?;
    Ok(())
}
