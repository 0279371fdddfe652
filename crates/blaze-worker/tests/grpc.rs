//! The gRPC surface on the HTTP port: streaming generate and grpc.health.v1.

use crate::support::worker as support;

use std::time::Duration;

use blaze_proto::generate::generate_client::GenerateClient;
use blaze_proto::generate::{GenerateRequest, SamplingParams};
use support::Worker;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

#[tokio::test]
async fn generate_streams_tokens_and_health_reports_serving_on_the_shared_port() {
    let dir = tempfile::tempdir().unwrap();
    blaze_worker::testing::write_tiny_llama(dir.path(), 512).unwrap();
    let model = dir.path().to_str().unwrap().to_string();
    let port = support::free_port();
    let addr = format!("127.0.0.1:{port}");
    let worker = Worker::start(
        &["--model", &model, "--served-model-name", "tiny", "--grpc-listen", &addr],
        Duration::from_secs(60),
    )
    .await;
    let _ = worker;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();

    let mut health = HealthClient::new(channel.clone());
    let status = health
        .check(HealthCheckRequest { service: String::new() })
        .await
        .unwrap()
        .into_inner()
        .status;
    assert_eq!(status, ServingStatus::Serving as i32);

    let mut client = GenerateClient::new(channel);
    let request = GenerateRequest {
        model: "tiny".into(),
        prompt: "hello".into(),
        max_tokens: 5,
        sampling: Some(SamplingParams { temperature: Some(0.0), ..Default::default() }),
        stop: vec![],
    };
    let mut stream = client.generate_stream(request.clone()).await.unwrap().into_inner();
    let mut ids = Vec::new();
    let mut last = None;
    while let Some(msg) = stream.message().await.unwrap() {
        ids.extend(msg.token_ids.iter().copied());
        if !msg.finish_reason.is_empty() {
            last = Some(msg);
        }
    }
    let last = last.expect("a final message with finish_reason");
    assert_eq!(last.finish_reason, "length");
    assert_eq!(last.completion_tokens, 5);
    assert_eq!(ids.len(), 5);

    let bad = GenerateRequest {
        sampling: Some(SamplingParams { top_p: Some(0.0), ..Default::default() }),
        ..request
    };
    let err = client.generate_stream(bad).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("top_p"), "{}", err.message());
}

/// A gRPC client reaches the worker through the router, as in a pod: the worker serves gRPC
/// on its HTTP port (`--grpc-listen` equal to `--listen`, what the operator renders) and the
/// router passes the HTTP/2 stream and its trailers through.
#[tokio::test]
async fn generate_reaches_the_worker_through_the_router() {
    let dir = tempfile::tempdir().unwrap();
    blaze_worker::testing::write_tiny_llama(dir.path(), 512).unwrap();
    let model = dir.path().to_str().unwrap().to_string();
    let port = support::free_port();
    let shared = format!("127.0.0.1:{port}");
    let args = ["--model", &model, "--served-model-name", "tiny", "--grpc-listen", &shared];
    let _worker = Worker::start_on(port, &args, Duration::from_secs(60)).await;
    let router = support::Router::start(&[&shared]).await;

    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", router.addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = GenerateClient::new(channel);
    let request = GenerateRequest {
        model: "tiny".into(),
        prompt: "through the router".into(),
        max_tokens: 4,
        sampling: Some(SamplingParams { temperature: Some(0.0), ..Default::default() }),
        stop: vec![],
    };
    let mut stream = client.generate_stream(request).await.unwrap().into_inner();
    let (mut ids, mut finish) = (Vec::new(), String::new());
    while let Some(msg) = stream.message().await.unwrap() {
        ids.extend(msg.token_ids.iter().copied());
        if !msg.finish_reason.is_empty() {
            finish = msg.finish_reason;
        }
    }
    assert_eq!((ids.len(), finish.as_str()), (4, "length"));
    let metrics = reqwest::get(format!("http://{}/metrics", router.addr)).await.unwrap();
    let metrics = metrics.text().await.unwrap();
    let line = format!("blaze_router_endpoint_in_flight{{endpoint=\"{shared}\"");
    assert!(metrics.contains(&line), "the router does not list the worker:\n{metrics}");
}
