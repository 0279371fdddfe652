//! The scheduler through the production loading path, with a tiny random-weight llama that
//! the test writes (config.json, model.safetensors, tokenizer.json).

use std::time::{Duration, Instant};

use blaze_worker::engine::llm::{LlmEngine, SchedulerConfig};
use blaze_worker::engine::{Engine, Event, FinishReason, GenerateRequest, SubmitError};
use blaze_worker::metrics::Metrics;
use blaze_worker::model::{KvCache, Llama, LoadedModel};
use blaze_worker::sampling::SamplingParams;
use tokio::sync::mpsc::UnboundedReceiver;

fn tiny_model(context: usize) -> (tempfile::TempDir, LoadedModel) {
    let dir = tempfile::tempdir().unwrap();
    blaze_worker::testing::write_tiny_llama(dir.path(), context).unwrap();
    let model = blaze_worker::model::load(dir.path(), &candle_core::Device::Cpu).unwrap();
    (dir, model)
}

fn engine(
    model: LoadedModel,
    max_batch_size: usize,
    max_queue: usize,
) -> (LlmEngine, prometheus_client::registry::Registry) {
    let config =
        SchedulerConfig { max_batch_size, max_queue, max_batch_tokens: 4096, ..Default::default() };
    engine_with(model, config)
}

fn engine_with(
    model: LoadedModel,
    config: SchedulerConfig,
) -> (LlmEngine, prometheus_client::registry::Registry) {
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = Metrics::register(&mut registry);
    (LlmEngine::start("tiny".into(), model, config, metrics), registry)
}

/// The value of the sample `name` (with its labels, if any) in `registry`'s text form.
fn sample(registry: &prometheus_client::registry::Registry, name: &str) -> f64 {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, registry).unwrap();
    let line = text.lines().find(|l| l.starts_with(&format!("{name} "))).unwrap_or_else(|| {
        panic!("no sample {name} in:\n{text}");
    });
    line.rsplit(' ').next().unwrap().parse().unwrap()
}

fn greedy(prompt: Vec<u32>, max_tokens: usize) -> GenerateRequest {
    GenerateRequest {
        prompt,
        max_tokens,
        sampling: SamplingParams::default(),
        stop: vec![],
        deadline: None,
    }
}

/// Collects a request's token ids and finish reason, failing after `within`.
async fn collect(
    mut events: UnboundedReceiver<Event>,
    within: Duration,
) -> (Vec<u32>, FinishReason) {
    let mut ids = Vec::new();
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, events.recv()).await.expect("request timed out") {
            Some(Event::Token { id, .. }) => ids.push(id),
            Some(Event::Done { reason, completion_tokens, .. }) => {
                assert_eq!(completion_tokens, ids.len());
                return (ids, reason);
            }
            Some(Event::Error(e)) => panic!("engine error: {e}"),
            None => panic!("stream ended without Done"),
        }
    }
}

/// Plain greedy loop over one sequence: the reference the scheduler must match.
fn reference(llama: &Llama, prompt: &[u32], n: usize) -> Vec<u32> {
    let mut cache = KvCache::default();
    let mut out = Vec::new();
    let mut input = prompt.to_vec();
    for _ in 0..n {
        let logits = llama.forward_one(&input, &mut cache).unwrap().to_vec1::<f32>().unwrap();
        let next = blaze_worker::sampling::argmax(&logits);
        out.push(next);
        input = vec![next];
    }
    out
}

#[tokio::test]
async fn batched_greedy_equals_unbatched_greedy_token_for_token() {
    let (_dir, model) = tiny_model(512);
    let prompts: Vec<Vec<u32>> =
        ["a", "hello there", "the quick brown fox jumps", "xyz 123 and more words here"]
            .iter()
            .map(|p| model.encode_prompt(p).unwrap())
            .collect();
    let n = 24;
    let expected: Vec<Vec<u32>> = prompts.iter().map(|p| reference(&model.llama, p, n)).collect();
    let (engine, registry) = engine(model, 8, 16);
    let streams: Vec<_> =
        prompts.iter().map(|p| engine.submit(greedy(p.clone(), n)).unwrap()).collect();
    for (stream, want) in streams.into_iter().zip(&expected) {
        let (ids, reason) = collect(stream, Duration::from_secs(60)).await;
        assert_eq!(&ids, want);
        assert_eq!(reason, FinishReason::Length);
    }
    let batched = sample(&registry, "blaze_batch_size_sum");
    let steps = sample(&registry, "blaze_batch_size_count");
    assert!(
        batched > steps,
        "decode steps ran more than one sequence at a time: {batched} / {steps}"
    );
}

/// With the caches in slots of one pool (as on a GPU: one batched attention per decode
/// step), greedy decoding generates what the plain loop does: sequences of different
/// lengths finish at different steps and later requests take their freed slots, and prompts
/// whose beginning comes from the prefix cache have it copied into their slot; a sequence
/// that may outgrow a slot keeps a cache of its own and decodes in the same steps.
#[tokio::test]
async fn slotted_caches_generate_what_the_plain_loop_does() {
    let (_dir, model) = tiny_model(512);
    let shared = "a shared beginning, long enough for two blocks of the prefix cache: ".repeat(2);
    let texts = ["a", "hello there", "the quick brown fox jumps", "xyz 123 and more words here"];
    let mut prompts: Vec<Vec<u32>> =
        texts.iter().map(|p| model.encode_prompt(p).unwrap()).collect();
    let reused: Vec<Vec<u32>> = ["first", "second question", "third"]
        .iter()
        .map(|q| model.encode_prompt(&format!("{shared}{q}")).unwrap())
        .collect();
    prompts.extend(reused);
    // The last may grow past a slot (the context here, 512): it keeps a cache of its own
    // and decodes in the same steps as the slotted ones, until the context ends it.
    prompts.push(model.encode_prompt("a long answer").unwrap());
    let lengths = [5, 30, 12, 21, 9, 17, 3, 600];
    let mut expected: Vec<Vec<u32>> =
        prompts.iter().zip(&lengths[..7]).map(|(p, &n)| reference(&model.llama, p, n)).collect();
    expected.push(reference(&model.llama, &prompts[7], 512 - prompts[7].len()));
    let config = SchedulerConfig {
        max_batch_size: 3,
        max_queue: 16,
        prefix_cache_bytes: 8 << 20,
        kv_slots: true,
        ..Default::default()
    };
    let (engine, registry) = engine_with(model, config);
    // The first reused prompt alone first, so the others find its beginning cached.
    let first = engine.submit(greedy(prompts[4].clone(), lengths[4])).unwrap();
    let (ids, _) = collect(first, Duration::from_secs(60)).await;
    assert_eq!(ids, expected[4]);
    // The long one first, so that it shares its steps with the others.
    let streams: Vec<_> = (prompts.iter().zip(&lengths).enumerate().rev())
        .map(|(i, (p, &n))| (i, engine.submit(greedy(p.clone(), n)).unwrap()))
        .collect();
    for (i, stream) in streams {
        let (ids, reason) = collect(stream, Duration::from_secs(60)).await;
        assert_eq!(ids, expected[i], "prompt {i}");
        assert_eq!(reason, FinishReason::Length);
    }
    let hits = sample(&registry, "vllm:prefix_cache_hits_total");
    assert!(hits >= 3.0 * 32.0, "{hits} prompt tokens came from the prefix cache");
    let batched = sample(&registry, "blaze_batch_size_sum");
    let steps = sample(&registry, "blaze_batch_size_count");
    // 82 tokens of the others are decoded while the long one runs.
    assert!(
        batched - steps >= 60.0,
        "the others decoded in the long one's steps: {batched} / {steps}"
    );
}

/// A prompt longer than `max_batch_tokens` is prefilled in chunks, between decode steps of
/// the sequences already running, and generates what a whole prefill does; a short prompt
/// sent behind it gets its first token first.
#[tokio::test]
async fn long_prompts_are_prefilled_in_chunks_between_decode_steps() {
    let (_dir, model) = tiny_model(4096);
    let long = model.encode_prompt(&"many words of a long prompt ".repeat(60)).unwrap();
    let short = model.encode_prompt("short").unwrap();
    assert!(long.len() > 8 * 32, "{} tokens", long.len());
    let want = reference(&model.llama, &long, 6);
    let config = SchedulerConfig { max_batch_size: 8, max_batch_tokens: 32, ..Default::default() };
    let (engine, registry) = engine_with(model, config);

    // One sequence decoding for the whole test.
    let mut running = engine.submit(greedy(short.clone(), 100_000)).unwrap();
    assert!(matches!(running.recv().await, Some(Event::Token { .. })));
    let steps_before = sample(&registry, "blaze_batch_size_count");
    // Each request's tokens, and when its first came.
    let follow = |events: tokio::sync::mpsc::UnboundedReceiver<Event>| {
        tokio::spawn(async move {
            let mut events = events;
            let (mut ids, mut first) = (Vec::new(), None);
            while let Some(e) = events.recv().await {
                match e {
                    Event::Token { id, .. } => {
                        first.get_or_insert_with(Instant::now);
                        ids.push(id);
                    }
                    Event::Done { .. } => break,
                    Event::Error(e) => panic!("{e}"),
                }
            }
            (ids, first.expect("no token"))
        })
    };
    let long_request = follow(engine.submit(greedy(long.clone(), 6)).unwrap());
    let short_request = follow(engine.submit(greedy(short.clone(), 1)).unwrap());
    let (ids, long_first) = long_request.await.unwrap();
    let (_, short_first) = short_request.await.unwrap();
    assert!(short_first < long_first, "the short prompt waited for the long one");
    assert_eq!(ids, want, "a chunked prefill changed what greedy decoding generates");
    // The long prompt took a pass per 32 tokens (up to half the budget while the short one
    // shared a pass), and the running sequence stepped between them.
    let passes = sample(&registry, "blaze_prefill_batch_size_count");
    assert!(
        passes >= (long.len() / 32) as f64,
        "{passes} prefill passes for {} tokens",
        long.len()
    );
    let steps = sample(&registry, "blaze_batch_size_count") - steps_before;
    assert!(steps >= (long.len() / 32) as f64 - 1.0, "{steps} decode steps during the prefill");
    drop(running);
}

/// Four requests arriving 20 ms apart at an idle scheduler: with `max_wait` zero the first
/// is prefilled as soon as it arrives and the others in passes of their own; with a
/// `max_wait` longer than the burst, one prefill pass takes all four.
#[tokio::test]
async fn max_wait_gathers_a_burst_into_one_prefill_pass() {
    let mut passes = Vec::new();
    for max_wait in [Duration::ZERO, Duration::from_millis(500)] {
        let (_dir, model) = tiny_model(512);
        let prompt = model.encode_prompt("hello").unwrap();
        let config = SchedulerConfig { max_batch_size: 8, max_wait, ..Default::default() };
        let (engine, registry) = engine_with(model, config);
        let mut streams = Vec::new();
        for _ in 0..4 {
            streams.push(engine.submit(greedy(prompt.clone(), 4)).unwrap());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        for stream in streams {
            collect(stream, Duration::from_secs(60)).await;
        }
        let count = sample(&registry, "blaze_prefill_batch_size_count");
        assert_eq!(sample(&registry, "blaze_prefill_batch_size_sum"), 4.0);
        passes.push(count);
    }
    assert!(passes[0] >= 2.0, "without a wait the burst was prefilled in {} pass", passes[0]);
    assert_eq!(passes[1], 1.0, "a 500 ms wait did not gather the burst into one pass");
}

/// A long `max_wait` ends as soon as the pass is full (`max_batch_size` sequences or
/// `max_batch_tokens` prompt tokens), and never delays a request that arrives while others
/// are decoding: it joins them at the next step.
#[tokio::test]
async fn a_full_pass_or_a_running_batch_does_not_wait() {
    let (_dir, model) = tiny_model(100_000);
    let short = model.encode_prompt("hi").unwrap();
    let long = model.encode_prompt(&"tokens ".repeat(10)).unwrap();
    let config = SchedulerConfig {
        max_batch_size: 2,
        max_batch_tokens: 64,
        max_wait: Duration::from_secs(60),
        ..Default::default()
    };
    let (engine, registry) = engine_with(model, config);
    // Well below the 60 s wait, well above a tiny prefill on a loaded machine.
    let prompt = Duration::from_secs(15);
    // A prompt as long as max_batch_tokens fills the pass alone (a longer one takes a pass
    // per 64 tokens).
    assert!(long.len() >= 64);
    let long_passes = long.len().div_ceil(64) as f64;
    collect(engine.submit(greedy(long, 2)).unwrap(), prompt).await;
    // Two requests fill max_batch_size; the first goes on decoding (for 90k tokens).
    let mut running = engine.submit(greedy(short.clone(), 90_000)).unwrap();
    collect(engine.submit(greedy(short.clone(), 2)).unwrap(), prompt).await;
    let token = tokio::time::timeout(prompt, running.recv()).await;
    assert!(matches!(token, Ok(Some(Event::Token { .. }))), "{token:?}");
    // A request arriving while one decodes joins it at the next step.
    collect(engine.submit(greedy(short, 2)).unwrap(), prompt).await;
    assert_eq!(sample(&registry, "blaze_prefill_batch_size_count"), long_passes + 2.0);
}

#[tokio::test]
async fn full_queue_refuses_at_once_and_cancellation_frees_the_slot() {
    let (_dir, model) = tiny_model(100_000);
    let prompt = model.encode_prompt("hi").unwrap();
    let (engine, registry) = engine(model, 1, 1);
    // A takes the only batch slot (it would run for 90k tokens), B waits in the only queue slot.
    let mut a = engine.submit(greedy(prompt.clone(), 90_000)).unwrap();
    assert!(matches!(a.recv().await, Some(Event::Token { .. })));
    let b = engine.submit(greedy(prompt.clone(), 4)).unwrap();
    let started = Instant::now();
    assert_eq!(engine.submit(greedy(prompt.clone(), 4)).unwrap_err(), SubmitError::QueueFull(1));
    assert!(started.elapsed() < Duration::from_millis(100), "refusal must not wait");
    // Dropping A's receiver (the client went away) must free the slot for B right away.
    drop(a);
    let (ids, _) = collect(b, Duration::from_secs(30)).await;
    assert_eq!(ids.len(), 4);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    assert!(text.contains("vllm:request_success_total{finished_reason=\"cancelled\"} 1"), "{text}");
    assert!(text.contains("blaze_requests_rejected_total 1"), "{text}");
    let deadline = Instant::now() + Duration::from_secs(5);
    while engine.in_flight() > 0 {
        assert!(Instant::now() < deadline, "in-flight count never returned to 0");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn deadline_ends_a_request_and_stop_strings_cut_text() {
    let (_dir, model) = tiny_model(100_000);
    let prompt = model.encode_prompt("hi").unwrap();
    let (engine, _registry) = engine(model, 4, 4);
    let mut late = greedy(prompt.clone(), 90_000);
    late.deadline = Some(Instant::now() + Duration::from_millis(200));
    let (ids, reason) = collect(engine.submit(late).unwrap(), Duration::from_secs(30)).await;
    assert_eq!(reason, FinishReason::Deadline);
    assert!(ids.len() < 90_000);

    // Find what greedy says, then stop on a piece of it.
    let mut text = String::new();
    let mut events = engine.submit(greedy(prompt.clone(), 12)).unwrap();
    while let Some(Event::Token { text: t, .. }) = events.recv().await {
        text.push_str(&t);
    }
    let chars: Vec<char> = text.chars().collect();
    assert!(chars.len() >= 6, "expected some text, got {text:?}");
    let stop: String = chars[3..5].iter().collect();
    let mut with_stop = greedy(prompt, 12);
    with_stop.stop = vec![stop.clone()];
    let mut events = engine.submit(with_stop).unwrap();
    let mut cut = String::new();
    let mut reason = None;
    while let Some(e) = events.recv().await {
        match e {
            Event::Token { text, .. } => cut.push_str(&text),
            Event::Done { reason: r, .. } => reason = Some(r),
            Event::Error(e) => panic!("{e}"),
        }
    }
    assert_eq!(reason, Some(FinishReason::Stop));
    assert_eq!(cut, text[..text.find(&stop).unwrap()]);
}

/// A Qwen2 (biases on q/k/v, tied embeddings) through the production loader: its logits
/// match candle-transformers' own Qwen2 over the same files, prompt and decode steps.
#[test]
fn qwen2_forward_matches_candle_transformers_qwen2() {
    use candle_core::{DType, Device, Tensor};
    use candle_transformers::models::qwen2;
    let dir = tempfile::tempdir().unwrap();
    blaze_worker::testing::write_tiny_qwen2(dir.path(), 256).unwrap();
    let model = blaze_worker::model::load(dir.path(), &Device::Cpu).unwrap();
    let config: qwen2::Config =
        serde_json::from_slice(&std::fs::read(dir.path().join("config.json")).unwrap()).unwrap();
    let bytes = std::fs::read(dir.path().join("model.safetensors")).unwrap();
    let vb =
        candle_nn::VarBuilder::from_buffered_safetensors(bytes, DType::F32, &Device::Cpu).unwrap();
    let mut stock = qwen2::ModelForCausalLM::new(&config, vb).unwrap();
    let mut cache = KvCache::default();
    let mut input = model.tokenizer.encode("Qwen says hi").unwrap();
    let mut pos = 0;
    for _ in 0..3 {
        let ours = model.llama.forward_one(&input, &mut cache).unwrap().to_vec1::<f32>().unwrap();
        let x = Tensor::new(input.as_slice(), &Device::Cpu).unwrap().unsqueeze(0).unwrap();
        let theirs = stock.forward(&x, pos).unwrap().flatten_all().unwrap();
        let theirs = theirs.to_vec1::<f32>().unwrap();
        let diff = ours.iter().zip(&theirs).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        assert!(diff < 1e-3, "logits differ by {diff} at position {pos}");
        pos += input.len();
        input = vec![blaze_worker::sampling::argmax(&ours)];
    }
}
