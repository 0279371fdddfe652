//! `/v1/images/generations`: OpenAI's image request over the diffusion engine. Images come
//! back inline as base64 PNG (`b64_json`), each with the seed it was drawn from (send it
//! again to get the same image). With `"stream": true` the answer is server-sent events:
//! `image_generation.progress` after each denoising step, then one
//! `image_generation.completed` per image.

use std::convert::Infallible;
use std::time::Instant;

use axum::Json;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::sse::{Event as SseEvent, Sse};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use blaze_worker_cli::Kind;
use serde_json::{Value, json};
use tokio::sync::mpsc::UnboundedReceiver;

use super::AppState;
use super::body::with_body;
use super::error::ApiError;
use super::openai::{check_model, not_ready, now, wrong_kind};
use super::request::images::{ImagesRequest, parse_images};
use crate::engine::diffusion::{DiffusionEngine, GeneratedImage, ImageEvent, ImageRequest};
use crate::engine::{Served, SubmitError};
use crate::model::diffusion::ImageSpec;

pub(super) async fn generations(State(state): State<AppState>, request: Request) -> Response {
    with_body(request, async |body| serve(state, &body).await).await
}

async fn serve(state: AppState, body: &[u8]) -> Result<Response, ApiError> {
    if state.kind != Kind::Diffusion {
        return Err(wrong_kind(state.kind, "/v1/images/generations"));
    }
    let parsed = parse_images(body)?;
    let Some(Served::Diffusion(engine)) = state.ready() else { return Err(not_ready(&state)) };
    let engine = engine.clone();
    if let Some(model) = parsed.model.as_deref() {
        check_model(model, engine.model_name())?;
    }
    let stream = parsed.stream;
    let request = image_request(&engine, parsed, Instant::now() + state.request_timeout);
    let (width, height) = (request.images[0].width, request.images[0].height);
    let events = engine.submit(request).map_err(|e| match e {
        // The size is one field of the request here.
        SubmitError::Invalid { field: "width" | "height", message } => {
            ApiError::invalid("size", format!("{width}x{height}: {message}"))
        }
        e => e.into(),
    })?;
    if stream {
        return Ok(streamed(events, width, height).into_response());
    }
    let images = wait(events, &state).await?;
    let data: Vec<Value> = images.iter().map(|i| image_json(i, None)).collect();
    Ok(Json(json!({"created": now(), "data": data})).into_response())
}

/// The engine's request: defaults filled in, one image per `n`, seeds counting up from the
/// request's (or from a random one).
pub(crate) fn image_request(
    engine: &DiffusionEngine,
    r: ImagesRequest,
    deadline: Instant,
) -> ImageRequest {
    let config = engine.config();
    let (width, height) = r.size.unwrap_or(config.default_size);
    let steps = r.steps.unwrap_or(config.default_steps);
    let guidance_scale = r.guidance_scale.unwrap_or_else(|| engine.model().default_guidance());
    let first = r.seed.unwrap_or_else(|| rand::random::<u32>().into());
    let images = (0..r.n as u64)
        .map(|i| ImageSpec {
            prompt: r.prompt.clone(),
            negative_prompt: r.negative_prompt.clone(),
            width,
            height,
            steps,
            guidance_scale,
            seed: first.wrapping_add(i),
        })
        .collect();
    ImageRequest { images, deadline: Some(deadline) }
}

/// The images, or the error that ended the request.
pub(crate) async fn wait(
    mut events: UnboundedReceiver<ImageEvent>,
    state: &AppState,
) -> Result<Vec<GeneratedImage>, ApiError> {
    let deadline = tokio::time::Instant::now() + state.request_timeout;
    loop {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Some(ImageEvent::Progress { .. })) => {}
            Ok(Some(ImageEvent::Done(images))) => return Ok(images),
            Ok(Some(ImageEvent::Error(e))) => return Err(e.into()),
            Ok(None) => {
                let message = "the engine ended the request without images";
                return Err(ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, message));
            }
            Err(_) => {
                let message = format!(
                    "the request did not finish within {} s (--request-timeout-seconds)",
                    state.request_timeout.as_secs()
                );
                return Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, message));
            }
        }
    }
}

fn image_json(image: &GeneratedImage, size: Option<(usize, usize)>) -> Value {
    let b64 = base64::engine::general_purpose::STANDARD.encode(&image.png);
    let mut v = json!({"b64_json": b64, "seed": image.seed});
    if let Some((w, h)) = size {
        v["size"] = json!(format!("{w}x{h}"));
    }
    v
}

fn streamed(
    mut events: UnboundedReceiver<ImageEvent>,
    width: usize,
    height: usize,
) -> Sse<impl futures::Stream<Item = Result<SseEvent, Infallible>>> {
    let stream = async_stream::stream! {
        while let Some(event) = events.recv().await {
            match event {
                ImageEvent::Progress { step, steps } => {
                    let data = json!({"type": "image_generation.progress", "step": step, "steps": steps});
                    yield Ok(SseEvent::default().data(data.to_string()));
                }
                ImageEvent::Done(images) => {
                    for (index, image) in images.iter().enumerate() {
                        let mut data = image_json(image, Some((width, height)));
                        data["type"] = json!("image_generation.completed");
                        data["index"] = json!(index);
                        data["created_at"] = json!(now());
                        yield Ok(SseEvent::default().data(data.to_string()));
                    }
                    break;
                }
                ImageEvent::Error(e) => {
                    let mut data = ApiError::from(e).body();
                    data["type"] = json!("error");
                    yield Ok(SseEvent::default().data(data.to_string()));
                    break;
                }
            }
        }
    };
    Sse::new(stream)
}
