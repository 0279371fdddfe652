//! One production path from a model's files on disk to something that generates: weights,
//! tokenizer, chat template and stop tokens.
//!
//! Families, each checked against candle-transformers' own implementation on a
//! random-weight model the tests write: safetensors llama, mistral, qwen2, qwen3, phi3 and
//! gemma ([`family::HF_MODEL_TYPES`]); GGUF llama, qwen2, qwen3 and phi3
//! ([`family::GGUF_ARCHITECTURES`], which also takes `mistral`). Any other `model_type` or
//! `general.architecture` fails at load with an error naming it and the supported ones.
//! GGUF tokenizers are byte-level BPE (`tokenizer.ggml.model = gpt2`, as Qwen, Llama 3,
//! SmolLM and Phi-4 ship) or SentencePiece (`llama`: Phi-3, Mistral, Llama 2); see
//! [`crate::tokenizer`].
//!
//! Embedding models (BERT-family encoders, `--kind embedding`) load through [`embedding`].

pub mod diffusion;
pub mod embedding;
pub mod family;
pub mod gguf;
mod hf_config;
pub mod kv_cache;
pub mod kv_pool;
mod linear;
pub mod llama;
pub mod prefix_cache;
pub mod rope;
pub mod safetensors;

use std::path::{Path, PathBuf};

use candle_core::{DType, Device};
use serde_json::Value;

use crate::chat::ChatTemplate;
use crate::tokenizer::Tokenizer;
use crate::{Error, Result};
pub use blaze_worker_cli::{Device as DeviceChoice, Dtype, ModelFormat, Quantization, Weights};
pub use family::Family;
pub use kv_cache::KvCache;
pub use kv_pool::KvPool;
pub use llama::{DENSE_MIN_ROWS, Llama, SeqInput};
pub use prefix_cache::PrefixCache;

/// A model ready to serve.
pub struct LoadedModel {
    /// The weights and forward pass.
    pub llama: Llama,
    /// The tokenizer.
    pub tokenizer: Tokenizer,
    /// The chat template.
    pub chat: ChatTemplate,
    /// Token ids that end generation.
    pub eos_ids: Vec<u32>,
    /// Prepended to every prompt when the model asks for it.
    pub bos_id: Option<u32>,
}

impl LoadedModel {
    /// Token ids of a prompt, with the BOS (and EOS) token when the model wants one.
    pub fn encode_prompt(&self, text: &str) -> Result<Vec<u32>> {
        let mut ids = Vec::new();
        if let Some(bos) = self.bos_id {
            ids.push(bos);
        }
        ids.extend(self.tokenizer.encode(text)?);
        ids.extend(self.tokenizer.prompt_specials().eos);
        Ok(ids)
    }
}

/// Picks the device: CUDA when built with the `cuda` feature and a GPU is there, else CPU.
pub fn default_device() -> Device {
    #[cfg(feature = "cuda")]
    if let Ok(d) = Device::new_cuda(0) {
        return d;
    }
    Device::Cpu
}

/// The device `--device` asks for: `cuda` fails when this build has no CUDA or no GPU
/// answers, rather than quietly computing on the CPU.
pub fn select_device(choice: DeviceChoice) -> Result<Device> {
    match choice {
        DeviceChoice::Auto => Ok(default_device()),
        DeviceChoice::Cpu => Ok(Device::Cpu),
        #[cfg(feature = "cuda")]
        DeviceChoice::Cuda => Device::new_cuda(0)
            .map_err(|e| Error::Unsupported(format!("--device cuda: no usable GPU: {e}"))),
        #[cfg(not(feature = "cuda"))]
        DeviceChoice::Cuda => Err(Error::Unsupported(
            "--device cuda: this worker was built without CUDA (run the CUDA image, a \
             blaze-worker built with --features cuda)"
                .into(),
        )),
    }
}

/// How a device is named in logs and in `/v1/models`: `cpu` or `cuda:N`.
pub fn device_name(device: &Device) -> String {
    match device.location() {
        candle_core::DeviceLocation::Cpu => "cpu".into(),
        candle_core::DeviceLocation::Cuda { gpu_id } => format!("cuda:{gpu_id}"),
        candle_core::DeviceLocation::Metal { gpu_id } => format!("metal:{gpu_id}"),
    }
}

/// Largest f32 size of a model's weights for which `auto` adds f32 copies (`dual`): past
/// a couple of GiB the memory (8x Q4's) matters more than batched speed.
pub const AUTO_DUAL_MAX_F32_BYTES: u64 = 2 << 30;

/// What [`Weights::Auto`] means for `file` on `device`; other values stay as they are.
///
/// Off the CPU the stored quantization is kept (GPU kernels exist for all of them). On
/// CPU `dual` while the f32 copies stay under [`AUTO_DUAL_MAX_F32_BYTES`], else `q8_0`.
/// Measured with blaze-worker-bench on SmolLM2-135M Q4_1, one thread, a loaded 2-core
/// machine (tokens/s at 1 / 16 sequences): stored 35 / 26 (candle's Q4_1 kernel is
/// scalar), q8_0 82 / 64, f32 31 / 81, dual 88 / 101; candle's own loop 32 to 44.
/// On AVX-512 VNNI CPUs Blaze's kernels take Q4_0, Q4_1 and Q8_0 projections as stored,
/// with no dense copy (see `Weights::Dual`): 2.2x the decode tokens/s of the padded Q8_0
/// weights on candle's kernels with one sequence, 1.6x with sixteen (two threads).
pub fn resolve_weights(weights: Weights, file: &Path, device: &Device) -> Result<Weights> {
    if weights != Weights::Auto {
        return Ok(weights);
    }
    if !device.is_cpu() {
        return Ok(Weights::Stored);
    }
    let small = gguf::f32_bytes(file)? <= AUTO_DUAL_MAX_F32_BYTES;
    Ok(if small { Weights::Dual } else { Weights::Q8_0 })
}

/// The numeric type `dtype` means for safetensors weights on `device`: `auto` is f32 on the
/// CPU (candle's f32 GEMM is its fastest CPU kernel) and bf16 on a GPU.
pub fn resolve_dtype(dtype: Dtype, device: &Device) -> DType {
    match dtype {
        Dtype::Auto if device.is_cpu() => DType::F32,
        Dtype::Auto | Dtype::Bf16 => DType::BF16,
        Dtype::F32 => DType::F32,
        Dtype::F16 => DType::F16,
    }
}

/// How to load a model.
#[derive(Debug, Clone, Copy, Default)]
pub struct LoadOptions {
    /// How quantized GGUF weights are held.
    pub weights: Weights,
    /// The format the source must be in (`None`: whatever it holds).
    pub format: Option<ModelFormat>,
    /// Numeric type of safetensors projection weights.
    pub dtype: Dtype,
    /// In-situ quantization of safetensors projection weights.
    pub quantization: Option<Quantization>,
}

/// Loads the model at `path`: a `.gguf` file, a folder holding one, or a Hugging Face
/// folder (`config.json`, `*.safetensors`, `tokenizer.json`).
pub fn load(path: &Path, device: &Device) -> Result<LoadedModel> {
    load_with(path, device, LoadOptions::default())
}

/// [`load`] with options.
pub fn load_with(path: &Path, device: &Device, options: LoadOptions) -> Result<LoadedModel> {
    let gguf = match options.format {
        Some(ModelFormat::Safetensors) if path.is_dir() => None,
        _ => find_gguf(path)?,
    };
    match (gguf, options.format) {
        (Some(file), None | Some(ModelFormat::Gguf)) => load_gguf(&file, device, options),
        (None, None | Some(ModelFormat::Safetensors)) => load_hf_folder(path, device, options),
        (Some(file), Some(ModelFormat::Safetensors)) => Err(Error::Unsupported(format!(
            "--model-format safetensors: {} is the GGUF file {}",
            path.display(),
            file.display()
        ))),
        (None, Some(ModelFormat::Gguf)) => Err(Error::Unsupported(format!(
            "--model-format gguf: {} is no .gguf file and holds none",
            path.display()
        ))),
    }
}

fn find_gguf(path: &Path) -> Result<Option<PathBuf>> {
    if path.is_file() {
        return Ok(path.extension().is_some_and(|e| e == "gguf").then(|| path.to_path_buf()));
    }
    if !path.is_dir() {
        return Err(Error::Unsupported(format!(
            "{} is neither a file nor a folder",
            path.display()
        )));
    }
    let mut ggufs: Vec<PathBuf> = std::fs::read_dir(path)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "gguf"))
        .collect();
    ggufs.sort();
    Ok(ggufs.into_iter().next())
}

fn load_gguf(file: &Path, device: &Device, options: LoadOptions) -> Result<LoadedModel> {
    if options.dtype != Dtype::Auto {
        return Err(Error::Unsupported(format!(
            "--dtype {}: {} is GGUF, whose weights are held as --weights says; use --dtype auto",
            options.dtype,
            file.display()
        )));
    }
    if let Some(q) = options.quantization {
        return Err(Error::Unsupported(format!(
            "--quantization {q}: {} is GGUF, quantized already; use --weights to re-quantize",
            file.display()
        )));
    }
    let weights = resolve_weights(options.weights, file, device)?;
    tracing::info!(file = %file.display(), ?weights, "loading GGUF");
    let gguf::GgufModel { llama, content } = gguf::load(file, device, weights)?;
    let tokenizer = Tokenizer::from_gguf(&content)?;
    let id = |key: &str| content.metadata.get(key).and_then(|v| v.to_u32().ok());
    let eos = id("tokenizer.ggml.eos_token_id");
    let bos = id("tokenizer.ggml.bos_token_id");
    let template =
        content.metadata.get("tokenizer.chat_template").and_then(|v| v.to_string().ok()).cloned();
    let token = |id: Option<u32>| id.and_then(|i| tokenizer.id_token(i)).unwrap_or_default();
    let chat = ChatTemplate::new(template, token(bos), token(eos))?;
    let eos_ids = stop_ids(&tokenizer, eos.into_iter().collect());
    Ok(LoadedModel { llama, chat, eos_ids, bos_id: tokenizer.prompt_specials().bos, tokenizer })
}

fn load_hf_folder(dir: &Path, device: &Device, options: LoadOptions) -> Result<LoadedModel> {
    let dtype = resolve_dtype(options.dtype, device);
    tracing::info!(dir = %dir.display(), ?dtype, quantization = ?options.quantization, "loading safetensors");
    let llama = safetensors::load_with(dir, dtype, options.quantization, device)?;
    // On a GPU bf16 weights compute in bf16 (see `Llama::with_activations`). f16
    // activations would overflow where some families' residuals pass 65504, quantized
    // projections take f32, and the CPU computes fastest in f32: those keep f32.
    let bf16 = dtype == DType::BF16 && options.quantization.is_none() && !device.is_cpu();
    let llama = if bf16 { llama.with_activations(dtype)? } else { llama };
    let tokenizer = Tokenizer::from_file(&dir.join("tokenizer.json"))?;
    let tok_config: Value = read_json(&dir.join("tokenizer_config.json"))?.unwrap_or(Value::Null);
    let special = |key: &str| -> Option<String> {
        match &tok_config[key] {
            Value::String(s) => Some(s.clone()),
            Value::Object(o) => o.get("content").and_then(Value::as_str).map(str::to_string),
            _ => None,
        }
    };
    let template = tok_config["chat_template"].as_str().map(str::to_string);
    let (bos, eos) = (special("bos_token"), special("eos_token"));
    let mut eos_ids: Vec<u32> = eos.iter().filter_map(|t| tokenizer.token_id(t)).collect();
    let generation: Value = read_json(&dir.join("generation_config.json"))?.unwrap_or(Value::Null);
    match &generation["eos_token_id"] {
        Value::Number(n) => eos_ids.extend(n.as_u64().map(|n| n as u32)),
        Value::Array(a) => eos_ids.extend(a.iter().filter_map(Value::as_u64).map(|n| n as u32)),
        _ => {}
    }
    let add_bos = tok_config["add_bos_token"].as_bool().unwrap_or(false);
    let bos_id = bos.as_deref().and_then(|t| tokenizer.token_id(t)).filter(|_| add_bos);
    let chat = ChatTemplate::new(template, bos.unwrap_or_default(), eos.unwrap_or_default())?;
    let eos_ids = stop_ids(&tokenizer, eos_ids);
    Ok(LoadedModel { llama, tokenizer, chat, eos_ids, bos_id })
}

/// The model's EOS ids plus the end-of-turn tokens chat models emit.
fn stop_ids(tokenizer: &Tokenizer, mut ids: Vec<u32>) -> Vec<u32> {
    for token in ["<|im_end|>", "<|eot_id|>", "<|end|>", "<end_of_turn>", "<|endoftext|>"] {
        ids.extend(tokenizer.token_id(token));
    }
    ids.sort_unstable();
    ids.dedup();
    ids
}

fn read_json(path: &Path) -> Result<Option<Value>> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(Some(serde_json::from_slice(&bytes)?)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e.into()),
    }
}
