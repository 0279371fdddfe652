//! The HTTP server: OpenAI-compatible API, health and metrics. `/v1/models`, `/livez`,
//! `/readyz` and `/metrics` serve either kind of worker; `/v1/completions` and
//! `/v1/chat/completions` a text-generation worker, `/v1/embeddings` an embedding one (each
//! answers the other kind with a 400 that names the API this worker serves). The Open
//! Inference Protocol's REST form (`/v2/...`, [`oip`]) serves both kinds.

mod body;
mod embeddings;
pub mod error;
pub(crate) mod images;
pub mod oip;
mod openai;
pub mod request;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use blaze_worker_cli::Kind;
use prometheus_client::registry::Registry;

use crate::engine::{Engine, Health, Served};

/// Largest request body accepted; a prompt bigger than this is far past any context.
pub const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    /// What this worker serves (`--kind`), known before the model is loaded: a request for
    /// another kind's API is refused as such even while loading.
    pub kind: Kind,
    /// The name clients use for the model (`--served-model-name`), known before it loads.
    pub model_name: Arc<str>,
    /// The engine, once the model is loaded.
    pub engine: Arc<OnceLock<Served>>,
    /// Set on SIGTERM: not ready, no new requests.
    pub draining: Arc<AtomicBool>,
    /// The metrics registry `/metrics` renders.
    pub registry: Arc<Registry>,
    /// Default and ceiling for a request's total time.
    pub request_timeout: Duration,
    /// `max_tokens` when a request gives none.
    pub default_max_tokens: usize,
    /// How the model is held (device, dtype, quantization), once loaded; `/v1/models`
    /// shows it under `blaze`.
    pub model_info: Arc<OnceLock<serde_json::Value>>,
    /// Answers to deterministic requests, when the response cache is on.
    pub response_cache: Option<Arc<crate::cache::ResponseCache>>,
}

impl AppState {
    /// The engine when it is loaded and accepting requests.
    pub fn ready(&self) -> Option<&Served> {
        let engine = self.engine.get()?;
        (!self.draining.load(Ordering::SeqCst) && engine.health() == Health::Ready)
            .then_some(engine)
    }

    /// The text-generation engine when it is loaded and accepting requests (never on an
    /// embedding worker).
    pub fn ready_engine(&self) -> Option<&Arc<dyn Engine>> {
        match self.ready()? {
            Served::Llm(engine) => Some(engine),
            Served::Embedding(_) | Served::Diffusion(_) => None,
        }
    }
}

/// The HTTP routes.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/v1/completions", post(openai::completions))
        .route("/v1/chat/completions", post(openai::chat_completions))
        .route("/v1/embeddings", post(embeddings::embeddings))
        .route("/v1/images/generations", post(images::generations))
        .route("/v1/models", get(openai::models))
        .route("/livez", get(livez))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .merge(oip::routes())
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

/// Live unless the engine failed (its scheduler died or stalled): then 503 with the
/// watchdog's reason, so the kubelet restarts the container. Loading and draining are live.
async fn livez(State(state): State<AppState>) -> impl IntoResponse {
    match state.engine.get().and_then(|e| e.failure()) {
        Some(reason) => (StatusCode::SERVICE_UNAVAILABLE, format!("failed: {reason}")),
        None => (StatusCode::OK, "ok".to_string()),
    }
}

async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    let health = match state.engine.get() {
        None => Health::Loading,
        Some(e) if e.health() == Health::Failed => Health::Failed,
        Some(_) if state.draining.load(Ordering::SeqCst) => Health::Draining,
        Some(e) => e.health(),
    };
    let status =
        if health == Health::Ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let mut body = format!("{health:?}").to_lowercase();
    if let Some(reason) = state.engine.get().and_then(|e| e.failure()) {
        body = format!("{body}: {reason}");
    }
    (status, body)
}

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let mut body = String::new();
    if let Err(e) = prometheus_client::encoding::text::encode(&mut body, &state.registry) {
        return (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response();
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], body).into_response()
}
