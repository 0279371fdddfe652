//! Benchmark of the caches: the time to first token of prompts sharing a long prefix with the
//! prefix cache and without, the latency of a response-cache hit at each level (memory,
//! disk, Redis), and the throughput of a workload in which some prompts repeat, with the
//! response cache and without.
//!
//! Starts the `blaze-worker` binary built beside this one (release: `cargo build --release
//! -p blaze-worker`) with SmolLM2 (`scripts/fetch-models.sh`) once per configuration, on
//! loopback; for the Redis level, a `redis-server` (Debian's package) on a free port. A hit's
//! latency is the client's round trip: request written, whole answer read.
//!
//! `cargo run --release -p blaze-worker --bin blaze-cache-bench -- [--only prefix|levels|workload]
//! [--prefix-words N] [--hits N] [--requests N]`

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use serde_json::{Value, json};

/// Benchmark settings.
#[derive(Debug, Parser)]
struct Args {
    /// The model (default: the SmolLM2 GGUF in .dev/models).
    #[arg(long, env = "BLAZE_BENCH_MODEL")]
    model: Option<PathBuf>,
    /// Hits measured per level.
    #[arg(long, default_value_t = 300)]
    hits: usize,
    /// Requests of the repeating workload.
    #[arg(long, default_value_t = 60)]
    requests: usize,
    /// Share of the workload's requests that repeat an earlier prompt, in percent.
    #[arg(long, default_value_t = 30)]
    repeat_percent: usize,
    /// Concurrent clients of the workload.
    #[arg(long, default_value_t = 4)]
    clients: usize,
    /// Tokens generated per workload request.
    #[arg(long, default_value_t = 16)]
    tokens: usize,
    /// Words of the shared prefix (about one token each with SmolLM2's tokenizer).
    #[arg(long, default_value_t = 1000)]
    prefix_words: usize,
    /// Prompts sharing the prefix, per configuration.
    #[arg(long, default_value_t = 6)]
    prefix_prompts: usize,
    /// One part only.
    #[arg(long, value_parser = ["prefix", "levels", "workload"])]
    only: Option<String>,
}

/// A prompt of the prefix part: the shared text, then a question of its own.
fn prefixed(prefix: &str, i: usize) -> Value {
    let prompt = format!("{prefix}\nQuestion {i}: which word came first?");
    json!({"prompt": prompt, "max_tokens": 1, "temperature": 0, "stream": true})
}

/// Milliseconds from sending a streamed completion to its first event, and the prompt's
/// tokens (from a second, non-streamed request only when `count` is set).
async fn first_token(client: &reqwest::Client, base: &str, body: &Value) -> anyhow::Result<f64> {
    let started = Instant::now();
    let mut r = client.post(format!("{base}/v1/completions")).json(body).send().await?;
    if !r.status().is_success() {
        bail!("{}: {}", r.status(), r.text().await?);
    }
    let mut seen = Vec::new();
    while let Some(chunk) = r.chunk().await? {
        seen.extend_from_slice(&chunk);
        if seen.windows(5).any(|w| w == b"data:") {
            let ms = started.elapsed().as_secs_f64() * 1e3;
            while r.chunk().await?.is_some() {}
            return Ok(ms);
        }
    }
    bail!("the stream ended without an event")
}

/// Median time to first token of `prompts` prompts sharing a `words`-word prefix, on a
/// worker without the prefix cache and on one with it (whose first prompt fills it), and
/// the prompts' length in tokens.
async fn prefix_ttft(bin: &Path, model: &Path, a: &Args) -> anyhow::Result<()> {
    let vocabulary = ["river", "stone", "lamp", "orbit", "cedar", "quartz", "meadow", "signal"];
    let prefix: Vec<&str> = (0..a.prefix_words).map(|i| vocabulary[(i * 7 + i / 8) % 8]).collect();
    let prefix = prefix.join(" ");
    let client = reqwest::Client::new();
    let mut medians = Vec::new();
    for (name, args) in [
        ("cold prefill", vec![]),
        ("prefix reuse", vec!["--prefix-cache-bytes".to_owned(), (256u64 << 20).to_string()]),
    ] {
        let (_w, base) = worker(bin, model, &args).await?;
        let mut count = prefixed(&prefix, 0);
        count["stream"] = json!(false);
        let r: Value =
            client.post(format!("{base}/v1/completions")).json(&count).send().await?.json().await?;
        let tokens = r["usage"]["prompt_tokens"].as_u64().context("usage.prompt_tokens")?;
        let mut ms = Vec::new();
        for i in 1..=a.prefix_prompts {
            ms.push(first_token(&client, &base, &prefixed(&prefix, i)).await?);
        }
        let shown: Vec<String> = ms.iter().map(|m| format!("{m:.0}")).collect();
        ms.sort_by(f64::total_cmp);
        let median = ms[ms.len() / 2];
        println!(
            "prefix {tokens}-token prompts, {name:<12}: time to first token median {median:.1} ms \
             (each: {} ms)",
            shown.join(", ")
        );
        medians.push(median);
    }
    println!("prefix reuse / cold prefill: {:.1}x faster", medians[0] / medians[1]);
    Ok(())
}

struct Kill(Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A worker with `cache_args`, ready.
async fn worker(bin: &Path, model: &Path, cache_args: &[String]) -> anyhow::Result<(Kill, String)> {
    let port = free_port()?;
    let child = Command::new(bin)
        .arg("--model")
        .arg(model)
        .args(["--listen", &format!("127.0.0.1:{port}"), "--served-model-name", "m"])
        .args(cache_args)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let child = Kill(child);
    let base = format!("http://127.0.0.1:{port}");
    let started = Instant::now();
    loop {
        if let Ok(r) = reqwest::get(format!("{base}/readyz")).await
            && r.status() == 200
        {
            return Ok((child, base));
        }
        if started.elapsed() > Duration::from_secs(120) {
            bail!("the worker was not ready within 120 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn request(prompt: &str, tokens: usize) -> Value {
    json!({"messages": [{"role": "user", "content": prompt}], "max_tokens": tokens, "temperature": 0})
}

async fn post(client: &reqwest::Client, base: &str, body: &Value) -> anyhow::Result<()> {
    let r = client.post(format!("{base}/v1/chat/completions")).json(body).send().await?;
    let status = r.status();
    let bytes = r.bytes().await?;
    if !status.is_success() {
        bail!("{status}: {}", String::from_utf8_lossy(&bytes));
    }
    Ok(())
}

/// p50 and p99 of `n` hits of one primed request, in milliseconds.
async fn hit_latency(base: &str, n: usize) -> anyhow::Result<(f64, f64)> {
    let client = reqwest::Client::new();
    let body = request("What is the capital of France?", 16);
    post(&client, base, &body).await?;
    // The disk and Redis levels are written in the background.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut ms = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        post(&client, base, &body).await?;
        ms.push(t.elapsed().as_secs_f64() * 1e3);
    }
    ms.sort_by(f64::total_cmp);
    Ok((ms[n / 2], ms[(n * 99 / 100).min(n - 1)]))
}

/// Requests per second of the repeating workload.
async fn workload(base: &str, a: &Args) -> anyhow::Result<(f64, usize)> {
    // `repeat_percent` of the requests repeat the prompt sent `2 * clients` requests
    // earlier (answered by then, as a repeat in a real workload mostly is); the others are
    // distinct. A run tag keeps runs from sharing answers.
    let tag = std::process::id() ^ Instant::now().elapsed().subsec_nanos();
    let lag = 2 * a.clients;
    let mut prompts: Vec<String> = Vec::new();
    for i in 0..a.requests {
        let due = (i + 1) * a.repeat_percent / 100 != i * a.repeat_percent / 100;
        prompts.push(if due && i >= lag {
            prompts[i - lag].clone()
        } else {
            format!("Run {tag}, question {i}: name a colour.")
        });
    }
    let repeats = prompts.iter().enumerate().filter(|(i, p)| prompts[..*i].contains(p)).count();
    // Taken from the end: reversed, so requests go out in order.
    prompts.reverse();
    let queue = std::sync::Arc::new(parking_lot::Mutex::new(prompts));
    let started = Instant::now();
    let mut clients = Vec::new();
    for _ in 0..a.clients {
        let (queue, base, tokens) = (queue.clone(), base.to_owned(), a.tokens);
        clients.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            loop {
                let next = queue.lock().pop();
                let Some(prompt) = next else { return anyhow::Ok(()) };
                post(&client, &base, &request(&prompt, tokens)).await?;
            }
        }));
    }
    for c in clients {
        c.await??;
    }
    Ok((a.requests as f64 / started.elapsed().as_secs_f64(), repeats))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    let bin = std::env::current_exe()?.parent().context("binary folder")?.join("blaze-worker");
    let model = a.model.clone().unwrap_or_else(|| {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../.dev/models/SmolLM2-135M-Instruct.Q4_1.gguf")
    });
    let disk = std::env::temp_dir().join(format!("blaze-cache-bench-{}", std::process::id()));
    std::fs::create_dir_all(&disk)?;
    let redis_port = free_port()?;
    let redis = Command::new("redis-server")
        .args(["--port", &redis_port.to_string(), "--save", "", "--appendonly", "no"])
        .stdout(Stdio::null())
        .spawn()
        .context("starting redis-server (apt-get install -y redis-server)")?;
    let _redis = Kill(redis);
    let mib = (64u64 << 20).to_string();
    let levels: [(&str, Vec<String>); 3] = [
        ("memory (L1)", vec!["--response-cache-memory-bytes".into(), mib.clone()]),
        (
            "disk (L2)",
            vec![
                "--response-cache-disk-bytes".into(),
                mib.clone(),
                "--response-cache-dir".into(),
                disk.display().to_string(),
            ],
        ),
        ("redis (L3)", vec!["--response-cache-redis".into(), format!("127.0.0.1:{redis_port}")]),
    ];
    println!("model {}, loopback", model.display());
    let run = |part: &str| a.only.as_deref().is_none_or(|only| only == part);
    if run("prefix") {
        prefix_ttft(&bin, &model, &a).await?;
    }
    if run("levels") {
        println!("{} hits per level", a.hits);
    }
    for (name, args) in levels.iter().filter(|_| run("levels")) {
        let (_w, base) = worker(&bin, &model, args).await?;
        let (p50, p99) = hit_latency(&base, a.hits).await?;
        println!("{name:<12} hit: p50 {p50:.3} ms, p99 {p99:.3} ms");
    }
    let mut rates = Vec::new();
    let workloads = [("without cache", vec![]), ("with cache", levels[0].1.clone())];
    for (name, args) in workloads.into_iter().filter(|_| run("workload")) {
        let (_w, base) = worker(&bin, &model, &args).await?;
        let (rate, repeats) = workload(&base, &a).await?;
        println!(
            "{} requests ({repeats} repeating an earlier one), {} clients, {} tokens: {name}: \
             {rate:.2} req/s",
            a.requests, a.clients, a.tokens
        );
        rates.push(rate);
    }
    if let [without, with] = rates[..] {
        println!("with / without: {:.2}x", with / without);
    }
    let _ = std::fs::remove_dir_all(&disk);
    Ok(())
}
