//! The model flags through the real binary, as the operator renders them: `--quantization`
//! and `--dtype` load and serve and show in `/v1/models`, and combinations that cannot work
//! (`--device cuda` without CUDA, a format the source does not hold, GGUF with a dtype) end
//! the start with a message that names the flag.

use crate::support::worker as support;

use std::process::{Command, Stdio};
use std::time::Duration;

use support::Worker;

fn tiny_model() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    blaze_worker::testing::write_tiny_llama(dir.path(), 256).unwrap();
    let path = dir.path().to_str().unwrap().to_owned();
    (dir, path)
}

#[tokio::test]
async fn quantized_and_half_weights_serve_and_say_so_in_the_model_list() {
    let (_dir, model) = tiny_model();
    for (flags, dtype, quantization) in [
        (&["--quantization", "q4k"][..], "auto", Some("q4k")),
        (&["--quantization", "q8_0", "--dtype", "f32"][..], "f32", Some("q8_0")),
        (&["--dtype", "bf16"][..], "bf16", None),
    ] {
        let args = [&["--model", model.as_str(), "--device", "cpu"][..], flags].concat();
        let worker = Worker::start(&args, Duration::from_secs(60)).await;
        let models: serde_json::Value =
            reqwest::get(format!("{}/v1/models", worker.base)).await.unwrap().json().await.unwrap();
        let info = &models["data"][0]["blaze"];
        assert_eq!(info["device"], "cpu", "{flags:?}: {models}");
        assert_eq!(info["dtype"], dtype, "{flags:?}: {models}");
        assert_eq!(info["quantization"].as_str(), quantization, "{flags:?}: {models}");
        let body = serde_json::json!({"prompt": "hi", "max_tokens": 3, "temperature": 0});
        let (status, answer) = worker.post_json("/v1/completions", &body).await;
        assert_eq!(status, 200, "{flags:?}: {answer}");
        assert_eq!(answer["usage"]["completion_tokens"], 3);
    }
}

/// Runs the worker with `args` and returns its stderr once it exits, failing if it exits 0
/// or keeps running past the deadline.
fn refused(args: &[&str]) -> String {
    let port = support::free_port().to_string();
    let listen = format!("127.0.0.1:{port}");
    let mut child = Command::new(env!("CARGO_BIN_EXE_blaze-worker"))
        .args(args)
        .args(["--listen", &listen])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("blaze-worker {args:?} still running: it should have refused to start");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!status.success(), "blaze-worker {args:?} exited 0: {stderr}");
    stderr
}

#[test]
fn settings_that_cannot_work_stop_the_start_naming_the_flag() {
    let (_dir, model) = tiny_model();
    if !cfg!(feature = "cuda") {
        let e = refused(&["--model", &model, "--device", "cuda"]);
        assert!(e.contains("--device cuda"), "{e}");
    }
    let e = refused(&["--model", &model, "--model-format", "gguf"]);
    assert!(e.contains("--model-format gguf"), "{e}");
    let e = refused(&["--model", &model, "--model-format", "gguf", "--dtype", "f16"]);
    assert!(e.contains("--dtype f16"), "{e}");
    let e = refused(&["--model", &model, "--quantization", "q4k", "--dtype", "bf16"]);
    assert!(e.contains("--quantization q4k with --dtype bf16"), "{e}");
    // Embedding workers keep no cache: each cache flag is refused, not ignored.
    for cache in [
        &["--prefix-cache-bytes", "1048576"][..],
        &["--response-cache-memory-bytes", "1048576"],
        &["--response-cache-redis", "127.0.0.1:6379"],
    ] {
        let mut args = vec!["--model", model.as_str(), "--kind", "embedding"];
        args.extend_from_slice(cache);
        let e = refused(&args);
        assert!(e.contains(&format!("{}: embedding workers keep no", cache[0])), "{e}");
    }
}

/// `blaze-random-llama` (the GPU benchmark's model writer) through its binary: the model it
/// writes is stored in the dtype asked for, and the worker loads and serves it; a shape it
/// does not know ends with a message naming it.
#[tokio::test]
async fn random_llama_writes_a_model_the_worker_serves() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("tiny-bf16");
    let out = Command::new(env!("CARGO_BIN_EXE_blaze-random-llama"))
        .arg(&model)
        .args(["tiny", "bf16", "128"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), model.to_str().unwrap());
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(model.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["torch_dtype"], "bfloat16");
    assert_eq!(config["max_position_embeddings"], 128);
    let weights =
        candle_core::safetensors::load(model.join("model.safetensors"), &candle_core::Device::Cpu)
            .unwrap();
    assert!(weights.values().all(|t| t.dtype() == candle_core::DType::BF16));

    let path = model.to_str().unwrap();
    let args = ["--model", path, "--device", "cpu", "--dtype", "bf16"];
    let worker = Worker::start(&args, Duration::from_secs(60)).await;
    let body = serde_json::json!({"prompt": "hi", "max_tokens": 3, "temperature": 0});
    let (status, answer) = worker.post_json("/v1/completions", &body).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["usage"]["completion_tokens"], 3);

    let out = Command::new(env!("CARGO_BIN_EXE_blaze-random-llama"))
        .arg(dir.path().join("other"))
        .arg("huge")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown shape \"huge\""));
    assert!(!dir.path().join("other").exists());
}
