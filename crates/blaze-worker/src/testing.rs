//! Helpers for tests and benchmarks: a tiny random-weight llama and tiny random-weight
//! encoders (BERT, XLM-RoBERTa) in the Hugging Face layout (config.json, model.safetensors,
//! tokenizer.json), and where the real test models live.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use serde_json::json;

use crate::Result;

/// The shape of a random-weight llama.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LlamaShape {
    /// Model width.
    pub hidden: usize,
    /// MLP width.
    pub intermediate: usize,
    /// Decoder layers.
    pub layers: usize,
    /// Attention heads.
    pub heads: usize,
    /// Key/value heads.
    pub kv_heads: usize,
}

impl LlamaShape {
    /// The tiny model of the tests: big enough to have grouped-query attention, several
    /// layers and a causal mask that matters, small enough to decode thousands of tokens a
    /// second on CPU.
    pub const TINY: Self = Self { hidden: 64, intermediate: 128, layers: 2, heads: 4, kv_heads: 2 };
    /// Llama 3.2 1B's decoder (width 2048, 16 layers, 32 heads over 8 key/value heads, MLP
    /// 8192), about 0.97 billion weights with the byte-level vocabulary: the GPU benchmark's
    /// model.
    pub const ONE_B: Self =
        Self { hidden: 2048, intermediate: 8192, layers: 16, heads: 32, kv_heads: 8 };

    /// Weights of a model of this shape over a `vocab`-token vocabulary (untied head).
    pub fn parameters(&self, vocab: usize) -> usize {
        let head_dim = self.hidden / self.heads;
        let attention = 2 * self.hidden * self.hidden + 2 * self.kv_heads * head_dim * self.hidden;
        let layer = attention + 3 * self.hidden * self.intermediate + 2 * self.hidden;
        self.layers * layer + 2 * vocab * self.hidden + self.hidden
    }
}

/// Writes a random-weight llama with a byte-level tokenizer (256 byte tokens, no merges, no
/// end-of-sequence token, so generation always runs to `max_tokens`) into `dir`.
pub fn write_tiny_llama(dir: &Path, context: usize) -> Result<()> {
    write_tiny(dir, context, false)
}

/// A random-weight llama of `shape` with the tiny models' byte-level tokenizer, its weights
/// stored as `dtype`, into `dir`: for benchmarks of a real model size without a download.
pub fn write_random_llama(
    dir: &Path,
    shape: LlamaShape,
    context: usize,
    dtype: DType,
) -> Result<()> {
    write(dir, shape, context, false, dtype)
}

/// [`write_tiny_llama`] as a Qwen2: biases on the q/k/v projections, tied embeddings.
pub fn write_tiny_qwen2(dir: &Path, context: usize) -> Result<()> {
    write_tiny(dir, context, true)
}

fn write_tiny(dir: &Path, context: usize, qwen2: bool) -> Result<()> {
    write(dir, LlamaShape::TINY, context, qwen2, DType::F32)
}

fn write(dir: &Path, shape: LlamaShape, context: usize, qwen2: bool, dtype: DType) -> Result<()> {
    let LlamaShape { hidden, intermediate, layers, heads, kv_heads } = shape;
    std::fs::create_dir_all(dir)?;
    let vocab = 256;
    let (architecture, model_type) =
        if qwen2 { ("Qwen2ForCausalLM", "qwen2") } else { ("LlamaForCausalLM", "llama") };
    let config = json!({
        "architectures": [architecture], "model_type": model_type,
        "hidden_size": hidden, "intermediate_size": intermediate, "num_hidden_layers": layers,
        "num_attention_heads": heads, "num_key_value_heads": kv_heads, "vocab_size": vocab,
        "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "max_position_embeddings": context,
        "tie_word_embeddings": qwen2, "torch_dtype": torch_dtype(dtype), "hidden_act": "silu",
        "sliding_window": context, "max_window_layers": layers, "use_sliding_window": false,
    });
    std::fs::write(dir.join("config.json"), serde_json::to_vec_pretty(&config)?)?;
    write_byte_tokenizer(dir)?;
    let device = Device::Cpu;
    let mut weights: HashMap<String, Tensor> = HashMap::new();
    let mut biases = Vec::new();
    let mut add = |name: String, shape: (usize, usize)| -> Result<()> {
        let scale = 1.0 / (shape.1 as f64).sqrt();
        let w = (Tensor::randn(0f32, 1f32, shape, &device)? * scale)?;
        weights.insert(name, w.to_dtype(dtype)?);
        Ok(())
    };
    add("model.embed_tokens.weight".into(), (vocab, hidden))?;
    if !qwen2 {
        add("lm_head.weight".into(), (vocab, hidden))?;
    }
    let head_dim = hidden / heads;
    for i in 0..layers {
        let p = format!("model.layers.{i}");
        add(format!("{p}.self_attn.q_proj.weight"), (hidden, hidden))?;
        add(format!("{p}.self_attn.k_proj.weight"), (kv_heads * head_dim, hidden))?;
        add(format!("{p}.self_attn.v_proj.weight"), (kv_heads * head_dim, hidden))?;
        add(format!("{p}.self_attn.o_proj.weight"), (hidden, hidden))?;
        add(format!("{p}.mlp.gate_proj.weight"), (intermediate, hidden))?;
        add(format!("{p}.mlp.up_proj.weight"), (intermediate, hidden))?;
        add(format!("{p}.mlp.down_proj.weight"), (hidden, intermediate))?;
        if qwen2 {
            for (name, width) in
                [("q", hidden), ("k", kv_heads * head_dim), ("v", kv_heads * head_dim)]
            {
                let bias = Tensor::randn(0f32, 0.5f32, width, &device)?.to_dtype(dtype)?;
                biases.push((format!("{p}.self_attn.{name}_proj.bias"), bias));
            }
        }
    }
    weights.extend(biases);
    let mut norms = vec!["model.norm.weight".to_string()];
    for i in 0..layers {
        for norm in ["input_layernorm", "post_attention_layernorm"] {
            norms.push(format!("model.layers.{i}.{norm}.weight"));
        }
    }
    for name in norms {
        weights.insert(name, Tensor::ones(hidden, dtype, &device)?);
    }
    candle_core::safetensors::save(&weights, dir.join("model.safetensors"))?;
    Ok(())
}

/// How a Hugging Face `config.json` names `dtype`.
fn torch_dtype(dtype: DType) -> &'static str {
    match dtype {
        DType::BF16 => "bfloat16",
        DType::F16 => "float16",
        _ => "float32",
    }
}

/// Writes the byte-level BPE `tokenizer.json` of the tiny models (256 byte tokens, no
/// merges) into `dir`.
pub fn write_byte_tokenizer(dir: &Path) -> Result<()> {
    std::fs::write(dir.join("tokenizer.json"), serde_json::to_vec(&byte_tokenizer())?)?;
    Ok(())
}

/// The byte-level vocabulary by id, as GGUF's `tokenizer.ggml.tokens` lists it.
pub fn byte_tokens() -> Vec<String> {
    byte_chars().into_iter().map(String::from).collect()
}

/// GPT-2's reversible map from bytes to printable characters.
fn byte_chars() -> Vec<char> {
    let mut extra = 0;
    (0u32..256)
        .map(|b| {
            let printable =
                (33..=126).contains(&b) || (161..=172).contains(&b) || (174..=255).contains(&b);
            if printable {
                char::from_u32(b).unwrap_or('?')
            } else {
                extra += 1;
                char::from_u32(255 + extra).unwrap_or('?')
            }
        })
        .collect()
}

fn byte_tokenizer() -> serde_json::Value {
    let vocab: serde_json::Map<String, serde_json::Value> =
        byte_chars().into_iter().enumerate().map(|(i, c)| (c.to_string(), json!(i))).collect();
    let byte_level = json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true});
    json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": [],
        "normalizer": null, "pre_tokenizer": byte_level, "post_processor": null, "decoder": byte_level,
        "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
                  "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false,
                  "vocab": vocab, "merges": []},
    })
}

/// Shape of the tiny encoders: several heads and layers, so that attention masks matter.
const ENCODER_HIDDEN: usize = 32;
const ENCODER_INTERMEDIATE: usize = 64;
const ENCODER_LAYERS: usize = 2;
const ENCODER_HEADS: usize = 4;

/// Writes a random-weight encoder of `model_type` `bert` or `xlm-roberta` that takes
/// `max_positions` positions, with a WordPiece tokenizer whose vocabulary is `[PAD]`,
/// `[UNK]`, `[CLS]`, `[SEP]`, the letters a to z and their `##` continuations (so a word of
/// n letters is n tokens, and every input gains `[CLS]` and `[SEP]`), into `dir`. No
/// sentence-transformers files: the model is mean-pooled and normalized unless the test
/// writes its own `modules.json`.
pub fn write_tiny_encoder(dir: &Path, model_type: &str, max_positions: usize) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    let mut vocab: Vec<String> = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"].map(String::from).into();
    vocab.extend(('a'..='z').map(String::from));
    vocab.extend(('a'..='z').map(|c| format!("##{c}")));
    let xlm = model_type == "xlm-roberta";
    // XLM-RoBERTa numbers positions after the padding id's.
    let positions = if xlm { max_positions + 1 } else { max_positions };
    let config = json!({
        "architectures": [if xlm { "XLMRobertaModel" } else { "BertModel" }],
        "model_type": model_type, "vocab_size": vocab.len(), "hidden_size": ENCODER_HIDDEN,
        "num_hidden_layers": ENCODER_LAYERS, "num_attention_heads": ENCODER_HEADS,
        "intermediate_size": ENCODER_INTERMEDIATE, "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1,
        "max_position_embeddings": positions, "type_vocab_size": if xlm { 1 } else { 2 },
        "initializer_range": 0.02, "layer_norm_eps": 1e-12, "pad_token_id": 0,
        "position_embedding_type": "absolute",
    });
    std::fs::write(dir.join("config.json"), serde_json::to_vec_pretty(&config)?)?;
    std::fs::write(dir.join("tokenizer.json"), serde_json::to_vec(&wordpiece_tokenizer(&vocab))?)?;
    let device = Device::Cpu;
    let mut weights: HashMap<String, Tensor> = HashMap::new();
    let mut add = |name: String, shape: &[usize]| -> Result<()> {
        let t = Tensor::randn(0f32, 1f32, shape, &device)?;
        // Matrices scaled as initialisation would; vectors (biases, norms) of order 0.1 to 1.
        let t = if shape.len() == 2 { (t / (shape[1] as f64).sqrt())? } else { (t * 0.1)? };
        weights.insert(name, t);
        Ok(())
    };
    let (h, i) = (ENCODER_HIDDEN, ENCODER_INTERMEDIATE);
    add("embeddings.word_embeddings.weight".into(), &[vocab.len(), h])?;
    add("embeddings.position_embeddings.weight".into(), &[positions, h])?;
    add("embeddings.token_type_embeddings.weight".into(), &[if xlm { 1 } else { 2 }, h])?;
    let mut norms = vec!["embeddings.LayerNorm".to_string()];
    for layer in 0..ENCODER_LAYERS {
        let p = format!("encoder.layer.{layer}");
        for (name, out, inp) in [
            ("attention.self.query", h, h),
            ("attention.self.key", h, h),
            ("attention.self.value", h, h),
            ("attention.output.dense", h, h),
            ("intermediate.dense", i, h),
            ("output.dense", h, i),
        ] {
            add(format!("{p}.{name}.weight"), &[out, inp])?;
            add(format!("{p}.{name}.bias"), &[out])?;
        }
        norms.push(format!("{p}.attention.output.LayerNorm"));
        norms.push(format!("{p}.output.LayerNorm"));
    }
    for norm in norms {
        weights.insert(format!("{norm}.weight"), (Tensor::randn(0f32, 0.1, h, &device)? + 1.0)?);
        weights.insert(format!("{norm}.bias"), Tensor::randn(0f32, 0.1, h, &device)?);
    }
    candle_core::safetensors::save(&weights, dir.join("model.safetensors"))?;
    Ok(())
}

/// A BERT-style WordPiece `tokenizer.json` over `vocab` (ids in order), lower-casing, with
/// `[CLS]` and `[SEP]` around every input.
fn wordpiece_tokenizer(vocab: &[String]) -> serde_json::Value {
    let ids: serde_json::Map<String, serde_json::Value> =
        vocab.iter().enumerate().map(|(i, t)| (t.clone(), json!(i))).collect();
    let special = |i: usize| {
        json!({"id": i, "content": vocab[i], "single_word": false, "lstrip": false,
               "rstrip": false, "normalized": false, "special": true})
    };
    let token =
        |name: &str, type_id: u32| json!({"SpecialToken": {"id": name, "type_id": type_id}});
    let sequence = |name: &str, type_id: u32| json!({"Sequence": {"id": name, "type_id": type_id}});
    json!({
        "version": "1.0", "truncation": null, "padding": null,
        "added_tokens": (0..4).map(special).collect::<Vec<_>>(),
        "normalizer": {"type": "BertNormalizer", "clean_text": true,
                       "handle_chinese_chars": true, "strip_accents": null, "lowercase": true},
        "pre_tokenizer": {"type": "BertPreTokenizer"},
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [token("[CLS]", 0), sequence("A", 0), token("[SEP]", 0)],
            "pair": [token("[CLS]", 0), sequence("A", 0), token("[SEP]", 0), sequence("B", 1), token("[SEP]", 1)],
            "special_tokens": {
                "[CLS]": {"id": "[CLS]", "ids": [2], "tokens": ["[CLS]"]},
                "[SEP]": {"id": "[SEP]", "ids": [3], "tokens": ["[SEP]"]},
            },
        },
        "decoder": {"type": "WordPiece", "prefix": "##", "cleanup": true},
        "model": {"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##",
                  "max_input_chars_per_word": 100, "vocab": ids},
    })
}

/// The folder real test models are cached in: `$BLAZE_TEST_MODELS`, else `.dev/models` at
/// the workspace root (filled by `scripts/test-deps.sh`).
pub fn test_models_dir() -> PathBuf {
    match std::env::var_os("BLAZE_TEST_MODELS") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.dev/models"),
    }
}

/// The SmolLM2-135M-Instruct Q4_1 GGUF, panicking with the fix when it is missing.
pub fn smollm2_gguf() -> PathBuf {
    let path = test_models_dir().join("SmolLM2-135M-Instruct.Q4_1.gguf");
    assert!(path.is_file(), "{} is missing: run scripts/test-deps.sh", path.display());
    path
}

/// sentence-transformers' all-MiniLM-L6-v2 (the Hugging Face folder), panicking with the fix
/// when it is missing.
pub fn minilm() -> PathBuf {
    let path = test_models_dir().join("all-MiniLM-L6-v2");
    assert!(
        path.join("model.safetensors").is_file(),
        "{} is missing: run scripts/test-deps.sh",
        path.display()
    );
    path
}
