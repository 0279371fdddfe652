//! Benchmark of the diffusion pipeline's memory options: seconds per image and peak heap
//! with none, each one (attention slicing, VAE slicing, VAE tiling, CPU offload) and all, on
//! the CPU, for a fixed tiny random-weight pipeline (written by `tiny::write` with a fixed
//! seed) or the pipeline folder `--model` names.
//!
//! Every configuration's pipeline is loaded, each runs one request as a warm-up, then they
//! take turns for `--runs` rounds of one timed request each (a shared machine's noise falls
//! on all of them alike); seconds per image is the median request's time over its images.
//! Heap is counted by a counting global allocator ([`blaze_worker::peak_memory`]): "held" is
//! what a loaded pipeline holds between requests (its weights, unless offloaded), "request
//! peak" that plus the most a timed request allocated on top: the heap a process needs to
//! serve the request. Memory mapped from files and the allocator's own slack are not
//! counted.
//!
//! `cargo run --release -p blaze-worker --bin blaze-diffusion-bench -- [--model DIR]
//! [--size N] [--images N] [--steps N] [--runs N] [--output FILE]`

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use blaze_worker::model::diffusion::tiny::{self, Variant};
use blaze_worker::model::diffusion::{DiffusionModel, ImageSpec, MemoryOptions};
use blaze_worker::peak_memory::Counting;
use candle_core::{DType, Device};
use clap::Parser;
use serde_json::json;

#[global_allocator]
static HEAP: Counting = Counting::new();

/// The seed of the tiny pipeline's weights: fixed, so every run measures the same pipeline.
const TINY_SEED: u64 = 7;

const MIB: f64 = 1024.0 * 1024.0;

/// Benchmark settings.
#[derive(Debug, Parser)]
struct Args {
    /// A pipeline folder in the diffusers layout (default: a tiny random-weight pipeline of
    /// `--variant`, written into a temporary folder).
    #[arg(long, env = "BLAZE_BENCH_MODEL")]
    model: Option<PathBuf>,
    /// The tiny pipeline written when `--model` is not given: sd, sdxl or turbo.
    #[arg(long, env = "BLAZE_BENCH_VARIANT", default_value = "sd")]
    variant: Variant,
    /// Image width and height in pixels. The default is twice the tiny autoencoder's
    /// trained size, so tiling has tiles to decode.
    #[arg(long, env = "BLAZE_BENCH_SIZE", default_value_t = 256)]
    size: usize,
    /// Images per request (one batch), so that VAE slicing has images to slice.
    #[arg(long, env = "BLAZE_BENCH_IMAGES", default_value_t = 2)]
    images: usize,
    /// Denoising steps per image.
    #[arg(long, env = "BLAZE_BENCH_STEPS", default_value_t = 10)]
    steps: usize,
    /// Guidance scale (default: the pipeline's; 7.5 for SD, a UNet batch twice the images).
    #[arg(long, env = "BLAZE_BENCH_GUIDANCE")]
    guidance: Option<f64>,
    /// Timed requests per configuration, after one warm-up request.
    #[arg(long, env = "BLAZE_BENCH_RUNS", default_value_t = 3)]
    runs: usize,
    /// Threads candle computes with. One by default, as blaze-worker-bench: the development
    /// machines are shared, and more threads than free CPUs turn the figures into noise.
    #[arg(long, env = "BLAZE_THREADS", default_value_t = 1)]
    threads: usize,
    /// Where to write the figures as JSON.
    #[arg(long, env = "BLAZE_BENCH_OUTPUT")]
    output: Option<PathBuf>,
}

/// The configurations measured, in order.
fn configurations() -> Vec<(&'static str, MemoryOptions)> {
    let none = MemoryOptions::default();
    vec![
        ("none", none),
        ("attention slicing", MemoryOptions { attention_slicing: true, ..none }),
        ("VAE slicing", MemoryOptions { vae_slicing: true, ..none }),
        ("VAE tiling", MemoryOptions { vae_tiling: true, ..none }),
        ("CPU offload", MemoryOptions { cpu_offload: true, ..none }),
        (
            "all",
            MemoryOptions {
                attention_slicing: true,
                vae_slicing: true,
                vae_tiling: true,
                cpu_offload: true,
            },
        ),
    ]
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(args.runs >= 1, "--runs must be at least 1");
    anyhow::ensure!(args.images >= 1, "--images must be at least 1");
    anyhow::ensure!(args.steps >= 1, "--steps must be at least 1");
    // SAFETY: no other thread exists yet.
    #[allow(unsafe_code)]
    unsafe {
        blaze_worker::threads::configure(Some(args.threads));
    }
    let written = match &args.model {
        Some(_) => None,
        None => {
            let dir =
                std::env::temp_dir().join(format!("blaze-diffusion-bench-{}", std::process::id()));
            tiny::write(&dir, args.variant, TINY_SEED).context("writing the tiny pipeline")?;
            Some(dir)
        }
    };
    let result = run(&args, args.model.as_deref().or(written.as_deref()).context("a model")?);
    if let Some(dir) = written {
        let _ = std::fs::remove_dir_all(dir);
    }
    result
}

fn run(args: &Args, dir: &Path) -> anyhow::Result<()> {
    let mut configs = Vec::new();
    for (name, options) in configurations() {
        let before = HEAP.current();
        let model = DiffusionModel::load(dir, &Device::Cpu, DType::F32, options)?;
        let held = HEAP.current().saturating_sub(before);
        configs.push(Config { name, model, held, seconds: Vec::new(), peak: 0 });
    }
    let guidance = args.guidance.unwrap_or_else(|| configs[0].model.default_guidance());
    let specs: Vec<ImageSpec> = (0..args.images)
        .map(|i| ImageSpec {
            prompt: "a lighthouse on a cliff at dusk".into(),
            negative_prompt: String::new(),
            width: args.size,
            height: args.size,
            steps: args.steps,
            guidance_scale: guidance,
            seed: i as u64,
        })
        .collect();
    let model_name = match &args.model {
        Some(dir) => dir.display().to_string(),
        None => {
            let variant = match args.variant {
                Variant::Sd => "SD",
                Variant::Sdxl => "SDXL",
                Variant::Turbo => "SDXL-Turbo",
            };
            format!("tiny random-weight {variant} pipeline (seed {TINY_SEED})")
        }
    };
    let threads = std::env::var("RAYON_NUM_THREADS").unwrap_or_default();
    println!(
        "{model_name}, CPU, f32, threads {threads}: {size}x{size}, {images} images per request, \
         {steps} steps, guidance {guidance}; median of {runs} requests after a warm-up",
        size = args.size,
        images = args.images,
        steps = args.steps,
        runs = args.runs,
    );
    // The warm-up also makes what the first request allocates for good (thread pools, kernel
    // scratch space), so that no timed request's peak carries it.
    for round in 0..=args.runs {
        for c in &mut configs {
            c.request(&specs, round > 0)?;
        }
    }
    println!("{:<18} {:>10} {:>16} {:>12}", "memory options", "s/image", "request peak", "held");
    let mut rows = Vec::new();
    for c in &mut configs {
        c.seconds.sort_by(f64::total_cmp);
        let per_image = c.seconds[c.seconds.len() / 2] / specs.len() as f64;
        let peak = c.held + c.peak;
        let (name, held) = (c.name, c.held);
        println!(
            "{name:<18} {per_image:>10.3} {:>12.2} MiB {:>8.2} MiB",
            peak as f64 / MIB,
            held as f64 / MIB
        );
        rows.push(json!({
            "options": name,
            "seconds_per_image": per_image,
            "request_peak_bytes": peak,
            "held_bytes": held,
        }));
    }
    if let Some(out) = &args.output {
        let report = json!({
            "model": model_name,
            "device": "cpu",
            "threads": threads,
            "size": args.size,
            "images": args.images,
            "steps": args.steps,
            "guidance": guidance,
            "runs": args.runs,
            "configurations": rows,
        });
        std::fs::write(out, serde_json::to_vec_pretty(&report)?)
            .with_context(|| format!("writing {}", out.display()))?;
        println!("wrote {}", out.display());
    }
    Ok(())
}

/// A loaded configuration and its figures so far.
struct Config {
    name: &'static str,
    model: DiffusionModel,
    /// Bytes the loaded pipeline holds between requests.
    held: usize,
    /// Each timed request's seconds.
    seconds: Vec<f64>,
    /// The most a timed request allocated above what was allocated when it started.
    peak: usize,
}

impl Config {
    /// Runs one request; `timed` ones count.
    fn request(&mut self, specs: &[ImageSpec], timed: bool) -> anyhow::Result<()> {
        let started = Instant::now();
        let (images, peak) = HEAP.peak_during(|| self.model.generate(specs));
        let seconds = started.elapsed().as_secs_f64();
        let images = images?;
        anyhow::ensure!(images.len() == specs.len(), "{}: {} images back", self.name, images.len());
        if timed {
            self.seconds.push(seconds);
            self.peak = self.peak.max(peak);
        }
        Ok(())
    }
}
