//! Each model family through the production loading path (`model::load` on a folder or a
//! .gguf file), against candle-transformers' own implementation of that family over the
//! same tiny random-weight files: logits of a prompt and of greedy decode steps agree, the
//! greedy tokens are the same, and a batch of two sequences of different lengths decodes
//! the same tokens as each sequence alone.

#[path = "support/tiny.rs"]
mod tiny;

use std::path::Path;

use blaze_worker::model::{KvCache, LoadOptions, LoadedModel, SeqInput, Weights};
use candle_core::quantized::gguf_file;
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::{
    gemma, mistral, phi3, quantized_phi3, quantized_qwen2, quantized_qwen3, qwen3,
};

/// Largest logit difference allowed. Measured: about 2e-6 for the f32 safetensors models,
/// 0 for the GGUF ones (the same quantized kernels on both sides).
const TOLERANCE: f32 = 1e-4;

/// Greedy steps each check runs after the prompt.
const STEPS: usize = 6;

/// A reference forward: token ids and the position of the first, to last-token logits.
type Reference<'a> = Box<dyn FnMut(&[u32], usize) -> Tensor + 'a>;

fn hf_model(family: &str) -> (tempfile::TempDir, LoadedModel) {
    hf_model_with(family, serde_json::json!({}))
}

fn hf_model_with(family: &str, extra: serde_json::Value) -> (tempfile::TempDir, LoadedModel) {
    let dir = tempfile::tempdir().unwrap();
    tiny::write_hf(dir.path(), family, extra);
    let model = blaze_worker::model::load(dir.path(), &Device::Cpu).unwrap();
    (dir, model)
}

fn hf_config<T: serde::de::DeserializeOwned>(dir: &Path) -> T {
    serde_json::from_slice(&std::fs::read(dir.join("config.json")).unwrap()).unwrap()
}

fn var_builder(dir: &Path) -> VarBuilder<'static> {
    let bytes = std::fs::read(dir.join("model.safetensors")).unwrap();
    VarBuilder::from_buffered_safetensors(bytes, DType::F32, &Device::Cpu).unwrap()
}

/// Writes `arch` as GGUF, loads it with `weights`, and opens the file for a reference.
fn gguf_model(arch: &str, weights: Weights) -> (tempfile::TempDir, LoadedModel) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(format!("tiny-{arch}.gguf"));
    tiny::write_gguf(&path, arch);
    let model =
        blaze_worker::model::load_with(&path, &Device::Cpu, LoadOptions { weights }).unwrap();
    (dir, model)
}

fn gguf_content(dir: &Path) -> (gguf_file::Content, std::fs::File) {
    let path = std::fs::read_dir(dir).unwrap().next().unwrap().unwrap().path();
    let mut file = std::fs::File::open(path).unwrap();
    (gguf_file::Content::read(&mut file).unwrap(), file)
}

/// `ids` as the `[1, n]` batch candle-transformers' models take.
fn batch_of_one(ids: &[u32]) -> Tensor {
    Tensor::new(ids, &Device::Cpu).unwrap().unsqueeze(0).unwrap()
}

fn argmax(logits: &[f32]) -> u32 {
    blaze_worker::sampling::argmax(logits)
}

/// Our logits and the reference's agree within `tolerance` for the prompt and each greedy
/// step, and both pick the same greedy tokens.
fn matches_reference(model: &LoadedModel, mut reference: Reference<'_>, tolerance: f32) {
    let mut ours_cache = KvCache::default();
    let mut input = model.encode_prompt("Tiny families say hello!").unwrap();
    let (mut ours_tokens, mut theirs_tokens) = (Vec::new(), Vec::new());
    let mut pos = 0;
    for step in 0..=STEPS {
        let ours = model.llama.forward_one(&input, &mut ours_cache).unwrap().to_vec1::<f32>();
        let ours = ours.unwrap();
        let theirs = reference(&input, pos).flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(ours.len(), theirs.len(), "vocabulary sizes differ");
        let diff = ours.iter().zip(&theirs).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        assert!(diff < tolerance, "logits differ by {diff} at step {step} (position {pos})");
        ours_tokens.push(argmax(&ours));
        theirs_tokens.push(argmax(&theirs));
        pos += input.len();
        input = vec![argmax(&ours)];
    }
    assert_eq!(ours_tokens, theirs_tokens, "greedy tokens differ");
}

/// Greedy tokens of one sequence decoded alone.
fn alone(model: &LoadedModel, prompt: &[u32], n: usize) -> Vec<u32> {
    let mut cache = KvCache::default();
    let mut input = prompt.to_vec();
    (0..n)
        .map(|_| {
            let logits = model.llama.forward_one(&input, &mut cache).unwrap();
            let next = argmax(&logits.to_vec1::<f32>().unwrap());
            input = vec![next];
            next
        })
        .collect()
}

/// Two prompts of different lengths prefilled and decoded in one batch give the tokens
/// each gives alone.
fn batched_equals_alone(model: &LoadedModel) {
    let prompts = ["Hi", "A much longer prompt, to differ in length"]
        .map(|p| model.encode_prompt(p).unwrap());
    let want = prompts.clone().map(|p| alone(model, &p, STEPS));
    let mut caches = [KvCache::default(), KvCache::default()];
    let mut inputs = prompts.clone();
    let mut got: [Vec<u32>; 2] = Default::default();
    for _ in 0..STEPS {
        let [a, b] = &mut caches;
        let mut seqs =
            [SeqInput { tokens: &inputs[0], cache: a }, SeqInput { tokens: &inputs[1], cache: b }];
        let logits = model.llama.forward(&mut seqs).unwrap().to_vec2::<f32>().unwrap();
        for (i, row) in logits.iter().enumerate() {
            got[i].push(argmax(row));
            inputs[i] = vec![argmax(row)];
        }
    }
    assert_eq!(got, want, "batched greedy differs from unbatched");
}

#[test]
fn qwen2_gguf_matches_candle_quantized_qwen2() {
    let (dir, model) = gguf_model("qwen2", Weights::Stored);
    let (content, mut file) = gguf_content(dir.path());
    let mut stock =
        quantized_qwen2::ModelWeights::from_gguf(content, &mut file, &Device::Cpu).unwrap();
    matches_reference(
        &model,
        Box::new(|ids, pos| stock.forward(&batch_of_one(ids), pos).unwrap()),
        TOLERANCE,
    );
    batched_equals_alone(&gguf_model("qwen2", Weights::Auto).1);
}

#[test]
fn qwen3_safetensors_matches_candle_qwen3() {
    let (dir, model) = hf_model("qwen3");
    let config: qwen3::Config = hf_config(dir.path());
    let mut stock = qwen3::ModelForCausalLM::new(&config, var_builder(dir.path())).unwrap();
    matches_reference(
        &model,
        Box::new(|ids, pos| stock.forward(&batch_of_one(ids), pos).unwrap()),
        TOLERANCE,
    );
    batched_equals_alone(&model);
}

#[test]
fn qwen3_gguf_matches_candle_quantized_qwen3() {
    let (dir, model) = gguf_model("qwen3", Weights::Stored);
    let (content, mut file) = gguf_content(dir.path());
    let mut stock =
        quantized_qwen3::ModelWeights::from_gguf(content, &mut file, &Device::Cpu).unwrap();
    matches_reference(
        &model,
        Box::new(|ids, pos| stock.forward(&batch_of_one(ids), pos).unwrap()),
        TOLERANCE,
    );
    batched_equals_alone(&gguf_model("qwen3", Weights::Auto).1);
}

#[test]
fn phi3_safetensors_matches_candle_phi3() {
    let (dir, model) = hf_model("phi3");
    assert_eq!(model.llama.config().rotary_dim, 8, "partial_rotary_factor 0.5 of 16");
    let config: phi3::Config = hf_config(dir.path());
    let mut stock = phi3::Model::new(&config, var_builder(dir.path())).unwrap();
    matches_reference(
        &model,
        Box::new(|ids, pos| stock.forward(&batch_of_one(ids), pos).unwrap()),
        TOLERANCE,
    );
    batched_equals_alone(&model);
}

#[test]
fn phi3_gguf_matches_candle_quantized_phi3() {
    let (dir, model) = gguf_model("phi3", Weights::Stored);
    let (content, mut file) = gguf_content(dir.path());
    let mut stock =
        quantized_phi3::ModelWeights::from_gguf(false, content, &mut file, &Device::Cpu).unwrap();
    matches_reference(
        &model,
        Box::new(|ids, pos| stock.forward(&batch_of_one(ids), pos).unwrap()),
        TOLERANCE,
    );
    batched_equals_alone(&gguf_model("phi3", Weights::Auto).1);
}

#[test]
fn gemma_safetensors_matches_candle_gemma() {
    let (dir, model) = hf_model("gemma");
    let config: gemma::Config = hf_config(dir.path());
    let mut stock = gemma::Model::new(false, &config, var_builder(dir.path())).unwrap();
    matches_reference(
        &model,
        Box::new(|ids, pos| stock.forward(&batch_of_one(ids), pos).unwrap()),
        TOLERANCE,
    );
    batched_equals_alone(&model);
}

#[test]
fn mistral_safetensors_matches_candle_mistral() {
    let (dir, model) = hf_model("mistral");
    let config: mistral::Config = hf_config(dir.path());
    let mut stock = mistral::Model::new(&config, var_builder(dir.path())).unwrap();
    matches_reference(
        &model,
        Box::new(|ids, pos| stock.forward(&batch_of_one(ids), pos).unwrap()),
        TOLERANCE,
    );
    batched_equals_alone(&model);
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
