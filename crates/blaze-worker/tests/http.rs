//! The worker binary over HTTP with a tiny random-weight llama written by the test: the
//! OpenAI surface, errors, health, metrics and graceful shutdown.

use crate::support::worker as support;

use std::time::Duration;

use serde_json::{Value, json};
use support::Worker;

async fn tiny_worker(extra: &[&str]) -> (tempfile::TempDir, Worker) {
    let dir = tempfile::tempdir().unwrap();
    blaze_worker::testing::write_tiny_llama(dir.path(), 4096).unwrap();
    let model = dir.path().to_str().unwrap().to_string();
    let mut args = vec!["--model", model.as_str(), "--served-model-name", "tiny"];
    args.extend_from_slice(extra);
    let worker = Worker::start(&args, Duration::from_secs(60)).await;
    (dir, worker)
}

#[tokio::test]
async fn openai_api_health_errors_and_metrics() {
    let (_dir, worker) = tiny_worker(&[]).await;
    let client = reqwest::Client::new();
    assert_eq!(client.get(format!("{}/livez", worker.base)).send().await.unwrap().status(), 200);
    let models: Value = client
        .get(format!("{}/v1/models", worker.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(models["data"][0]["id"], "tiny");

    let completion = json!({"model": "tiny", "prompt": "hi", "max_tokens": 5, "temperature": 0});
    let (status, body) = worker.post_json("/v1/completions", &completion).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["object"], "text_completion");
    assert_eq!(body["usage"]["completion_tokens"], 5);
    assert_eq!(body["choices"][0]["finish_reason"], "length");

    let (status, body) = worker.post_json("/v1/chat/completions", &json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 3, "logprobs": true, "top_logprobs": 2})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["choices"][0]["message"]["role"], "assistant");
    assert_eq!(body["choices"][0]["logprobs"]["content"].as_array().unwrap().len(), 3);
    assert_eq!(
        body["choices"][0]["logprobs"]["content"][0]["top_logprobs"].as_array().unwrap().len(),
        2
    );

    for (body, field, code) in [
        (json!({"prompt": "hi", "temperature": 7}), "temperature", 400),
        (json!({"prompt": "hi", "max_tokens": 10_000_000}), "max_tokens", 400),
        (json!({"prompt": "hi", "model": "nope"}), "model", 404),
        (json!({"prompt": "x ".repeat(5000)}), "prompt", 400),
    ] {
        let (status, err) = worker.post_json("/v1/completions", &body).await;
        assert_eq!(status, code, "{err}");
        assert_eq!(err["error"]["param"], field, "{err}");
        assert!(err["error"]["message"].as_str().unwrap().contains(field), "{err}");
    }
    let r = client
        .post(format!("{}/v1/completions", worker.base))
        .body("{oops")
        .header("content-type", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    // An oversized body gets 413, and the server reads the rest of it, so the connection
    // stays usable: the next request on the same connection is answered.
    let (status, reused) = oversized_then_livez(&worker, 5 * 1024 * 1024).await;
    assert_eq!(status, 413);
    assert_eq!(reused.as_deref(), Some("ok"), "the connection serves the next request");
    let r = client
        .post(format!("{}/v1/completions", worker.base))
        .body(vec![b'a'; 5 * 1024 * 1024])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    let err: Value = r.json().await.unwrap();
    assert!(err["error"]["message"].as_str().unwrap().contains("larger than"), "{err}");

    let metrics =
        client.get(format!("{}/metrics", worker.base)).send().await.unwrap().text().await.unwrap();
    for name in [
        "vllm:num_requests_running",
        "vllm:num_requests_waiting",
        "vllm:time_to_first_token_seconds_bucket",
        "vllm:generation_tokens_total 8",
        "vllm:kv_cache_usage_perc",
    ] {
        assert!(metrics.contains(name), "{name} missing from\n{metrics}");
    }
}

#[tokio::test]
async fn chat_streams_server_sent_events_in_openai_chunks() {
    let (_dir, worker) = tiny_worker(&[]).await;
    let body = json!({"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 6, "temperature": 0, "stream": true, "stream_options": {"include_usage": true}});
    let text = reqwest::Client::new()
        .post(format!("{}/v1/chat/completions", worker.base))
        .json(&body)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let data: Vec<&str> = text.lines().filter_map(|l| l.strip_prefix("data: ")).collect();
    assert_eq!(data.last(), Some(&"[DONE]"));
    let chunks: Vec<Value> =
        data[..data.len() - 1].iter().map(|d| serde_json::from_str(d).unwrap()).collect();
    assert!(chunks.iter().all(|c| c["object"] == "chat.completion.chunk"));
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let finish: Vec<&Value> =
        chunks.iter().filter(|c| !c["choices"][0]["finish_reason"].is_null()).collect();
    assert_eq!(finish.len(), 1);
    assert_eq!(finish[0]["choices"][0]["finish_reason"], "length");
    assert_eq!(chunks.last().unwrap()["usage"]["completion_tokens"], 6);
}

#[tokio::test]
async fn full_queue_is_429_and_sigterm_drains_then_exits_zero() {
    let (_dir, mut worker) = tiny_worker(&["--max-batch-size", "1", "--max-queue", "1"]).await;
    let client = reqwest::Client::new();
    // A long stream holds the only slot; the next request waits in the only queue place.
    let long = json!({"prompt": "hi", "max_tokens": 3000, "stream": true});
    let mut a =
        client.post(format!("{}/v1/completions", worker.base)).json(&long).send().await.unwrap();
    assert_eq!(a.status(), 200);
    a.chunk().await.unwrap().expect("first chunk");
    // A streamed reply's headers come back once the request is admitted to the queue.
    let short = json!({"prompt": "hi", "max_tokens": 2, "stream": true});
    let waiting =
        client.post(format!("{}/v1/completions", worker.base)).json(&short).send().await.unwrap();
    assert_eq!(waiting.status(), 200);
    let (status, rejected) =
        worker.post_json("/v1/completions", &json!({"prompt": "hi", "max_tokens": 2})).await;
    assert_eq!(status, 429, "{rejected}");
    assert_eq!(rejected["error"]["type"], "rate_limit_exceeded");

    // SIGTERM: not ready at once, in-flight requests still finish, then exit 0.
    worker.terminate();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let r = client.get(format!("{}/readyz", worker.base)).send().await.unwrap();
        if r.status() == 503 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "still ready after SIGTERM");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut streamed = String::new();
    while let Some(chunk) = a.chunk().await.unwrap() {
        streamed.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(
        streamed.contains("\"finish_reason\":\"length\""),
        "the in-flight stream was cut: {}",
        &streamed[streamed.len().saturating_sub(300)..]
    );
    let waited = waiting.text().await.unwrap();
    assert!(
        waited.contains("\"finish_reason\":\"length\""),
        "the queued request was dropped: {waited}"
    );
    assert!(worker.wait(Duration::from_secs(30)).await.success());
}

/// On one raw HTTP/1.1 connection: POSTs a body of `size` bytes to /v1/completions, then
/// GETs /livez. Returns the POST's status and the /livez body, if the server answered it.
async fn oversized_then_livez(worker: &Worker, size: usize) -> (u16, Option<String>) {
    use tokio::io::{AsyncWriteExt, BufReader};
    let stream = tokio::net::TcpStream::connect(("127.0.0.1", worker.port)).await.unwrap();
    let (read, mut write) = stream.into_split();
    let head = format!(
        "POST /v1/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {size}\r\n\r\n"
    );
    write.write_all(head.as_bytes()).await.unwrap();
    // Write the body while reading: the server may answer before it has read all of it.
    let writer = tokio::spawn(async move {
        let _ = write.write_all(&vec![b'a'; size]).await;
        let _ = write.write_all(b"GET /livez HTTP/1.1\r\nhost: x\r\n\r\n").await;
        write
    });
    let mut read = BufReader::new(read);
    let (status, _) = read_response(&mut read).await.expect("a response to the POST");
    let _write = writer.await.unwrap();
    let second = tokio::time::timeout(Duration::from_secs(10), read_response(&mut read))
        .await
        .ok()
        .flatten()
        .map(|(_, body)| body);
    (status, second)
}

/// One HTTP/1.1 response with a content-length body: status and body.
async fn read_response(
    read: &mut tokio::io::BufReader<tokio::net::tcp::OwnedReadHalf>,
) -> Option<(u16, String)> {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt};
    let mut line = String::new();
    read.read_line(&mut line).await.ok()?;
    let status = line.split_whitespace().nth(1)?.parse().ok()?;
    let mut length = 0;
    loop {
        line.clear();
        read.read_line(&mut line).await.ok()?;
        if line == "\r\n" || line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse().ok()?;
        }
    }
    let mut body = vec![0; length];
    read.read_exact(&mut body).await.ok()?;
    Some((status, String::from_utf8_lossy(&body).into_owned()))
}
