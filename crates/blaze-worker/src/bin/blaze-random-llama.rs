//! `blaze-random-llama DIR [tiny|1b] [f32|bf16|f16] [CONTEXT]`: writes a random-weight llama
//! in the Hugging Face layout (config.json, model.safetensors, a byte-level tokenizer.json)
//! into DIR, which `blaze-worker --model file://DIR` serves without a download. `1b` is
//! Llama 3.2 1B's decoder shape (the GPU benchmark's model, about 2 GB in bf16); `tiny` is
//! the tests' model. The weights are random: the model measures speed, not answers.

use std::path::PathBuf;

use blaze_worker::testing::{self, LlamaShape};
use candle_core::DType;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: blaze-random-llama DIR [tiny|1b] [f32|bf16|f16] [CONTEXT]";
    let fail = |what: String| -> ! {
        eprintln!("{what}\n{usage}");
        std::process::exit(2);
    };
    let Some(dir) = args.first().map(PathBuf::from) else { fail("no DIR".into()) };
    let shape = match args.get(1).map_or("1b", String::as_str) {
        "tiny" => LlamaShape::TINY,
        "1b" => LlamaShape::ONE_B,
        other => fail(format!("unknown shape {other:?}: tiny or 1b")),
    };
    let dtype = match args.get(2).map_or("bf16", String::as_str) {
        "f32" => DType::F32,
        "bf16" => DType::BF16,
        "f16" => DType::F16,
        other => fail(format!("unknown dtype {other:?}: f32, bf16 or f16")),
    };
    let context = match args.get(3).map(|c| c.parse::<usize>()) {
        None => 4096,
        Some(Ok(c)) if c > 0 => c,
        Some(_) => fail(format!("CONTEXT must be a positive number, not {:?}", args[3])),
    };
    if let Err(e) = testing::write_random_llama(&dir, shape, context, dtype) {
        eprintln!("writing {}: {e}", dir.display());
        std::process::exit(1);
    }
    eprintln!("{} weights ({shape:?}, {dtype:?})", shape.parameters(256));
    println!("{}", dir.display());
}
