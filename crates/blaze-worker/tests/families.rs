//! Each model family through the production loading path (`file://` folder or .gguf file
//! to `LoadedModel`), against candle-transformers' own implementation of that family over
//! the same tiny random-weight files: logits of a prompt and of greedy decode steps agree,
//! the greedy tokens are the same, and a batch of two sequences of different lengths
//! decodes the same tokens as each sequence alone. Where candle has no reference (RoPE
//! factors in GGUF files), a GGUF converted as llama.cpp does is checked against the
//! safetensors checkpoint it came from.

use crate::support::compare;
use crate::support::tiny;
use crate::support::worker as support;

use blaze_worker::model::rope::RopeScaling;
use blaze_worker::model::{KvCache, LoadedModel, Weights};
use candle_core::quantized::{GgmlDType, gguf_file};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::{
    gemma, llama, mistral, phi3, quantized_phi3, quantized_qwen2, quantized_qwen3, qwen3,
};
use compare::{
    QUANTIZED_TOLERANCE, TOLERANCE, batch_of_one, batched_equals_alone, gguf_content, hf_config,
    load_uri, matches_reference, var_builder,
};

fn hf_model(family: &str) -> (tempfile::TempDir, LoadedModel) {
    hf_model_with(family, serde_json::json!({}))
}

fn hf_model_with(family: &str, extra: serde_json::Value) -> (tempfile::TempDir, LoadedModel) {
    let dir = tempfile::tempdir().unwrap();
    tiny::write_hf(dir.path(), family, extra);
    let model = load_uri(dir.path(), Weights::Auto);
    (dir, model)
}

/// Writes `arch` as GGUF with `dtype` projections and loads it with `weights`.
fn gguf_model(arch: &str, dtype: GgmlDType, weights: Weights) -> (tempfile::TempDir, LoadedModel) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(format!("tiny-{arch}.gguf"));
    tiny::write_gguf(&path, arch, dtype);
    (dir, load_uri(&path, weights))
}

/// Llama 3.1's RoPE rescaling, with a pretraining context short enough that the tiny
/// model's frequencies fall in all three bands (kept, blended, divided).
fn llama3_scaling() -> serde_json::Value {
    serde_json::json!({ "rope_scaling": {
        "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
        "original_max_position_embeddings": 64,
    }})
}

#[test]
fn llama_safetensors_matches_candle_llama_with_and_without_llama3_rope() {
    for extra in [serde_json::json!({}), llama3_scaling()] {
        let (dir, model) = hf_model_with("llama", extra);
        let config: llama::LlamaConfig = hf_config(dir.path());
        let config = config.into_config(false);
        let stock = llama::Llama::load(var_builder(dir.path()), &config).unwrap();
        let mut cache = llama::Cache::new(true, DType::F32, &config, &Device::Cpu).unwrap();
        let reference =
            move |ids: &[u32], pos| stock.forward(&batch_of_one(ids), pos, &mut cache).unwrap();
        matches_reference(&model, Box::new(reference), TOLERANCE, true);
        batched_equals_alone(&model);
    }
}

/// A llama GGUF as llama.cpp converts one (q/k permuted for interleaved RoPE, Llama 3.1's
/// scaling as `rope_freqs.weight` divisors) gives the logits of the safetensors checkpoint
/// it came from, which matches candle-transformers' llama above.
#[test]
fn llama_gguf_with_rope_freqs_matches_its_safetensors_checkpoint() {
    let (dir, hf) = hf_model_with("llama", llama3_scaling());
    let RopeScaling::Llama3 { .. } = hf.llama.config().rope_scaling else {
        panic!("llama3 rope_scaling not read: {:?}", hf.llama.config().rope_scaling)
    };
    let dim = hf.llama.config().rotary_dim;
    let theta = hf.llama.config().rope_theta;
    let plain = RopeScaling::None.inv_freq(dim, theta);
    let scaled = hf.llama.config().rope_scaling.inv_freq(dim, theta);
    let divisors: Vec<f32> = plain.iter().zip(&scaled).map(|(p, s)| p / s).collect();
    let near = |x: f32| divisors.iter().any(|&d| (d - x).abs() < 1e-3);
    let blended = divisors.iter().any(|&d| d > 1.01 && d < 7.99);
    assert!(near(1.0) && near(8.0) && blended, "all three bands: {divisors:?}");
    let path = dir.path().join("llama.gguf");
    let rope = vec![("rope_freqs.weight", divisors)];
    tiny::hf_to_gguf(dir.path(), &path, "llama", dim, vec![], rope);
    let gguf = blaze_worker::model::load(&path, &Device::Cpu).unwrap();
    let mut cache = KvCache::default();
    let reference = move |ids: &[u32], _pos| hf.llama.forward_one(ids, &mut cache).unwrap();
    matches_reference(&gguf, Box::new(reference), TOLERANCE, true);
}

/// The Qwen2 safetensors checkpoint (compared with candle's Qwen2 in tests/engine.rs)
/// decodes the same tokens batched as alone.
#[test]
fn qwen2_safetensors_batched_greedy_equals_alone() {
    let dir = tempfile::tempdir().unwrap();
    blaze_worker::testing::write_tiny_qwen2(dir.path(), tiny::CONTEXT).unwrap();
    batched_equals_alone(&blaze_worker::model::load(dir.path(), &Device::Cpu).unwrap());
}

/// A GGUF architecture's file loaded by us and by candle-transformers' `load`, compared
/// twice: with f32 weights tightly, greedy tokens included, and with Q8_0 weights (the
/// quantized kernels, and fused projections split byte for byte) within
/// [`QUANTIZED_TOLERANCE`]. Then batched against alone, Q8_0 with `--weights auto`.
fn gguf_matches<M>(
    arch: &str,
    load: fn(gguf_file::Content, &mut std::fs::File) -> M,
    forward: fn(&mut M, &Tensor, usize) -> Tensor,
) {
    for (dtype, tolerance) in [(GgmlDType::F32, TOLERANCE), (GgmlDType::Q8_0, QUANTIZED_TOLERANCE)]
    {
        let (dir, model) = gguf_model(arch, dtype, Weights::Stored);
        let (content, mut file) = gguf_content(dir.path());
        let mut stock = load(content, &mut file);
        let reference = |ids: &[u32], pos| forward(&mut stock, &batch_of_one(ids), pos);
        let tokens = dtype == GgmlDType::F32;
        matches_reference(&model, Box::new(reference), tolerance, tokens);
    }
    batched_equals_alone(&gguf_model(arch, GgmlDType::Q8_0, Weights::Auto).1);
}

#[test]
fn qwen2_gguf_matches_candle_quantized_qwen2() {
    gguf_matches(
        "qwen2",
        |content, file| {
            quantized_qwen2::ModelWeights::from_gguf(content, file, &Device::Cpu).unwrap()
        },
        |model, x, pos| model.forward(x, pos).unwrap(),
    );
}

#[test]
fn qwen3_gguf_matches_candle_quantized_qwen3() {
    gguf_matches(
        "qwen3",
        |content, file| {
            quantized_qwen3::ModelWeights::from_gguf(content, file, &Device::Cpu).unwrap()
        },
        |model, x, pos| model.forward(x, pos).unwrap(),
    );
}

#[test]
fn phi3_gguf_matches_candle_quantized_phi3() {
    gguf_matches(
        "phi3",
        |content, file| {
            quantized_phi3::ModelWeights::from_gguf(false, content, file, &Device::Cpu).unwrap()
        },
        |model, x, pos| model.forward(x, pos).unwrap(),
    );
}

/// A safetensors family loaded by us and by candle-transformers' `build` from the same
/// config.json and weights: logits within [`TOLERANCE`], the same greedy tokens, and
/// batched greedy equal to alone. Returns our model.
fn hf_matches<C: serde::de::DeserializeOwned, M>(
    family: &str,
    build: fn(&C, VarBuilder<'static>) -> M,
    forward: fn(&mut M, &Tensor, usize) -> Tensor,
) -> LoadedModel {
    let (dir, model) = hf_model(family);
    let mut stock = build(&hf_config(dir.path()), var_builder(dir.path()));
    let reference = |ids: &[u32], pos| forward(&mut stock, &batch_of_one(ids), pos);
    matches_reference(&model, Box::new(reference), TOLERANCE, true);
    batched_equals_alone(&model);
    model
}

#[test]
fn qwen3_safetensors_matches_candle_qwen3() {
    hf_matches(
        "qwen3",
        |config, vb| qwen3::ModelForCausalLM::new(config, vb).unwrap(),
        |model, x, pos| model.forward(x, pos).unwrap(),
    );
}

#[test]
fn phi3_safetensors_matches_candle_phi3() {
    let model = hf_matches(
        "phi3",
        |config, vb| phi3::Model::new(config, vb).unwrap(),
        |model, x, pos| model.forward(x, pos).unwrap(),
    );
    assert_eq!(model.llama.config().rotary_dim, 8, "partial_rotary_factor 0.5 of 16");
}

#[test]
fn gemma_safetensors_matches_candle_gemma() {
    hf_matches(
        "gemma",
        |config, vb| gemma::Model::new(false, config, vb).unwrap(),
        |model, x, pos| model.forward(x, pos).unwrap(),
    );
}

#[test]
fn mistral_safetensors_matches_candle_mistral() {
    hf_matches(
        "mistral",
        |config, vb| mistral::Model::new(config, vb).unwrap(),
        |model, x, pos| model.forward(x, pos).unwrap(),
    );
}

/// Phi-3.5 / Phi-4's LongRoPE: served up to the pretraining context with the short factors.
/// candle's phi3 multiplies frequencies by the factors where transformers and llama.cpp
/// divide by them, so it is the reference only with factors of 1 (the loading path and the
/// partial rotary under it); the factors' direction and the cos/sin scale are checked in
/// the rope unit tests and against the GGUF conversion below.
#[test]
fn phi3_longrope_loads_and_matches_candle_phi3_with_unit_factors() {
    let ones = vec![1.0; 4];
    let longrope = serde_json::json!({
        "rope_scaling": { "type": "longrope", "short_factor": ones, "long_factor": ones },
        "original_max_position_embeddings": tiny::CONTEXT,
    });
    let (dir, model) = hf_model_with("phi3", longrope);
    let RopeScaling::LongRope { attention_factor, .. } = model.llama.config().rope_scaling else {
        panic!("longrope not read: {:?}", model.llama.config().rope_scaling)
    };
    assert_eq!(attention_factor, 1.0, "context not stretched");
    let mut stock = phi3::Model::new(&hf_config(dir.path()), var_builder(dir.path())).unwrap();
    let reference = |ids: &[u32], pos| stock.forward(&batch_of_one(ids), pos).unwrap();
    matches_reference(&model, Box::new(reference), TOLERANCE, true);

    let stretched = serde_json::json!({
        "rope_scaling": { "type": "longrope", "short_factor": [1.0, 1.5, 2.0, 4.0],
                          "long_factor": [2.0, 3.0, 4.0, 8.0] },
        "original_max_position_embeddings": 64,
    });
    let (_dir, model) = hf_model_with("phi3", stretched);
    assert_eq!(model.llama.config().max_seq_len, 64, "served up to the pretraining context");
    let factor = model.llama.config().rope_scaling.attention_factor();
    let want = (1.0 + (tiny::CONTEXT as f32 / 64.0).ln() / 64f32.ln()).sqrt();
    assert!((factor - want).abs() < 1e-6, "attention factor {factor}, want {want}");
}

/// A Phi-3 GGUF as llama.cpp converts one from a LongRoPE checkpoint (fused projections,
/// partial rotary, `rope_factors_short` / `_long`, the pretraining context and the cos/sin
/// scale in the metadata) gives the logits of the safetensors checkpoint it came from.
#[test]
fn phi3_gguf_with_longrope_matches_its_safetensors_checkpoint() {
    let (short, long) = (vec![1.0f32, 1.5, 2.0, 4.0], vec![2.0f32, 3.0, 4.0, 8.0]);
    let stretched = serde_json::json!({
        "rope_scaling": { "type": "longrope", "short_factor": short, "long_factor": long },
        "original_max_position_embeddings": 64,
    });
    let (dir, hf) = hf_model_with("phi3", stretched);
    let scale = tiny::CONTEXT as f32 / 64.0;
    let attn_factor = (1.0 + scale.ln() / 64f32.ln()).sqrt();
    let meta = |k: &str, v| (format!("phi3.rope.scaling.{k}"), v);
    let extra = vec![
        meta("original_context_length", gguf_file::Value::U32(64)),
        meta("attn_factor", gguf_file::Value::F32(attn_factor)),
    ];
    let factors = vec![("rope_factors_short.weight", short), ("rope_factors_long.weight", long)];
    let path = dir.path().join("phi3.gguf");
    let rotary_dim = hf.llama.config().rotary_dim;
    tiny::hf_to_gguf(dir.path(), &path, "phi3", rotary_dim, extra, factors);
    let gguf = load_uri(&path, Weights::Stored);
    assert_eq!(gguf.llama.config().max_seq_len, 64);
    assert_eq!(gguf.llama.config().rotary_dim, 8);
    let mut cache = KvCache::default();
    let reference = move |ids: &[u32], _pos| hf.llama.forward_one(ids, &mut cache).unwrap();
    matches_reference(&gguf, Box::new(reference), TOLERANCE, true);
}

/// A sliding window shorter than the declared context caps the context at the window, so
/// prompts past it are refused rather than answered with full attention.
#[test]
fn mistral_sliding_window_caps_the_context() {
    let extra = serde_json::json!({ "sliding_window": 64 });
    let (_dir, model) = hf_model_with("mistral", extra);
    assert_eq!(model.llama.config().max_seq_len, 64);
    let (_dir, model) = hf_model_with("mistral", serde_json::json!({ "sliding_window": null }));
    assert_eq!(model.llama.config().max_seq_len, tiny::CONTEXT);
}

#[test]
fn unknown_architectures_fail_at_load_naming_it_and_the_supported_ones() {
    let dir = tempfile::tempdir().unwrap();
    tiny::write_hf(dir.path(), "qwen3", serde_json::json!({ "model_type": "gpt_neox" }));
    let err = blaze_worker::model::load(dir.path(), &Device::Cpu).err().unwrap().to_string();
    assert!(err.contains("gpt_neox") && err.contains("qwen3") && err.contains("gemma"), "{err}");

    let path = dir.path().join("falcon.gguf");
    let arch = gguf_file::Value::String("falcon".into());
    let mut file = std::fs::File::create(&path).unwrap();
    gguf_file::write(&mut file, &[("general.architecture", &arch)], &[]).unwrap();
    let err = blaze_worker::model::load(&path, &Device::Cpu).err().unwrap().to_string();
    assert!(err.contains("falcon") && err.contains("qwen2") && err.contains("phi3"), "{err}");
}

/// The worker binary serves each new family x format from `--model file://...` (with its
/// default `--weights auto`): greedy completions of the requested length.
#[tokio::test]
async fn the_worker_binary_serves_every_family_from_a_file_uri() {
    let dir = tempfile::tempdir().unwrap();
    let mut models = Vec::new();
    for family in ["qwen3", "phi3", "gemma", "mistral"] {
        let folder = dir.path().join(family);
        tiny::write_hf(&folder, family, serde_json::json!({}));
        models.push(folder);
    }
    for arch in ["qwen2", "qwen3", "phi3"] {
        let file = dir.path().join(format!("{arch}.gguf"));
        tiny::write_gguf(&file, arch, GgmlDType::Q8_0);
        models.push(file);
    }
    for model in models {
        let uri = format!("file://{}", model.display());
        let args = ["--model", uri.as_str(), "--served-model-name", "tiny"];
        let worker = support::Worker::start(&args, std::time::Duration::from_secs(60)).await;
        let body = serde_json::json!({
            "model": "tiny", "prompt": "Hello", "max_tokens": 5, "temperature": 0,
        });
        let (status, body) = worker.post_json("/v1/completions", &body).await;
        assert_eq!(status, 200, "{uri}: {body}");
        assert_eq!(body["usage"]["completion_tokens"], 5, "{uri}: {body}");
        assert_eq!(body["choices"][0]["finish_reason"], "length", "{uri}: {body}");
    }
}
