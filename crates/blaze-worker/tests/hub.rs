//! `hf://` sources: the real download code against a local server with the hub's file
//! layout (`/ORG/NAME/resolve/REV/FILE`), through `HF_ENDPOINT` and a cache folder.

#[path = "support/worker.rs"]
mod support;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::http::StatusCode;
use support::free_port;

#[derive(Clone)]
struct Hub {
    root: PathBuf,
    hits: Arc<AtomicUsize>,
}

async fn resolve(
    State(hub): State<Hub>,
    Path((org, name, rev, file)): Path<(String, String, String, String)>,
) -> Result<Vec<u8>, StatusCode> {
    hub.hits.fetch_add(1, Ordering::SeqCst);
    if org != "blaze-test" || name != "tiny" || rev != "v1" {
        return Err(StatusCode::NOT_FOUND);
    }
    std::fs::read(hub.root.join(file)).map_err(|_| StatusCode::NOT_FOUND)
}

#[tokio::test]
async fn hf_source_downloads_into_the_cache_once_and_serves() {
    let repo = tempfile::tempdir().unwrap();
    blaze_worker::testing::write_tiny_llama(repo.path(), 512).unwrap();
    let hub = Hub { root: repo.path().to_path_buf(), hits: Arc::default() };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let app = axum::Router::new()
        .route("/{org}/{name}/resolve/{rev}/{file}", axum::routing::get(resolve))
        .with_state(hub.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let cache = tempfile::tempdir().unwrap();
    let run = |endpoint: &str| {
        let port = free_port();
        let child = Command::new(env!("CARGO_BIN_EXE_blaze-worker"))
            .args(["--model", "hf://blaze-test/tiny@v1", "--listen", &format!("127.0.0.1:{port}")])
            .arg("--cache-dir")
            .arg(cache.path())
            .env("HF_ENDPOINT", endpoint)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        support::Worker { child, base: format!("http://127.0.0.1:{port}"), port }
    };
    let first = run(&endpoint);
    wait_ready(&first).await;
    let snapshot = cache.path().join("models--blaze-test--tiny/snapshots/v1");
    for file in ["config.json", "tokenizer.json", "model.safetensors"] {
        assert!(snapshot.join(file).is_file(), "{file} not in the cache");
    }
    let body = serde_json::json!({"model": "tiny", "prompt": "hi", "max_tokens": 3});
    let r = reqwest::Client::new()
        .post(format!("{}/v1/completions", first.base))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    drop(first);

    // A second start finds everything in the cache: the hub is not asked again.
    let hits = hub.hits.load(Ordering::SeqCst);
    let second = run("http://127.0.0.1:9");
    wait_ready(&second).await;
    assert_eq!(hub.hits.load(Ordering::SeqCst), hits);
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
