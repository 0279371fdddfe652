//! Comparing a loaded model with a reference forward pass, and batched greedy decoding with
//! each sequence alone.
#![allow(dead_code)]

use std::path::Path;

use blaze_worker::model::{KvCache, LoadOptions, LoadedModel, SeqInput, Weights};
use blaze_worker::source::ModelSource;
use candle_core::quantized::gguf_file;
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;

/// Largest logit difference allowed. Measured: about 2e-6 for the f32 safetensors models,
/// 0 for the GGUF ones (the same quantized kernels on both sides).
pub const TOLERANCE: f32 = 1e-4;

/// Largest logit difference allowed with Q8_0 weights. Both sides quantize each
/// activation row to Q8_0 before multiplying, so a 1e-7 difference upstream (candle's
/// quantized_qwen3 attends with its CPU flash-attention kernel, whose rounding differs
/// from a plain softmax) can flip one rounding step and move logits by a few hundredths
/// (0.045 the largest seen); a wrong layout moves them by 0.5 or more.
pub const QUANTIZED_TOLERANCE: f32 = 0.2;

/// Greedy steps each check runs after the prompt.
pub const STEPS: usize = 6;

/// A reference forward: token ids and the position of the first, to last-token logits.
pub type Reference<'a> = Box<dyn FnMut(&[u32], usize) -> Tensor + 'a>;

/// Loads `path` as the worker does a `--model file://PATH`.
pub fn load_uri(path: &Path, weights: Weights) -> LoadedModel {
    let uri = format!("file://{}", path.display());
    let ModelSource::Path(path) = ModelSource::parse(&uri).unwrap() else {
        panic!("{uri} is not a local path")
    };
    blaze_worker::model::load_with(
        &path,
        &Device::Cpu,
        LoadOptions { weights, ..Default::default() },
    )
    .unwrap()
}

pub fn hf_config<T: serde::de::DeserializeOwned>(dir: &Path) -> T {
    serde_json::from_slice(&std::fs::read(dir.join("config.json")).unwrap()).unwrap()
}

pub fn var_builder(dir: &Path) -> VarBuilder<'static> {
    let bytes = std::fs::read(dir.join("model.safetensors")).unwrap();
    VarBuilder::from_buffered_safetensors(bytes, DType::F32, &Device::Cpu).unwrap()
}

pub fn gguf_content(dir: &Path) -> (gguf_file::Content, std::fs::File) {
    let path = std::fs::read_dir(dir).unwrap().next().unwrap().unwrap().path();
    let mut file = std::fs::File::open(path).unwrap();
    (gguf_file::Content::read(&mut file).unwrap(), file)
}

/// `ids` as the `[1, n]` batch candle-transformers' models take.
pub fn batch_of_one(ids: &[u32]) -> Tensor {
    Tensor::new(ids, &Device::Cpu).unwrap().unsqueeze(0).unwrap()
}

pub fn argmax(logits: &[f32]) -> u32 {
    blaze_worker::sampling::argmax(logits)
}

/// Our logits and the reference's agree within `tolerance` for the prompt and each greedy
/// step, and (if `tokens`) both pick the same greedy tokens.
pub fn matches_reference(
    model: &LoadedModel,
    mut reference: Reference<'_>,
    tolerance: f32,
    tokens: bool,
) {
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
    if tokens {
        assert_eq!(ours_tokens, theirs_tokens, "greedy tokens differ");
    }
}

/// Greedy tokens of one sequence decoded alone.
pub fn alone(model: &LoadedModel, prompt: &[u32], n: usize) -> Vec<u32> {
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
pub fn batched_equals_alone(model: &LoadedModel) {
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
