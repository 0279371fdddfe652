//! Errors in OpenAI's format: `{"error": {"message", "type", "param", "code"}}`.

use axum::Json;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::engine::{EngineError, SubmitError};

/// `Retry-After` on a 503, in seconds. A 503 comes from a worker that is loading, draining
/// or failed; a retry a second later goes to another replica through the Service or the
/// router, which is better than waiting for this one (a failed worker is back only after
/// the kubelet restarts it and the model loads again, a minute or more).
pub const RETRY_AFTER_SECONDS: u64 = 1;

/// An HTTP error a client sees.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Human-readable message naming what is wrong.
    pub message: String,
    /// The request field at fault, if one is.
    pub param: Option<String>,
}

impl ApiError {
    /// A 400 about `field`.
    pub fn invalid(field: &str, message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            message: format!("{field}: {}", message.into()),
            param: Some(field.into()),
        }
    }

    /// An error with a status and message.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self { status, message: message.into(), param: None }
    }

    fn kind(&self) -> &'static str {
        match self.status {
            StatusCode::TOO_MANY_REQUESTS => "rate_limit_exceeded",
            StatusCode::NOT_FOUND => "not_found_error",
            StatusCode::SERVICE_UNAVAILABLE => "service_unavailable",
            s if s.is_client_error() => "invalid_request_error",
            _ => "server_error",
        }
    }
}

impl From<SubmitError> for ApiError {
    fn from(e: SubmitError) -> Self {
        match &e {
            SubmitError::QueueFull(_) => {
                ApiError::new(StatusCode::TOO_MANY_REQUESTS, e.to_string())
            }
            SubmitError::Unavailable(_) => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
            }
            SubmitError::Invalid { field, message } => ApiError::invalid(field, message.clone()),
        }
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        let status = if e.is_retriable() {
            StatusCode::SERVICE_UNAVAILABLE
        } else {
            StatusCode::INTERNAL_SERVER_ERROR
        };
        ApiError::new(status, e.to_string())
    }
}

impl ApiError {
    /// The JSON body: `{"error": {...}}` (also the data of a stream's error event).
    pub fn body(&self) -> Value {
        json!({"error": {
            "message": self.message,
            "type": self.kind(),
            "param": self.param,
            "code": self.status.as_u16().to_string(),
        }})
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Json(self.body());
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            let retry_after = [(header::RETRY_AFTER, RETRY_AFTER_SECONDS.to_string())];
            return (self.status, retry_after, body).into_response();
        }
        (self.status, body).into_response()
    }
}
