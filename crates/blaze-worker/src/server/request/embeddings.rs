//! Parsing a `/v1/embeddings` body: OpenAI's fields (`input`, `model`, `encoding_format`,
//! `dimensions`, `user`) and Blaze's `truncate`.
//!
//! An input longer than the model takes is refused (400 naming `input`, with the lengths),
//! as OpenAI's API does; `"truncate": true` cuts it to the model's maximum instead, the
//! special tokens the model's tokenizer adds kept.

use serde_json::Value;

use super::{ApiError, flag, object, uint};
use crate::engine::embedding::MAX_INPUTS;

/// How the vectors are written in the answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EncodingFormat {
    /// JSON numbers.
    Float,
    /// Base64 of the little-endian f32 bytes, as OpenAI's API writes them.
    Base64,
}

/// What is to be embedded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// Texts, tokenized by the model's tokenizer.
    Texts(Vec<String>),
    /// Token ids, taken as the whole sequence the model sees (special tokens included, as
    /// its tokenizer writes them).
    Tokens(Vec<Vec<u32>>),
}

/// A parsed `/v1/embeddings` request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmbeddingsRequest {
    /// `model`, if given.
    pub model: Option<String>,
    /// `input`.
    pub input: Input,
    /// `encoding_format` (default float).
    pub encoding_format: EncodingFormat,
    /// `dimensions`.
    pub dimensions: Option<usize>,
    /// `truncate` (Blaze's; default false).
    pub truncate: bool,
}

/// Parses a `/v1/embeddings` body.
pub fn parse_embeddings(body: &[u8]) -> Result<EmbeddingsRequest, ApiError> {
    let obj = object(body)?;
    let model = match obj.get("model") {
        Some(Value::String(s)) => Some(s.clone()),
        None | Some(Value::Null) => None,
        Some(_) => return Err(ApiError::invalid("model", "must be a string")),
    };
    let input = input(obj.get("input"))?;
    let encoding_format = match obj.get("encoding_format") {
        None | Some(Value::Null) => EncodingFormat::Float,
        Some(Value::String(s)) if s == "float" => EncodingFormat::Float,
        Some(Value::String(s)) if s == "base64" => EncodingFormat::Base64,
        Some(_) => {
            return Err(ApiError::invalid("encoding_format", "must be \"float\" or \"base64\""));
        }
    };
    let dimensions = uint(&obj, "dimensions")?;
    if dimensions == Some(0) {
        return Err(ApiError::invalid("dimensions", "must be at least 1"));
    }
    let truncate = flag(&obj, "truncate")?;
    Ok(EmbeddingsRequest { model, input, encoding_format, dimensions, truncate })
}

const INPUT_SHAPES: &str = "must be a string, an array of strings, an array of token ids or an \
                            array of arrays of token ids";

fn input(value: Option<&Value>) -> Result<Input, ApiError> {
    let invalid = |message: String| ApiError::invalid("input", message);
    let items = match value {
        None | Some(Value::Null) => return Err(invalid("is required".into())),
        Some(Value::String(s)) if s.is_empty() => {
            return Err(invalid("must not be an empty string".into()));
        }
        Some(Value::String(s)) => return Ok(Input::Texts(vec![s.clone()])),
        Some(Value::Array(items)) => items,
        Some(_) => return Err(invalid(INPUT_SHAPES.into())),
    };
    if items.is_empty() {
        return Err(invalid("must not be an empty array".into()));
    }
    if items.len() > MAX_INPUTS {
        return Err(invalid(format!("has {} items; at most {MAX_INPUTS}", items.len())));
    }
    match &items[0] {
        Value::String(_) => {
            let mut texts = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                match item {
                    Value::String(s) if s.is_empty() => {
                        return Err(invalid(format!("input[{i}] must not be an empty string")));
                    }
                    Value::String(s) => texts.push(s.clone()),
                    _ => return Err(invalid(format!("input[{i}] must be a string like input[0]"))),
                }
            }
            Ok(Input::Texts(texts))
        }
        Value::Number(_) => Ok(Input::Tokens(vec![token_ids(items, "input")?])),
        Value::Array(_) => {
            let mut inputs = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                let at = format!("input[{i}]");
                match item {
                    Value::Array(ids) if ids.is_empty() => {
                        return Err(invalid(format!("{at} must not be an empty array")));
                    }
                    Value::Array(ids) => inputs.push(token_ids(ids, &at)?),
                    _ => return Err(invalid(format!("{at} must be an array of token ids"))),
                }
            }
            Ok(Input::Tokens(inputs))
        }
        _ => Err(invalid(INPUT_SHAPES.into())),
    }
}

/// Token ids: integers from 0 that fit 32 bits.
fn token_ids(items: &[Value], at: &str) -> Result<Vec<u32>, ApiError> {
    items
        .iter()
        .map(|v| v.as_u64().and_then(|id| u32::try_from(id).ok()))
        .collect::<Option<Vec<u32>>>()
        .ok_or_else(|| {
            ApiError::invalid("input", format!("{at} must hold token ids (integers from 0)"))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(body: &str) -> Result<EmbeddingsRequest, ApiError> {
        parse_embeddings(body.as_bytes())
    }

    #[test]
    fn every_input_shape_openai_takes_parses() {
        let texts = |t: &[&str]| Input::Texts(t.iter().map(|s| s.to_string()).collect());
        for (body, input) in [
            (r#"{"input": "hi"}"#, texts(&["hi"])),
            (r#"{"input": ["a", "b"]}"#, texts(&["a", "b"])),
            (r#"{"input": [101, 7, 102]}"#, Input::Tokens(vec![vec![101, 7, 102]])),
            (r#"{"input": [[1, 2], [3]]}"#, Input::Tokens(vec![vec![1, 2], vec![3]])),
        ] {
            assert_eq!(parse(body).unwrap().input, input, "{body}");
        }
        let r = parse(r#"{"input": "x", "model": "m", "encoding_format": "base64", "dimensions": 8, "truncate": true, "user": "u"}"#).unwrap();
        let expected = EmbeddingsRequest {
            model: Some("m".into()),
            input: texts(&["x"]),
            encoding_format: EncodingFormat::Base64,
            dimensions: Some(8),
            truncate: true,
        };
        assert_eq!(r, expected);
        let r = parse(r#"{"input": "x"}"#).unwrap();
        assert_eq!(
            (r.encoding_format, r.dimensions, r.truncate),
            (EncodingFormat::Float, None, false)
        );
    }

    #[test]
    fn bad_requests_name_the_field() {
        let many = format!(r#"{{"input": [{}]}}"#, vec!["\"a\""; MAX_INPUTS + 1].join(","));
        for (body, field, says) in [
            (r#"{}"#, "input", "required"),
            (r#"{"input": ""}"#, "input", "empty string"),
            (r#"{"input": []}"#, "input", "empty array"),
            (r#"{"input": ["a", ""]}"#, "input", "input[1] must not be an empty string"),
            (r#"{"input": ["a", 3]}"#, "input", "input[1] must be a string"),
            (r#"{"input": [1, -2]}"#, "input", "token ids"),
            (r#"{"input": [[1], []]}"#, "input", "input[1] must not be an empty array"),
            (r#"{"input": [[1], [4294967296]]}"#, "input", "input[1] must hold token ids"),
            (r#"{"input": {"text": "a"}}"#, "input", "must be a string, an array"),
            (&many, "input", "at most 2048"),
            (r#"{"input": "a", "encoding_format": "int8"}"#, "encoding_format", "base64"),
            (r#"{"input": "a", "dimensions": 0}"#, "dimensions", "at least 1"),
            (r#"{"input": "a", "dimensions": -3}"#, "dimensions", "non-negative"),
            (r#"{"input": "a", "truncate": "yes"}"#, "truncate", "boolean"),
            (r#"{"input": "a", "model": 3}"#, "model", "string"),
        ] {
            let e = parse(body).unwrap_err();
            assert_eq!(e.status, axum::http::StatusCode::BAD_REQUEST, "{body}");
            assert_eq!(e.param.as_deref(), Some(field), "{body}");
            assert!(e.message.contains(says), "{body}: {}", e.message);
        }
    }
}
