//! Image generation through the worker binary (`--kind diffusion`) on a tiny random-weight
//! pipeline: OpenAI's `/v1/images/generations` (PNGs, seeds, errors naming the field,
//! streamed progress), requests batched together, and the Open Inference Protocol.

use crate::support::worker as support;

use std::time::Duration;

use base64::Engine as _;
use blaze_worker::model::diffusion::tiny::{self, Variant};
use serde_json::{Value, json};
use support::Worker;

async fn worker(dir: &std::path::Path, extra: &[&str]) -> Worker {
    tiny::write(dir, Variant::Sd, 3).unwrap();
    let model = format!("file://{}", dir.display());
    let mut args = vec!["--kind", "diffusion", "--model", &model, "--served-model-name", "tiny-sd"];
    args.extend_from_slice(&[
        "--default-width",
        "64",
        "--default-height",
        "64",
        "--default-steps",
        "2",
    ]);
    args.extend_from_slice(extra);
    Worker::start(&args, Duration::from_secs(60)).await
}

/// Width, height and RGB bytes of a PNG.
fn decode(png: &[u8]) -> (u32, u32, Vec<u8>) {
    let mut reader = png::Decoder::new(std::io::Cursor::new(png)).read_info().unwrap();
    let mut rgb = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut rgb).unwrap();
    rgb.truncate(info.buffer_size());
    (info.width, info.height, rgb)
}

fn b64(v: &Value) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD.decode(v.as_str().unwrap()).unwrap()
}

#[tokio::test]
async fn images_come_back_as_pngs_of_the_asked_size_and_a_seed_repeats_its_image() {
    let dir = tempfile::tempdir().unwrap();
    let w = worker(dir.path(), &[]).await;
    let ask =
        json!({"model": "tiny-sd", "prompt": "a red fox", "n": 2, "size": "96x64", "seed": 5});
    let (status, body) = w.post_json("/v1/images/generations", &ask).await;
    assert_eq!(status, 200, "{body}");
    let data = body["data"].as_array().unwrap();
    assert_eq!(data.len(), 2);
    assert_eq!((data[0]["seed"].as_u64(), data[1]["seed"].as_u64()), (Some(5), Some(6)));
    let (width, height, first) = decode(&b64(&data[0]["b64_json"]));
    assert_eq!((width, height), (96, 64));
    let (_, _, second) = decode(&b64(&data[1]["b64_json"]));
    assert!(first != second, "two seeds drew one image");
    // Image 2 of the first request is image 1 of a request from its seed.
    let again = json!({"prompt": "a red fox", "size": "96x64", "seed": 6});
    let (status, body) = w.post_json("/v1/images/generations", &again).await;
    assert_eq!(status, 200, "{body}");
    let alone = decode(&b64(&body["data"][0]["b64_json"])).2;
    let diff = alone.iter().zip(&second).map(|(x, y)| x.abs_diff(*y)).max();
    // Within float rounding: a batch of two runs kernels of another shape.
    assert!(diff.unwrap() <= 2, "the seed's image alone differs by {diff:?}");
    // No size: the worker's default.
    let (status, body) = w.post_json("/v1/images/generations", &json!({"prompt": "a fox"})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(decode(&b64(&body["data"][0]["b64_json"])).0, 64);
}

#[tokio::test]
async fn bad_requests_get_400s_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let w = worker(dir.path(), &["--max-steps", "50", "--max-batch-size", "4"]).await;
    for (body, param, says) in [
        (json!({"n": 1}), "prompt", "prompt: is required"),
        (
            json!({"prompt": "a", "size": "65x64"}),
            "size",
            "size: 65x64: width 65 is not a multiple of 8",
        ),
        (json!({"prompt": "a", "size": "64x4096"}), "size", "from 64 to 2048"),
        (json!({"prompt": "a", "size": "square"}), "size", "WIDTHxHEIGHT"),
        (json!({"prompt": "a", "steps": 51}), "steps", "steps: 51: from 1 to 50"),
        (json!({"prompt": "a", "n": 5}), "n", "at most 4"),
        (json!({"prompt": "a", "guidance_scale": 80}), "guidance_scale", "from 0 to 50"),
        (json!({"prompt": "a", "response_format": "url"}), "response_format", "b64_json"),
        (json!({"prompt": "a", "model": "other"}), "model", "not served here"),
    ] {
        let (status, answer) = w.post_json("/v1/images/generations", &body).await;
        let expected = if param == "model" { 404 } else { 400 };
        assert_eq!(status, expected, "{body}: {answer}");
        assert_eq!(answer["error"]["param"], param, "{body}: {answer}");
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(message.contains(says), "{body}: {message}");
    }
    let (status, answer) = w.post_json("/v1/chat/completions", &json!({"messages": []})).await;
    assert_eq!(status, 400);
    assert!(
        answer["error"]["message"].as_str().unwrap().contains("/v1/images/generations"),
        "{answer}"
    );
}

#[tokio::test]
async fn a_streamed_request_reports_each_step_then_its_images() {
    let dir = tempfile::tempdir().unwrap();
    let w = worker(dir.path(), &[]).await;
    let ask = json!({"prompt": "a red fox", "n": 2, "steps": 3, "seed": 1, "stream": true});
    let (status, body) = w.post_raw("/v1/images/generations", &ask).await;
    assert_eq!(status, 200);
    let events: Vec<Value> = String::from_utf8(body)
        .unwrap()
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    let kinds: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        [
            "image_generation.progress",
            "image_generation.progress",
            "image_generation.progress",
            "image_generation.completed",
            "image_generation.completed"
        ]
    );
    let steps: Vec<u64> = events[..3].iter().map(|e| e["step"].as_u64().unwrap()).collect();
    assert_eq!(steps, [1, 2, 3]);
    assert_eq!(events[3]["index"], 0);
    assert_eq!(events[4]["seed"], 2);
    assert_eq!(decode(&b64(&events[4]["b64_json"])).0, 64);
}

/// The value of the Prometheus sample `name` (with its labels) on `/metrics`.
async fn sample(w: &Worker, name: &str) -> f64 {
    let text = reqwest::get(format!("{}/metrics", w.base)).await.unwrap().text().await.unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("{name} is not on /metrics:\n{text}"))
        .parse()
        .unwrap()
}

#[tokio::test]
async fn concurrent_requests_of_one_shape_share_a_batch_and_another_shape_waits() {
    let dir = tempfile::tempdir().unwrap();
    let w = worker(dir.path(), &["--max-wait-ms", "500", "--max-batch-size", "4"]).await;
    let ask =
        |size: &str, seed: u64| json!({"prompt": "a fox", "size": size, "seed": seed, "steps": 2});
    let asks = [ask("64x64", 1), ask("64x64", 2), ask("96x64", 3)];
    let (a, b, c) = tokio::join!(
        w.post_json("/v1/images/generations", &asks[0]),
        w.post_json("/v1/images/generations", &asks[1]),
        w.post_json("/v1/images/generations", &asks[2]),
    );
    for (status, body) in [&a, &b, &c] {
        assert_eq!(*status, 200, "{body}");
    }
    // Two batches: the 64x64 pair together, the 96x64 image alone.
    assert_eq!(sample(&w, "blaze_diffusion_batch_images_count").await, 2.0);
    assert_eq!(sample(&w, "blaze_diffusion_batch_images_sum").await, 3.0);
    assert_eq!(sample(&w, "blaze_diffusion_images_total").await, 3.0);
    // Batched, each image is the one its seed draws alone.
    let (_, alone) = w.post_json("/v1/images/generations", &ask("64x64", 2)).await;
    let pixels = |v: &Value| decode(&b64(&v["data"][0]["b64_json"])).2;
    let diff = pixels(&b.1).iter().zip(pixels(&alone)).map(|(x, y)| x.abs_diff(y)).max();
    assert!(diff.unwrap() <= 2, "batched and alone differ by {diff:?}");
}

#[tokio::test]
async fn the_open_inference_protocol_generates_pngs() {
    let dir = tempfile::tempdir().unwrap();
    let w = worker(dir.path(), &[]).await;
    let meta: Value =
        reqwest::get(format!("{}/v2/models/tiny-sd", w.base)).await.unwrap().json().await.unwrap();
    assert_eq!(meta["inputs"][0]["name"], "prompt", "{meta}");
    assert_eq!(meta["outputs"][0]["name"], "image", "{meta}");
    let ask = json!({
        "inputs": [{"name": "prompt", "datatype": "BYTES", "shape": [1], "data": ["a red fox"]}],
        "parameters": {"n": 2, "width": 96, "height": 64, "steps": 2, "seed": 4},
    });
    let (status, body) = w.post_raw("/v2/models/tiny-sd/infer", &ask).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    // The JSON header, then the two PNGs as binary data (4-byte length before each).
    let header: Value =
        serde_json::Deserializer::from_slice(&body).into_iter::<Value>().next().unwrap().unwrap();
    assert_eq!(header["outputs"][0]["shape"], json!([2]), "{header}");
    let size = header["outputs"][0]["parameters"]["binary_data_size"].as_u64().unwrap() as usize;
    let raw = &body[body.len() - size..];
    let first_len = u32::from_le_bytes(raw[..4].try_into().unwrap()) as usize;
    let (width, height, _) = decode(&raw[4..4 + first_len]);
    assert_eq!((width, height), (96, 64));
    let ask =
        json!({"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": ["x"]}]});
    let (status, body) = w.post_json("/v2/models/tiny-sd/infer", &ask).await;
    assert_eq!(status, 400, "{body}");
    assert!(body["error"].as_str().unwrap().contains("prompt"), "{body}");
}

/// The memory flags reach the pipeline: `/v1/models` reports each one on, and images of a
/// size past the tiny autoencoder's training size (so tiling and slicing both act) come back.
#[tokio::test]
async fn memory_flags_reach_the_pipeline_and_it_still_draws() {
    let dir = tempfile::tempdir().unwrap();
    let flags = ["--attention-slicing", "--vae-slicing", "--vae-tiling", "--cpu-offload"];
    let w = worker(dir.path(), &flags).await;
    let models: Value =
        reqwest::get(format!("{}/v1/models", w.base)).await.unwrap().json().await.unwrap();
    let info = &models["data"][0]["blaze"];
    for key in ["attention_slicing", "vae_slicing", "vae_tiling", "cpu_offload"] {
        assert_eq!(info[key], true, "{key}: {info}");
    }
    let ask = json!({"prompt": "a red fox", "n": 2, "size": "192x192", "steps": 1, "seed": 1});
    let (status, body) = w.post_json("/v1/images/generations", &ask).await;
    assert_eq!(status, 200, "{body}");
    for image in body["data"].as_array().unwrap() {
        assert_eq!(decode(&b64(&image["b64_json"])).0, 192);
    }
}
