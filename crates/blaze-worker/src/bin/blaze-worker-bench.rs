//! Benchmark: decode tokens/s at concurrency 1, 4 and 16 and TTFT p50/p95 for the worker's
//! scheduler, against a plain single-sequence candle loop (stock candle-transformers
//! `quantized_llama`) over the same GGUF in the same process, plus the memory-bandwidth bound.
//!
//! `cargo run --release -p blaze-worker --bin blaze-worker-bench -- [--model PATH] [--tokens N]`

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use blaze_worker::engine::{Engine, Event, GenerateRequest};
use blaze_worker::sampling::{SamplingParams, argmax};
use blaze_worker::scheduler::{LlmEngine, SchedulerConfig};
use candle_core::quantized::gguf_file;
use candle_core::{Device, Tensor};
use candle_transformers::models::quantized_llama::ModelWeights;
use clap::Parser;

/// Benchmark settings.
#[derive(Debug, Parser)]
struct Args {
    /// The GGUF to measure (default: the SmolLM2 test model).
    #[arg(long, env = "BLAZE_BENCH_MODEL")]
    model: Option<PathBuf>,
    /// Tokens generated per request.
    #[arg(long, env = "BLAZE_BENCH_TOKENS", default_value_t = 64)]
    tokens: usize,
    /// Where to write the figures as JSON.
    #[arg(long, env = "BLAZE_BENCH_OUTPUT")]
    output: Option<PathBuf>,
}

const PROMPT: &str = "<|im_start|>user\nWrite a short story about a lighthouse keeper.<|im_end|>\n<|im_start|>assistant\n";

/// Figures of one run.
struct Run {
    decode_tps: f64,
    ttft: Vec<f64>,
}

fn percentile(v: &[f64], p: f64) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

/// The plain loop: one sequence, stock model, greedy.
fn baseline(path: &PathBuf, prompt: &[u32], tokens: usize) -> anyhow::Result<Run> {
    let mut file = std::fs::File::open(path)?;
    let content = gguf_file::Content::read(&mut file)?;
    let mut model = ModelWeights::from_gguf(content, &mut file, &Device::Cpu)?;
    let start = Instant::now();
    let input = Tensor::new(prompt, &Device::Cpu)?.unsqueeze(0)?;
    let logits = model.forward(&input, 0)?.squeeze(0)?.to_vec1::<f32>()?;
    let ttft = start.elapsed().as_secs_f64();
    let mut next = argmax(&logits);
    let decode_start = Instant::now();
    for i in 0..tokens - 1 {
        let input = Tensor::new(&[next], &Device::Cpu)?.unsqueeze(0)?;
        let logits = model.forward(&input, prompt.len() + i)?.squeeze(0)?.to_vec1::<f32>()?;
        next = argmax(&logits);
    }
    Ok(Run {
        decode_tps: (tokens - 1) as f64 / decode_start.elapsed().as_secs_f64(),
        ttft: vec![ttft],
    })
}

/// `concurrency` requests at once through the scheduler; decode rate counts tokens after
/// each request's first, over the time from the first first-token to the last token.
async fn scheduler(
    engine: &LlmEngine,
    prompt: &[u32],
    tokens: usize,
    concurrency: usize,
) -> anyhow::Result<Run> {
    let start = Instant::now();
    let streams: Vec<_> = (0..concurrency)
        .map(|_| {
            let request = GenerateRequest {
                prompt: prompt.to_vec(),
                max_tokens: tokens,
                sampling: SamplingParams::default(),
                stop: vec![],
                deadline: None,
            };
            engine.submit(request).map_err(anyhow::Error::from)
        })
        .collect::<anyhow::Result<_>>()?;
    let mut ttft = Vec::new();
    let mut decoded = 0;
    let mut first_token: Option<Instant> = None;
    let mut handles = Vec::new();
    for mut events in streams {
        handles.push(tokio::spawn(async move {
            let mut first = None;
            let mut n = 0usize;
            while let Some(e) = events.recv().await {
                if let Event::Token { .. } = e {
                    first.get_or_insert_with(Instant::now);
                    n += 1;
                }
            }
            (first, n)
        }));
    }
    for h in handles {
        let (first, n) = h.await?;
        let first = first.context("no tokens")?;
        ttft.push((first - start).as_secs_f64());
        first_token = Some(first_token.map_or(first, |f| f.min(first)));
        decoded += n - 1;
    }
    let span = first_token.map_or(Duration::ZERO, |f| f.elapsed()).as_secs_f64();
    Ok(Run { decode_tps: decoded as f64 / span, ttft })
}

/// Bytes the weights occupy: what one decode step must stream from memory.
fn weight_bytes(path: &PathBuf) -> anyhow::Result<u64> {
    let mut file = std::fs::File::open(path)?;
    let content = gguf_file::Content::read(&mut file)?;
    Ok(content
        .tensor_infos
        .values()
        .map(|t| {
            (t.shape.elem_count() / t.ggml_dtype.block_size() * t.ggml_dtype.type_size()) as u64
        })
        .sum())
}

/// Measured read bandwidth: summing a buffer much larger than the caches.
fn bandwidth() -> f64 {
    let buf = vec![1u64; 64 << 20];
    let start = Instant::now();
    let mut total = 0u64;
    for _ in 0..4 {
        total = total.wrapping_add(buf.iter().fold(0u64, |a, b| a.wrapping_add(*b)));
    }
    std::hint::black_box(total);
    (4 * buf.len() * 8) as f64 / start.elapsed().as_secs_f64()
}

/// Runs the scheduler at each concurrency over a model loaded with `options`.
async fn sweep(
    label: &str,
    path: &std::path::Path,
    options: blaze_worker::model::LoadOptions,
    args: &Args,
    base: &Run,
    report: &mut serde_json::Value,
) -> anyhow::Result<()> {
    let model = blaze_worker::model::load_with(path, &Device::Cpu, options)?;
    let prompt = model.tokenizer.encode(PROMPT)?;
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = blaze_worker::metrics::Metrics::register(&mut registry);
    let config = SchedulerConfig { max_batch_size: 16, max_queue: 64, max_batch_tokens: 4096 };
    let engine = LlmEngine::start("bench".into(), model, config, metrics);
    scheduler(&engine, &prompt, 4, 1).await?; // warm-up
    for c in [1, 4, 16] {
        let run = scheduler(&engine, &prompt, args.tokens, c).await?;
        let (p50, p95) = (percentile(&run.ttft, 0.5) * 1e3, percentile(&run.ttft, 0.95) * 1e3);
        // The plain loop serves concurrent requests one after another.
        let per_request = base.ttft[0] + (args.tokens - 1) as f64 / base.decode_tps;
        let queued: Vec<f64> = (0..c).map(|i| i as f64 * per_request + base.ttft[0]).collect();
        let (b50, b95) = (percentile(&queued, 0.5) * 1e3, percentile(&queued, 0.95) * 1e3);
        println!(
            "{label:<12} c={c:<2} decode {:7.1} tok/s ({:.2}x plain loop {:.1})  TTFT p50 {p50:7.1} ms p95 {p95:7.1} ms (plain loop p50 {b50:7.1} p95 {b95:7.1})",
            run.decode_tps,
            run.decode_tps / base.decode_tps,
            base.decode_tps,
        );
        report[format!("{label}_c{c}")] = serde_json::json!({
            "decode_tps": run.decode_tps, "ttft_p50_ms": p50, "ttft_p95_ms": p95,
            "plain_loop_ttft_p50_ms": b50, "plain_loop_ttft_p95_ms": b95,
        });
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let path = args.model.clone().unwrap_or_else(blaze_worker::testing::smollm2_gguf);
    let tokenizer = blaze_worker::model::load(&path, &Device::Cpu)?.tokenizer;
    let prompt = tokenizer.encode(PROMPT)?;
    let base = baseline(&path, &prompt, args.tokens)?;
    let mut report = serde_json::json!({"model": path.display().to_string(), "prompt_tokens": prompt.len(), "tokens": args.tokens});
    println!(
        "model {} | prompt {} tokens | {} generated per request",
        path.display(),
        prompt.len(),
        args.tokens
    );
    println!(
        "plain loop   c=1  decode {:7.1} tok/s  TTFT {:6.1} ms",
        base.decode_tps,
        base.ttft[0] * 1e3
    );
    report["plain_loop"] =
        serde_json::json!({"decode_tps": base.decode_tps, "ttft_ms": base.ttft[0] * 1e3});
    let quantized =
        blaze_worker::model::LoadOptions { dequantize: blaze_worker::model::Dequantize::Off };
    sweep("quantized", &path, quantized, &args, &base, &mut report).await?;
    let dequantized =
        blaze_worker::model::LoadOptions { dequantize: blaze_worker::model::Dequantize::On };
    sweep("dequantized", &path, dequantized, &args, &base, &mut report).await?;
    let bytes = weight_bytes(&path)?;
    let bw = bandwidth();
    let bound = bw / bytes as f64;
    println!(
        "bandwidth bound: {:.1} MB of weights read per decode step / {:.1} GB/s measured = {bound:.1} steps/s; plain loop at {:.0}% of it",
        bytes as f64 / 1e6,
        bw / 1e9,
        100.0 * base.decode_tps / bound
    );
    let f32_bound = bw / blaze_worker::model::gguf::f32_bytes(&path)? as f64;
    println!("bandwidth bound with f32 weights: {f32_bound:.1} steps/s");
    report["f32_bound_steps_per_s"] = serde_json::json!(f32_bound);
    report["bound"] = serde_json::json!({"bytes_per_token": bytes, "bandwidth_bytes_per_s": bw, "tokens_per_s": bound});
    if let Some(out) = &args.output {
        std::fs::write(out, serde_json::to_vec_pretty(&report)?)?;
    }
    Ok(())
}
