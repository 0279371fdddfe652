//! The embedding engine: a thread that owns an encoder model and runs dynamic batching, fed
//! through a bounded admission queue, with the same watchdog as the LLM engine. Handlers
//! tokenize, submit a request's whole `input` list as one request, and get one reply back;
//! dropping the reply's receiver cancels what has not run yet.
//!
//! This is the API an Open Inference Protocol service calls too: [`EmbeddingEngine::tokenize`]
//! then [`EmbeddingEngine::embed`] (`Vec<Vec<u32>>` in, `Vec<Vec<f32>>` out).

mod batch;

use std::sync::Arc;
use std::sync::mpsc::SyncSender;
use std::time::{Duration, Instant};

use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use tokio::sync::mpsc;

use crate::engine::health::{self, Ending, Shared};
use crate::engine::{EngineError, Health, SubmitError, fault};
use crate::metrics::Metrics;
use crate::model::embedding::EmbeddingModel;

/// Most inputs one request may carry (OpenAI's limit for `/v1/embeddings`).
pub const MAX_INPUTS: usize = 2048;

/// Batching limits.
#[derive(Debug, Clone)]
pub struct EmbeddingConfig {
    /// Most inputs in one forward pass.
    pub max_batch_size: usize,
    /// Most tokens in one forward pass, padding included (inputs x the longest of them): a
    /// bound on the pass's memory and time. An input longer than this runs alone.
    pub max_batch_tokens: usize,
    /// Most requests waiting for the model; one more is refused at once.
    pub max_queue: usize,
    /// How long an idle engine holds a first request for others to share its batches.
    pub max_wait: Duration,
    /// Longest the engine may go without progress while requests wait before the watchdog
    /// fails it.
    pub stall_timeout: Duration,
}

impl Default for EmbeddingConfig {
    /// The worker's command-line defaults.
    fn default() -> Self {
        Self {
            max_batch_size: 16,
            max_batch_tokens: 2048,
            max_queue: 64,
            max_wait: Duration::from_millis(5),
            stall_timeout: Duration::from_secs(120),
        }
    }
}

/// One request: every input of a `/v1/embeddings` call, already tokenized.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmbedRequest {
    /// Token ids of each input, as the model sees them (special tokens included).
    pub inputs: Vec<Vec<u32>>,
    /// Cut inputs longer than the model takes instead of refusing them.
    pub truncate: bool,
    /// Components wanted per vector (`None`: all); fewer only for a Matryoshka model.
    pub dimensions: Option<usize>,
}

/// The vectors of a request, in the order of its inputs.
#[derive(Debug, Clone, PartialEq)]
pub struct Embeddings {
    /// One vector per input.
    pub vectors: Vec<Vec<f32>>,
    /// Tokens of all inputs, after any truncation.
    pub prompt_tokens: usize,
}

/// What the engine sends back for a request: its vectors, or why it ended without them.
pub type Reply = Result<Embeddings, EngineError>;

impl Ending for Reply {
    fn failed(error: EngineError) -> Self {
        Err(error)
    }
}

/// Why [`EmbeddingEngine::embed`] gave no vectors.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EmbedError {
    /// The request was not admitted.
    #[error(transparent)]
    Refused(#[from] SubmitError),
    /// The engine ended it.
    #[error(transparent)]
    Failed(#[from] EngineError),
}

blaze_telemetry::metrics! {
    /// The embedding engine's own metrics (the request counts, latency and queue gauges are
    /// the shared vLLM-named ones in [`Metrics`]).
    #[derive(Clone)]
    pub struct EmbeddingMetrics {
        /// Inputs per forward pass.
        batch_size: Histogram = "blaze_embedding_batch_size", "Inputs per embedding forward pass",
            Histogram::new([1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0].into_iter());
        /// The fraction of a pass's tokens that are padding.
        padding: Histogram = "blaze_embedding_padding_ratio",
            "Fraction of an embedding forward pass's tokens that are padding",
            Histogram::new([0.01, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75].into_iter());
    }
}

impl EmbeddingMetrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        Self::create(registry)
    }
}

/// A queued request with the channel its reply goes to.
pub(crate) struct Admission {
    request: EmbedRequest,
    sink: mpsc::UnboundedSender<Reply>,
    admitted_at: Instant,
}

/// Serves an embedding model.
pub struct EmbeddingEngine {
    name: String,
    model: Arc<EmbeddingModel>,
    queue: SyncSender<Admission>,
    shared: Arc<Shared<Reply>>,
    metrics: Metrics,
    config: EmbeddingConfig,
}

impl EmbeddingEngine {
    /// Starts the batching thread for `model`, serving it as `name`, and its watchdog.
    pub fn start(
        name: String,
        model: EmbeddingModel,
        config: EmbeddingConfig,
        metrics: Metrics,
        own: EmbeddingMetrics,
    ) -> Self {
        let model = Arc::new(model);
        let (queue, shared) = health::start_engine_thread(
            "blaze-embedder",
            &metrics,
            config.max_queue,
            config.stall_timeout,
            |receiver, shared| {
                batch::Worker::new(
                    model.clone(),
                    receiver,
                    shared,
                    metrics.clone(),
                    own,
                    config.clone(),
                )
            },
            batch::Worker::run,
        );
        Self { name, model, queue, shared, metrics, config }
    }

    /// Embeds one short input on the calling thread before the engine starts, so that the
    /// first request does not pay for first use. Returns how long it took.
    pub fn warm_up(model: &EmbeddingModel) -> crate::Result<Duration> {
        let started = Instant::now();
        let ids = model.encode("Hello", true)?;
        fault::before_forward();
        model.embed(&[&ids])?;
        Ok(started.elapsed())
    }

    /// The loaded model.
    pub fn model(&self) -> &Arc<EmbeddingModel> {
        &self.model
    }

    /// The batching limits.
    pub fn config(&self) -> &EmbeddingConfig {
        &self.config
    }

    /// The name clients use for the served model.
    pub fn model_name(&self) -> &str {
        &self.name
    }

    health::lifecycle_methods!(pub);

    /// The token ids the model sees for `text` (special tokens included), cut to the
    /// model's maximum when `truncate`.
    pub fn tokenize(&self, text: &str, truncate: bool) -> Result<Vec<u32>, SubmitError> {
        self.model
            .encode(text, truncate)
            .map_err(|e| SubmitError::Invalid { field: "input", message: e.to_string() })
    }

    /// Queues `request` after checking it; the receiver gets one [`Reply`]. Dropping it
    /// cancels the inputs that have not run yet.
    pub fn submit(
        &self,
        mut request: EmbedRequest,
    ) -> Result<mpsc::UnboundedReceiver<Reply>, SubmitError> {
        let health = self.shared.health();
        if health != Health::Ready {
            return Err(SubmitError::Unavailable(health));
        }
        self.check(&mut request)?;
        let (sink, reply) = mpsc::unbounded_channel();
        self.shared.register(&sink).map_err(SubmitError::Unavailable)?;
        let admission = Admission { request, sink, admitted_at: Instant::now() };
        let max_queue = self.config.max_queue;
        health::enqueue(&self.shared, &self.metrics, &self.queue, admission, max_queue)?;
        Ok(reply)
    }

    /// [`Self::submit`], then the vectors.
    pub async fn embed(&self, request: EmbedRequest) -> Result<Embeddings, EmbedError> {
        let mut reply = self.submit(request)?;
        match reply.recv().await {
            Some(reply) => Ok(reply?),
            None => Err(EngineError::Failed("the embedding engine stopped".into()).into()),
        }
    }

    /// Refuses what cannot be served, naming the field; cuts long inputs when asked to.
    fn check(&self, request: &mut EmbedRequest) -> Result<(), SubmitError> {
        let invalid = |field, message: String| SubmitError::Invalid { field, message };
        let model = &self.model;
        if request.inputs.is_empty() {
            return Err(invalid("input", "must not be empty".into()));
        }
        if request.inputs.len() > MAX_INPUTS {
            let n = request.inputs.len();
            return Err(invalid("input", format!("{n} inputs; at most {MAX_INPUTS} per request")));
        }
        let (max, vocab) = (model.max_tokens(), model.vocab_size());
        for (i, input) in request.inputs.iter_mut().enumerate() {
            if input.is_empty() {
                return Err(invalid("input", format!("input[{i}] has no tokens")));
            }
            if let Some(id) = input.iter().find(|&&id| id as usize >= vocab) {
                let message = format!("input[{i}] has token id {id}; the vocabulary has {vocab}");
                return Err(invalid("input", message));
            }
            if input.len() > max {
                if !request.truncate {
                    let message = format!(
                        "input[{i}] has {} tokens; {} takes at most {max} (send \"truncate\": \
                         true to cut longer inputs)",
                        input.len(),
                        self.name
                    );
                    return Err(invalid("input", message));
                }
                input.truncate(max);
            }
        }
        let width = model.dimensions();
        match request.dimensions {
            None => {}
            Some(0) => return Err(invalid("dimensions", "must be at least 1".into())),
            Some(d) if d > width => {
                let message = format!("{d}: {} makes vectors of {width}", self.name);
                return Err(invalid("dimensions", message));
            }
            Some(d) if d != width && !model.sentence().matryoshka => {
                let message = format!(
                    "{d}: {} makes vectors of {width} and was not trained for shorter ones (its \
                     model card has no Matryoshka tag); leave dimensions out or send {width}",
                    self.name
                );
                return Err(invalid("dimensions", message));
            }
            Some(_) => {}
        }
        Ok(())
    }
}
