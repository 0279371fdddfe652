//! `blaze-worker-bench --mode embeddings`: embeddings/s of all-MiniLM-L6-v2 through the
//! worker's embedding engine at batch sizes 1, 8 and 32 (tokenization included), and the
//! reference implementation (sentence-transformers on PyTorch, scripts/reference-embeddings.py
//! in the environment scripts/reference-venv.sh makes) on the same inputs with the same
//! number of threads, when that environment is there.
//!
//! Both sides sort a batch's inputs by length (sentence-transformers' `encode` does too), so
//! they pad alike; each figure is the median of `--rounds` passes over every input, the two
//! sides' passes interleaved, and a ratio the median of the rounds' ratios.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::Instant;

use anyhow::Context;
use blaze_worker::engine::embedding::{
    EmbedRequest, EmbeddingConfig, EmbeddingEngine, EmbeddingMetrics,
};
use blaze_worker::metrics::Metrics;
use candle_core::{DType, Device};
use serde_json::json;

/// Inputs per pass: enough for eight full batches of 32.
const INPUTS: usize = 256;
/// The batch size whose throughput must at least match the reference's.
const TARGET_BATCH: usize = 32;

/// Sentences of 4 to 99 words from a fixed word list, the same on every run.
pub fn inputs() -> Vec<String> {
    const WORDS: &[&str] = &[
        "the",
        "lighthouse",
        "keeper",
        "climbed",
        "stairs",
        "every",
        "evening",
        "to",
        "light",
        "great",
        "lamp",
        "while",
        "storms",
        "rolled",
        "over",
        "grey",
        "sea",
        "and",
        "ships",
        "searched",
        "dark",
        "horizon",
        "for",
        "beam",
        "that",
        "guided",
        "them",
        "past",
        "rocks",
        "into",
        "quiet",
        "harbour",
        "of",
        "old",
        "town",
        "where",
        "fishermen",
        "mended",
        "nets",
        "children",
        "played",
        "on",
        "wet",
        "sand",
        "gulls",
        "cried",
        "above",
        "boats",
    ];
    (0..INPUTS)
        .map(|i| {
            let words = 4 + (i * 37) % 96;
            (0..words).map(|k| WORDS[(i * 7 + k * 3) % WORDS.len()]).collect::<Vec<_>>().join(" ")
        })
        .collect()
}

/// What the embeddings mode measured.
pub struct Figures {
    /// One row per batch size.
    pub rows: Vec<Row>,
}

/// The figures of one batch size.
pub struct Row {
    /// Inputs per forward pass.
    pub batch: usize,
    /// Embeddings/s of the worker's engine.
    pub ours: f64,
    /// Embeddings/s of the reference and the median of the rounds' ratios, if it ran.
    pub reference: Option<(f64, f64)>,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Runs the embeddings benchmark over `model` with `threads` compute threads: in each
/// round, at each batch size, a pass of the worker's engine and then one of the reference,
/// so that each comparison is between neighbours on a machine whose load drifts.
pub async fn run(
    model: Option<PathBuf>,
    batches: &[usize],
    rounds: usize,
    threads: usize,
    output: Option<&Path>,
) -> anyhow::Result<Figures> {
    let path = model.unwrap_or_else(blaze_worker::testing::minilm);
    let texts = inputs();
    let mut engines = Vec::new();
    for &batch in batches {
        let model = blaze_worker::model::embedding::load(&path, &Device::Cpu, DType::F32)?;
        let mut registry = prometheus_client::registry::Registry::default();
        let (metrics, own) =
            (Metrics::register(&mut registry), EmbeddingMetrics::register(&mut registry));
        let config = EmbeddingConfig {
            max_batch_size: batch,
            // Only the input count cuts batches, as `batch_size` does for the reference.
            max_batch_tokens: batch * model.max_tokens(),
            max_wait: std::time::Duration::ZERO,
            ..Default::default()
        };
        let engine = EmbeddingEngine::start(format!("b{batch}"), model, config, metrics, own);
        pass(&engine, &texts[..32]).await?; // warm-up
        engines.push(engine);
    }
    let tokens = {
        let lengths = texts.iter().map(|t| engines[0].tokenize(t, true).map(|ids| ids.len()));
        lengths.collect::<Result<Vec<_>, _>>().map_err(anyhow::Error::from)?
    };
    let span =
        (tokens.iter().min().copied().unwrap_or(0), tokens.iter().max().copied().unwrap_or(0));
    let mut reference = match Reference::start(&path, &texts, threads) {
        Ok(r) => Some(r),
        Err(e) => {
            println!("reference implementation not measured: {e:#}");
            None
        }
    };
    let mut ours = vec![Vec::new(); batches.len()];
    let mut theirs = vec![Vec::new(); batches.len()];
    for _ in 0..rounds {
        for (i, (&batch, engine)) in batches.iter().zip(&engines).enumerate() {
            let started = Instant::now();
            pass(engine, &texts).await?;
            ours[i].push(texts.len() as f64 / started.elapsed().as_secs_f64());
            if let Some(r) = reference.as_mut() {
                theirs[i].push(r.pass(batch)?);
            }
        }
    }
    let rows = batches
        .iter()
        .enumerate()
        .map(|(i, &batch)| {
            let ratios = ours[i].iter().zip(&theirs[i]).map(|(o, t)| o / t).collect::<Vec<_>>();
            let reference =
                (!theirs[i].is_empty()).then(|| (median(theirs[i].clone()), median(ratios)));
            Row { batch, ours: median(ours[i].clone()), reference }
        })
        .collect();
    let figures = Figures { rows };
    report(&path, span, &figures, rounds, threads, output)?;
    Ok(figures)
}

/// Tokenizes and embeds every text through `engine`, as a `/v1/embeddings` request does.
async fn pass(engine: &EmbeddingEngine, texts: &[String]) -> anyhow::Result<()> {
    let inputs = texts
        .iter()
        .map(|t| engine.tokenize(t, true))
        .collect::<Result<Vec<_>, _>>()
        .map_err(anyhow::Error::from)?;
    let request = EmbedRequest { inputs, truncate: true, dimensions: None };
    let vectors = engine.embed(request).await.map_err(anyhow::Error::from)?.vectors;
    anyhow::ensure!(
        vectors.len() == texts.len(),
        "{} vectors for {} texts",
        vectors.len(),
        texts.len()
    );
    Ok(())
}

/// scripts/reference-embeddings.py's bench mode, running beside us: a batch size written to
/// it is answered by one timed pass over the inputs.
struct Reference {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    inputs: PathBuf,
}

impl Reference {
    fn start(model: &Path, texts: &[String], threads: usize) -> anyhow::Result<Self> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let python = std::env::var_os("BLAZE_REFERENCE_PYTHON")
            .map(PathBuf::from)
            .unwrap_or_else(|| root.join(".dev/reference-venv/bin/python"));
        anyhow::ensure!(
            python.is_file(),
            "no {} (run scripts/reference-venv.sh)",
            python.display()
        );
        let inputs =
            std::env::temp_dir().join(format!("blaze-bench-inputs-{}.json", std::process::id()));
        std::fs::write(&inputs, serde_json::to_vec(texts)?)?;
        let mut child = Command::new(&python)
            .arg(root.join("scripts/reference-embeddings.py"))
            .args(["bench", "--model"])
            .arg(model)
            .arg("--inputs")
            .arg(&inputs)
            .args(["--threads", &threads.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("running scripts/reference-embeddings.py")?;
        let stdin = child.stdin.take().context("its standard input")?;
        let stdout = BufReader::new(child.stdout.take().context("its standard output")?);
        let mut reference = Self { child, stdin, stdout, inputs };
        reference.answer().context("scripts/reference-embeddings.py did not start")?;
        Ok(reference)
    }

    fn pass(&mut self, batch: usize) -> anyhow::Result<f64> {
        writeln!(self.stdin, "{batch}")?;
        let answer = self.answer()?;
        answer["embeddings_per_s"].as_f64().context("no embeddings_per_s")
    }

    fn answer(&mut self) -> anyhow::Result<serde_json::Value> {
        let mut line = String::new();
        anyhow::ensure!(self.stdout.read_line(&mut line)? > 0, "it exited");
        Ok(serde_json::from_str(&line)?)
    }
}

impl Drop for Reference {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.inputs);
    }
}

fn report(
    model: &Path,
    (shortest, longest): (usize, usize),
    figures: &Figures,
    rounds: usize,
    threads: usize,
    output: Option<&Path>,
) -> anyhow::Result<()> {
    println!(
        "embeddings: {} | {INPUTS} inputs of {shortest} to {longest} tokens | {threads} thread(s) | median of {rounds} rounds",
        model.display()
    );
    println!("  batch | blaze-worker emb/s | sentence-transformers (torch) emb/s | ratio");
    let mut rows = Vec::new();
    for &Row { batch, ours, reference } in &figures.rows {
        let (theirs_text, ratio_text) = match reference {
            Some((t, ratio)) => (format!("{t:10.1}"), format!("{ratio:5.2}x")),
            None => ("         -".to_owned(), "    -".to_owned()),
        };
        let verdict = match reference {
            Some((_, r)) if batch == TARGET_BATCH && r >= 1.0 => " target (>= reference): met",
            Some(_) if batch == TARGET_BATCH => " target (>= reference): MISSED",
            _ => "",
        };
        println!("  {batch:5} | {ours:18.1} | {theirs_text:>35} | {ratio_text}{verdict}");
        let (theirs, ratio) = (reference.map(|r| r.0), reference.map(|r| r.1));
        rows.push(json!({
            "batch": batch, "embeddings_per_s": ours,
            "reference_embeddings_per_s": theirs, "ratio_median_of_rounds": ratio,
        }));
    }
    if let Some(out) = output {
        let report = json!({"model": model.display().to_string(), "inputs": INPUTS, "threads": threads, "rounds": rounds, "rows": rows});
        std::fs::write(out, serde_json::to_vec_pretty(&report)?)?;
    }
    Ok(())
}
