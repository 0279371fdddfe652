//! Prefix reuse through the scheduler: prompts that share a prefix with an earlier one take
//! its keys and values from the prefix cache, and generate what a cold prefill generates.

use std::time::Duration;

use blaze_worker::engine::llm::{LlmEngine, SchedulerConfig};
use blaze_worker::engine::{Engine, Event, GenerateRequest};
use blaze_worker::model::LoadedModel;
use blaze_worker::sampling::SamplingParams;
use blaze_worker_cli::{WarmMessage, WarmPrompt};
use prometheus_client::registry::Registry;

const SYSTEM: &str = "You are a careful assistant for a team that runs inference services on \
    Kubernetes. Answer in one short sentence, name the resource involved, never invent \
    flags, and say so when a question is outside what you know about clusters, pods, \
    services, routers, engines, replicas, autoscaling, caches and their metrics.";

const QUESTIONS: [&str; 5] = [
    "What scales the replicas?",
    "Where do the weights come from?",
    "What is a router?",
    "How is a pod restarted?",
    "What does the cache keep?",
];

fn smollm2() -> LoadedModel {
    blaze_worker::model::load(&blaze_worker::testing::smollm2_gguf(), &candle_core::Device::Cpu)
        .unwrap()
}

fn start(model: LoadedModel, prefix_cache_bytes: u64) -> (LlmEngine, Registry) {
    let mut registry = Registry::default();
    let metrics = blaze_worker::metrics::Metrics::register(&mut registry);
    // Prompts sent together are prefilled in one pass even on a loaded machine, where the
    // default 5 ms could split them (another split is another float summation order, which
    // may flip a near tie in greedy decoding).
    let max_wait = Duration::from_millis(300);
    let config = SchedulerConfig { prefix_cache_bytes, max_wait, ..Default::default() };
    (LlmEngine::start("smollm2".into(), model, config, metrics), registry)
}

fn sample(registry: &Registry, name: &str) -> f64 {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, registry).unwrap();
    let line = text.lines().find(|l| l.starts_with(&format!("{name} ")));
    let line = line.unwrap_or_else(|| panic!("no sample {name} in:\n{text}"));
    line.rsplit(' ').next().unwrap().parse().unwrap()
}

fn chat(engine: &LlmEngine, question: &str) -> Vec<u32> {
    let messages = [("system", SYSTEM), ("user", question)].map(|(role, content)| {
        blaze_worker::chat::Message { role: role.into(), content: content.into() }
    });
    engine.tokenize_chat(&messages).unwrap()
}

fn greedy(prompt: Vec<u32>) -> GenerateRequest {
    let sampling = SamplingParams::default();
    GenerateRequest { prompt, max_tokens: 8, sampling, stop: vec![], deadline: None }
}

/// Sends every prompt at once (one prefill pass, one batch) and returns each one's tokens.
async fn generate(engine: &LlmEngine, prompts: &[Vec<u32>]) -> Vec<Vec<u32>> {
    let streams: Vec<_> =
        prompts.iter().map(|p| engine.submit(greedy(p.clone())).unwrap()).collect();
    let mut out = Vec::new();
    for mut events in streams {
        let mut ids = Vec::new();
        loop {
            match tokio::time::timeout(Duration::from_secs(120), events.recv()).await.unwrap() {
                Some(Event::Token { id, .. }) => ids.push(id),
                Some(Event::Done { .. }) => break,
                Some(Event::Error(e)) => panic!("{e}"),
                None => panic!("the engine dropped a request"),
            }
        }
        assert!(!ids.is_empty());
        out.push(ids);
    }
    out
}

#[tokio::test]
async fn reused_prefixes_generate_what_a_cold_prefill_does_alone_and_batched() {
    // Both engines multiply with the same weights and the same kernels: a load times the
    // dense copy of each projection against its quantized weights, and on a busy machine two
    // loads may keep different ones, which round differently.
    let cold_model = smollm2();
    let mut warm_model = smollm2();
    warm_model.llama = cold_model.llama.clone();
    let (cold, _) = start(cold_model, 0);
    let (warm, registry) = start(warm_model, 64 << 20);
    let prompts: Vec<Vec<u32>> = QUESTIONS.iter().map(|q| chat(&cold, q)).collect();
    let shared = prompts[0].iter().zip(&prompts[1]).take_while(|(a, b)| a == b).count();
    assert!(shared >= 64, "the system prompt is {shared} tokens");
    let mut want = Vec::new();
    for p in &prompts {
        want.extend(generate(&cold, std::slice::from_ref(p)).await);
    }

    // The first prompt fills the cache; the second, alone, reuses the shared blocks.
    let mut got = generate(&warm, &prompts[..1]).await;
    assert_eq!(sample(&registry, "vllm:prefix_cache_hits_total"), 0.0);
    got.extend(generate(&warm, &prompts[1..2]).await);
    let hits = sample(&registry, "vllm:prefix_cache_hits_total");
    assert_eq!(hits, (shared / 16 * 16) as f64, "whole blocks of the shared prefix");
    // The other three together, in one prefill pass and one decode batch.
    got.extend(generate(&warm, &prompts[2..]).await);
    assert_eq!(got, want, "prefix reuse changed what greedy decoding generates");
    assert_eq!(sample(&registry, "vllm:prefix_cache_hits_total"), 4.0 * hits);
    let queried: usize = prompts.iter().map(Vec::len).sum();
    assert_eq!(sample(&registry, "vllm:prefix_cache_queries_total"), queried as f64);

    // The same prompt again reuses all of it but its last token.
    let again = generate(&warm, &prompts[..1]).await;
    assert_eq!(again[0], want[0]);
    let after = sample(&registry, "vllm:prefix_cache_hits_total");
    assert_eq!(after - 4.0 * hits, (prompts[0].len() / 16 * 16).min(prompts[0].len() - 1) as f64);
    let held = sample(&registry, "blaze_prefix_cache_bytes");
    assert!(held > 0.0 && held <= sample(&registry, "blaze_prefix_cache_capacity_bytes"));
}

#[tokio::test]
async fn warm_prompts_are_in_the_cache_before_the_first_request() {
    let dir = tempfile::tempdir().unwrap();
    blaze_worker::testing::write_tiny_llama(dir.path(), 4096).unwrap();
    let model = blaze_worker::model::load(dir.path(), &candle_core::Device::Cpu).unwrap();
    let (engine, registry) = start(model, 16 << 20);
    let system = "a system prompt long enough to fill several blocks of sixteen tokens ".repeat(4);
    let warm = [WarmPrompt {
        prompt: None,
        messages: Some(vec![WarmMessage { role: "system".into(), content: system.clone() }]),
    }];
    let warmed = blaze_worker::engine::llm::warm(&engine, &warm).await.unwrap();
    assert!(warmed >= 64, "{warmed} tokens warmed");
    let hits = sample(&registry, "vllm:prefix_cache_hits_total");
    let messages =
        [("system", system.as_str()), ("user", "and a question")].map(|(role, content)| {
            blaze_worker::chat::Message { role: role.into(), content: content.into() }
        });
    let prompt = engine.tokenize_chat(&messages).unwrap();
    generate(&engine, &[prompt]).await;
    let reused = sample(&registry, "vllm:prefix_cache_hits_total") - hits;
    assert!(reused >= (warmed / 16 * 16 - 16) as f64, "{reused} of {warmed} warmed tokens reused");

    // A warm prompt the model cannot take fails with its place in the list.
    let too_long = WarmPrompt { prompt: Some("word ".repeat(5000)), messages: None };
    let error = blaze_worker::engine::llm::warm(&engine, &[warm[0].clone(), too_long]).await;
    let error = error.unwrap_err();
    assert!(error.starts_with("warm prompt 1:") && error.contains("context"), "{error}");
}
