//! The HTTP server: OpenAI-compatible API, health and metrics.

mod body;
pub mod error;
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
use prometheus_client::registry::Registry;

use crate::engine::{Engine, Health};

/// Largest request body accepted; a prompt bigger than this is far past any context.
pub const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    /// The engine, once the model is loaded.
    pub engine: Arc<OnceLock<Arc<dyn Engine>>>,
    /// Set on SIGTERM: not ready, no new requests.
    pub draining: Arc<AtomicBool>,
    /// The metrics registry `/metrics` renders.
    pub registry: Arc<Registry>,
    /// Default and ceiling for a request's total time.
    pub request_timeout: Duration,
    /// `max_tokens` when a request gives none.
    pub default_max_tokens: usize,
}

impl AppState {
    /// The engine when it is loaded and accepting requests.
    pub fn ready_engine(&self) -> Option<&Arc<dyn Engine>> {
        let engine = self.engine.get()?;
        (!self.draining.load(Ordering::SeqCst) && engine.health() == Health::Ready)
            .then_some(engine)
    }
}

/// The HTTP routes.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/v1/completions", post(openai::completions))
        .route("/v1/chat/completions", post(openai::chat_completions))
        .route("/v1/models", get(openai::models))
        .route("/livez", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    let health = match state.engine.get() {
        None => Health::Loading,
        Some(_) if state.draining.load(Ordering::SeqCst) => Health::Draining,
        Some(e) => e.health(),
    };
    let status =
        if health == Health::Ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, format!("{health:?}").to_lowercase())
}

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let mut body = String::new();
    if let Err(e) = prometheus_client::encoding::text::encode(&mut body, &state.registry) {
        return (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response();
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], body).into_response()
}
