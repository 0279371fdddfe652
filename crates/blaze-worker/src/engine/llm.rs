//! The LLM engine: a thread that owns the model and runs continuous batching, fed through a
//! bounded admission queue, with a watchdog beside it. Handlers get a channel of events
//! back; dropping it cancels.

mod batch;
pub mod stop;

use std::sync::Arc;
use std::sync::mpsc::SyncSender;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use blaze_worker_cli::WarmPrompt;

use crate::chat::Message;
use crate::engine::health::{self, Shared};
use crate::engine::{Engine, Event, GenerateRequest, Health, SubmitError, fault};
use crate::metrics::Metrics;
use crate::model::{KvCache, LoadedModel};

/// Scheduler limits.
#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    /// Most sequences decoded together in one step.
    pub max_batch_size: usize,
    /// Most requests waiting for a batch slot; one more is refused at once.
    pub max_queue: usize,
    /// Most prompt tokens prefilled between two decode steps (bounds the stall that running
    /// sequences see when new ones arrive). A longer prompt is prefilled in chunks, a pass
    /// per decode step: the oldest unfinished prompt takes up to half of each pass, the
    /// others share the rest fewest tokens left first, so a short prompt passes a long one
    /// and the long one still advances every step.
    pub max_batch_tokens: usize,
    /// How long an idle scheduler holds a first request so that others arriving meanwhile
    /// are prefilled in the same pass (up to `max_batch_size` sequences or
    /// `max_batch_tokens`); zero starts at once. Sequences already decoding never wait:
    /// new requests join them between two steps.
    pub max_wait: Duration,
    /// Longest the scheduler may go without progress (one forward pass, or an idle wait)
    /// while requests are queued or running before the watchdog fails the engine.
    pub stall_timeout: Duration,
    /// Bytes of keys and values of recent prompts kept for prompts that start the same way
    /// (0: off).
    pub prefix_cache_bytes: u64,
    /// Keep every running sequence's keys and values in a slot of one buffer per layer, so
    /// that a decode step's attention is one batched call for the whole batch instead of a
    /// few per sequence (see [`crate::model::KvPool`]). The worker turns it on for a GPU,
    /// where each call is a kernel launch; on the CPU per-sequence caches are faster and give
    /// a sequence the same numbers whatever else is in the batch.
    pub kv_slots: bool,
}

impl Default for SchedulerConfig {
    /// The worker's command-line defaults.
    fn default() -> Self {
        Self {
            max_batch_size: 16,
            max_queue: 64,
            max_batch_tokens: 2048,
            max_wait: Duration::from_millis(5),
            stall_timeout: Duration::from_secs(120),
            prefix_cache_bytes: 0,
            kv_slots: false,
        }
    }
}

/// A queued request with the channel its events go to.
pub(crate) struct Admission {
    request: GenerateRequest,
    sink: mpsc::UnboundedSender<Event>,
    admitted_at: Instant,
}

/// An [`Engine`] for text generation with a llama-family model.
pub struct LlmEngine {
    name: String,
    model: Arc<LoadedModel>,
    queue: SyncSender<Admission>,
    shared: Arc<Shared<Event>>,
    metrics: Metrics,
    config: SchedulerConfig,
}

impl LlmEngine {
    /// Starts the scheduler thread for `model`, serving it as `name`, and its watchdog.
    pub fn start(
        name: String,
        model: LoadedModel,
        config: SchedulerConfig,
        metrics: Metrics,
    ) -> Self {
        let model = Arc::new(model);
        let (queue, shared) = health::start_engine_thread(
            "blaze-scheduler",
            &metrics,
            config.max_queue,
            config.stall_timeout,
            |receiver, shared| {
                batch::Worker::new(model.clone(), receiver, shared, metrics.clone(), config.clone())
            },
            batch::Worker::run,
        );
        Self { name, model, queue, shared, metrics, config }
    }

    /// Runs a short prompt through `model`, a prefill and one decode step (the two shapes
    /// every request runs), on the calling thread before the engine starts, so that the
    /// first request does not pay for first use: weights paged in from the file, candle's
    /// thread pools and kernels started (those of slotted caches' batched decode step with
    /// `kv_slots`, see [`SchedulerConfig::kv_slots`]). Returns how long it took.
    pub fn warm_up(model: &LoadedModel, kv_slots: bool) -> crate::Result<Duration> {
        let started = Instant::now();
        let mut prompt = model.encode_prompt("Hello")?;
        if prompt.is_empty() {
            prompt.push(model.bos_id.unwrap_or(0));
        }
        let mut cache = if kv_slots { model.llama.kv_pool(1).cache() } else { KvCache::default() };
        fault::before_forward();
        let logits = model.llama.forward_one(&prompt, &mut cache)?.to_vec1::<f32>()?;
        let next = crate::sampling::argmax(&logits);
        fault::before_forward();
        model.llama.forward_one(&[next], &mut cache)?.to_vec1::<f32>()?;
        Ok(started.elapsed())
    }

    /// The loaded model (for tests and benchmarks).
    pub fn model(&self) -> &Arc<LoadedModel> {
        &self.model
    }

    /// The scheduler's limits.
    pub fn config(&self) -> &SchedulerConfig {
        &self.config
    }
}

/// Runs each of `prompts` through `engine` (a prefill and one greedy token), in order, so
/// that its prefix cache holds them before the worker reports ready. Returns the prompt
/// tokens prefilled; an error names the prompt (by its place in the list) and what failed.
pub async fn warm(engine: &dyn Engine, prompts: &[WarmPrompt]) -> Result<usize, String> {
    let mut tokens = 0;
    for (i, warm) in prompts.iter().enumerate() {
        let prompt = match (&warm.prompt, &warm.messages) {
            (Some(text), _) => engine.tokenize(text),
            (None, Some(messages)) => {
                let messages: Vec<Message> = messages
                    .iter()
                    .map(|m| Message { role: m.role.clone(), content: m.content.clone() })
                    .collect();
                engine.tokenize_chat(&messages)
            }
            (None, None) => Ok(Vec::new()),
        };
        let request = GenerateRequest {
            prompt: prompt.map_err(|e| format!("warm prompt {i}: {e}"))?,
            max_tokens: 1,
            sampling: crate::sampling::SamplingParams::default(),
            stop: Vec::new(),
            deadline: None,
        };
        tokens += request.prompt.len();
        let mut events = engine.submit(request).map_err(|e| format!("warm prompt {i}: {e}"))?;
        loop {
            match events.recv().await {
                Some(Event::Token { .. }) => {}
                Some(Event::Done { .. }) => break,
                Some(Event::Error(e)) => return Err(format!("warm prompt {i}: {e}")),
                None => return Err(format!("warm prompt {i}: the engine stopped")),
            }
        }
    }
    Ok(tokens)
}

impl Engine for LlmEngine {
    health::lifecycle_methods!();

    fn model_name(&self) -> &str {
        &self.name
    }

    fn context_length(&self) -> usize {
        self.model.llama.config().max_seq_len
    }

    fn tokenize(&self, text: &str) -> Result<Vec<u32>, SubmitError> {
        self.model
            .encode_prompt(text)
            .map_err(|e| SubmitError::Invalid { field: "prompt", message: e.to_string() })
    }

    fn tokenize_chat(&self, messages: &[Message]) -> Result<Vec<u32>, SubmitError> {
        let text = self
            .model
            .chat
            .render(messages)
            .map_err(|e| SubmitError::Invalid { field: "messages", message: e.to_string() })?;
        // Templates write the BOS token themselves when the model wants one.
        self.model
            .tokenizer
            .encode(&text)
            .map_err(|e| SubmitError::Invalid { field: "messages", message: e.to_string() })
    }

    fn token_text(&self, id: u32) -> String {
        self.model.tokenizer.decode(&[id]).unwrap_or_default()
    }

    fn submit(
        &self,
        request: GenerateRequest,
    ) -> Result<mpsc::UnboundedReceiver<Event>, SubmitError> {
        let health = self.shared.health();
        if health != Health::Ready {
            return Err(SubmitError::Unavailable(health));
        }
        let context = self.context_length();
        if request.prompt.is_empty() {
            return Err(SubmitError::Invalid {
                field: "prompt",
                message: "the prompt is empty".into(),
            });
        }
        if request.prompt.len() >= context {
            let message = format!(
                "the prompt has {} tokens; the model's context is {context}",
                request.prompt.len()
            );
            return Err(SubmitError::Invalid { field: "prompt", message });
        }
        let (sink, events) = mpsc::unbounded_channel();
        self.shared.register(&sink).map_err(SubmitError::Unavailable)?;
        let admission = Admission { request, sink, admitted_at: Instant::now() };
        let max_queue = self.config.max_queue;
        health::enqueue(&self.shared, &self.metrics, &self.queue, admission, max_queue)?;
        Ok(events)
    }
}
