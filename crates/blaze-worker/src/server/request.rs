//! Parsing and validating OpenAI request bodies. Every check names the field it rejects;
//! nothing here panics on any input (a property test feeds it garbage).

pub mod embeddings;
pub mod images;

use serde_json::{Map, Value};

use super::error::ApiError;
use crate::chat::Message;
use crate::sampling::SamplingParams;

/// Most stop strings a request may carry.
const MAX_STOPS: usize = 16;

/// What completions and chat completions have in common.
#[derive(Debug, Clone, PartialEq)]
pub struct Common {
    /// `model`, if given.
    pub model: Option<String>,
    /// `max_tokens` (or `max_completion_tokens`).
    pub max_tokens: Option<usize>,
    /// Sampling settings.
    pub sampling: SamplingParams,
    /// `stop`.
    pub stop: Vec<String>,
    /// `stream`.
    pub stream: bool,
    /// `stream_options.include_usage`.
    pub include_usage: bool,
}

/// The prompt of a request.
#[derive(Debug, Clone, PartialEq)]
pub enum Prompt {
    /// `/v1/completions`' `prompt`.
    Text(String),
    /// `/v1/chat/completions`' `messages`.
    Chat(Vec<Message>),
}

/// A parsed request.
#[derive(Debug, Clone, PartialEq)]
pub struct Parsed {
    /// The prompt.
    pub prompt: Prompt,
    /// Everything else.
    pub common: Common,
}

/// Parses a `/v1/completions` body.
pub fn parse_completion(body: &[u8]) -> Result<Parsed, ApiError> {
    let obj = object(body)?;
    let prompt = match obj.get("prompt") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(a)) if a.len() == 1 && a[0].is_string() => {
            a[0].as_str().unwrap_or_default().to_string()
        }
        Some(_) => {
            return Err(ApiError::invalid(
                "prompt",
                "must be a string (or an array of one string)",
            ));
        }
        None => return Err(ApiError::invalid("prompt", "is required")),
    };
    let logprobs = match uint(&obj, "logprobs")? {
        Some(n) if n > 20 => return Err(ApiError::invalid("logprobs", "must be between 0 and 20")),
        n => n,
    };
    let common = common(&obj, logprobs)?;
    Ok(Parsed { prompt: Prompt::Text(prompt), common })
}

/// Parses a `/v1/chat/completions` body.
pub fn parse_chat(body: &[u8]) -> Result<Parsed, ApiError> {
    let obj = object(body)?;
    let Some(Value::Array(raw)) = obj.get("messages") else {
        return Err(ApiError::invalid("messages", "is required and must be an array"));
    };
    if raw.is_empty() {
        return Err(ApiError::invalid("messages", "must not be empty"));
    }
    let mut messages = Vec::with_capacity(raw.len());
    for (i, m) in raw.iter().enumerate() {
        let field = format!("messages[{i}]");
        let role = m
            .get("role")
            .and_then(Value::as_str)
            .ok_or_else(|| ApiError::invalid(&format!("{field}.role"), "must be a string"))?;
        let content = match m.get("content") {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Null) | None => String::new(),
            // Content parts: the text ones are joined; other kinds are not served by an LLM.
            Some(Value::Array(parts)) => parts
                .iter()
                .map(|p| {
                    p.get("text").and_then(Value::as_str).ok_or_else(|| {
                        ApiError::invalid(
                            &format!("{field}.content"),
                            "only text parts are supported",
                        )
                    })
                })
                .collect::<Result<Vec<_>, _>>()?
                .join(""),
            Some(_) => {
                return Err(ApiError::invalid(
                    &format!("{field}.content"),
                    "must be a string or an array of text parts",
                ));
            }
        };
        messages.push(Message { role: role.to_string(), content });
    }
    let logprobs = match flag(&obj, "logprobs")? {
        true => Some(uint(&obj, "top_logprobs")?.unwrap_or(0)),
        false => None,
    };
    if logprobs.is_some_and(|n| n > 20) {
        return Err(ApiError::invalid("top_logprobs", "must be between 0 and 20"));
    }
    let common = common(&obj, logprobs)?;
    Ok(Parsed { prompt: Prompt::Chat(messages), common })
}

fn object(body: &[u8]) -> Result<Map<String, Value>, ApiError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(ApiError::invalid("body", "must be a JSON object")),
        Err(e) => Err(ApiError::invalid("body", format!("malformed JSON: {e}"))),
    }
}

fn common(obj: &Map<String, Value>, logprobs: Option<usize>) -> Result<Common, ApiError> {
    let model = match obj.get("model") {
        Some(Value::String(s)) => Some(s.clone()),
        None | Some(Value::Null) => None,
        Some(_) => return Err(ApiError::invalid("model", "must be a string")),
    };
    if let Some(n) = uint(obj, "n")?.filter(|n| *n != 1) {
        return Err(ApiError::invalid(
            "n",
            format!("only 1 choice per request is supported, not {n}"),
        ));
    }
    let max_tokens = match uint(obj, "max_completion_tokens")? {
        Some(n) => Some(n),
        None => uint(obj, "max_tokens")?,
    };
    if max_tokens == Some(0) {
        return Err(ApiError::invalid("max_tokens", "must be at least 1"));
    }
    let sampling = SamplingParams {
        temperature: float(obj, "temperature", 0.0..=2.0)?.unwrap_or(1.0),
        top_p: float(obj, "top_p", 0.0..=1.0)?.unwrap_or(1.0),
        top_k: match obj.get("top_k").and_then(Value::as_i64) {
            Some(-1) => 0,
            _ => uint(obj, "top_k")?.unwrap_or(0),
        },
        seed: match obj.get("seed") {
            None | Some(Value::Null) => None,
            Some(v) => Some(
                v.as_i64()
                    .map(|s| s as u64)
                    .or(v.as_u64())
                    .ok_or_else(|| ApiError::invalid("seed", "must be an integer"))?,
            ),
        },
        repetition_penalty: float(obj, "repetition_penalty", 0.01..=10.0)?.unwrap_or(1.0),
        frequency_penalty: float(obj, "frequency_penalty", -2.0..=2.0)?.unwrap_or(0.0),
        presence_penalty: float(obj, "presence_penalty", -2.0..=2.0)?.unwrap_or(0.0),
        logprobs,
        ignore_eos: flag(obj, "ignore_eos")?,
    };
    if sampling.top_p == 0.0 {
        return Err(ApiError::invalid("top_p", "must be greater than 0"));
    }
    let stop = match obj.get("stop") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) if a.len() <= MAX_STOPS && a.iter().all(Value::is_string) => {
            a.iter().filter_map(|s| s.as_str().map(str::to_string)).collect()
        }
        Some(_) => {
            return Err(ApiError::invalid(
                "stop",
                format!("must be a string or an array of at most {MAX_STOPS} strings"),
            ));
        }
    };
    let stream = flag(obj, "stream")?;
    let include_usage = obj
        .get("stream_options")
        .and_then(|o| o.get("include_usage"))
        .and_then(Value::as_bool)
        .unwrap_or(false);
    Ok(Common { model, max_tokens, sampling, stop, stream, include_usage })
}

/// A boolean field: false when absent or null.
fn flag(obj: &Map<String, Value>, field: &str) -> Result<bool, ApiError> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(ApiError::invalid(field, "must be a boolean")),
    }
}

fn uint(obj: &Map<String, Value>, field: &str) -> Result<Option<usize>, ApiError> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => match v.as_u64() {
            Some(n) => Ok(Some(usize::try_from(n).unwrap_or(usize::MAX))),
            None => Err(ApiError::invalid(field, "must be a non-negative integer")),
        },
    }
}

fn float(
    obj: &Map<String, Value>,
    field: &str,
    range: std::ops::RangeInclusive<f32>,
) -> Result<Option<f32>, ApiError> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => match v.as_f64().map(|f| f as f32) {
            Some(f) if range.contains(&f) => Ok(Some(f)),
            _ => Err(ApiError::invalid(
                field,
                format!("must be a number between {} and {}", range.start(), range.end()),
            )),
        },
    }
}

#[cfg(test)]
mod tests;
