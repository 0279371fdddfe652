//! Benchmark: decode tokens/s at concurrency 1, 4 and 16 and TTFT p50/p95 for the worker's
//! scheduler with each way of holding the weights, against a plain single-sequence candle
//! loop (stock candle-transformers `quantized_llama`) over the same GGUF in the same
//! process, and the memory-bandwidth bound of each.
//!
//! The machines this runs on are shared and noisy, so every scheduler figure is measured
//! right after a plain loop of its own, in rounds: a ratio compares the two neighbours, and
//! the medians over rounds are reported.
//!
//! `cargo run --release -p blaze-worker --bin blaze-worker-bench -- [--model PATH] [--tokens N] [--rounds N]`
//!
//! `--mode embeddings` measures the embedding engine instead (see `worker-bench/embeddings.rs`).

#[path = "worker-bench/embeddings.rs"]
mod embeddings;

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use blaze_worker::engine::llm::{LlmEngine, SchedulerConfig};
use blaze_worker::engine::{Engine, Event, GenerateRequest};
use blaze_worker::model::{LoadOptions, Weights};
use blaze_worker::sampling::{SamplingParams, argmax};
use candle_core::quantized::gguf_file;
use candle_core::{Device, Tensor};
use candle_transformers::models::quantized_llama::ModelWeights;
use clap::Parser;
use serde_json::json;

/// What to measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Mode {
    /// Text generation: the scheduler against a plain candle loop.
    Llm,
    /// Embeddings/s of all-MiniLM-L6-v2 at each `--batch-sizes`, beside the reference
    /// implementation (sentence-transformers) when scripts/reference-venv.sh installed it.
    Embeddings,
}

/// Benchmark settings.
#[derive(Debug, Parser)]
struct Args {
    /// What to measure.
    #[arg(long, env = "BLAZE_BENCH_MODE", value_enum, default_value = "llm")]
    mode: Mode,
    /// Embedding batch sizes to measure (`--mode embeddings`).
    #[arg(long, env = "BLAZE_BENCH_BATCH_SIZES", value_delimiter = ',', default_value = "1,8,32")]
    batch_sizes: Vec<usize>,
    /// The GGUF to measure (default: the SmolLM2 test model; `--mode embeddings`: the
    /// all-MiniLM-L6-v2 folder).
    #[arg(long, env = "BLAZE_BENCH_MODEL")]
    model: Option<PathBuf>,
    /// Tokens generated per request.
    #[arg(long, env = "BLAZE_BENCH_TOKENS", default_value_t = 32)]
    tokens: usize,
    /// Interleaved rounds; figures are medians over them.
    #[arg(long, env = "BLAZE_BENCH_ROUNDS", default_value_t = 3)]
    rounds: usize,
    /// Weight formats to measure the scheduler with.
    #[arg(
        long,
        env = "BLAZE_BENCH_WEIGHTS",
        value_enum,
        value_delimiter = ',',
        default_value = "stored,q8_0,f32,dual"
    )]
    weights: Vec<Weights>,
    /// Concurrencies to measure the scheduler at.
    #[arg(long, env = "BLAZE_BENCH_CONCURRENCY", value_delimiter = ',', default_value = "1,4,16")]
    concurrency: Vec<usize>,
    /// Threads candle computes with. One by default: the development machines are shared,
    /// and more threads than free CPUs stall candle's spin-barrier pool, which turns the
    /// figures into noise. The worker's own default is the CPUs it may use.
    #[arg(long, env = "BLAZE_THREADS", default_value_t = 1)]
    threads: usize,
    /// Where to write the figures as JSON.
    #[arg(long, env = "BLAZE_BENCH_OUTPUT")]
    output: Option<PathBuf>,
}

const PROMPT: &str = "<|im_start|>user\nWrite a short story about a lighthouse keeper.<|im_end|>\n<|im_start|>assistant\n";
/// The targets: at one sequence within 10% of the plain loop; at sixteen, 3x.
const TARGETS: [(usize, f64); 2] = [(1, 0.9), (16, 3.0)];

/// Figures of one run.
#[derive(Clone)]
struct Run {
    decode_tps: f64,
    ttft: Vec<f64>,
}

fn percentile(v: &[f64], p: f64) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

fn median(v: &[f64]) -> f64 {
    percentile(v, 0.5)
}

/// The plain loop: one sequence, stock model, greedy. `forward` at position 0 starts a
/// fresh cache, so one model serves every round.
fn plain_loop(model: &mut ModelWeights, prompt: &[u32], tokens: usize) -> anyhow::Result<Run> {
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

/// `concurrency` requests at once through the scheduler. TTFT is each request's time to its
/// first token; the decode rate is steady state, as for the plain loop: the tokens all the
/// requests produce while every one of them is decoding (after the last first token, up to
/// the first request's last token) over that span. Prefill (and a later request's prefill
/// stalling the others) stays out of it, as it stays out of the plain loop's.
async fn scheduler(
    engine: &LlmEngine,
    prompt: &[u32],
    tokens: usize,
    concurrency: usize,
) -> anyhow::Result<Run> {
    let start = Instant::now();
    let mut handles = Vec::new();
    for _ in 0..concurrency {
        let request = GenerateRequest {
            prompt: prompt.to_vec(),
            max_tokens: tokens,
            sampling: SamplingParams::default(),
            stop: vec![],
            deadline: None,
        };
        let mut events = engine.submit(request).map_err(anyhow::Error::from)?;
        handles.push(tokio::spawn(async move {
            let mut times = Vec::with_capacity(tokens);
            while let Some(e) = events.recv().await {
                if let Event::Token { .. } = e {
                    times.push(Instant::now());
                }
            }
            times
        }));
    }
    let mut requests = Vec::new();
    for h in handles {
        let times = h.await?;
        anyhow::ensure!(times.len() >= 2, "a request produced {} tokens", times.len());
        requests.push(times);
    }
    let ttft = requests.iter().map(|t| (t[0] - start).as_secs_f64()).collect();
    let from = requests.iter().map(|t| t[0]).max().context("no requests")?;
    let to = requests.iter().map(|t| t[t.len() - 1]).min().context("no requests")?;
    let decoded = requests.iter().flatten().filter(|&&t| t > from && t <= to).count();
    let span = to.saturating_duration_since(from).as_secs_f64();
    anyhow::ensure!(decoded > 0 && span > 0.0, "no decode step while every request ran");
    Ok(Run { decode_tps: decoded as f64 / span, ttft })
}

/// Memory bandwidth, best of a few tries, in this process, over buffers far larger than any
/// cache (like the weights): `(memcpy, read)` in bytes per second, a memcpy counting the
/// bytes it reads and writes, a read summing a buffer in eight streams.
fn memory_bandwidth() -> (f64, f64) {
    let len = 256 << 20;
    let src = vec![1u64; len / 8];
    let mut dst = vec![0u64; len / 8];
    let (mut copy, mut read) = (f64::MAX, f64::MAX);
    for _ in 0..5 {
        let start = Instant::now();
        dst.copy_from_slice(std::hint::black_box(&src));
        std::hint::black_box(&mut dst);
        copy = copy.min(start.elapsed().as_secs_f64());
        // Eight streams at once, as a matmul reads several weight rows.
        let start = Instant::now();
        let lanes: Vec<&[u64]> = std::hint::black_box(&src).chunks(src.len() / 8).collect();
        let mut sums = [0u64; 8];
        for i in 0..lanes[0].len() {
            for (sum, lane) in sums.iter_mut().zip(&lanes) {
                *sum = sum.wrapping_add(lane[i]);
            }
        }
        std::hint::black_box(sums);
        read = read.min(start.elapsed().as_secs_f64());
    }
    ((2 * len) as f64 / copy, len as f64 / read)
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

/// One scheduler configuration under test.
struct Subject {
    weights: Weights,
    engine: LlmEngine,
    /// Bytes of weights one decode step reads, per measured concurrency.
    bytes_per_step: Vec<u64>,
    runs: Vec<Vec<Run>>,
    /// Per run, its decode rate over the plain loop's measured just before it.
    ratios: Vec<Vec<f64>>,
}

fn start_engine(
    path: &Path,
    weights: Weights,
    concurrency: &[usize],
) -> anyhow::Result<(LlmEngine, Vec<u64>)> {
    let model = blaze_worker::model::load_with(
        path,
        &Device::Cpu,
        LoadOptions { weights, ..Default::default() },
    )?;
    let bytes = concurrency.iter().map(|&c| model.llama.weight_bytes_per_step(c)).collect();
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = blaze_worker::metrics::Metrics::register(&mut registry);
    let config = SchedulerConfig {
        max_batch_size: 16,
        max_queue: 64,
        max_batch_tokens: 4096,
        ..Default::default()
    };
    Ok((LlmEngine::start(format!("{weights:?}"), model, config, metrics), bytes))
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // SAFETY: no other thread exists yet; the async runtime starts below.
    #[allow(unsafe_code)]
    unsafe {
        blaze_worker::threads::configure(Some(args.threads));
    }
    tokio::runtime::Builder::new_multi_thread().enable_all().build()?.block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    if args.mode == Mode::Embeddings {
        anyhow::ensure!(args.batch_sizes.iter().all(|&b| b >= 1), "--batch-sizes values >= 1");
        let (model, output) = (args.model.clone(), args.output.as_deref());
        embeddings::run(model, &args.batch_sizes, args.rounds.max(1), args.threads, output).await?;
        return Ok(());
    }
    anyhow::ensure!(args.tokens >= 2 && args.rounds >= 1, "--tokens >= 2 and --rounds >= 1");
    anyhow::ensure!(args.concurrency.iter().all(|&c| c >= 1), "--concurrency values >= 1");
    let path = args.model.clone().unwrap_or_else(blaze_worker::testing::smollm2_gguf);
    let load_before = load_average();
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let threads = std::env::var("CANDLE_NUM_THREADS").unwrap_or_default();
    let (copy_bandwidth, read_bandwidth) = memory_bandwidth();
    // Decoding reads the weights: the faster of the two is the honest ceiling.
    let bandwidth = copy_bandwidth.max(read_bandwidth);
    println!(
        "memory bandwidth: memcpy {:.1} GB/s (read + write), read {:.1} GB/s; bound uses {:.1}",
        copy_bandwidth / 1e9,
        read_bandwidth / 1e9,
        bandwidth / 1e9
    );
    let stored = LoadOptions { weights: Weights::Stored, ..Default::default() };
    let prompt =
        blaze_worker::model::load_with(&path, &Device::Cpu, stored)?.tokenizer.encode(PROMPT)?;
    let mut file = std::fs::File::open(&path)?;
    let content = gguf_file::Content::read(&mut file)?;
    let mut plain = ModelWeights::from_gguf(content, &mut file, &Device::Cpu)?;
    let mut subjects = Vec::new();
    for &weights in &args.weights {
        let (engine, bytes_per_step) = start_engine(&path, weights, &args.concurrency)?;
        scheduler(&engine, &prompt, 4, 1).await?; // warm-up
        subjects.push(Subject {
            weights,
            engine,
            bytes_per_step,
            runs: vec![Vec::new(); args.concurrency.len()],
            ratios: vec![Vec::new(); args.concurrency.len()],
        });
    }
    plain_loop(&mut plain, &prompt, 4)?; // warm-up
    let mut plain_runs = Vec::new();
    for _ in 0..args.rounds {
        for s in &mut subjects {
            for (i, &c) in args.concurrency.iter().enumerate() {
                // Each figure right after a plain loop of its own: the load on a shared
                // machine drifts within seconds, so only neighbours compare.
                let base = plain_loop(&mut plain, &prompt, args.tokens)?;
                let run = scheduler(&s.engine, &prompt, args.tokens, c).await?;
                s.ratios[i].push(run.decode_tps / base.decode_tps);
                s.runs[i].push(run);
                plain_runs.push(base);
            }
        }
    }
    println!("candle threads: {threads}");
    let report = print_report(&args, &path, &prompt, bandwidth, &plain_runs, &subjects, cpus);
    println!("machine: {cpus} CPUs, load average {load_before} before, {} after", load_average());
    if let Some(out) = &args.output {
        let mut report = report;
        report["load_average"] = json!({"before": load_before, "after": load_average()});
        std::fs::write(out, serde_json::to_vec_pretty(&report)?)?;
    }
    Ok(())
}

fn print_report(
    args: &Args,
    path: &Path,
    prompt: &[u32],
    bandwidth: f64,
    plain: &[Run],
    subjects: &[Subject],
    cpus: usize,
) -> serde_json::Value {
    let plain_tps: Vec<f64> = plain.iter().map(|r| r.decode_tps).collect();
    let plain_ttft = median(&plain.iter().map(|r| r.ttft[0]).collect::<Vec<_>>());
    let plain_median = median(&plain_tps);
    // The plain loop reads the weights as stored.
    let stored_bytes = blaze_worker::model::gguf::stored_bytes_per_step(path).unwrap_or(0);
    println!(
        "model {} | prompt {} tokens | {} generated per request | {} rounds, medians | {cpus} CPUs",
        path.display(),
        prompt.len(),
        args.tokens,
        args.rounds
    );
    let plain_bound = if stored_bytes > 0 { bandwidth / stored_bytes as f64 } else { f64::NAN };
    println!(
        "plain loop        c=1  decode {plain_median:6.1} tok/s (median of {}, {:.1} to {:.1})  TTFT {:.0} ms  bound {plain_bound:.0} tok/s, at {:.0}% of it",
        plain_tps.len(),
        plain_tps.iter().copied().fold(f64::MAX, f64::min),
        plain_tps.iter().copied().fold(0.0, f64::max),
        plain_ttft * 1e3,
        100.0 * plain_median / plain_bound,
    );
    let mut report = json!({
        "model": path.display().to_string(), "prompt_tokens": prompt.len(), "tokens": args.tokens,
        "rounds": args.rounds, "bandwidth_bytes_per_s": bandwidth, "cpus": cpus,
        "plain_loop": {"decode_tps": plain_median, "decode_tps_rounds": plain_tps, "ttft_ms": plain_ttft * 1e3},
    });
    for s in subjects {
        let name = format!("{:?}", s.weights).to_lowercase();
        println!("weights {name}:");
        for (i, &c) in args.concurrency.iter().enumerate() {
            let steps_bound = bandwidth / s.bytes_per_step[i] as f64;
            let runs = &s.runs[i];
            let tps = median(&runs.iter().map(|r| r.decode_tps).collect::<Vec<_>>());
            let ratio = median(&s.ratios[i]);
            let ttft: Vec<f64> = runs.iter().flat_map(|r| r.ttft.iter().copied()).collect();
            let (p50, p95) = (percentile(&ttft, 0.5) * 1e3, percentile(&ttft, 0.95) * 1e3);
            // The plain loop serves concurrent requests one after another.
            let per_request = plain_ttft + (args.tokens - 1) as f64 / plain_median;
            let queued: Vec<f64> = (0..c).map(|i| i as f64 * per_request + plain_ttft).collect();
            let (b50, b95) = (percentile(&queued, 0.5) * 1e3, percentile(&queued, 0.95) * 1e3);
            // The weights are read once per step, whatever the batch.
            let bound = c as f64 * steps_bound;
            let target = TARGETS.iter().find(|(tc, _)| *tc == c).map(|(_, t)| *t);
            let verdict = match target {
                Some(t) if ratio >= t => format!(" target {t}x: met"),
                Some(t) => format!(" target {t}x: MISSED"),
                None => String::new(),
            };
            println!(
                "  c={c:<2} decode {tps:6.1} tok/s = {ratio:5.2}x plain loop{verdict} | {:.0} MB/step, bound {bound:.0} tok/s, at {:.0}% | TTFT p50 {p50:6.0} ms p95 {p95:6.0} ms (plain loop, queued: {b50:.0} / {b95:.0})",
                s.bytes_per_step[i] as f64 / 1e6,
                100.0 * tps / bound,
            );
            report[format!("{name}_c{c}")] = json!({
                "decode_tps": tps, "ratio_to_plain_loop": ratio, "bound_tps": bound,
                "ttft_p50_ms": p50, "ttft_p95_ms": p95,
                "plain_loop_ttft_p50_ms": b50, "plain_loop_ttft_p95_ms": b95,
            });
        }
    }
    report
}
