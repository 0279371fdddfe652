//! Downloads from the Hugging Face hub, or any server with its file layout
//! (`{endpoint}/{org}/{name}/resolve/{revision}/{file}`), into a cache folder.
//!
//! Two layouts of a whole repository are fetched: a model in the transformers layout
//! (`config.json`, `tokenizer.json`, `model.safetensors` or its shards), and a pipeline in
//! the diffusers layout, which a `model_index.json` at the top marks: the files of each
//! component it lists that the diffusion pipeline reads (a folder per component: configs,
//! safetensors weights or their shards, a CLIP tokenizer's vocabulary and merges, the
//! scheduler's settings), and nothing of the components it does not run (safety checker,
//! feature extractor).
//!
//! A file is streamed to `NAME.partial` and renamed into place only once all of it is on
//! disk (and synced), so a crash or a killed init container never leaves a file that a later
//! start trusts; the next run resumes the partial file with an HTTP range request. A
//! repository is complete once `.blaze-complete` is written, after its last file. A cache
//! that is complete is used without asking the hub anything, so the worker starts offline
//! from what `blaze-worker download` fetched.

use std::path::{Component, Path, PathBuf};
use std::time::{Duration, Instant};

use blaze_worker_cli::DownloadProgress;
use reqwest::StatusCode;
use reqwest::header::{CONTENT_RANGE, RANGE};
use tokio::io::AsyncWriteExt;

use crate::{Error, Result};

/// Files fetched for a Hugging Face repository in the safetensors layout; missing optional
/// ones are skipped.
const HF_FILES: &[(&str, bool)] = &[
    ("config.json", true),
    ("tokenizer.json", true),
    ("tokenizer_config.json", false),
    ("generation_config.json", false),
];

/// What marks a repository as a pipeline in the diffusers layout.
const MODEL_INDEX: &str = "model_index.json";

/// Files of a CLIP tokenizer folder in a diffusers pipeline; missing optional ones are
/// skipped (real repositories lack one or the other).
const TOKENIZER_FILES: &[(&str, bool)] = &[
    ("vocab.json", true),
    ("merges.txt", true),
    ("tokenizer_config.json", false),
    ("special_tokens_map.json", false),
];

/// Marks a snapshot folder whose every file is in place.
const COMPLETE_MARKER: &str = ".blaze-complete";

/// Tries per file. Large downloads from a CDN do get cut off; each retry resumes where the
/// last one stopped, so a few are cheap.
const ATTEMPTS: u32 = 4;

/// First wait between tries, doubled after each.
const RETRY_BACKOFF: Duration = Duration::from_millis(500);

/// How often a file being downloaded logs how far it has got. Often enough that `kubectl logs
/// -f` and the engine's `ModelLoaded` condition (the operator reads the last line each time it
/// reconciles a loading engine, every 10 s) show it moving; rarely enough that a download of
/// hours logs a few thousand lines. A file done sooner logs only its `downloaded` line.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// How hub downloads are done.
#[derive(Debug, Clone)]
pub struct HubOptions {
    /// Base URL (`HF_ENDPOINT`, default `https://huggingface.co`).
    pub endpoint: String,
    /// The cache folder (`HF_HUB_CACHE`, `$HF_HOME/hub`, `~/.cache/huggingface/hub`).
    pub cache_dir: PathBuf,
    /// Bearer token (`HF_TOKEN`).
    pub token: Option<String>,
}

impl HubOptions {
    /// Settings from the environment, as the Hugging Face tools read them.
    pub fn from_env() -> Self {
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let cache_dir = env("HF_HUB_CACHE")
            .map(PathBuf::from)
            .or_else(|| env("HF_HOME").map(|h| Path::new(&h).join("hub")))
            .or_else(|| env("HOME").map(|h| Path::new(&h).join(".cache/huggingface/hub")))
            .unwrap_or_else(|| PathBuf::from(".cache/huggingface/hub"));
        let endpoint = env("HF_ENDPOINT").unwrap_or_else(|| "https://huggingface.co".into());
        Self {
            endpoint: endpoint.trim_end_matches('/').to_string(),
            cache_dir,
            token: env("HF_TOKEN"),
        }
    }
}

/// The cache folder of one repository revision.
pub fn snapshot_dir(hub: &HubOptions, repo: &str, revision: &str) -> PathBuf {
    hub.cache_dir
        .join(format!("models--{}", repo.replace('/', "--")))
        .join("snapshots")
        .join(revision)
}

/// Makes sure the cache holds `file` of `repo` at `revision` (or, without `file`, the
/// whole repository in the transformers or the diffusers layout) and returns its path.
/// Asks the hub nothing when the cache is complete.
pub async fn download(
    repo: &str,
    revision: &str,
    file: Option<&str>,
    hub: &HubOptions,
) -> Result<PathBuf> {
    let dir = snapshot_dir(hub, repo, revision);
    let client = Fetcher::new(hub, repo, revision)?;
    if let Some(file) = file {
        client.fetch(file, &dir, true).await?;
        return Ok(dir.join(file));
    }
    let complete = dir.join(COMPLETE_MARKER);
    if complete.is_file() {
        return Ok(dir);
    }
    if client.fetch(MODEL_INDEX, &dir, false).await? {
        let index: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join(MODEL_INDEX))?)?;
        for (folder, part) in pipeline_components(&index) {
            client.fetch_component(&folder, part, &dir).await?;
        }
    } else {
        for (name, required) in HF_FILES {
            client.fetch(name, &dir, *required).await?;
        }
        client.fetch_weights("", "model", &dir).await?;
    }
    std::fs::write(&complete, b"")?;
    Ok(dir)
}

/// What a component of a diffusers pipeline is, for what its folder holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Part {
    /// A diffusers model (UNet, autoencoder): `config.json`, `diffusion_pytorch_model`
    /// weights.
    Diffusers,
    /// A transformers model (a text encoder): `config.json`, `model` weights.
    Transformers,
    /// A CLIP tokenizer: [`TOKENIZER_FILES`].
    Tokenizer,
    /// `scheduler_config.json`.
    Scheduler,
}

/// The components of the pipeline `model_index.json` describes that the diffusion pipeline
/// reads, by folder. A component is a key not starting with `_` whose value is a
/// `[library, class]` pair (`[null, null]` is one the pipeline lacks); those the
/// worker does not run are left out.
fn pipeline_components(index: &serde_json::Value) -> Vec<(String, Part)> {
    let Some(entries) = index.as_object() else { return Vec::new() };
    let mut components = Vec::new();
    for (name, value) in entries {
        let pair = value.as_array().filter(|v| v.len() == 2 && v.iter().all(|x| x.is_string()));
        if name.starts_with('_') || pair.is_none() {
            continue;
        }
        let part = match name.as_str() {
            "unet" | "vae" => Part::Diffusers,
            n if n.starts_with("text_encoder") => Part::Transformers,
            n if n.starts_with("tokenizer") => Part::Tokenizer,
            "scheduler" => Part::Scheduler,
            _ => {
                tracing::info!(component = %name, "not used by the diffusion pipeline; not downloaded");
                continue;
            }
        };
        components.push((name.clone(), part));
    }
    components
}

/// One try's outcome.
enum Failure {
    /// Worth another try (connection trouble, 5xx, 429, a cut-off body).
    Transient(String),
    /// Not (404, 401, a full disk, ...).
    Permanent(String),
}

struct Fetcher<'a> {
    client: reqwest::Client,
    hub: &'a HubOptions,
    repo: &'a str,
    revision: &'a str,
}

impl<'a> Fetcher<'a> {
    fn new(hub: &'a HubOptions, repo: &'a str, revision: &'a str) -> Result<Self> {
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(30))
            // Between bytes, not for the whole body: multi-GB files take as long as they take.
            .read_timeout(Duration::from_secs(120))
            .build()
            .map_err(|e| Error::Source {
                source_name: format!("hf://{repo}@{revision}"),
                message: format!("HTTP client: {e}"),
            })?;
        Ok(Self { client, hub, repo, revision })
    }

    fn error(&self, name: &str, message: String) -> Error {
        Error::Source {
            source_name: format!("hf://{}@{}/{name}", self.repo, self.revision),
            message,
        }
    }

    /// Downloads the files of a pipeline's component in `folder`.
    async fn fetch_component(&self, folder: &str, part: Part, dir: &Path) -> Result<()> {
        let weights = match part {
            Part::Diffusers => "diffusion_pytorch_model",
            Part::Transformers => "model",
            Part::Tokenizer => {
                for (name, required) in TOKENIZER_FILES {
                    self.fetch(&format!("{folder}/{name}"), dir, *required).await?;
                }
                return Ok(());
            }
            Part::Scheduler => {
                self.fetch(&format!("{folder}/scheduler_config.json"), dir, true).await?;
                return Ok(());
            }
        };
        self.fetch(&format!("{folder}/config.json"), dir, true).await?;
        self.fetch_weights(folder, weights, dir).await
    }

    /// Downloads the safetensors weights `{stem}.safetensors` in `folder` (empty: the top),
    /// or their shards when the repository has `{stem}.safetensors.index.json`. A pipeline
    /// component that publishes only half-precision weights (`{stem}.fp16.safetensors`, as
    /// some diffusers repositories do) gets those.
    async fn fetch_weights(&self, folder: &str, stem: &str, dir: &Path) -> Result<()> {
        let path = |name: &str| match folder {
            "" => name.to_owned(),
            folder => format!("{folder}/{name}"),
        };
        let index = path(&format!("{stem}.safetensors.index.json"));
        if !self.fetch(&index, dir, false).await? {
            let component = !folder.is_empty();
            if !self.fetch(&path(&format!("{stem}.safetensors")), dir, !component).await? {
                self.fetch(&path(&format!("{stem}.fp16.safetensors")), dir, true).await?;
            }
            return Ok(());
        }
        let index: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join(&index))?)?;
        let mut shards: Vec<String> = index["weight_map"]
            .as_object()
            .map(|m| m.values().filter_map(|v| v.as_str().map(&path)).collect())
            .unwrap_or_default();
        shards.sort();
        shards.dedup();
        for shard in shards {
            self.fetch(&shard, dir, true).await?;
        }
        Ok(())
    }

    /// Downloads `name` into `dir` unless it is there; returns whether the file is there
    /// (false only for a missing optional file).
    async fn fetch(&self, name: &str, dir: &Path, required: bool) -> Result<bool> {
        if !is_relative_inside(name) {
            return Err(self.error(name, "file name leaves the repository".into()));
        }
        let target = dir.join(name);
        if target.is_file() {
            return Ok(true);
        }
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let url = format!("{}/{}/resolve/{}/{name}", self.hub.endpoint, self.repo, self.revision);
        let partial = PathBuf::from(format!("{}.partial", target.display()));
        let mut wait = RETRY_BACKOFF;
        for attempt in 1..=ATTEMPTS {
            match self.try_once(name, &url, &partial).await {
                Ok(Some(bytes)) => {
                    std::fs::rename(&partial, &target)?;
                    tracing::info!(%url, bytes, "downloaded");
                    return Ok(true);
                }
                Ok(None) if !required => return Ok(false),
                Ok(None) => return Err(self.error(name, format!("GET {url}: HTTP 404 Not Found"))),
                Err(Failure::Permanent(message)) => return Err(self.error(name, message)),
                Err(Failure::Transient(message)) if attempt < ATTEMPTS => {
                    tracing::warn!(%url, attempt, error = %message, "download failed; retrying");
                    tokio::time::sleep(wait).await;
                    wait *= 2;
                }
                Err(Failure::Transient(message)) => {
                    return Err(self.error(name, format!("{message} (after {ATTEMPTS} tries)")));
                }
            }
        }
        unreachable!("the last try returns")
    }

    /// One GET of `name` into `partial`, resuming what is there, logging its progress.
    /// `Ok(None)` is a 404.
    async fn try_once(
        &self,
        name: &str,
        url: &str,
        partial: &Path,
    ) -> Result<Option<u64>, Failure> {
        let have = std::fs::metadata(partial).map(|m| m.len()).unwrap_or(0);
        let mut request = self.client.get(url);
        if let Some(token) = &self.hub.token {
            request = request.bearer_auth(token);
        }
        if have > 0 {
            request = request.header(RANGE, format!("bytes={have}-"));
        }
        let transient = |e: &dyn std::fmt::Display| Failure::Transient(format!("GET {url}: {e}"));
        let mut response = request.send().await.map_err(|e| transient(&e))?;
        let status = response.status();
        let resumed = match status {
            StatusCode::NOT_FOUND => return Ok(None),
            StatusCode::PARTIAL_CONTENT if resumes_at(&response) == Some(have) => true,
            StatusCode::PARTIAL_CONTENT => {
                let _ = std::fs::remove_file(partial);
                return Err(transient(&"HTTP 206 for another range; restarting the file"));
            }
            StatusCode::RANGE_NOT_SATISFIABLE => {
                // The partial file is not a prefix of this file: start over.
                let _ = std::fs::remove_file(partial);
                return Err(transient(&"HTTP 416; restarting the file"));
            }
            s if s.is_success() => false,
            s if s.is_server_error() || s == StatusCode::TOO_MANY_REQUESTS => {
                return Err(transient(&format!("HTTP {s}")));
            }
            s if s == StatusCode::UNAUTHORIZED || s == StatusCode::FORBIDDEN => {
                let hint = if self.hub.token.is_some() { "" } else { " (set HF_TOKEN)" };
                return Err(Failure::Permanent(format!("GET {url}: HTTP {s}{hint}")));
            }
            s => return Err(Failure::Permanent(format!("GET {url}: HTTP {s}"))),
        };
        let expected = response.content_length().map(|n| n + if resumed { have } else { 0 });
        let io =
            |e: std::io::Error| Failure::Permanent(format!("writing {}: {e}", partial.display()));
        let mut file = tokio::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .append(resumed)
            .truncate(!resumed)
            .open(partial)
            .await
            .map_err(io)?;
        let mut size = if resumed { have } else { 0 };
        let mut meter = Meter::new(name, expected, size, Instant::now(), PROGRESS_EVERY);
        while let Some(chunk) = response.chunk().await.map_err(|e| transient(&e))? {
            file.write_all(&chunk).await.map_err(io)?;
            size += chunk.len() as u64;
            if let Some(p) = meter.tick(Instant::now(), size) {
                let (bytes, total, rate) = (p.bytes, p.total, p.bytes_per_second);
                tracing::info!(file = %p.file, bytes, total, bytes_per_second = rate, "downloading {p}");
            }
        }
        file.flush().await.map_err(io)?;
        file.sync_all().await.map_err(io)?;
        match expected {
            Some(expected) if expected != size => {
                Err(transient(&format!("body ended at {size} of {expected} bytes")))
            }
            _ => Ok(Some(size)),
        }
    }
}

/// Reports a file's progress at most once per interval, with the rate since the last report.
struct Meter {
    file: String,
    total: Option<u64>,
    every: Duration,
    /// When the last report (or the start) was, and the bytes on disk then.
    last: (Instant, u64),
}

impl Meter {
    fn new(file: &str, total: Option<u64>, bytes: u64, now: Instant, every: Duration) -> Self {
        Self { file: file.to_owned(), total, every, last: (now, bytes) }
    }

    /// The report due at `now` with `bytes` on disk, if one is.
    fn tick(&mut self, now: Instant, bytes: u64) -> Option<DownloadProgress> {
        let elapsed = now.saturating_duration_since(self.last.0);
        if elapsed < self.every {
            return None;
        }
        let rate = bytes.saturating_sub(self.last.1) as f64 / elapsed.as_secs_f64();
        self.last = (now, bytes);
        Some(DownloadProgress {
            file: self.file.clone(),
            bytes,
            total: self.total,
            bytes_per_second: rate,
        })
    }
}

/// Where a 206 response's body starts (`Content-Range: bytes START-END/TOTAL`).
fn resumes_at(response: &reqwest::Response) -> Option<u64> {
    let range = response.headers().get(CONTENT_RANGE)?.to_str().ok()?;
    range.strip_prefix("bytes ")?.split('-').next()?.trim().parse().ok()
}

/// True for a plain relative path that stays inside the folder it is joined to.
fn is_relative_inside(name: &str) -> bool {
    !name.is_empty() && Path::new(name).components().all(|c| matches!(c, Component::Normal(_)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_is_reported_once_per_interval_with_the_rate_since_the_last_report() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        // Resumed at 1000 bytes of 10000.
        let mut m = Meter::new("model.gguf", Some(10_000), 1_000, t0, s(5));
        assert_eq!(m.tick(t0 + s(4), 3_000), None, "not yet");
        let p = m.tick(t0 + s(5), 6_000).unwrap();
        assert_eq!((p.bytes, p.total, p.bytes_per_second), (6_000, Some(10_000), 1_000.0));
        assert_eq!(p.to_string(), "model.gguf: 5.9 KiB of 9.8 KiB (60%) at 1000 B/s");
        assert_eq!(m.tick(t0 + s(9), 8_000), None);
        let p = m.tick(t0 + s(15), 10_000).unwrap();
        assert_eq!(p.bytes_per_second, 400.0, "over the 10 s since the last report");
    }

    #[test]
    fn a_pipeline_index_names_the_components_the_diffusion_pipeline_reads() {
        let index = serde_json::json!({
            "_class_name": "StableDiffusionXLPipeline",
            "_diffusers_version": "0.31.0",
            "force_zeros_for_empty_prompt": true,
            "feature_extractor": [null, null],
            "image_encoder": [null, null],
            "safety_checker": ["stable_diffusion", "StableDiffusionSafetyChecker"],
            "scheduler": ["diffusers", "EulerDiscreteScheduler"],
            "text_encoder": ["transformers", "CLIPTextModel"],
            "text_encoder_2": ["transformers", "CLIPTextModelWithProjection"],
            "tokenizer": ["transformers", "CLIPTokenizer"],
            "tokenizer_2": ["transformers", "CLIPTokenizer"],
            "unet": ["diffusers", "UNet2DConditionModel"],
            "vae": ["diffusers", "AutoencoderKL"],
        });
        let got = pipeline_components(&index);
        let names: Vec<(&str, Part)> = got.iter().map(|(n, c)| (n.as_str(), *c)).collect();
        assert_eq!(
            names,
            [
                ("scheduler", Part::Scheduler),
                ("text_encoder", Part::Transformers),
                ("text_encoder_2", Part::Transformers),
                ("tokenizer", Part::Tokenizer),
                ("tokenizer_2", Part::Tokenizer),
                ("unet", Part::Diffusers),
                ("vae", Part::Diffusers),
            ]
        );
        assert!(pipeline_components(&serde_json::json!([1, 2])).is_empty());
    }

    #[test]
    fn file_names_stay_inside_the_snapshot() {
        assert!(is_relative_inside("model.safetensors"));
        assert!(is_relative_inside("onnx/model.onnx"));
        for bad in ["", "../x", "/etc/passwd", "a/../../b"] {
            assert!(!is_relative_inside(bad), "{bad}");
        }
    }
}
