//! Engines: the contract between the servers (HTTP, gRPC) and whatever executes requests,
//! and its implementations: text generation ([`llm`], behind the [`Engine`] trait),
//! embeddings ([`embedding`]) and image generation ([`diffusion`]). A worker serves one of
//! them, as its `--kind` says ([`Served`]); they share the health states, the watchdog and
//! the fault hook.

pub mod diffusion;
pub mod embedding;
pub mod fault;
mod health;
pub mod llm;

use std::sync::Arc;
use std::time::Instant;

use blaze_worker_cli::Kind;
use tokio::sync::{mpsc, watch};

use self::diffusion::DiffusionEngine;
use self::embedding::EmbeddingEngine;
use crate::sampling::{SamplingParams, TokenLogprob};

/// Where the engine is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// Loading weights or warming up: not ready.
    Loading,
    /// Serving.
    Ready,
    /// Finishing in-flight work before shutdown: not ready, no new admissions.
    Draining,
    /// The execution thread died or stalled: not live, no new admissions, every request in
    /// flight ended with [`EngineError::Failed`].
    Failed,
}

/// One generation request, already tokenized and validated.
#[derive(Debug, Clone)]
pub struct GenerateRequest {
    /// The prompt's token ids.
    pub prompt: Vec<u32>,
    /// The most tokens to generate.
    pub max_tokens: usize,
    /// Sampling settings.
    pub sampling: SamplingParams,
    /// Generation stops before the first of these strings.
    pub stop: Vec<String>,
    /// After this instant the request is ended with [`FinishReason::Deadline`].
    pub deadline: Option<Instant>,
}

/// Why a generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// An end-of-sequence token or a stop string.
    Stop,
    /// `max_tokens` or the context length.
    Length,
    /// The request's deadline passed.
    Deadline,
}

impl FinishReason {
    /// The name OpenAI's API uses (`stop`, `length`); a deadline reads as `length`.
    pub fn as_openai(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length | FinishReason::Deadline => "length",
        }
    }
}

/// What the engine streams back for a request.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A generated token and the text it completes (possibly empty, or held back while it
    /// could be the start of a stop string).
    Token {
        /// The token id.
        id: u32,
        /// Text to append.
        text: String,
        /// Its log-probability, when asked for.
        logprob: Option<TokenLogprob>,
    },
    /// The last event.
    Done {
        /// Why it ended.
        reason: FinishReason,
        /// Prompt length in tokens.
        prompt_tokens: usize,
        /// Tokens generated.
        completion_tokens: usize,
    },
    /// The engine failed on this request; the last event.
    Error(EngineError),
}

/// Why the engine ended a request before its end.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EngineError {
    /// The forward pass failed on this request's batch (HTTP 500, gRPC `INTERNAL`).
    #[error("{0}")]
    Forward(String),
    /// The worker stopped serving (its scheduler died or stalled) and waits to be restarted;
    /// another replica can serve the request (HTTP 503 with `Retry-After`, gRPC
    /// `UNAVAILABLE`).
    #[error("the worker failed and is restarting ({0}); retry the request")]
    Failed(String),
}

impl EngineError {
    /// Whether sending the same request again (to another replica) may succeed.
    pub fn is_retriable(&self) -> bool {
        matches!(self, EngineError::Failed(_))
    }
}

/// Why a request was not admitted.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SubmitError {
    /// The admission queue is full: retry later (HTTP 429, gRPC `RESOURCE_EXHAUSTED`).
    #[error("the server is at capacity: {0} requests are already waiting")]
    QueueFull(usize),
    /// The engine is not accepting work (loading, draining or failed; HTTP 503).
    #[error("the engine is not accepting requests ({0:?})")]
    Unavailable(Health),
    /// The request cannot be served as given (HTTP 400, gRPC `INVALID_ARGUMENT`).
    #[error("{field}: {message}")]
    Invalid {
        /// The request field at fault.
        field: &'static str,
        /// What is wrong with it.
        message: String,
    },
}

/// Executes requests and reports health. Implementations own their model off the async
/// runtime; `submit` never blocks.
pub trait Engine: Send + Sync + 'static {
    /// The name clients use for the served model.
    fn model_name(&self) -> &str;
    /// Current health.
    fn health(&self) -> Health;
    /// Health as it changes (to notice [`Health::Failed`] without polling).
    fn watch_health(&self) -> watch::Receiver<Health>;
    /// What failed, once the health is [`Health::Failed`] (`/livez` shows it).
    fn failure(&self) -> Option<String>;
    /// Longest prompt plus completion, in tokens.
    fn context_length(&self) -> usize;
    /// Token ids of `text` (for a raw completion prompt).
    fn tokenize(&self, text: &str) -> Result<Vec<u32>, SubmitError>;
    /// Token ids of a chat conversation rendered with the model's chat template.
    fn tokenize_chat(&self, messages: &[crate::chat::Message]) -> Result<Vec<u32>, SubmitError>;
    /// The text of one token, for logprobs.
    fn token_text(&self, id: u32) -> String;
    /// Queues a request. Dropping the returned receiver cancels it.
    fn submit(
        &self,
        request: GenerateRequest,
    ) -> Result<mpsc::UnboundedReceiver<Event>, SubmitError>;
    /// Stops admitting requests; those in flight run to completion.
    fn drain(&self);
    /// Requests queued or running.
    fn in_flight(&self) -> usize;
}

/// The engine a worker serves: one, of the kind its `--kind` names. The HTTP and gRPC
/// handlers take the variant their API is for and answer the other kind's clients with an
/// error that says which API this worker serves.
#[derive(Clone)]
pub enum Served {
    /// Text generation: completions, chat completions, the generate RPC.
    Llm(Arc<dyn Engine>),
    /// Embeddings: `/v1/embeddings`.
    Embedding(Arc<EmbeddingEngine>),
    /// Image generation: `/v1/images/generations`.
    Diffusion(Arc<DiffusionEngine>),
}

impl Served {
    /// What it serves.
    pub fn kind(&self) -> Kind {
        match self {
            Served::Llm(_) => Kind::Llm,
            Served::Embedding(_) => Kind::Embedding,
            Served::Diffusion(_) => Kind::Diffusion,
        }
    }

    /// The name clients use for the served model.
    pub fn model_name(&self) -> &str {
        match self {
            Served::Llm(e) => e.model_name(),
            Served::Embedding(e) => e.model_name(),
            Served::Diffusion(e) => e.model_name(),
        }
    }

    /// The longest input in tokens: the context of a generator, the most an embedding
    /// model takes, a diffusion pipeline's prompt (its text encoder's length).
    pub fn max_model_len(&self) -> usize {
        match self {
            Served::Llm(e) => e.context_length(),
            Served::Embedding(e) => e.model().max_tokens(),
            Served::Diffusion(e) => e.model().prompt_tokens(),
        }
    }

    /// Current health.
    pub fn health(&self) -> Health {
        match self {
            Served::Llm(e) => e.health(),
            Served::Embedding(e) => e.health(),
            Served::Diffusion(e) => e.health(),
        }
    }

    /// Health as it changes.
    pub fn watch_health(&self) -> watch::Receiver<Health> {
        match self {
            Served::Llm(e) => e.watch_health(),
            Served::Embedding(e) => e.watch_health(),
            Served::Diffusion(e) => e.watch_health(),
        }
    }

    /// What failed, once the health is [`Health::Failed`].
    pub fn failure(&self) -> Option<String> {
        match self {
            Served::Llm(e) => e.failure(),
            Served::Embedding(e) => e.failure(),
            Served::Diffusion(e) => e.failure(),
        }
    }

    /// Stops admitting requests; those in flight run to completion.
    pub fn drain(&self) {
        match self {
            Served::Llm(e) => e.drain(),
            Served::Embedding(e) => e.drain(),
            Served::Diffusion(e) => e.drain(),
        }
    }

    /// Requests queued or running.
    pub fn in_flight(&self) -> usize {
        match self {
            Served::Llm(e) => e.in_flight(),
            Served::Embedding(e) => e.in_flight(),
            Served::Diffusion(e) => e.in_flight(),
        }
    }
}
