//! `/v1/completions`, `/v1/chat/completions` (plain and SSE-streamed) and `/v1/models`, and
//! what the embeddings handler shares with them.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::extract::{Request, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderValue, StatusCode};
use axum::response::sse::{Event as SseEvent, Sse};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::Stream;
use serde_json::{Value, json};
use tokio::sync::mpsc::UnboundedReceiver;

use super::AppState;
use super::body::with_body;
use super::error::ApiError;
use super::request::{Parsed, Prompt, parse_chat, parse_completion};
use crate::cache::{self, Answer, Key, ResponseCache};
use crate::engine::{Engine, Event, GenerateRequest};
use crate::sampling::TokenLogprob;
use blaze_worker_cli::Kind;

pub(super) async fn models(State(state): State<AppState>) -> Response {
    let Some(engine) = state.engine.get() else {
        return ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "the model is loading")
            .into_response();
    };
    Json(json!({"object": "list", "data": [{
        "id": engine.model_name(), "object": "model", "created": now(), "owned_by": "blaze",
        "max_model_len": engine.max_model_len(),
        "blaze": state.model_info.get().cloned().unwrap_or(Value::Null),
    }]}))
    .into_response()
}

pub(super) async fn completions(State(state): State<AppState>, request: Request) -> Response {
    with_body(request, async |body| serve(state, parse_completion(&body), false).await).await
}

pub(super) async fn chat_completions(State(state): State<AppState>, request: Request) -> Response {
    with_body(request, async |body| serve(state, parse_chat(&body), true).await).await
}

/// Everything the response builders need to know about the request.
struct Reply {
    id: String,
    model: String,
    chat: bool,
    include_usage: bool,
    logprobs: bool,
}

/// The answer to a request for an API this worker's kind does not serve: a 400 about
/// `model`, which is what is wrong (the same request to another model works), naming the
/// APIs this worker does serve.
pub(super) fn wrong_kind(kind: Kind, path: &str) -> ApiError {
    let serves = match kind {
        Kind::Llm => "a text-generation model (/v1/completions, /v1/chat/completions)",
        Kind::Embedding => "an embedding model (/v1/embeddings)",
        Kind::Diffusion => "an image-generation model (/v1/images/generations)",
    };
    ApiError::invalid("model", format!("this worker serves {serves}; {path} is not for it"))
}

/// Why no request is taken now: the watchdog's reason once the engine failed, else loading
/// or draining. A 503 either way, so a router tries another worker.
pub(super) fn not_ready(state: &AppState) -> ApiError {
    let message = match state.engine.get().and_then(|e| e.failure()) {
        Some(reason) => format!("the worker failed and takes no requests: {reason}"),
        None => "the worker is not ready (loading or draining)".to_owned(),
    };
    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, message)
}

async fn serve(
    state: AppState,
    parsed: Result<Parsed, ApiError>,
    chat: bool,
) -> Result<Response, ApiError> {
    if state.kind != Kind::Llm {
        let path = if chat { "/v1/chat/completions" } else { "/v1/completions" };
        return Err(wrong_kind(state.kind, path));
    }
    let parsed = parsed?;
    let engine = state.ready_engine().ok_or_else(|| not_ready(&state))?.clone();
    if let Some(model) = parsed.common.model.as_deref() {
        check_model(model, engine.model_name())?;
    }
    let prompt = match &parsed.prompt {
        Prompt::Text(t) => engine.tokenize(t)?,
        Prompt::Chat(m) => engine.tokenize_chat(m)?,
    };
    let context = engine.context_length();
    let room = context.saturating_sub(prompt.len());
    let max_tokens = parsed.common.max_tokens.unwrap_or(state.default_max_tokens.min(room));
    if max_tokens > room {
        let msg = format!(
            "{max_tokens} tokens do not fit: the prompt has {} and the context is {context}",
            prompt.len()
        );
        return Err(ApiError::invalid("max_tokens", msg));
    }
    let request = GenerateRequest {
        prompt,
        max_tokens,
        sampling: parsed.common.sampling.clone(),
        stop: parsed.common.stop.clone(),
        deadline: Some(Instant::now() + state.request_timeout),
    };
    let model_id = format!(
        "{}\n{}",
        engine.model_name(),
        state.model_info.get().map(ToString::to_string).unwrap_or_default()
    );
    let question = cache::Request {
        model: &model_id,
        endpoint: if chat { "chat" } else { "completion" },
        prompt: &request.prompt,
        max_tokens,
        sampling: &request.sampling,
        stop: &request.stop,
        stream: parsed.common.stream,
        include_usage: parsed.common.include_usage,
    };
    // Only an answer the request determines is looked up or kept.
    let keep = match &state.response_cache {
        Some(c) if question.deterministic() => Some((c.clone(), question.key())),
        _ => None,
    };
    if let Some((cache, key)) = &keep
        && let Some(answer) = cache.get(*key).await
    {
        return Ok(replay(answer));
    }
    let events = engine.submit(request)?;
    let reply = Reply {
        id: format!("{}-{}", if chat { "chatcmpl" } else { "cmpl" }, uuid::Uuid::new_v4().simple()),
        model: engine.model_name().to_string(),
        chat,
        include_usage: parsed.common.include_usage,
        logprobs: parsed.common.sampling.logprobs.is_some(),
    };
    if parsed.common.stream {
        Ok(Sse::new(stream(reply, engine, events, keep)).into_response())
    } else {
        whole(reply, engine, events, keep).await
    }
}

/// A 404 about `model` when a request names a model other than the one served.
pub(super) fn check_model(asked: &str, served: &str) -> Result<(), ApiError> {
    if asked == served {
        return Ok(());
    }
    Err(ApiError {
        status: StatusCode::NOT_FOUND,
        message: format!("model: {asked:?} is not served here; this worker serves {served:?}"),
        param: Some("model".into()),
    })
}

/// Where a fresh answer goes: the cache and its key.
type Keep = Option<(Arc<ResponseCache>, Key)>;

/// A cached answer, as the client first got it.
fn replay(answer: Answer) -> Response {
    match answer {
        Answer::Whole(body) => json_body(body),
        Answer::Stream(events) => {
            let events = events.into_iter().map(|data| {
                Ok::<_, Infallible>(SseEvent::default().data(String::from_utf8_lossy(&data)))
            });
            Sse::new(futures::stream::iter(events)).into_response()
        }
    }
}

pub(super) fn json_body(body: Bytes) -> Response {
    ([(CONTENT_TYPE, HeaderValue::from_static("application/json"))], body).into_response()
}

async fn whole(
    reply: Reply,
    engine: Arc<dyn Engine>,
    mut events: UnboundedReceiver<Event>,
    keep: Keep,
) -> Result<Response, ApiError> {
    let mut text = String::new();
    let mut logprobs = Vec::new();
    while let Some(event) = events.recv().await {
        match event {
            Event::Token { id, text: piece, logprob } => {
                text.push_str(&piece);
                logprobs.extend(logprob.map(|l| (id, l)));
            }
            Event::Error(e) => return Err(e.into()),
            Event::Done { reason, prompt_tokens, completion_tokens } => {
                let lp = reply.logprobs.then(|| logprobs_json(&*engine, &logprobs, reply.chat));
                let choice = if reply.chat {
                    json!({"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": lp, "finish_reason": reason.as_openai()})
                } else {
                    json!({"index": 0, "text": text, "logprobs": lp, "finish_reason": reason.as_openai()})
                };
                let body = json!({
                    "id": reply.id, "object": if reply.chat { "chat.completion" } else { "text_completion" },
                    "created": now(), "model": reply.model, "choices": [choice],
                    "usage": usage(prompt_tokens, completion_tokens),
                });
                let body = Bytes::from(body.to_string());
                if let Some((cache, key)) = keep {
                    cache.put(key, &Answer::Whole(body.clone()));
                }
                return Ok(json_body(body));
            }
        }
    }
    Err(ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "the engine ended the request without a result",
    ))
}

fn stream(
    reply: Reply,
    engine: Arc<dyn Engine>,
    mut events: UnboundedReceiver<Event>,
    keep: Keep,
) -> impl Stream<Item = Result<SseEvent, Infallible>> {
    async_stream::stream! {
        let created = now();
        let object = if reply.chat { "chat.completion.chunk" } else { "text_completion" };
        // Each event's data, kept for the cache while the answer goes well.
        let mut kept: Option<Vec<Bytes>> = keep.is_some().then(Vec::new);
        let mut chunk = |choice: Value, usage: Value| {
            let mut body = json!({"id": reply.id, "object": object, "created": created, "model": reply.model, "choices": choice});
            if !usage.is_null() { body["usage"] = usage; }
            let data = body.to_string();
            if let Some(k) = kept.as_mut() { k.push(Bytes::from(data.clone())); }
            SseEvent::default().data(data)
        };
        // The role chunk goes with the first event, not before it: the first byte of a stream
        // is its first token, so time to first byte measures time to first token (the router
        // holds a response until its first byte and weighs endpoints by it).
        let mut role_due = reply.chat;
        let mut failed = false;
        while let Some(event) = events.recv().await {
            if role_due {
                role_due = false;
                yield Ok(chunk(json!([{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": null}]), Value::Null));
            }
            match event {
                Event::Token { id, text, logprob } => {
                    if text.is_empty() && logprob.is_none() { continue; }
                    let lp = logprob.map(|l| logprobs_json(&*engine, &[(id, l)], reply.chat));
                    let choice = if reply.chat {
                        json!([{"index": 0, "delta": {"content": text}, "logprobs": lp, "finish_reason": null}])
                    } else {
                        json!([{"index": 0, "text": text, "logprobs": lp, "finish_reason": null}])
                    };
                    yield Ok(chunk(choice, Value::Null));
                }
                Event::Done { reason, prompt_tokens, completion_tokens } => {
                    let choice = if reply.chat {
                        json!([{"index": 0, "delta": {}, "finish_reason": reason.as_openai()}])
                    } else {
                        json!([{"index": 0, "text": "", "finish_reason": reason.as_openai()}])
                    };
                    yield Ok(chunk(choice, Value::Null));
                    if reply.include_usage {
                        yield Ok(chunk(json!([]), usage(prompt_tokens, completion_tokens)));
                    }
                    break;
                }
                Event::Error(e) => {
                    failed = true;
                    yield Ok(SseEvent::default().data(ApiError::from(e).body().to_string()));
                    break;
                }
            }
        }
        yield Ok(SseEvent::default().data("[DONE]"));
        if let (Some((cache, key)), Some(mut events), false) = (keep, kept, failed) {
            events.push(Bytes::from_static(b"[DONE]"));
            cache.put(key, &Answer::Stream(events));
        }
    }
}

fn logprobs_json(engine: &dyn Engine, tokens: &[(u32, TokenLogprob)], chat: bool) -> Value {
    let name = |id: u32| engine.token_text(id);
    if chat {
        let content: Vec<Value> = tokens
            .iter()
            .map(|(id, l)| {
                let top: Vec<Value> = l.top.iter().map(|(t, lp)| json!({"token": name(*t), "logprob": lp, "bytes": name(*t).into_bytes()})).collect();
                json!({"token": name(*id), "logprob": l.logprob, "bytes": name(*id).into_bytes(), "top_logprobs": top})
            })
            .collect();
        json!({"content": content})
    } else {
        let top: Vec<Value> = tokens
            .iter()
            .map(|(_, l)| {
                l.top
                    .iter()
                    .map(|(t, lp)| (name(*t), json!(lp)))
                    .collect::<serde_json::Map<_, _>>()
                    .into()
            })
            .collect();
        json!({
            "tokens": tokens.iter().map(|(id, _)| name(*id)).collect::<Vec<_>>(),
            "token_logprobs": tokens.iter().map(|(_, l)| l.logprob).collect::<Vec<_>>(),
            "top_logprobs": top,
        })
    }
}

fn usage(prompt: usize, completion: usize) -> Value {
    json!({"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion})
}

pub(super) fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}
