//! The Open Inference Protocol (v2) through the worker binary, REST and gRPC: the real
//! all-MiniLM-L6-v2 (scripts/fetch-models.sh) for embeddings, the tiny random llama for text
//! generation, a tiny encoder and the fault hook for a failed worker; and Triton's official
//! Python client (`tritonclient[http,grpc]`, scripts/test-deps.sh) against the worker and
//! through the router.

use crate::support::worker as support;

use std::collections::HashMap;
use std::process::Command;
use std::time::Duration;

use blaze_proto::inference::grpc_inference_service_client::GrpcInferenceServiceClient;
use blaze_proto::inference::infer_parameter::ParameterChoice;
use blaze_proto::inference::model_infer_request::{InferInputTensor, InferRequestedOutputTensor};
use blaze_proto::inference::{
    InferParameter, InferTensorContents, ModelInferRequest, ModelMetadataRequest,
    ModelReadyRequest, ServerLiveRequest, ServerMetadataRequest, ServerReadyRequest,
};
use serde_json::{Value, json};
use support::Worker;
use tonic::Code;
use tonic::transport::Channel;

type Client = GrpcInferenceServiceClient<Channel>;

const TEXTS: [&str; 4] = [
    "A man is eating food.",
    "A man is eating a piece of bread.",
    "The new movie is awesome.",
    "Ein Mann isst Brot. 🍞",
];

/// A worker serving HTTP and gRPC on one port, as the operator runs it, and a gRPC client.
async fn worker(args: &[&str], ready_within: u64) -> (Worker, Client) {
    let port = support::free_port();
    let addr = format!("127.0.0.1:{port}");
    let mut all = args.to_vec();
    all.extend(["--grpc-listen", &addr]);
    let worker = Worker::start_on(port, &all, Duration::from_secs(ready_within)).await;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    (worker, GrpcInferenceServiceClient::new(channel))
}

async fn minilm() -> (Worker, Client) {
    let model = blaze_worker::testing::minilm();
    let args = ["--model", model.to_str().unwrap(), "--kind", "embedding"];
    worker(&[&args[..], &["--served-model-name", "minilm"]].concat(), 120).await
}

async fn get(worker: &Worker, path: &str) -> (u16, Value) {
    let r = reqwest::get(format!("{}{path}", worker.base)).await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

fn texts_input(texts: &[&str]) -> Value {
    json!({"name": "text", "shape": [texts.len()], "datatype": "BYTES", "data": texts})
}

/// The rows of a `[n, d]` FP32 output given flat.
fn rows(flat: &[f32], shape: &[i64]) -> Vec<Vec<f32>> {
    assert_eq!(shape.len(), 2, "{shape:?}");
    assert_eq!(flat.len() as i64, shape[0] * shape[1]);
    flat.chunks(shape[1] as usize).map(<[f32]>::to_vec).collect()
}

fn max_difference(a: &[Vec<f32>], b: &[Vec<f32>]) -> f32 {
    assert_eq!(a.len(), b.len());
    let pairs = a.iter().zip(b).flat_map(|(x, y)| x.iter().zip(y));
    pairs.map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

/// The vectors `/v1/embeddings` gives for `texts`.
async fn openai_vectors(worker: &Worker, texts: &[&str]) -> Vec<Vec<f32>> {
    let (status, answer) = worker.post_json("/v1/embeddings", &json!({"input": texts})).await;
    assert_eq!(status, 200, "{answer}");
    let data = answer["data"].as_array().unwrap();
    data.iter().map(|d| serde_json::from_value(d["embedding"].clone()).unwrap()).collect()
}

fn bytes_tensor(name: &str, shape: Vec<i64>, items: &[&str]) -> InferInputTensor {
    let bytes_contents = items.iter().map(|t| t.as_bytes().to_vec()).collect();
    InferInputTensor {
        name: name.into(),
        datatype: "BYTES".into(),
        shape,
        contents: Some(InferTensorContents { bytes_contents, ..Default::default() }),
        ..Default::default()
    }
}

/// BYTES elements in their raw form, as Triton's clients write them.
fn raw_bytes(items: &[&str]) -> Vec<u8> {
    let mut raw = Vec::new();
    for item in items {
        raw.extend_from_slice(&(item.len() as u32).to_le_bytes());
        raw.extend_from_slice(item.as_bytes());
    }
    raw
}

#[tokio::test]
async fn minilm_over_rest_and_grpc_embeds_as_v1_embeddings_does() {
    let (worker, mut client) = minilm().await;
    for path in ["/v2/health/live", "/v2/health/ready", "/v2/models/minilm/ready"] {
        let (status, body) = get(&worker, path).await;
        assert_eq!(status, 200, "{path}: {body}");
    }
    let (_, server) = get(&worker, "/v2").await;
    assert_eq!(server["name"], "blaze", "{server}");
    let (status, meta) = get(&worker, "/v2/models/minilm").await;
    assert_eq!(status, 200, "{meta}");
    assert_eq!(meta["inputs"][0], json!({"name": "text", "datatype": "BYTES", "shape": [-1]}));
    assert_eq!(
        meta["outputs"][0],
        json!({"name": "embedding", "datatype": "FP32", "shape": [-1, 384]})
    );
    for path in ["/v2/models/nope", "/v2/models/nope/ready", "/v2/models/minilm/versions/3"] {
        let (status, body) = get(&worker, path).await;
        assert_eq!(status, 404, "{path}: {body}");
        assert!(body["error"].is_string(), "{path}: {body}");
    }

    let want = openai_vectors(&worker, &TEXTS).await;
    let body = json!({"id": "r1", "inputs": [texts_input(&TEXTS)]});
    let (status, answer) = worker.post_json("/v2/models/minilm/infer", &body).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!((&answer["model_name"], &answer["id"]), (&json!("minilm"), &json!("r1")));
    let output = &answer["outputs"][0];
    assert_eq!((&output["name"], &output["datatype"]), (&json!("embedding"), &json!("FP32")));
    assert_eq!(output["shape"], json!([4, 384]));
    let flat: Vec<f32> = serde_json::from_value(output["data"].clone()).unwrap();
    let rest = rows(&flat, &[4, 384]);
    assert!(max_difference(&rest, &want) <= 1e-6, "REST differs from /v1/embeddings");

    assert!(client.server_live(ServerLiveRequest {}).await.unwrap().into_inner().live);
    assert!(client.server_ready(ServerReadyRequest {}).await.unwrap().into_inner().ready);
    let ready = ModelReadyRequest { name: "minilm".into(), version: String::new() };
    assert!(client.model_ready(ready).await.unwrap().into_inner().ready);
    let server = client.server_metadata(ServerMetadataRequest {}).await.unwrap().into_inner();
    assert_eq!(server.name, "blaze");
    let meta = ModelMetadataRequest { name: "minilm".into(), version: String::new() };
    let meta = client.model_metadata(meta).await.unwrap().into_inner();
    assert_eq!(
        (meta.outputs[0].name.as_str(), meta.outputs[0].shape.as_slice()),
        ("embedding", &[-1, 384][..])
    );
    let unknown = ModelMetadataRequest { name: "nope".into(), version: String::new() };
    assert_eq!(client.model_metadata(unknown).await.unwrap_err().code(), Code::NotFound);

    // Listed in contents, answered in contents.
    let listed = ModelInferRequest {
        model_name: "minilm".into(),
        id: "g1".into(),
        inputs: vec![bytes_tensor("text", vec![4, 1], &TEXTS)],
        ..Default::default()
    };
    let answer = client.model_infer(listed.clone()).await.unwrap().into_inner();
    assert_eq!((answer.model_name.as_str(), answer.id.as_str()), ("minilm", "g1"));
    let output = &answer.outputs[0];
    assert_eq!((output.datatype.as_str(), output.shape.as_slice()), ("FP32", &[4, 384][..]));
    assert!(answer.raw_output_contents.is_empty());
    let fp32 = &output.contents.as_ref().unwrap().fp32_contents;
    assert!(max_difference(&rows(fp32, &output.shape), &want) <= 1e-6);

    // Raw in, raw out (little-endian f32), as Triton's clients send and read.
    let mut raw = listed;
    raw.inputs[0].contents = None;
    raw.raw_input_contents = vec![raw_bytes(&TEXTS)];
    raw.outputs =
        vec![InferRequestedOutputTensor { name: "embedding".into(), ..Default::default() }];
    let answer = client.model_infer(raw).await.unwrap().into_inner();
    assert!(answer.outputs[0].contents.is_none());
    let floats: Vec<f32> = answer.raw_output_contents[0]
        .chunks(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    assert!(max_difference(&rows(&floats, &answer.outputs[0].shape), &want) <= 1e-6);

    // The engine counts OIP requests with the OpenAI ones, under vLLM's names.
    let metrics = reqwest::get(format!("{}/metrics", worker.base)).await.unwrap();
    let metrics = metrics.text().await.unwrap();
    let line = "vllm:request_success_total{finished_reason=\"stop\"} 4";
    assert!(metrics.contains(line), "no {line:?} in\n{metrics}");
}

/// Every malformed request is refused before it reaches the engine, naming the field.
#[tokio::test]
async fn malformed_tensors_get_400_and_invalid_argument_naming_the_field() {
    let (worker, mut client) = minilm().await;
    let long = "word ".repeat(300);
    let text = |datatype: &str, shape: Value, data: Value| json!({"inputs": [{"name": "text", "datatype": datatype, "shape": shape, "data": data}]});
    for (body, field) in [
        (text("FP32", json!([2]), json!([1.0, 2.0])), "inputs[0].datatype"),
        (text("BYTES", json!([3]), json!(["a", "b"])), "inputs[0].data"),
        (text("BYTES", json!([2, 2]), json!(["a", "b", "c", "d"])), "inputs[0].shape"),
        (text("BYTES", json!([2]), json!(["a", 7])), "inputs[0].data"),
        (text("BYTES", json!([1]), json!([long])), "inputs[0]"),
        (json!({"inputs": []}), "inputs"),
        (json!({}), "inputs"),
        (json!({"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1]}]}), "inputs[0]"),
        (json!({"inputs": [texts_input(&["a"]), texts_input(&["b"])]}), "inputs[1]"),
        (
            json!({"inputs": [texts_input(&["a"])], "outputs": [{"name": "logits"}]}),
            "outputs[0].name",
        ),
    ] {
        let (status, answer) = worker.post_json("/v2/models/minilm/infer", &body).await;
        assert_eq!(status, 400, "{body}: {answer}");
        let message = answer["error"].as_str().unwrap_or_else(|| panic!("{answer}"));
        assert!(message.starts_with(&format!("{field}: ")), "{body}: {message}");
    }
    // Triton's binary extension with a length prefix past the data.
    let header = r#"{"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1],
        "parameters": {"binary_data_size": 6}}]}"#;
    let mut body = header.as_bytes().to_vec();
    body.extend_from_slice(&[9, 0, 0, 0, b'h', b'i']);
    let r = reqwest::Client::new()
        .post(format!("{}/v2/models/minilm/infer", worker.base))
        .header("Inference-Header-Content-Length", header.len())
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let message = r.json::<Value>().await.unwrap()["error"].as_str().unwrap().to_owned();
    assert!(message.contains("binary_data_size") && message.contains("9 bytes"), "{message}");
    let (status, _) =
        worker.post_json("/v2/models/other/infer", &text("BYTES", json!([1]), json!(["a"]))).await;
    assert_eq!(status, 404);

    let request = |inputs: Vec<InferInputTensor>, raw: Vec<Vec<u8>>| ModelInferRequest {
        model_name: "minilm".into(),
        inputs,
        raw_input_contents: raw,
        ..Default::default()
    };
    let raw_text = |shape| InferInputTensor {
        name: "text".into(),
        datatype: "BYTES".into(),
        shape,
        ..Default::default()
    };
    let mut fp32 = bytes_tensor("text", vec![1], &["a"]);
    fp32.datatype = "FP32".into();
    let mut bad_prefix = raw_bytes(&["hello"]);
    bad_prefix[0] = 200;
    for (request, field) in [
        (request(vec![fp32], vec![]), "inputs[0].datatype"),
        (
            request(vec![bytes_tensor("text", vec![3], &["a", "b"])], vec![]),
            "inputs[0].contents.bytes_contents",
        ),
        (request(vec![bytes_tensor("text", vec![1, 2], &["a", "b"])], vec![]), "inputs[0].shape"),
        (request(vec![], vec![]), "inputs"),
        (request(vec![raw_text(vec![1])], vec![bad_prefix]), "raw_input_contents[0]"),
        (request(vec![raw_text(vec![2])], vec![raw_bytes(&["a"])]), "raw_input_contents[0]"),
        (
            request(vec![raw_text(vec![1])], vec![raw_bytes(&["a"]), raw_bytes(&["b"])]),
            "raw_input_contents",
        ),
    ] {
        let status = client.model_infer(request.clone()).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{request:?}: {status:?}");
        assert!(
            status.message().starts_with(&format!("{field}: ")),
            "{field}: {}",
            status.message()
        );
    }
    let mut other = request(vec![bytes_tensor("text", vec![1], &["a"])], vec![]);
    other.model_name = "other".into();
    assert_eq!(client.model_infer(other).await.unwrap_err().code(), Code::NotFound);
}

fn int(value: i64) -> InferParameter {
    InferParameter { parameter_choice: Some(ParameterChoice::Int64Param(value)) }
}

#[tokio::test]
async fn text_generation_answers_as_v1_completions_over_rest_and_grpc() {
    let dir = tempfile::tempdir().unwrap();
    blaze_worker::testing::write_tiny_llama(dir.path(), 512).unwrap();
    let model = dir.path().to_str().unwrap();
    let (worker, mut client) = worker(&["--model", model, "--served-model-name", "tiny"], 60).await;
    let (_, meta) = get(&worker, "/v2/models/tiny").await;
    assert_eq!(meta["inputs"][0]["name"], "text_input", "{meta}");
    assert_eq!(meta["outputs"][0]["name"], "text_output", "{meta}");

    let completion = json!({"prompt": "hello", "max_tokens": 6, "temperature": 0});
    let (status, answer) = worker.post_json("/v1/completions", &completion).await;
    assert_eq!(status, 200, "{answer}");
    let want = answer["choices"][0]["text"].as_str().unwrap().to_owned();

    let prompt =
        json!({"name": "text_input", "datatype": "BYTES", "shape": [1], "data": ["hello"]});
    let body = json!({"inputs": [prompt], "parameters": {"max_tokens": 6, "temperature": 0}});
    let (status, answer) = worker.post_json("/v2/models/tiny/infer", &body).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["outputs"][0]["datatype"], "BYTES");
    assert_eq!(answer["outputs"][0]["data"], json!([want]));

    // As Triton's vLLM backend takes them: sampling_parameters as JSON, stream false, and
    // the prompt kept in the output.
    let flag = |name: &str, value: bool| json!({"name": name, "datatype": "BOOL", "shape": [1], "data": [value]});
    let sampling = json!({"name": "sampling_parameters", "datatype": "BYTES", "shape": [1],
        "data": [r#"{"max_tokens": 6, "temperature": 0}"#]});
    let body = json!({"inputs": [prompt, sampling, flag("stream", false), flag("exclude_input_in_output", false)]});
    let (status, answer) = worker.post_json("/v2/models/tiny/infer", &body).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["outputs"][0]["data"], json!([format!("hello{want}")]));

    let parameters: HashMap<String, InferParameter> =
        [("max_tokens".to_owned(), int(6)), ("temperature".to_owned(), int(0))].into();
    let request = ModelInferRequest {
        model_name: "tiny".into(),
        parameters,
        inputs: vec![bytes_tensor("text_input", vec![1, 1], &["hello"])],
        ..Default::default()
    };
    let answer = client.model_infer(request.clone()).await.unwrap().into_inner();
    let text = &answer.outputs[0].contents.as_ref().unwrap().bytes_contents[0];
    assert_eq!(String::from_utf8_lossy(text), want);

    for (body, field) in [
        (
            json!({"inputs": [{"name": "prompt", "datatype": "BYTES", "shape": [1], "data": ["x"]}]}),
            "inputs[0].name",
        ),
        (json!({"inputs": [flag("stream", false)]}), "inputs"),
        (json!({"inputs": [prompt, flag("stream", true)]}), "inputs[1]"),
        (json!({"inputs": [prompt], "parameters": {"temperature": 9}}), "parameters.temperature"),
        (
            json!({"inputs": [prompt], "parameters": {"max_tokens": 100000}}),
            "parameters.max_tokens",
        ),
    ] {
        let (status, answer) = worker.post_json("/v2/models/tiny/infer", &body).await;
        assert_eq!(status, 400, "{body}: {answer}");
        assert!(answer["error"].as_str().unwrap().starts_with(&format!("{field}: ")), "{answer}");
    }
    let mut hot = request;
    let temperature = ParameterChoice::DoubleParam(9.5);
    hot.parameters
        .insert("temperature".into(), InferParameter { parameter_choice: Some(temperature) });
    let status = client.model_infer(hot).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().starts_with("parameters.temperature: "), "{}", status.message());
}

/// A worker whose engine failed is not live, and refuses inference as unavailable (a router
/// sends it elsewhere).
#[tokio::test]
async fn a_failed_worker_is_not_live_and_unavailable_over_both_forms() {
    if !cfg!(debug_assertions) {
        eprintln!("skipped: the fault hook exists in debug builds only");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model");
    blaze_worker::testing::write_tiny_encoder(&model, "bert", 64).unwrap();
    let fault = dir.path().join("fault");
    let port = support::free_port();
    let addr = format!("127.0.0.1:{port}");
    let args = ["--model", model.to_str().unwrap(), "--kind", "embedding", "--grpc-listen", &addr];
    let env = [(blaze_worker::engine::fault::FAULT_FILE_VAR, fault.to_str().unwrap())];
    let worker = Worker::start_with_env(port, &args, &env, Duration::from_secs(60)).await;
    std::fs::write(&fault, "panic").unwrap();
    let body = json!({"inputs": [texts_input(&["boom"])]});
    let (status, answer) = worker.post_json("/v2/models/model/infer", &body).await;
    assert_eq!(status, 503, "{answer}");
    // The engine ends the requests in flight, then turns Failed.
    blaze_testing::until("/v2/health/live to fail", 10, async || {
        (get(&worker, "/v2/health/live").await.0 == 503).then_some(())
    })
    .await
    .unwrap();
    for path in ["/v2/health/ready", "/v2/models/model/ready"] {
        assert_eq!(get(&worker, path).await.0, 503, "{path}");
    }
    let (status, answer) = worker.post_json("/v2/models/model/infer", &body).await;
    assert_eq!(status, 503, "{answer}");
    assert!(answer["error"].as_str().unwrap().contains("panicked"), "{answer}");

    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = GrpcInferenceServiceClient::new(channel);
    assert!(!client.server_live(ServerLiveRequest {}).await.unwrap().into_inner().live);
    let request = ModelInferRequest {
        inputs: vec![bytes_tensor("text", vec![1], &["again"])],
        ..Default::default()
    };
    assert_eq!(client.model_infer(request).await.unwrap_err().code(), Code::Unavailable);
}

const TRITON: &str = r#"
import json, sys
import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

address, texts = sys.argv[1], json.loads(sys.argv[2])
out = {}
for kind, module in [("http", httpclient), ("grpc", grpcclient)]:
    client = module.InferenceServerClient(url=address)
    assert client.is_server_live() and client.is_server_ready(), kind
    assert client.is_model_ready("minilm"), kind
    data = np.array([t.encode() for t in texts], dtype=np.object_)
    text = module.InferInput("text", [len(texts)], "BYTES")
    text.set_data_from_numpy(data)
    asked = [module.InferRequestedOutput("embedding")]
    if kind == "http":
        asked = [module.InferRequestedOutput("embedding", binary_data=False)]
    answers = [client.infer("minilm", [text]), client.infer("minilm", [text], outputs=asked)]
    out[kind] = [a.as_numpy("embedding").tolist() for a in answers]
    out[kind + "_dtype"] = str(answers[0].as_numpy("embedding").dtype)
    wrong = module.InferInput("text", [2], "FP32")
    wrong.set_data_from_numpy(np.zeros(2, dtype=np.float32))
    try:
        client.infer("minilm", [wrong])
        out[kind + "_error"] = None
    except InferenceServerException as e:
        out[kind + "_error"] = [str(e.status()), e.message()]
print(json.dumps(out))
"#;

/// What Triton's client gets from `address`: its vectors, each answer's, and its errors.
async fn triton(address: String) -> Value {
    let texts = serde_json::to_string(&TEXTS).unwrap();
    let out = tokio::task::spawn_blocking(move || {
        Command::new("python3").args(["-c", TRITON, &address, &texts]).output().unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "tritonclient failed: {stderr}\n{stdout}");
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

/// Triton's HTTP client (binary tensor data by default, JSON when asked) and gRPC client
/// (raw contents) embed through the worker, and through the router in front of it.
#[tokio::test]
async fn tritonclient_embeds_over_http_and_grpc_directly_and_through_the_router() {
    let (worker, _) = minilm().await;
    let want = openai_vectors(&worker, &TEXTS).await;
    let direct = format!("127.0.0.1:{}", worker.port);
    let router = support::Router::start(&[&direct]).await;
    for address in [direct.clone(), router.addr.clone()] {
        let got = triton(address.clone()).await;
        for kind in ["http", "grpc"] {
            let answers: Vec<Vec<Vec<f32>>> = serde_json::from_value(got[kind].clone()).unwrap();
            for vectors in answers {
                assert_eq!((vectors.len(), vectors[0].len()), (4, 384), "{address} {kind}");
                assert!(max_difference(&vectors, &want) <= 1e-6, "{address} {kind}");
            }
            assert_eq!(got[format!("{kind}_dtype")], "float32");
            let error = got[format!("{kind}_error")].as_array().unwrap_or_else(|| panic!("{got}"));
            let code = if kind == "http" { "400" } else { "StatusCode.INVALID_ARGUMENT" };
            assert_eq!(error[0], code, "{address} {kind}");
            assert!(error[1].as_str().unwrap().contains("inputs[0].datatype"), "{error:?}");
        }
    }
}
