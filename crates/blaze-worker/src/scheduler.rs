//! The LLM engine: a thread that owns the model and runs continuous batching, fed through a
//! bounded admission queue. Handlers get a channel of events back; dropping it cancels.

mod batch;
pub mod stop;

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError};

use tokio::sync::mpsc;

use crate::chat::Message;
use crate::engine::{Engine, Event, GenerateRequest, Health, SubmitError};
use crate::metrics::Metrics;
use crate::model::LoadedModel;

/// Scheduler limits.
#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    /// Most sequences decoded together in one step.
    pub max_batch_size: usize,
    /// Most requests waiting for a batch slot; one more is refused at once.
    pub max_queue: usize,
    /// Most prompt tokens prefilled between two decode steps (bounds the stall that running
    /// sequences see when new ones arrive).
    pub max_batch_tokens: usize,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self { max_batch_size: 16, max_queue: 64, max_batch_tokens: 2048 }
    }
}

/// State shared by the engine handle and its thread.
pub(crate) struct Shared {
    health: AtomicU8,
    in_flight: AtomicUsize,
}

impl Shared {
    fn health(&self) -> Health {
        match self.health.load(Ordering::SeqCst) {
            0 => Health::Loading,
            1 => Health::Ready,
            2 => Health::Draining,
            _ => Health::Failed,
        }
    }

    fn set(&self, h: Health) {
        let v = match h {
            Health::Loading => 0,
            Health::Ready => 1,
            Health::Draining => 2,
            Health::Failed => 3,
        };
        self.health.store(v, Ordering::SeqCst);
    }
}

/// A queued request with the channel its events go to.
pub(crate) struct Admission {
    request: GenerateRequest,
    sink: mpsc::UnboundedSender<Event>,
    admitted_at: std::time::Instant,
}

/// An [`Engine`] for text generation with a llama-family model.
pub struct LlmEngine {
    name: String,
    model: Arc<LoadedModel>,
    queue: SyncSender<Admission>,
    shared: Arc<Shared>,
    metrics: Metrics,
    config: SchedulerConfig,
}

impl LlmEngine {
    /// Starts the scheduler thread for `model`, serving it as `name`.
    pub fn start(
        name: String,
        model: LoadedModel,
        config: SchedulerConfig,
        metrics: Metrics,
    ) -> Self {
        let model = Arc::new(model);
        let (queue, receiver) = std::sync::mpsc::sync_channel(config.max_queue);
        let shared = Arc::new(Shared { health: AtomicU8::new(1), in_flight: AtomicUsize::new(0) });
        let worker = batch::Worker::new(
            model.clone(),
            receiver,
            shared.clone(),
            metrics.clone(),
            config.clone(),
        );
        let on_exit = shared.clone();
        std::thread::Builder::new()
            .name("blaze-scheduler".into())
            .spawn(move || {
                // A panic must not leave a worker that looks ready but never answers: mark it
                // failed (readyz 503, submissions refused); dropped channels end open streams.
                let outcome =
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| worker.run()));
                if outcome.is_err() {
                    tracing::error!("the scheduler thread panicked");
                }
                on_exit.set(Health::Failed);
            })
            .expect("spawning the scheduler thread");
        Self { name, model, queue, shared, metrics, config }
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

impl Engine for LlmEngine {
    fn model_name(&self) -> &str {
        &self.name
    }

    fn health(&self) -> Health {
        self.shared.health()
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
        let admission = Admission { request, sink, admitted_at: std::time::Instant::now() };
        self.shared.in_flight.fetch_add(1, Ordering::SeqCst);
        self.metrics.waiting.inc();
        match self.queue.try_send(admission) {
            Ok(()) => Ok(events),
            Err(e) => {
                self.shared.in_flight.fetch_sub(1, Ordering::SeqCst);
                self.metrics.waiting.dec();
                match e {
                    TrySendError::Full(_) => {
                        self.metrics.rejected.inc();
                        Err(SubmitError::QueueFull(self.config.max_queue))
                    }
                    TrySendError::Disconnected(_) => Err(SubmitError::Unavailable(Health::Failed)),
                }
            }
        }
    }

    fn drain(&self) {
        self.shared.set(Health::Draining);
    }

    fn in_flight(&self) -> usize {
        self.shared.in_flight.load(Ordering::SeqCst)
    }
}
