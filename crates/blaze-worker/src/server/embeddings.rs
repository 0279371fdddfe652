//! `/v1/embeddings`: OpenAI's request and answer over the embedding engine. Texts are
//! tokenized off the async runtime, the whole `input` list goes to the engine as one
//! request, and the vectors come back as JSON numbers or as base64 of their little-endian
//! f32 bytes.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::Response;
use base64::Engine as _;
use blaze_worker_cli::Kind;
use bytes::Bytes;
use serde::Serialize;

use super::AppState;
use super::body::with_body;
use super::error::ApiError;
use super::openai::{check_model, json_body, not_ready, wrong_kind};
use super::request::embeddings::{EmbeddingsRequest, EncodingFormat, Input, parse_embeddings};
use crate::engine::Served;
use crate::engine::embedding::{EmbedRequest, EmbeddingEngine, Embeddings};

pub(super) async fn embeddings(State(state): State<AppState>, request: Request) -> Response {
    with_body(request, async |body| serve(state, &body).await).await
}

async fn serve(state: AppState, body: &[u8]) -> Result<Response, ApiError> {
    if state.kind != Kind::Embedding {
        return Err(wrong_kind(state.kind, "/v1/embeddings"));
    }
    let parsed = parse_embeddings(body)?;
    let Some(Served::Embedding(engine)) = state.ready() else { return Err(not_ready(&state)) };
    let engine = engine.clone();
    if let Some(model) = parsed.model.as_deref() {
        check_model(model, engine.model_name())?;
    }
    let EmbeddingsRequest { input, encoding_format, dimensions, truncate, .. } = parsed;
    let inputs = match input {
        Input::Tokens(inputs) => inputs,
        Input::Texts(texts) => tokenize(engine.clone(), texts, truncate).await?,
    };
    let mut reply = engine.submit(EmbedRequest { inputs, truncate, dimensions })?;
    let embeddings = match tokio::time::timeout(state.request_timeout, reply.recv()).await {
        Ok(Some(reply)) => reply?,
        Ok(None) => {
            let message = "the engine ended the request without a result";
            return Err(ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, message));
        }
        Err(_) => {
            let message = format!(
                "the request did not finish within {} s (--request-timeout-seconds)",
                state.request_timeout.as_secs()
            );
            return Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, message));
        }
    };
    Ok(json_body(answer(engine.model_name(), embeddings, encoding_format)?))
}

/// Token ids of each text, on the blocking pool: a request may carry thousands.
async fn tokenize(
    engine: Arc<EmbeddingEngine>,
    texts: Vec<String>,
    truncate: bool,
) -> Result<Vec<Vec<u32>>, ApiError> {
    let work = move || texts.iter().map(|t| engine.tokenize(t, truncate)).collect();
    let ids: Result<Vec<Vec<u32>>, _> = tokio::task::spawn_blocking(work).await.map_err(|e| {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("tokenizing failed: {e}"))
    })?;
    Ok(ids?)
}

#[derive(Serialize)]
struct Answer<'a> {
    object: &'static str,
    data: Vec<Datum>,
    model: &'a str,
    usage: Usage,
}

#[derive(Serialize)]
struct Datum {
    object: &'static str,
    index: usize,
    embedding: Vector,
}

/// A vector as the request's `encoding_format` asks (f32 numbers serialize in their
/// shortest exact form).
#[derive(Serialize)]
#[serde(untagged)]
enum Vector {
    Float(Vec<f32>),
    Base64(String),
}

#[derive(Serialize)]
struct Usage {
    prompt_tokens: usize,
    total_tokens: usize,
}

fn answer(model: &str, e: Embeddings, format: EncodingFormat) -> Result<Bytes, ApiError> {
    let data = e
        .vectors
        .into_iter()
        .enumerate()
        .map(|(index, v)| Datum { object: "embedding", index, embedding: encode(v, format) })
        .collect();
    let usage = Usage { prompt_tokens: e.prompt_tokens, total_tokens: e.prompt_tokens };
    let answer = Answer { object: "list", data, model, usage };
    serde_json::to_vec(&answer)
        .map(Bytes::from)
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
}

fn encode(vector: Vec<f32>, format: EncodingFormat) -> Vector {
    match format {
        EncodingFormat::Float => Vector::Float(vector),
        EncodingFormat::Base64 => {
            let bytes: Vec<u8> = vector.iter().flat_map(|x| x.to_le_bytes()).collect();
            Vector::Base64(base64::engine::general_purpose::STANDARD.encode(bytes))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_is_the_little_endian_f32_bytes() {
        let Vector::Base64(text) = encode(vec![1.0, -2.5], EncodingFormat::Base64) else {
            panic!("not base64")
        };
        // 1.0 = 0x3f800000, -2.5 = 0xc0200000, each written low byte first.
        assert_eq!(text, "AACAPwAAIMA=");
    }

    #[test]
    fn the_answer_has_openai_s_shape() {
        let e = Embeddings { vectors: vec![vec![0.5, 0.25], vec![1.0, 0.0]], prompt_tokens: 7 };
        let body = answer("m", e, EncodingFormat::Float).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let expected = serde_json::json!({
            "object": "list", "model": "m",
            "data": [
                {"object": "embedding", "index": 0, "embedding": [0.5, 0.25]},
                {"object": "embedding", "index": 1, "embedding": [1.0, 0.0]},
            ],
            "usage": {"prompt_tokens": 7, "total_tokens": 7},
        });
        assert_eq!(v, expected);
    }
}
