//! `hf://` sources: the real download code against a local server with the hub's file
//! layout (`/ORG/NAME/resolve/REV/FILE`), through `HF_ENDPOINT` and a cache folder, both
//! from the worker itself and from `blaze-worker download` (the init container's command).

#![allow(clippy::unwrap_used)] // a test fails by panicking

#[path = "support/hub.rs"]
mod hub;
#[path = "support/worker.rs"]
mod support;

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

    let offline = download("hf://blaze-test/other@v1", cache.path(), UNREACHABLE).await;
    assert!(!offline.status.success());
    let stderr = String::from_utf8_lossy(&offline.stderr);
    assert!(stderr.contains("hf://blaze-test/other@v1/config.json"), "{stderr}");
    let snapshot = cache.path().join("models--blaze-test--other/snapshots/v1");
    assert!(!snapshot.join(".blaze-complete").exists());
    assert!(!snapshot.join("config.json").exists());
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
