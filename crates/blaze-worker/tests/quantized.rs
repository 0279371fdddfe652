//! Safetensors checkpoints held as `--dtype` and `--quantization` ask: a tiny random-weight
//! model written by the test loads through the production path as f16, bf16, Q8_0 and Q4K
//! and answers within each type's error of the f32 model, with fewer bytes per decode step.

use crate::support::tiny;

use blaze_worker::model::{Dtype, KvCache, LoadOptions, LoadedModel, Quantization, load_with};
use candle_core::Device;

fn load(dir: &std::path::Path, dtype: Dtype, quantization: Option<Quantization>) -> LoadedModel {
    let options = LoadOptions { dtype, quantization, ..Default::default() };
    load_with(dir, &Device::Cpu, options).unwrap()
}

/// Last-token logits of a prompt and of three greedy steps after it (fed the f32 model's
/// tokens, so every variant sees the same inputs).
fn logits(model: &LoadedModel, tokens: &[u32]) -> Vec<Vec<f32>> {
    let mut cache = KvCache::default();
    let mut out = Vec::new();
    let mut input = tokens[..tokens.len() - 3].to_vec();
    for next in &tokens[tokens.len() - 3..] {
        out.push(model.llama.forward_one(&input, &mut cache).unwrap().to_vec1::<f32>().unwrap());
        input = vec![*next];
    }
    out
}

/// Root-mean-square logit difference relative to the reference logits' root mean square. A
/// whole-vector measure: the largest single difference of a random-weight model swings by
/// several times from one set of weights to the next, and made the check a matter of luck.
fn relative_error(reference: &[Vec<f32>], got: &[Vec<f32>]) -> f32 {
    let (mut diff, mut norm) = (0f64, 0f64);
    for (a, b) in reference.iter().flatten().zip(got.iter().flatten()) {
        diff += f64::from(a - b).powi(2);
        norm += f64::from(*a).powi(2);
    }
    (diff / norm.max(f64::MIN_POSITIVE)).sqrt() as f32
}

#[test]
fn dtypes_and_quantizations_answer_within_their_error_of_f32() {
    let dir = tempfile::tempdir().unwrap();
    tiny::write_hf(dir.path(), "llama", serde_json::json!({}));
    let f32_model = load(dir.path(), Dtype::F32, None);
    let tokens = f32_model.encode_prompt("Quantized weights, same answers?").unwrap();
    let reference = logits(&f32_model, &tokens);
    let f32_bytes = f32_model.llama.weight_bytes_per_step(1);

    // Measured on the tiny llama over runs (RMS, relative): f16 about 0.003, bf16 about 0.01,
    // Q8_0 about 0.03, Q4K 0.20 to 0.28 (4 bits on weights of 64 inputs). A wrong layout or a
    // missing scale gives logits unrelated to f32's, about 1.4.
    // Half types hold half the bytes. The quantized ones are padded to whole 256-value
    // blocks (the tiny model's projections are 64 and 128 wide), so their size says little
    // here; that they are not f32 shows in their error, which f32 weights would not have.
    let cases = [
        ("f16", Dtype::F16, None, 0.02, Some(0.55)),
        ("bf16", Dtype::Bf16, None, 0.05, Some(0.55)),
        ("q8_0", Dtype::Auto, Some(Quantization::Q8_0), 0.12, None),
        ("q4k", Dtype::Auto, Some(Quantization::Q4K), 0.6, None),
    ];
    for (name, dtype, quantization, tolerance, max_bytes_ratio) in cases {
        let model = load(dir.path(), dtype, quantization);
        let error = relative_error(&reference, &logits(&model, &tokens));
        let ratio = model.llama.weight_bytes_per_step(1) as f64 / f32_bytes as f64;
        eprintln!("{name}: relative logit error {error:.5}, {ratio:.2} of f32's weight bytes");
        assert!(error < tolerance, "{name}: logits off by {error} of their size (< {tolerance})");
        assert!(error > 1e-6, "{name}: logits equal f32's: the weights were not converted");
        if let Some(max) = max_bytes_ratio {
            assert!(ratio < max, "{name} holds {ratio:.2} of f32's bytes");
        }
    }
}

#[test]
fn gguf_refuses_dtype_and_quantization_naming_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tiny.gguf");
    tiny::write_gguf(&path, "llama", candle_core::quantized::GgmlDType::Q8_0);
    let err = |options: LoadOptions| match load_with(&path, &Device::Cpu, options) {
        Ok(_) => panic!("{options:?} loaded a GGUF file"),
        Err(e) => e.to_string(),
    };
    let e = err(LoadOptions { dtype: Dtype::F16, ..Default::default() });
    assert!(e.contains("--dtype f16"), "{e}");
    let e = err(LoadOptions { quantization: Some(Quantization::Q4K), ..Default::default() });
    assert!(e.contains("--quantization q4k"), "{e}");
    let e = err(LoadOptions {
        format: Some(blaze_worker::model::ModelFormat::Safetensors),
        ..Default::default()
    });
    assert!(e.contains("--model-format safetensors"), "{e}");
}
