//! The worker binary when its scheduler dies or stalls: a fault injected into the forward
//! pass (the debug-build hook `BLAZE_TEST_FAULT_FILE`) fails `/livez`, `/readyz` and gRPC
//! health, and ends every request in flight at once with a retriable error. And a forward
//! pass that fails during the warm-up fails the start.

use crate::support::worker as support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use blaze_proto::generate::GenerateRequest;
use blaze_proto::generate::generate_client::GenerateClient;
use serde_json::json;
use support::Worker;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// How soon after the fault everything must have reacted: the panic trips at once, a stall
/// after the 2 s timeout and a watchdog tick; the rest is slack for a loaded machine.
const PROMPTLY: Duration = Duration::from_secs(10);

/// A worker on a tiny model with the fault hook armed on a file that does not exist yet,
/// serving gRPC on its HTTP port.
struct Faulty {
    worker: Worker,
    fault: PathBuf,
    _dir: tempfile::TempDir,
}

impl Faulty {
    async fn start(extra: &[&str]) -> Option<Faulty> {
        if !cfg!(debug_assertions) {
            eprintln!("skipped: the fault hook exists in debug builds only");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let model = dir.path().join("model");
        blaze_worker::testing::write_tiny_llama(&model, 8192).unwrap();
        let fault = dir.path().join("fault");
        let port = support::free_port();
        let addr = format!("127.0.0.1:{port}");
        let mut args = vec!["--model", model.to_str().unwrap(), "--grpc-listen", &addr];
        args.extend_from_slice(extra);
        let env = [(blaze_worker::engine::fault::FAULT_FILE_VAR, fault.to_str().unwrap())];
        let worker = Worker::start_with_env(port, &args, &env, Duration::from_secs(60)).await;
        Some(Faulty { worker, fault, _dir: dir })
    }

    fn inject(&self, fault: &str) -> Instant {
        std::fs::write(&self.fault, fault).unwrap();
        Instant::now()
    }

    async fn get(&self, path: &str) -> (u16, String) {
        let r = reqwest::get(format!("{}{path}", self.worker.base)).await.unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }

    /// Polls `/livez` until it fails, within [`PROMPTLY`] of `since`; its body.
    async fn livez_fails(&self, since: Instant) -> String {
        loop {
            let (status, body) = self.get("/livez").await;
            if status == 503 {
                return body;
            }
            assert_eq!(status, 200);
            assert!(
                since.elapsed() < PROMPTLY,
                "/livez still ok {:?} after the fault",
                since.elapsed()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Polls `/metrics` until at least `n` sequences run.
    async fn running(&self, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (_, metrics) = self.get("/metrics").await;
            let running = metrics
                .lines()
                .find_map(|l| l.strip_prefix("vllm:num_requests_running "))
                .and_then(|v| v.trim().parse::<usize>().ok());
            if running.is_some_and(|r| r >= n) {
                return;
            }
            assert!(Instant::now() < deadline, "{n} requests never ran together: {running:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// What follows a failure, whatever it was: not ready, gRPC NOT_SERVING, new requests
    /// refused with a retriable 503, and one trip of `cause` counted.
    async fn refuses_everything(&self, cause: &str) {
        let (status, body) = self.get("/readyz").await;
        assert_eq!(status, 503, "{body}");
        let channel = tonic::transport::Endpoint::from_shared(self.worker.base.clone())
            .unwrap()
            .connect()
            .await
            .unwrap();
        let deadline = Instant::now() + PROMPTLY;
        let mut health = HealthClient::new(channel);
        loop {
            let check = health.check(HealthCheckRequest { service: String::new() }).await;
            if check.unwrap().into_inner().status == ServingStatus::NotServing as i32 {
                break;
            }
            assert!(Instant::now() < deadline, "gRPC health still SERVING");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let r = completion(&self.worker.base, false).await;
        assert_eq!(r.status(), 503);
        assert!(r.headers().contains_key("retry-after"));
        let refusal = r.text().await.unwrap();
        assert!(refusal.contains("the worker failed"), "the refusal hides why: {refusal}");
        let (_, metrics) = self.get("/metrics").await;
        let trip = format!("blaze_watchdog_trips_total{{cause=\"{cause}\"}} 1");
        assert!(metrics.contains(&trip), "no {trip} in:\n{metrics}");
    }
}

/// Sends a completion that would run for thousands of tokens.
async fn completion(base: &str, stream: bool) -> reqwest::Response {
    let body = json!({"prompt": "hi", "max_tokens": 8000, "temperature": 0, "stream": stream});
    reqwest::Client::new().post(format!("{base}/v1/completions")).json(&body).send().await.unwrap()
}

/// Reads an SSE response to its end, failing if that takes longer than [`PROMPTLY`] from
/// `since`. Returns everything read.
async fn read_to_end(mut r: reqwest::Response, since: Instant) -> String {
    let mut text = String::new();
    loop {
        let left = PROMPTLY.saturating_sub(since.elapsed());
        let chunk = tokio::time::timeout(left, r.chunk()).await;
        match chunk.expect("the stream did not end after the fault").unwrap() {
            Some(bytes) => text.push_str(&String::from_utf8_lossy(&bytes)),
            None => return text,
        }
    }
}

/// Asserts that a plain request ended with a retriable 503 within [`PROMPTLY`] of `since`.
async fn ended_retriable(plain: tokio::task::JoinHandle<reqwest::Response>, since: Instant) {
    let left = PROMPTLY.saturating_sub(since.elapsed());
    let r = tokio::time::timeout(left, plain).await.expect("the plain request hangs").unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["retry-after"], "1");
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"]["type"], "service_unavailable", "{body}");
}

#[tokio::test]
async fn a_panic_in_the_forward_pass_fails_livez_and_ends_every_request() {
    let Some(w) = Faulty::start(&[]).await else { return };
    let stream = completion(&w.worker.base, true).await;
    assert_eq!(stream.status(), 200);
    let base = w.worker.base.clone();
    let plain = tokio::spawn(async move { completion(&base, false).await });
    w.running(2).await;

    let fault = w.inject("panic");
    let why = w.livez_fails(fault).await;
    assert!(why.contains("panicked"), "{why}");
    let streamed = read_to_end(stream, fault).await;
    assert!(streamed.contains("\"code\":\"503\""), "no retriable error event: {streamed}");
    assert!(!streamed.contains("\"finish_reason\":\"length\""), "the stream ran to its end");
    ended_retriable(plain, fault).await;
    w.refuses_everything("panicked").await;
}

#[tokio::test]
async fn a_stalled_forward_pass_fails_livez_after_the_stall_timeout() {
    let Some(w) = Faulty::start(&["--stall-timeout-seconds", "2"]).await else { return };
    let channel = tonic::transport::Endpoint::from_shared(w.worker.base.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let request = GenerateRequest { prompt: "hi".into(), max_tokens: 8000, ..Default::default() };
    let mut grpc =
        GenerateClient::new(channel).generate_stream(request).await.unwrap().into_inner();
    assert!(grpc.message().await.unwrap().is_some());
    let base = w.worker.base.clone();
    let plain = tokio::spawn(async move { completion(&base, false).await });
    w.running(2).await;

    let fault = w.inject("stall");
    let why = w.livez_fails(fault).await;
    assert!(fault.elapsed() >= Duration::from_secs(2), "tripped before the stall timeout");
    assert!(why.contains("no progress"), "{why}");
    let status = loop {
        let left = PROMPTLY.saturating_sub(fault.elapsed());
        let message = tokio::time::timeout(left, grpc.message()).await;
        match message.expect("the gRPC stream hangs") {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("the gRPC stream ended without an error"),
            Err(status) => break status,
        }
    };
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    ended_retriable(plain, fault).await;
    w.refuses_everything("stalled").await;
    // The stalled pass may go on later; the worker stays failed.
    std::fs::remove_file(&w.fault).unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(w.get("/livez").await.0, 503);
}

#[tokio::test]
async fn a_failed_warm_up_fails_the_start() {
    if !cfg!(debug_assertions) {
        eprintln!("skipped: the fault hook exists in debug builds only");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    blaze_worker::testing::write_tiny_llama(dir.path(), 256).unwrap();
    let fault = dir.path().join("fault");
    std::fs::write(&fault, "panic").unwrap();
    let output = exit_of(dir.path(), &fault).await;
    assert!(!output.status.success(), "the worker started despite a failed warm-up");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("warm-up"), "the message does not name the warm-up: {stderr}");
}

/// Runs the worker on `model` with the fault hook on `fault` until it exits (60 s at most).
async fn exit_of(model: &Path, fault: &Path) -> std::process::Output {
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_blaze-worker"))
        .args(["--model", model.to_str().unwrap(), "--listen"])
        .arg(format!("127.0.0.1:{}", support::free_port()))
        .env(blaze_worker::engine::fault::FAULT_FILE_VAR, fault)
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let output = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output()).await;
    output.expect("the worker neither started nor exited").unwrap()
}
