//! `ModelInfer`: a request's tensors and parameters checked and turned into an engine's
//! request, its answer into output tensors.

use std::sync::Arc;
use std::time::Instant;

use super::params::{self, Params, Reader};
use super::tensor::{Output, OutputData};
use super::{InferRequest, InferResponse, OipError, check_model};
use crate::engine::diffusion::DiffusionEngine;
use crate::engine::embedding::{EmbedRequest, EmbeddingEngine};
use crate::engine::{Engine, Event, GenerateRequest, Served};
use crate::server::AppState;
use crate::server::request::images::ImagesRequest;

/// Runs `ModelInfer`.
pub async fn infer(state: &AppState, request: InferRequest) -> Result<InferResponse, OipError> {
    check_model(state, &request.model, &request.version)?;
    let Some(served) = state.ready().cloned() else { return Err(not_ready(state)) };
    let outputs = match served {
        Served::Embedding(engine) => embed(state, engine, &request).await?,
        Served::Llm(engine) => generate(state, engine, &request).await?,
        Served::Diffusion(engine) => images(state, engine, &request).await?,
    };
    Ok(InferResponse { model: state.model_name.to_string(), id: request.id, outputs })
}

fn not_ready(state: &AppState) -> OipError {
    OipError::Unavailable(match state.engine.get().and_then(|e| e.failure()) {
        Some(reason) => format!("the worker failed and takes no requests: {reason}"),
        None => "the worker is not ready (loading or draining)".to_owned(),
    })
}

/// Refuses outputs other than `name`.
fn check_outputs(request: &InferRequest, name: &str) -> Result<(), OipError> {
    for (i, output) in request.outputs.iter().enumerate() {
        if output.name != name {
            let message = format!("{:?}; this model's only output is {name:?}", output.name);
            return Err(OipError::invalid(&format!("outputs[{i}].name"), message));
        }
    }
    Ok(())
}

async fn embed(
    state: &AppState,
    engine: Arc<EmbeddingEngine>,
    request: &InferRequest,
) -> Result<Vec<Output>, OipError> {
    let input = match request.inputs.as_slice() {
        [] => return Err(OipError::invalid("inputs", "one BYTES tensor of texts is required")),
        [one] => one,
        [_, extra, ..] => {
            let message =
                format!("{:?}; an embedding model takes one input (the texts)", extra.name);
            return Err(OipError::invalid("inputs[1]", message));
        }
    };
    check_outputs(request, "embedding")?;
    let texts = input.texts(0, false)?;
    if texts.len() > crate::engine::embedding::MAX_INPUTS {
        let message = format!(
            "{} texts; at most {} per request",
            texts.len(),
            crate::engine::embedding::MAX_INPUTS
        );
        return Err(OipError::invalid("inputs[0].shape", message));
    }
    let r = Reader::new(&request.parameters, "parameters");
    let truncate = r.bool("truncate")?.unwrap_or(false);
    let dimensions = match r.uint("dimensions")? {
        Some(0) => return Err(OipError::invalid("parameters.dimensions", "must be at least 1")),
        d => d.map(|d| usize::try_from(d).unwrap_or(usize::MAX)),
    };
    let tokenizer = engine.clone();
    let work = move || -> Result<Vec<Vec<u32>>, OipError> {
        let mut ids = Vec::with_capacity(texts.len());
        for (i, text) in texts.iter().enumerate() {
            if text.is_empty() {
                return Err(OipError::invalid("inputs[0]", format!("element {i} is empty")));
            }
            let tokens = tokenizer
                .tokenize(text, truncate)
                .map_err(|e| OipError::submit(e, "inputs[0]").in_element(i))?;
            ids.push(tokens);
        }
        Ok(ids)
    };
    let inputs = tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| OipError::Internal(format!("tokenizing failed: {e}")))??;
    let n = inputs.len();
    let mut reply = engine
        .submit(EmbedRequest { inputs, truncate, dimensions })
        .map_err(|e| OipError::submit(e, "inputs[0]"))?;
    let embeddings = match tokio::time::timeout(state.request_timeout, reply.recv()).await {
        Ok(Some(reply)) => reply?,
        Ok(None) => {
            return Err(OipError::Internal("the engine ended the request without a result".into()));
        }
        Err(_) => return Err(timed_out(state)),
    };
    let width = embeddings.vectors.first().map_or(0, Vec::len);
    let data = embeddings.vectors.into_iter().flatten().collect();
    let shape = vec![n as i64, width as i64];
    Ok(vec![Output { name: "embedding", shape, data: OutputData::Fp32(data) }])
}

/// Image generation: one BYTES `prompt`, the settings `/v1/images/generations` takes as
/// parameters (`n`, `width`, `height`, `steps`, `guidance_scale`, `seed`,
/// `negative_prompt`), PNG images out as the BYTES tensor `image` (`[n]`).
async fn images(
    state: &AppState,
    engine: Arc<DiffusionEngine>,
    request: &InferRequest,
) -> Result<Vec<Output>, OipError> {
    let input = match request.inputs.as_slice() {
        [one] if one.name == "prompt" => one,
        [one] => {
            let message =
                format!("{:?}; an image model takes one input named \"prompt\"", one.name);
            return Err(OipError::invalid("inputs[0].name", message));
        }
        _ => return Err(OipError::invalid("inputs", "one BYTES tensor \"prompt\" is required")),
    };
    check_outputs(request, "image")?;
    let prompt = input.texts(0, true)?.remove(0);
    if prompt.trim().is_empty() {
        return Err(OipError::invalid("inputs[0]", "the prompt is empty"));
    }
    let r = Reader::new(&request.parameters, "parameters");
    let count = |name: &str| -> Result<Option<usize>, OipError> {
        match r.uint(name)? {
            Some(0) => Err(OipError::invalid(&format!("parameters.{name}"), "must be at least 1")),
            v => Ok(v.map(|v| usize::try_from(v).unwrap_or(usize::MAX))),
        }
    };
    let size = match (count("width")?, count("height")?) {
        (None, None) => None,
        (w, h) => {
            let (dw, dh) = engine.config().default_size;
            Some((w.unwrap_or(dw), h.unwrap_or(dh)))
        }
    };
    let parsed = ImagesRequest {
        model: None,
        prompt,
        negative_prompt: r.strings("negative_prompt")?.into_iter().next().unwrap_or_default(),
        n: count("n")?.unwrap_or(1),
        size,
        steps: count("steps")?,
        guidance_scale: r.float("guidance_scale", 0.0..=50.0)?,
        seed: r.uint("seed")?,
        stream: false,
    };
    let deadline = std::time::Instant::now() + state.request_timeout;
    let request = crate::server::images::image_request(&engine, parsed, deadline);
    let n = request.images.len();
    let events = engine.submit(request).map_err(|e| OipError::submit(e, "inputs[0]"))?;
    let images = crate::server::images::wait(events, state).await.map_err(|e| {
        if e.status == axum::http::StatusCode::SERVICE_UNAVAILABLE {
            OipError::Unavailable(e.message)
        } else {
            OipError::Internal(e.message)
        }
    })?;
    let data = images.into_iter().map(|i| i.png).collect();
    Ok(vec![Output { name: "image", shape: vec![n as i64], data: OutputData::Bytes(data) }])
}

fn timed_out(state: &AppState) -> OipError {
    OipError::Unavailable(format!(
        "the request did not finish within {} s (--request-timeout-seconds)",
        state.request_timeout.as_secs()
    ))
}

/// The inputs of a text-generation request.
struct Prompt {
    /// Where `text_input` is in `inputs`.
    at: usize,
    text: String,
    params: Params,
    with_prompt: bool,
}

/// Reads `text_input` and the optional inputs Triton's vLLM backend takes.
fn prompt(request: &InferRequest) -> Result<Prompt, OipError> {
    let (mut text, mut params, mut with_prompt) = (None, Params::new(), false);
    for (i, input) in request.inputs.iter().enumerate() {
        match input.name.as_str() {
            "text_input" => text = Some((i, input.texts(i, true)?.remove(0))),
            "sampling_parameters" => {
                let field = format!("inputs[{i}]");
                let json = input.texts(i, true)?.remove(0);
                let value: serde_json::Value = serde_json::from_str(&json)
                    .map_err(|e| OipError::invalid(&field, format!("not JSON: {e}")))?;
                params = params::from_json(&value, &field)?;
            }
            "stream" => {
                if input.flag(i)? {
                    let message = "true is not served over ModelInfer; stream with \
                                   /v1/completions or the blaze.generate.v1 RPC";
                    return Err(OipError::invalid(&format!("inputs[{i}]"), message));
                }
            }
            "exclude_input_in_output" => with_prompt = !input.flag(i)?,
            other => {
                let message = format!(
                    "{other:?}; this model takes text_input (and optionally \
                     sampling_parameters, stream, exclude_input_in_output)"
                );
                return Err(OipError::invalid(&format!("inputs[{i}].name"), message));
            }
        }
    }
    let Some((at, text)) = text else {
        let message = "no tensor named \"text_input\" (the prompt: BYTES, shape [1])";
        return Err(OipError::invalid("inputs", message));
    };
    // The request's own parameters win over `sampling_parameters`.
    params.extend(request.parameters.iter().map(|(k, v)| (k.clone(), v.clone())));
    Ok(Prompt { at, text, params, with_prompt })
}

async fn generate(
    state: &AppState,
    engine: Arc<dyn Engine>,
    request: &InferRequest,
) -> Result<Vec<Output>, OipError> {
    check_outputs(request, "text_output")?;
    let Prompt { at, text, params, with_prompt } = prompt(request)?;
    let generation = params::generation(&params, "parameters")?;
    let field = format!("inputs[{at}]");
    let prompt = engine.tokenize(&text).map_err(|e| OipError::submit(e, &field))?;
    let context = engine.context_length();
    let room = context.saturating_sub(prompt.len());
    let max_tokens = generation.max_tokens.unwrap_or(state.default_max_tokens.min(room));
    if max_tokens > room {
        let message = format!(
            "{max_tokens} tokens do not fit: the prompt has {} and the context is {context}",
            prompt.len()
        );
        return Err(OipError::invalid("parameters.max_tokens", message));
    }
    let request = GenerateRequest {
        prompt,
        max_tokens,
        sampling: generation.sampling,
        stop: generation.stop,
        deadline: Some(Instant::now() + state.request_timeout),
    };
    let mut events = engine.submit(request).map_err(|e| OipError::submit(e, &field))?;
    let mut out = if with_prompt { text } else { String::new() };
    while let Some(event) = events.recv().await {
        match event {
            Event::Token { text, .. } => out.push_str(&text),
            Event::Done { .. } => {
                let data = OutputData::Bytes(vec![out.into_bytes()]);
                return Ok(vec![Output { name: "text_output", shape: vec![1], data }]);
            }
            Event::Error(e) => return Err(e.into()),
        }
    }
    Err(OipError::Internal("the engine ended the request without a result".into()))
}
