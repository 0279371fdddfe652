//! `bench-loop`: the closed loop on the development control plane with real SmolLM2
//! workers: a load step with the autoscaler on and off, a slowed worker, a frozen worker, a
//! cold start. One control plane; each scenario runs alone, on a fresh quickstart in a
//! namespace of its own, so none disturbs another's figures.

use std::path::PathBuf;

use anyhow::Context as _;
use blaze_e2e::{DevCluster, Quickstart, Setup, closed_loop as cl};
use clap::Parser;

/// The closed loop's figures.
#[derive(Debug, Parser)]
#[command(name = "bench-loop", about)]
struct Args {
    /// The model cache holding the quickstart's SmolLM2 (default: the workspace's
    /// `.dev/models`, which `make test` fills).
    #[arg(long, env = "BLAZE_TEST_MODELS")]
    models: Option<PathBuf>,
    /// Where blaze, blaze-operator, blaze-worker and blaze-router are (default: beside this
    /// binary).
    #[arg(long, env = "BLAZE_BIN_DIR")]
    bin_dir: Option<PathBuf>,
    /// Clients of the load step.
    #[arg(long, default_value_t = 8)]
    clients: usize,
    /// Seconds of the load step.
    #[arg(long, default_value_t = 40)]
    step_seconds: u64,
    /// Also write the results as JSON to this file.
    #[arg(long, env = "BLAZE_BENCH_OUTPUT")]
    output: Option<PathBuf>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?
        .block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let found = Setup::from_build();
    let setup = match (args.bin_dir, args.models) {
        (None, None) => found?,
        (bin_dir, models) => {
            let found = found.ok();
            let bin_dir = bin_dir.or_else(|| found.as_ref().map(|s| s.bin_dir.clone()));
            let models = models.or_else(|| found.as_ref().map(|s| s.models.clone()));
            Setup::new(bin_dir.context("--bin-dir")?, models.context("--models")?)?
        }
    };
    let cluster = DevCluster::start(&setup, false).await?;
    println!("closed loop on the development control plane (SmolLM2-135M Q4_1, CPU workers)");
    let (n, secs) = (args.clients, args.step_seconds);
    let on =
        cl::load_step(&Quickstart::deploy(&cluster, "bench-step-on").await?, true, n, secs).await?;
    let off = cl::load_step(&Quickstart::deploy(&cluster, "bench-step-off").await?, false, n, secs)
        .await?;
    let s = |v: Option<f64>| v.map_or_else(|| "never".to_owned(), |v| format!("{v:.1} s"));
    println!("load step, {n} clients for {secs} s, autoscaler 1..3 at 2 in flight each:");
    println!("  scale-up decision after      {}", s(on.decision_s));
    println!("  new worker ready after       {}", s(on.ready_s));
    println!("  new worker serving after     {}", s(on.serving_s));
    println!(
        "  back to one worker after     {} (stable window 20 s + delay 20 s)",
        s(on.back_to_min_s)
    );
    println!("  p95 latency, loop on / off   {:.2} s / {:.2} s", on.p95_s, off.p95_s);
    println!(
        "  failed requests, on / off    {} of {} / {} of {}",
        on.failures, on.requests, off.failures, off.requests
    );
    let slow = cl::slow_worker(&Quickstart::deploy(&cluster, "bench-slow").await?).await?;
    println!("slow worker (stopped 0.8 s of every 1 s), 4 streaming clients:");
    println!(
        "  weight {} -> below half after {} (lowest {})",
        slow.before,
        s(slow.shift_s),
        slow.lowest
    );
    println!("  back to half after recovery  {}", s(slow.regain_s));
    println!("  failed requests              {} of {}", slow.failures, slow.requests);
    let frozen =
        cl::frozen_worker(&Quickstart::deploy(&cluster, "bench-frozen").await?, 20).await?;
    println!("frozen worker (SIGSTOP 20 s), 4 clients:");
    println!(
        "  worst request                {:.2} s (median {:.2} s)",
        frozen.worst_s, frozen.normal_s
    );
    println!("  failed requests              {} of {}", frozen.failures, frozen.requests);
    let cold = cl::scale_from_zero(&Quickstart::deploy(&cluster, "bench-cold").await?).await?;
    println!("scale from zero:");
    println!("  idle engine at zero after    {:.1} s", cold.to_zero_s);
    println!(
        "  first token after            {:.2} s (whole answer {:.2} s, ok: {})",
        cold.first_token_s, cold.answer_s, cold.ok
    );
    println!("  held by the router           {}; ColdStart event: {}", cold.held, cold.reported);
    if let Some(path) = args.output {
        let report = serde_json::json!({
            "loadStep": {"decisionSeconds": on.decision_s, "servingSeconds": on.serving_s,
                "backToMinSeconds": on.back_to_min_s, "p95SecondsLoopOn": on.p95_s,
                "p95SecondsLoopOff": off.p95_s},
            "slowWorker": {"before": slow.before, "lowest": slow.lowest,
                "shiftSeconds": slow.shift_s, "regainSeconds": slow.regain_s},
            "frozenWorker": {"worstSeconds": frozen.worst_s, "normalSeconds": frozen.normal_s,
                "failures": frozen.failures},
            "coldStart": {"firstTokenSeconds": cold.first_token_s, "ok": cold.ok},
        });
        std::fs::write(&path, serde_json::to_string_pretty(&report)?)?;
    }
    Ok(())
}
