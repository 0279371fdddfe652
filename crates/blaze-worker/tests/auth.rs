//! `--auth-token-dir` through the worker binary: inference routes (OpenAI, OIP REST, gRPC)
//! need the engine's bearer token and answer 401 (UNAUTHENTICATED) without it or with a
//! wrong one; health and metrics stay open; a token file that changes is followed without a
//! restart; a folder without a token stops the start naming the flag.

use crate::support::worker as support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use blaze_proto::generate::GenerateRequest;
use blaze_proto::generate::generate_client::GenerateClient;
use blaze_testing::eventually;
use serde_json::{Value, json};
use support::Worker;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

/// Status, `WWW-Authenticate` and JSON body of `POST path` with `token` as a bearer token.
async fn post(worker: &Worker, path: &str, token: Option<&str>) -> (u16, String, Value) {
    let body = json!({"prompt": "hi", "max_tokens": 2, "temperature": 0});
    let mut req = reqwest::Client::new().post(format!("{}{path}", worker.base)).json(&body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    let challenge = r
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (status, challenge, r.json().await.unwrap_or(Value::Null))
}

async fn get_status(worker: &Worker, path: &str, token: Option<&str>) -> u16 {
    let mut req = reqwest::Client::new().get(format!("{}{path}", worker.base));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    req.send().await.unwrap().status().as_u16()
}

fn write_token(dir: &Path, name: &str, token: &str) {
    // As the kubelet does: a new file renamed into place.
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, format!("{token}\n")).unwrap();
    std::fs::rename(&tmp, dir.join(name)).unwrap();
}

#[tokio::test]
async fn inference_needs_the_token_health_and_metrics_do_not() {
    let model = tempfile::tempdir().unwrap();
    blaze_worker::testing::write_tiny_llama(model.path(), 256).unwrap();
    let tokens = tempfile::tempdir().unwrap();
    write_token(tokens.path(), "token", "first-token");
    let port = support::free_port();
    let addr = format!("127.0.0.1:{port}");
    let worker = Worker::start_on(
        port,
        &[
            "--model",
            model.path().to_str().unwrap(),
            "--served-model-name",
            "tiny",
            "--grpc-listen",
            &addr,
            "--auth-token-dir",
            tokens.path().to_str().unwrap(),
        ],
        Duration::from_secs(60),
    )
    .await;

    // Open: probes and scrapes carry no token (Worker::start waited on /readyz already).
    for path in ["/livez", "/readyz", "/metrics"] {
        assert_eq!(get_status(&worker, path, None).await, 200, "{path}");
    }
    // Closed without the token, naming what is missing, OpenAI-style.
    let (status, challenge, body) = post(&worker, "/v1/completions", None).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(challenge, "Bearer");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("Authorization: Bearer"), "{body}");
    assert_eq!(body["error"]["code"], "401");
    let (status, challenge, body) = post(&worker, "/v1/completions", Some("second-token")).await;
    assert_eq!(status, 401, "{body}");
    assert!(challenge.contains("invalid_token"), "{challenge}");
    assert!(body["error"]["message"].as_str().unwrap().contains("not a token"), "{body}");
    for path in ["/v1/models", "/v2", "/v2/models/tiny", "/v2/health/ready"] {
        assert_eq!(get_status(&worker, path, None).await, 401, "{path}");
        assert_eq!(get_status(&worker, path, Some("first-token")).await, 200, "{path}");
    }
    let (status, _, body) = post(&worker, "/v1/completions", Some("first-token")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["usage"]["completion_tokens"], 2);

    // gRPC on the same port: generate needs the token, health does not.
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let health = HealthClient::new(channel.clone())
        .check(HealthCheckRequest { service: String::new() })
        .await;
    assert!(health.is_ok(), "{health:?}");
    let request = || GenerateRequest {
        model: "tiny".into(),
        prompt: "hello".into(),
        max_tokens: 2,
        ..Default::default()
    };
    let mut client = GenerateClient::new(channel);
    let refused = client.generate_stream(request()).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{refused:?}");
    assert!(refused.message().contains("Authorization: Bearer"), "{refused:?}");
    let mut with_token = tonic::Request::new(request());
    with_token.metadata_mut().insert("authorization", "Bearer first-token".parse().unwrap());
    let mut stream = client.generate_stream(with_token).await.unwrap().into_inner();
    let mut messages = 0;
    while let Some(message) = stream.message().await.unwrap() {
        messages += usize::from(!message.token_ids.is_empty());
    }
    assert!(messages > 0, "no tokens streamed");

    // Rotation without a restart: a second token beside the first is accepted too, and once
    // the first file holds a new token the old one is refused.
    write_token(tokens.path(), "next", "second-token");
    eventually("the added token accepted", 10, async || {
        (post(&worker, "/v1/completions", Some("second-token")).await.0 == 200).then_some(())
    })
    .await;
    assert_eq!(post(&worker, "/v1/completions", Some("first-token")).await.0, 200);
    std::fs::remove_file(tokens.path().join("next")).unwrap();
    write_token(tokens.path(), "token", "second-token");
    eventually("the replaced token refused", 10, async || {
        (post(&worker, "/v1/completions", Some("first-token")).await.0 == 401).then_some(())
    })
    .await;
    assert_eq!(post(&worker, "/v1/completions", Some("second-token")).await.0, 200);
}

#[test]
fn a_token_folder_without_a_token_stops_the_start() {
    let tokens = tempfile::tempdir().unwrap();
    let listen = format!("127.0.0.1:{}", support::free_port());
    let out = Command::new(env!("CARGO_BIN_EXE_blaze-worker"))
        .args(["--model", "/nowhere", "--listen", &listen, "--auth-token-dir"])
        .arg(tokens.path())
        .stdout(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--auth-token-dir") && stderr.contains("holds no token"), "{stderr}");
}
