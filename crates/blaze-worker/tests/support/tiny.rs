//! Tiny random-weight checkpoints of each family, written the way real ones are: a Hugging
//! Face folder (config.json, model.safetensors, tokenizer.json), or a GGUF file with
//! llama.cpp's metadata keys and tensor names and Q8_0 projections.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::Path;

use candle_core::quantized::{GgmlDType, QTensor, gguf_file};
use candle_core::{Device, Tensor};
use serde_json::json;

/// Vocabulary: the byte-level tokenizer's 256 tokens.
pub const VOCAB: usize = 256;
/// Context the tiny models declare.
pub const CONTEXT: usize = 256;
const HIDDEN: usize = 64;
const INTERMEDIATE: usize = 128;
const LAYERS: usize = 2;
const HEADS: usize = 4;

/// Attention shape of a family's tiny model.
#[derive(Debug, Clone, Copy)]
pub struct Attention {
    /// Key/value heads.
    pub kv_heads: usize,
    /// Width of a head; `HIDDEN / HEADS` is 16, so 32 checks that it comes from the config.
    pub head_dim: usize,
}

/// What each family's tiny model looks like.
pub fn attention(family: &str) -> Attention {
    match family {
        // Qwen3 and Gemma take head_dim from the config, not hidden / heads.
        "qwen3" => Attention { kv_heads: 2, head_dim: 32 },
        // Gemma 2B is multi-query.
        "gemma" => Attention { kv_heads: 1, head_dim: 32 },
        _ => Attention { kv_heads: 2, head_dim: HIDDEN / HEADS },
    }
}

fn random(shape: (usize, usize)) -> Tensor {
    let scale = 1.0 / (shape.1 as f64).sqrt();
    (Tensor::randn(0f32, 1f32, shape, &Device::Cpu).unwrap() * scale).unwrap()
}

/// A norm weight around `center` (1, or 0 for gemma's `1 + w`).
fn norm(width: usize, center: f32) -> Tensor {
    Tensor::randn(center, 0.2f32, width, &Device::Cpu).unwrap()
}

/// Writes a Hugging Face folder of `model_type` `family` into `dir`: Phi-3's fused
/// `qkv_proj` / `gate_up_proj` with `partial_rotary_factor` 0.5, Qwen3's q/k norms, Gemma's
/// tied head and zero-centred norms. `extra` is merged into config.json.
pub fn write_hf(dir: &Path, family: &str, extra: serde_json::Value) {
    std::fs::create_dir_all(dir).unwrap();
    let a = attention(family);
    let tied = matches!(family, "qwen3" | "gemma");
    let mut config = json!({
        "architectures": [format!("{family}ForCausalLM")], "model_type": family,
        "vocab_size": VOCAB, "hidden_size": HIDDEN, "intermediate_size": INTERMEDIATE,
        "num_hidden_layers": LAYERS, "num_attention_heads": HEADS,
        "num_key_value_heads": a.kv_heads, "head_dim": a.head_dim,
        "rms_norm_eps": 1e-6, "rope_theta": 10000.0, "max_position_embeddings": CONTEXT,
        "tie_word_embeddings": tied, "hidden_act": "silu", "attention_bias": false,
        "sliding_window": CONTEXT, "max_window_layers": LAYERS, "use_sliding_window": false,
        "rope_scaling": null, "bos_token_id": null, "eos_token_id": null,
        "original_max_position_embeddings": null, "partial_rotary_factor": null,
    });
    match family {
        "phi3" => config["partial_rotary_factor"] = json!(0.5),
        "gemma" => {
            config["hidden_act"] = json!(null);
            config["hidden_activation"] = json!("gelu_pytorch_tanh");
        }
        _ => {}
    }
    for (key, value) in extra.as_object().into_iter().flatten() {
        config[key] = value.clone();
    }
    std::fs::write(dir.join("config.json"), serde_json::to_vec_pretty(&config).unwrap()).unwrap();
    blaze_worker::testing::write_byte_tokenizer(dir).unwrap();
    let center = if family == "gemma" { 0.0 } else { 1.0 };
    let (q_rows, kv_rows) = (HEADS * a.head_dim, a.kv_heads * a.head_dim);
    let mut w: HashMap<String, Tensor> = HashMap::new();
    w.insert("model.embed_tokens.weight".into(), random((VOCAB, HIDDEN)));
    w.insert("model.norm.weight".into(), norm(HIDDEN, center));
    if !tied {
        w.insert("lm_head.weight".into(), random((VOCAB, HIDDEN)));
    }
    for i in 0..LAYERS {
        let p = format!("model.layers.{i}");
        let mut put = |name: &str, t: Tensor| w.insert(format!("{p}.{name}"), t);
        if family == "phi3" {
            put("self_attn.qkv_proj.weight", random((q_rows + 2 * kv_rows, HIDDEN)));
            put("mlp.gate_up_proj.weight", random((2 * INTERMEDIATE, HIDDEN)));
        } else {
            put("self_attn.q_proj.weight", random((q_rows, HIDDEN)));
            put("self_attn.k_proj.weight", random((kv_rows, HIDDEN)));
            put("self_attn.v_proj.weight", random((kv_rows, HIDDEN)));
            put("mlp.gate_proj.weight", random((INTERMEDIATE, HIDDEN)));
            put("mlp.up_proj.weight", random((INTERMEDIATE, HIDDEN)));
        }
        if family == "qwen3" {
            put("self_attn.q_norm.weight", norm(a.head_dim, 1.0));
            put("self_attn.k_norm.weight", norm(a.head_dim, 1.0));
        }
        put("self_attn.o_proj.weight", random((HIDDEN, q_rows)));
        put("mlp.down_proj.weight", random((HIDDEN, INTERMEDIATE)));
        put("input_layernorm.weight", norm(HIDDEN, center));
        put("post_attention_layernorm.weight", norm(HIDDEN, center));
    }
    candle_core::safetensors::save(&w, dir.join("model.safetensors")).unwrap();
}

/// Writes a GGUF file of llama.cpp architecture `arch` (qwen2, qwen3 or phi3) to `path`:
/// projections and embeddings in `dtype`, f32 norms and biases, a byte-level BPE tokenizer
/// in the metadata. Qwen2 ties its output head to the embeddings (no `output.weight`).
pub fn write_gguf(path: &Path, arch: &str, dtype: GgmlDType) {
    let a = attention(arch);
    let (q_rows, kv_rows) = (HEADS * a.head_dim, a.kv_heads * a.head_dim);
    let q8 = |shape| QTensor::quantize(&random(shape), dtype).unwrap();
    let f32 = |t: Tensor| QTensor::quantize(&t, GgmlDType::F32).unwrap();
    let mut tensors: Vec<(String, QTensor)> = vec![
        ("token_embd.weight".into(), q8((VOCAB, HIDDEN))),
        ("output_norm.weight".into(), f32(norm(HIDDEN, 1.0))),
    ];
    if arch != "qwen2" {
        tensors.push(("output.weight".into(), q8((VOCAB, HIDDEN))));
    }
    for i in 0..LAYERS {
        let mut put = |name: &str, t: QTensor| tensors.push((format!("blk.{i}.{name}"), t));
        if arch == "phi3" {
            put("attn_qkv.weight", q8((q_rows + 2 * kv_rows, HIDDEN)));
            put("ffn_up.weight", q8((2 * INTERMEDIATE, HIDDEN)));
        } else {
            put("attn_q.weight", q8((q_rows, HIDDEN)));
            put("attn_k.weight", q8((kv_rows, HIDDEN)));
            put("attn_v.weight", q8((kv_rows, HIDDEN)));
            put("ffn_gate.weight", q8((INTERMEDIATE, HIDDEN)));
            put("ffn_up.weight", q8((INTERMEDIATE, HIDDEN)));
        }
        if arch == "qwen2" {
            for (name, width) in [("attn_q", q_rows), ("attn_k", kv_rows), ("attn_v", kv_rows)] {
                put(&format!("{name}.bias"), f32(norm(width, 0.0)));
            }
        }
        if arch == "qwen3" {
            put("attn_q_norm.weight", f32(norm(a.head_dim, 1.0)));
            put("attn_k_norm.weight", f32(norm(a.head_dim, 1.0)));
        }
        put("attn_output.weight", q8((HIDDEN, q_rows)));
        put("ffn_down.weight", q8((HIDDEN, INTERMEDIATE)));
        put("attn_norm.weight", f32(norm(HIDDEN, 1.0)));
        put("ffn_norm.weight", f32(norm(HIDDEN, 1.0)));
    }
    let metadata = gguf_metadata(arch, a);
    let metadata: Vec<(&str, &gguf_file::Value)> =
        metadata.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let tensors: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let mut file = std::fs::File::create(path).unwrap();
    gguf_file::write(&mut file, &metadata, &tensors).unwrap();
}

fn gguf_metadata(arch: &str, a: Attention) -> Vec<(String, gguf_file::Value)> {
    use gguf_file::Value;
    let key = |k: &str| format!("{arch}.{k}");
    let tokens = blaze_worker::testing::byte_tokens().into_iter().map(Value::String).collect();
    vec![
        ("general.architecture".into(), Value::String(arch.into())),
        // candle's quantized_qwen3 builds its RoPE tables in f16 unless this says f32.
        ("general.dtype".into(), Value::U32(0)),
        (key("context_length"), Value::U32(CONTEXT as u32)),
        (key("embedding_length"), Value::U32(HIDDEN as u32)),
        (key("block_count"), Value::U32(LAYERS as u32)),
        (key("feed_forward_length"), Value::U32(INTERMEDIATE as u32)),
        (key("attention.head_count"), Value::U32(HEADS as u32)),
        (key("attention.head_count_kv"), Value::U32(a.kv_heads as u32)),
        (key("attention.key_length"), Value::U32(a.head_dim as u32)),
        (key("attention.value_length"), Value::U32(a.head_dim as u32)),
        (key("attention.layer_norm_rms_epsilon"), Value::F32(1e-6)),
        (key("rope.freq_base"), Value::F32(10_000.0)),
        (key("rope.dimension_count"), Value::U32(a.head_dim as u32)),
        ("tokenizer.ggml.model".into(), Value::String("gpt2".into())),
        ("tokenizer.ggml.tokens".into(), Value::Array(tokens)),
        ("tokenizer.ggml.merges".into(), Value::Array(vec![])),
    ]
}

/// Converts the llama or phi3 folder `dir` (from [`write_hf`]) into a GGUF file at `path`
/// the way llama.cpp's converter does: llama.cpp names, llama's q/k rows permuted for
/// interleaved RoPE, f32 tensors, RoPE over `rotary_dim`, plus `extra` metadata and
/// tensors (RoPE factors).
pub fn hf_to_gguf(
    dir: &Path,
    path: &Path,
    arch: &str,
    rotary_dim: usize,
    extra: Vec<(String, gguf_file::Value)>,
    extra_tensors: Vec<(&str, Vec<f32>)>,
) {
    let a = attention(arch);
    let hf = candle_core::safetensors::load(dir.join("model.safetensors"), &Device::Cpu).unwrap();
    let f32 = |t: &Tensor| QTensor::quantize(t, GgmlDType::F32).unwrap();
    // Each head's rows go from [first halves, second halves] to interleaved pairs.
    let permute = |t: &Tensor, heads: usize| {
        let (rows, cols) = t.dims2().unwrap();
        let t = t.reshape((heads, 2, rows / heads / 2, cols)).unwrap();
        f32(&t.transpose(1, 2).unwrap().contiguous().unwrap().reshape((rows, cols)).unwrap())
    };
    let mut tensors: Vec<(String, QTensor)> = vec![
        ("token_embd.weight".into(), f32(&hf["model.embed_tokens.weight"])),
        ("output_norm.weight".into(), f32(&hf["model.norm.weight"])),
        ("output.weight".into(), f32(&hf["lm_head.weight"])),
    ];
    for (name, values) in extra_tensors {
        let n = values.len();
        tensors.push((name.into(), f32(&Tensor::from_vec(values, n, &Device::Cpu).unwrap())));
    }
    for i in 0..LAYERS {
        let hf_name = |n: &str| format!("model.layers.{i}.{n}.weight");
        let mut names = vec![
            ("attn_output", "self_attn.o_proj"),
            ("ffn_down", "mlp.down_proj"),
            ("attn_norm", "input_layernorm"),
            ("ffn_norm", "post_attention_layernorm"),
        ];
        if arch == "phi3" {
            names.extend([("attn_qkv", "self_attn.qkv_proj"), ("ffn_up", "mlp.gate_up_proj")]);
        } else {
            let split = [("attn_v", "self_attn.v_proj"), ("ffn_gate", "mlp.gate_proj")];
            names.extend(split.into_iter().chain([("ffn_up", "mlp.up_proj")]));
        }
        let mut put = |name: &str, t: QTensor| tensors.push((format!("blk.{i}.{name}.weight"), t));
        for (gguf, hf_n) in names {
            put(gguf, f32(&hf[&hf_name(hf_n)]));
        }
        if arch != "phi3" {
            put("attn_q", permute(&hf[&hf_name("self_attn.q_proj")], HEADS));
            put("attn_k", permute(&hf[&hf_name("self_attn.k_proj")], a.kv_heads));
        }
    }
    let mut metadata = gguf_metadata(arch, a);
    let rope_key = format!("{arch}.rope.dimension_count");
    metadata.retain(|(k, _)| *k != rope_key);
    metadata.push((rope_key, gguf_file::Value::U32(rotary_dim as u32)));
    metadata.extend(extra);
    let metadata: Vec<(&str, &gguf_file::Value)> =
        metadata.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let tensors: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let mut file = std::fs::File::create(path).unwrap();
    gguf_file::write(&mut file, &metadata, &tensors).unwrap();
}
