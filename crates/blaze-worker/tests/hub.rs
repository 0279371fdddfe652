//! `hf://` sources: the real download code against a local server with the hub's file
//! layout (`/ORG/NAME/resolve/REV/FILE`), through `HF_ENDPOINT` and a cache folder, both
//! from the worker itself and from `blaze-worker download` (the init container's command).

use crate::support::hub;
use crate::support::worker as support;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use hub::Hub;
use support::free_port;

/// Nothing listens here: a hub that cannot be reached.
const UNREACHABLE: &str = "http://127.0.0.1:9";

const FILES: [&str; 3] = ["config.json", "tokenizer.json", "model.safetensors"];

fn serve(model: &str, cache: &Path, endpoint: &str) -> support::Worker {
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_blaze-worker"));
    cmd.args(["--model", model, "--listen", &addr])
        .arg("--cache-dir")
        .arg(cache)
        .env("HF_ENDPOINT", endpoint)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null());
    let proc = blaze_testing::Proc::spawn(&mut cmd, addr);
    support::Worker { proc, base: format!("http://127.0.0.1:{port}"), port }
}

/// `blaze-worker download` with exactly the operator's init container arguments.
async fn download(model: &str, cache: &Path, endpoint: &str) -> Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_blaze-worker"))
        .args(["download", "--model", model, "--cache-dir"])
        .arg(cache)
        .args(["--log-format", "json"])
        .env("HF_ENDPOINT", endpoint)
        .env("RUST_LOG", "info")
        .output()
        .await
        .unwrap()
}

async fn complete(worker: &support::Worker) -> u16 {
    let body = serde_json::json!({"model": "tiny", "prompt": "hi", "max_tokens": 3});
    worker.post_json("/v1/completions", &body).await.0
}

#[tokio::test]
async fn hf_source_downloads_into_the_cache_once_and_serves() {
    let repo = tempfile::tempdir().unwrap();
    blaze_worker::testing::write_tiny_llama(repo.path(), 512).unwrap();
    let hub = Hub::start(repo.path().to_path_buf()).await;
    let cache = tempfile::tempdir().unwrap();
    let first = serve("hf://blaze-test/tiny@v1", cache.path(), &hub.endpoint);
    wait_ready(&first).await;
    let snapshot = cache.path().join("models--blaze-test--tiny/snapshots/v1");
    for file in FILES {
        assert!(snapshot.join(file).is_file(), "{file} not in the cache");
    }
    assert_eq!(complete(&first).await, 200);
    drop(first);

    // A second start finds everything in the cache: the hub is not asked again.
    let hits = hub.hits().len();
    let second = serve("hf://blaze-test/tiny@v1", cache.path(), UNREACHABLE);
    wait_ready(&second).await;
    assert_eq!(hub.hits().len(), hits);
}

#[tokio::test]
async fn download_subcommand_fills_the_cache_resuming_a_cut_off_file() {
    let repo = tempfile::tempdir().unwrap();
    blaze_worker::testing::write_tiny_llama(repo.path(), 512).unwrap();
    let hub = Hub::start(repo.path().to_path_buf()).await;
    let cache = tempfile::tempdir().unwrap();
    let model = "hf://blaze-test/tiny@v1";

    // The weights are cut off half way once; the download resumes them with a range request.
    hub.cut_next("model.safetensors");
    let out = download(model, cache.path(), &hub.endpoint).await;
    assert!(out.status.success(), "download failed: {}", String::from_utf8_lossy(&out.stderr));
    let snapshot = cache.path().join("models--blaze-test--tiny/snapshots/v1");
    for file in FILES {
        let got = std::fs::read(snapshot.join(file)).unwrap();
        assert_eq!(got, std::fs::read(repo.path().join(file)).unwrap(), "{file} differs");
    }
    let weights: Vec<_> =
        hub.hits().into_iter().filter(|h| h.file == "model.safetensors").collect();
    assert_eq!(weights.len(), 2, "{weights:?}");
    let resumed_at = weights[1]
        .range
        .as_deref()
        .unwrap_or_else(|| panic!("no range: {}", String::from_utf8_lossy(&out.stderr)));
    assert_ne!(resumed_at, "bytes=0-", "the retry starts where the cut-off body stopped");
    let leftovers: Vec<_> = std::fs::read_dir(&snapshot)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".partial"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    let logs = String::from_utf8_lossy(&out.stderr);
    assert!(
        logs.lines().all(|l| serde_json::from_str::<serde_json::Value>(l).is_ok()),
        "--log-format json writes JSON lines: {logs}"
    );

    // Again, offline: a no-op that succeeds; then the worker serves from the cache alone.
    let hits = hub.hits().len();
    let again = download(model, cache.path(), UNREACHABLE).await;
    assert!(again.status.success(), "{}", String::from_utf8_lossy(&again.stderr));
    let worker = serve(model, cache.path(), UNREACHABLE);
    wait_ready(&worker).await;
    assert_eq!(complete(&worker).await, 200);
    assert_eq!(hub.hits().len(), hits, "nothing asked the hub after the download");
}

/// A file that takes longer than the progress interval logs how far it has got, in the
/// fields the operator reads back for the engine's `ModelLoaded` condition.
#[tokio::test]
async fn a_slow_download_logs_bytes_done_total_and_rate() {
    let repo = tempfile::tempdir().unwrap();
    blaze_worker::testing::write_tiny_llama(repo.path(), 512).unwrap();
    let size = std::fs::metadata(repo.path().join("model.safetensors")).unwrap().len();
    let hub = Hub::start(repo.path().to_path_buf()).await;
    let cache = tempfile::tempdir().unwrap();
    // Progress is logged every 5 s: one report half way through the weights, none after.
    hub.slow_next("model.safetensors", Duration::from_secs(7));
    let out = download("hf://blaze-test/tiny@v1", cache.path(), &hub.endpoint).await;
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    let p = blaze_worker_cli::DownloadProgress::last_in(&log)
        .unwrap_or_else(|| panic!("no progress line: {log}"));
    assert_eq!((p.file.as_str(), p.total), ("model.safetensors", Some(size)), "{log}");
    assert!(p.bytes > 0 && p.bytes < size && p.bytes_per_second > 0.0, "{p:?}");
    assert!(log.contains(&format!("downloading {p}")), "the message says it in words: {log}");
}

#[tokio::test]
async fn download_failures_exit_non_zero_naming_the_file() {
    let repo = tempfile::tempdir().unwrap();
    blaze_worker::testing::write_tiny_llama(repo.path(), 512).unwrap();
    let hub = Hub::start(repo.path().to_path_buf()).await;
    let cache = tempfile::tempdir().unwrap();

    let missing =
        download("hf://blaze-test/tiny@v1/absent.gguf", cache.path(), &hub.endpoint).await;
    assert!(!missing.status.success());
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert!(stderr.contains("hf://blaze-test/tiny@v1/absent.gguf"), "{stderr}");
    assert!(stderr.contains("404"), "{stderr}");

    // The first file asked for is the one that tells a diffusers pipeline.
    let offline = download("hf://blaze-test/other@v1", cache.path(), UNREACHABLE).await;
    assert!(!offline.status.success());
    let stderr = String::from_utf8_lossy(&offline.stderr);
    assert!(stderr.contains("hf://blaze-test/other@v1/model_index.json"), "{stderr}");
    let snapshot = cache.path().join("models--blaze-test--other/snapshots/v1");
    assert!(!snapshot.join(".blaze-complete").exists());
    assert!(!snapshot.join("model_index.json").exists());
}

/// Every file under `dir`, as paths relative to it with `/` between folders, sorted.
fn files_under(dir: &Path) -> Vec<String> {
    let mut files = Vec::new();
    let mut folders = vec![dir.to_path_buf()];
    while let Some(folder) = folders.pop() {
        for entry in std::fs::read_dir(folder).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                folders.push(path);
            } else {
                let relative = path.strip_prefix(dir).unwrap().to_string_lossy().into_owned();
                files.push(relative.replace(std::path::MAIN_SEPARATOR, "/"));
            }
        }
    }
    files.sort();
    files
}

/// Splits `folder/{stem}.safetensors` into two shards and an index, as large checkpoints
/// are published.
fn shard(dir: &Path, folder: &str, stem: &str) {
    let plain = dir.join(folder).join(format!("{stem}.safetensors"));
    let tensors = candle_core::safetensors::load(&plain, &candle_core::Device::Cpu).unwrap();
    let mut names: Vec<&String> = tensors.keys().collect();
    names.sort();
    let mut weight_map = serde_json::Map::new();
    for (i, part) in names.chunks(names.len().div_ceil(2)).enumerate() {
        let file = format!("{stem}-{:05}-of-00002.safetensors", i + 1);
        let shard: std::collections::HashMap<&str, candle_core::Tensor> =
            part.iter().map(|n| (n.as_str(), tensors[*n].clone())).collect();
        candle_core::safetensors::save(&shard, dir.join(folder).join(&file)).unwrap();
        for name in part {
            weight_map.insert((*name).clone(), file.clone().into());
        }
    }
    let index = serde_json::json!({"metadata": {}, "weight_map": weight_map});
    let index_file = dir.join(folder).join(format!("{stem}.safetensors.index.json"));
    std::fs::write(index_file, serde_json::to_vec_pretty(&index).unwrap()).unwrap();
    std::fs::remove_file(plain).unwrap();
}

/// A pipeline repository in the diffusers layout (`model_index.json`, a folder per
/// component) downloads with `blaze-worker download` into a snapshot the diffusion pipeline
/// loads and draws the same image from as from the repository itself: sharded weights
/// followed through their index, a cut-off file resumed, optional files a repository lacks
/// skipped, half-precision weights taken where a component publishes only those,
/// components the pipeline does not run (a safety checker) not downloaded, and a second
/// download offline a no-op.
#[tokio::test]
async fn a_diffusers_pipeline_downloads_into_a_snapshot_that_loads() {
    use blaze_worker::model::diffusion::tiny::{self, Variant};
    use blaze_worker::model::diffusion::{DiffusionModel, ImageSpec, MemoryOptions};

    let repo = tempfile::tempdir().unwrap();
    tiny::write(repo.path(), Variant::Sdxl, 3).unwrap();
    shard(repo.path(), "unet", "diffusion_pytorch_model");
    // Only half-precision weights published for the autoencoder (the name is what counts).
    let vae = repo.path().join("vae");
    std::fs::rename(
        vae.join("diffusion_pytorch_model.safetensors"),
        vae.join("diffusion_pytorch_model.fp16.safetensors"),
    )
    .unwrap();
    // Its pad token is in tokenizer_config.json too.
    std::fs::remove_file(repo.path().join("tokenizer_2/special_tokens_map.json")).unwrap();
    let index_path = repo.path().join("model_index.json");
    let mut index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&index_path).unwrap()).unwrap();
    index["safety_checker"] =
        serde_json::json!(["stable_diffusion", "StableDiffusionSafetyChecker"]);
    index["feature_extractor"] = serde_json::json!([null, null]);
    std::fs::write(&index_path, serde_json::to_vec_pretty(&index).unwrap()).unwrap();
    std::fs::create_dir(repo.path().join("safety_checker")).unwrap();
    std::fs::write(repo.path().join("safety_checker/config.json"), b"{}").unwrap();

    let hub = Hub::start(repo.path().to_path_buf()).await;
    let cache = tempfile::tempdir().unwrap();
    let model = "hf://blaze-test/tiny@v1";
    hub.cut_next("text_encoder_2/model.safetensors");
    let out = download(model, cache.path(), &hub.endpoint).await;
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "download failed: {log}");

    let snapshot = cache.path().join("models--blaze-test--tiny/snapshots/v1");
    let mut expected: Vec<String> = files_under(repo.path())
        .into_iter()
        .filter(|f| !f.starts_with("safety_checker/"))
        .collect();
    expected.push(".blaze-complete".into());
    expected.sort();
    assert_eq!(files_under(&snapshot), expected, "no partial files, nothing else");
    for file in expected.iter().filter(|f| *f != ".blaze-complete") {
        let (got, want) = (snapshot.join(file), repo.path().join(file));
        assert_eq!(std::fs::read(got).unwrap(), std::fs::read(want).unwrap(), "{file} differs");
    }
    let hits = hub.hits();
    assert!(hits.iter().all(|h| !h.file.starts_with("safety_checker/")), "{hits:?}");
    let resumed: Vec<_> =
        hits.iter().filter(|h| h.file == "text_encoder_2/model.safetensors").collect();
    assert_eq!(resumed.len(), 2, "{resumed:?}");
    assert!(resumed[1].range.as_deref().is_some_and(|r| r != "bytes=0-"), "{resumed:?}");

    let count = hub.hits().len();
    let again = download(model, cache.path(), UNREACHABLE).await;
    assert!(again.status.success(), "{}", String::from_utf8_lossy(&again.stderr));
    assert_eq!(hub.hits().len(), count, "nothing asked the hub after the download");

    let image = |dir: &Path| {
        let model = DiffusionModel::load(
            dir,
            &candle_core::Device::Cpu,
            candle_core::DType::F32,
            MemoryOptions::default(),
        )
        .unwrap();
        let spec = ImageSpec {
            prompt: "a red fox".into(),
            negative_prompt: String::new(),
            width: 64,
            height: 64,
            steps: 2,
            guidance_scale: model.default_guidance(),
            seed: 1,
        };
        model.generate(&[spec]).unwrap()
    };
    assert_eq!(image(&snapshot), image(repo.path()), "the snapshot draws what the repository does");
}

async fn wait_ready(worker: &support::Worker) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let client = reqwest::Client::new();
    loop {
        if let Ok(r) = client.get(format!("{}/readyz", worker.base)).send().await
            && r.status() == 200
        {
            return;
        }
        assert!(Instant::now() < deadline, "worker not ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
