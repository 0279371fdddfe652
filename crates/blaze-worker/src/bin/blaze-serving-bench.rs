//! Benchmark of the worker as a server beside llama.cpp's `llama-server`: the same GGUF, the
//! same threads, the same client and prompts, over HTTP on loopback. For one client and for
//! `--clients` concurrent clients it prints decode tokens/s (all clients' tokens over the
//! wall time from the first request to the last answer) and time to first token; then one
//! client again with a CPU-bound neighbour process running. Servers alternate in every round
//! (the order flips each round) and the figures are medians over rounds, so a noisy machine
//! hurts both alike.
//!
//! `llama-server` comes from `scripts/llama-server.sh` (built from llama.cpp's source on
//! PyPI) or `--llama-server PATH` / `LLAMA_SERVER`.
//!
//! With `--server URL` it measures that running server alone at each of `--streams`
//! concurrent streams, after one request's time to first token (`scripts/gpu-bench.sh`).
//!
//! `cargo run --release -p blaze-worker --bin blaze-serving-bench -- [--threads N] [--rounds N]`

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use serde_json::json;

/// Benchmark settings.
#[derive(Debug, Parser)]
struct Args {
    /// The GGUF both servers load (default: the SmolLM2 test model).
    #[arg(long, env = "BLAZE_BENCH_MODEL")]
    model: Option<PathBuf>,
    /// llama.cpp's server binary (default: scripts/llama-server.sh's build).
    #[arg(long, env = "LLAMA_SERVER")]
    llama_server: Option<PathBuf>,
    /// Threads each server computes with.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Tokens each request asks for.
    #[arg(long, default_value_t = 64)]
    tokens: usize,
    /// Concurrent clients of the loaded case.
    #[arg(long, default_value_t = 16)]
    clients: usize,
    /// Rounds; figures are medians over them.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Measure only this already running server (a base URL such as
    /// `http://127.0.0.1:8080`), at each of `--streams`, instead of starting both servers:
    /// the GPU benchmark (`scripts/gpu-bench.sh`).
    #[arg(long)]
    server: Option<String>,
    /// Concurrent streams to measure `--server` at.
    #[arg(long, value_delimiter = ',', default_value = "1,16,64", requires = "server")]
    streams: Vec<usize>,
}

struct Kill(Vec<Child>);
impl Drop for Kill {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Server {
    Blaze,
    LlamaCpp,
}

impl Server {
    fn name(self) -> &'static str {
        match self {
            Server::Blaze => "blaze",
            Server::LlamaCpp => "llama.cpp",
        }
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Starts `server` and waits until it answers a completion.
async fn start(
    server: Server,
    a: &Args,
    model: &Path,
    llama: &Path,
) -> anyhow::Result<(Kill, String)> {
    let port = free_port()?;
    let threads = a.threads.to_string();
    let mut command = match server {
        Server::Blaze => {
            let bin =
                std::env::current_exe()?.parent().context("binary folder")?.join("blaze-worker");
            let mut c = Command::new(bin);
            c.arg("--model").arg(model);
            c.args(["--listen", &format!("127.0.0.1:{port}"), "--threads", &threads]);
            c.args(["--max-batch-size", &a.clients.max(1).to_string()]);
            c.env("RUST_LOG", "warn");
            c
        }
        Server::LlamaCpp => {
            let mut c = Command::new(llama);
            c.arg("-m").arg(model);
            c.args(["--host", "127.0.0.1", "--port", &port.to_string()]);
            c.args(["-t", &threads, "-tb", &threads]);
            // One slot per client, each with room for a prompt and the answer.
            let slots = a.clients.max(1);
            c.args(["-np", &slots.to_string(), "-c", &(slots * 1024).to_string()]);
            c.args(["--log-disable"]);
            c
        }
    };
    let child = command
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {}", server.name()))?;
    let guard = Kill(vec![child]);
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let started = Instant::now();
    loop {
        let body = json!({"prompt": "Hello", "max_tokens": 2, "temperature": 0});
        if let Ok(r) = client.post(format!("{base}/v1/completions")).json(&body).send().await
            && r.status().is_success()
        {
            return Ok((guard, base));
        }
        if started.elapsed() > Duration::from_secs(180) {
            bail!("{} did not answer within 180 s", server.name());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// One streamed completion: time to its first token and tokens received.
async fn one(
    client: &reqwest::Client,
    base: &str,
    prompt: String,
    tokens: usize,
) -> anyhow::Result<(Duration, usize)> {
    let body = json!({
        "prompt": prompt, "max_tokens": tokens, "temperature": 0, "stream": true,
        "ignore_eos": true,
    });
    let started = Instant::now();
    let mut r = client.post(format!("{base}/v1/completions")).json(&body).send().await?;
    if !r.status().is_success() {
        bail!("{}: {}", r.status(), r.text().await?);
    }
    let (mut first, mut count, mut line) = (None, 0, Vec::new());
    while let Some(chunk) = r.chunk().await? {
        for &b in chunk.iter() {
            if b != b'\n' {
                line.push(b);
                continue;
            }
            if line.starts_with(b"data:")
                && !line.ends_with(b"[DONE]")
                && line.windows(7).any(|w| w == b"\"text\":")
            {
                first.get_or_insert_with(|| started.elapsed());
                count += 1;
            }
            line.clear();
        }
    }
    Ok((first.context("no token")?, count))
}

/// `clients` concurrent requests: tokens/s over the wall time and the median TTFT.
async fn load(
    base: &str,
    clients: usize,
    tokens: usize,
    round: usize,
) -> anyhow::Result<(f64, f64, usize)> {
    let client = reqwest::Client::new();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..clients {
        let (client, base) = (client.clone(), base.to_owned());
        let prompt = format!("Round {round}, client {i}. Count from one to one hundred in words:");
        tasks.push(tokio::spawn(async move { one(&client, &base, prompt, tokens).await }));
    }
    let mut ttft = Vec::new();
    let mut total = 0;
    for t in tasks {
        let (first, n) = t.await??;
        ttft.push(first.as_secs_f64() * 1e3);
        total += n;
    }
    let rate = total as f64 / started.elapsed().as_secs_f64();
    Ok((rate, median(&mut ttft), total))
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// A process that keeps one CPU busy until dropped.
fn neighbour() -> anyhow::Result<Kill> {
    let child = Command::new("sh").args(["-c", "while :; do :; done"]).spawn()?;
    Ok(Kill(vec![child]))
}

/// Measures the running server at `base`: first one request's time to first token (the
/// first request since the server reported ready, when nothing else has used it), then
/// tokens/s and TTFT at each stream count, the median of `rounds`.
async fn running(base: &str, a: &Args) -> anyhow::Result<()> {
    let client = reqwest::Client::new();
    let prompt = "The first request after ready:".to_owned();
    let (first, _) = one(&client, base, prompt, a.tokens.min(8)).await?;
    println!("{base}, {} tokens per request, {} rounds (medians)", a.tokens, a.rounds);
    println!("first request: TTFT {:.1} ms", first.as_secs_f64() * 1e3);
    println!("streams      tok/s   TTFT p50");
    for &streams in &a.streams {
        let (mut rates, mut ttfts) = (Vec::new(), Vec::new());
        for round in 0..a.rounds.max(1) {
            let (rate, ttft, _) = load(base, streams, a.tokens, round).await?;
            rates.push(rate);
            ttfts.push(ttft);
        }
        let (rate, ttft) = (median(&mut rates), median(&mut ttfts));
        println!("{streams:>7} {rate:>10.1} {ttft:>8.1} ms");
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    if let Some(base) = &a.server {
        return running(base.trim_end_matches('/'), &a).await;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let model =
        a.model.clone().unwrap_or_else(|| root.join(".dev/models/SmolLM2-135M-Instruct.Q4_1.gguf"));
    let llama = a
        .llama_server
        .clone()
        .unwrap_or_else(|| root.join(".dev/llama.cpp/build/bin/llama-server"));
    if !llama.exists() {
        bail!(
            "{} is missing: run scripts/llama-server.sh (or pass --llama-server)",
            llama.display()
        );
    }
    println!(
        "model {}, {} threads each, {} tokens per request, {} rounds (medians)",
        model.display(),
        a.threads,
        a.tokens,
        a.rounds
    );
    // [server][case] -> per-round (tokens/s, ttft ms)
    let cases = ["1 client", "clients", "1 client + busy neighbour"];
    let mut figures = vec![vec![Vec::new(); cases.len()]; 2];
    for round in 0..a.rounds {
        let order = if round % 2 == 0 {
            [Server::Blaze, Server::LlamaCpp]
        } else {
            [Server::LlamaCpp, Server::Blaze]
        };
        for server in order {
            let s = server as usize;
            let (_guard, base) = start(server, &a, &model, &llama).await?;
            let one_client = load(&base, 1, a.tokens, round).await?;
            let many = load(&base, a.clients, a.tokens, round).await?;
            let busy = {
                let _n = neighbour()?;
                load(&base, 1, a.tokens, round).await?
            };
            for (case, (rate, ttft, n)) in [one_client, many, busy].into_iter().enumerate() {
                println!(
                    "round {round} {:<9} {:<26} {rate:>7.1} tok/s  TTFT p50 {ttft:>7.1} ms  ({n} tokens)",
                    server.name(),
                    cases[case].replace("clients", &format!("{} clients", a.clients)),
                );
                figures[s][case].push((rate, ttft));
            }
        }
    }
    println!(
        "\nmedians              blaze tok/s  llama.cpp tok/s  ratio  blaze TTFT  llama.cpp TTFT"
    );
    for (case, name) in cases.iter().enumerate() {
        let pick = |s: usize, f: fn(&(f64, f64)) -> f64| {
            let mut v: Vec<f64> = figures[s][case].iter().map(f).collect();
            median(&mut v)
        };
        let (br, lr) = (pick(0, |x| x.0), pick(1, |x| x.0));
        let (bt, lt) = (pick(0, |x| x.1), pick(1, |x| x.1));
        let name = name.replace("clients", &format!("{} clients", a.clients));
        println!("{name:<26} {br:>7.1} {lr:>16.1} {:>6.2}x {bt:>8.1} ms {lt:>11.1} ms", br / lr);
    }
    Ok(())
}
