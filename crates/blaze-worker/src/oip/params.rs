//! Request parameters: the values the protocol carries (bool, integer, float, string), and
//! the settings this worker reads from them.
//!
//! Sampling takes the names Triton's vLLM backend reads from `sampling_parameters` and its
//! generate endpoint from the request: `max_tokens`, `temperature`, `top_p`, `top_k`,
//! `seed`, `stop`, `repetition_penalty`, `frequency_penalty`, `presence_penalty`. A number
//! may also come as a string (`"0.7"`): Triton's clients send strings for values KServe's
//! `InferParameter` cannot carry. Unknown names are ignored, as Triton ignores them (clients
//! send their own, such as `binary_data_output` and `priority`).

use std::collections::BTreeMap;

use serde_json::Value;

use super::OipError;
use crate::sampling::SamplingParams;

/// One parameter value.
#[derive(Debug, Clone, PartialEq)]
pub enum Param {
    /// A boolean.
    Bool(bool),
    /// A signed integer.
    Int(i64),
    /// An unsigned integer too large for `Int`.
    Uint(u64),
    /// A floating-point number.
    Float(f64),
    /// A string.
    Str(String),
    /// Strings (JSON only: `"stop": ["a", "b"]`).
    List(Vec<String>),
    /// Something else (a JSON object, or a value of a type the message did not name).
    Other,
}

/// Parameters by name.
pub type Params = BTreeMap<String, Param>;

impl From<&Value> for Param {
    fn from(value: &Value) -> Self {
        match value {
            Value::Bool(b) => Param::Bool(*b),
            Value::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
                (Some(i), _, _) => Param::Int(i),
                (None, Some(u), _) => Param::Uint(u),
                (None, None, Some(f)) => Param::Float(f),
                _ => Param::Other,
            },
            Value::String(s) => Param::Str(s.clone()),
            Value::Array(items) => items
                .iter()
                .map(|i| i.as_str().map(str::to_owned))
                .collect::<Option<Vec<_>>>()
                .map_or(Param::Other, Param::List),
            Value::Null | Value::Object(_) => Param::Other,
        }
    }
}

/// Parameters from a JSON object (REST `parameters`, the `sampling_parameters` input).
pub fn from_json(value: &Value, field: &str) -> Result<Params, OipError> {
    match value {
        Value::Object(map) => Ok(map.iter().map(|(k, v)| (k.clone(), Param::from(v))).collect()),
        Value::Null => Ok(Params::new()),
        _ => Err(OipError::invalid(field, "must be a JSON object")),
    }
}

/// Reads settings from parameters, naming the one at fault as `{prefix}.{name}`.
pub struct Reader<'a> {
    params: &'a Params,
    prefix: &'a str,
}

impl<'a> Reader<'a> {
    /// A reader over `params`, found at `prefix` in the request.
    pub fn new(params: &'a Params, prefix: &'a str) -> Self {
        Self { params, prefix }
    }

    fn invalid(&self, name: &str, message: impl AsRef<str>) -> OipError {
        OipError::invalid(&format!("{}.{name}", self.prefix), message)
    }

    /// A number in `range`, if given.
    pub fn float(
        &self,
        name: &str,
        range: std::ops::RangeInclusive<f64>,
    ) -> Result<Option<f64>, OipError> {
        let value = match self.params.get(name) {
            None => return Ok(None),
            Some(Param::Int(i)) => Some(*i as f64),
            Some(Param::Uint(u)) => Some(*u as f64),
            Some(Param::Float(f)) => Some(*f),
            Some(Param::Str(s)) => s.trim().parse::<f64>().ok(),
            Some(_) => None,
        };
        match value {
            Some(v) if range.contains(&v) => Ok(Some(v)),
            _ => Err(self.invalid(
                name,
                format!("must be a number from {} to {}", range.start(), range.end()),
            )),
        }
    }

    /// An integer, if given.
    pub fn int(&self, name: &str) -> Result<Option<i64>, OipError> {
        let value = match self.params.get(name) {
            None => return Ok(None),
            Some(Param::Int(i)) => Some(*i),
            Some(Param::Uint(u)) => i64::try_from(*u).ok(),
            Some(Param::Float(f)) if f.fract() == 0.0 && f.abs() < 9.0e15 => Some(*f as i64),
            Some(Param::Str(s)) => s.trim().parse::<i64>().ok(),
            Some(_) => None,
        };
        value.map(Some).ok_or_else(|| self.invalid(name, "must be an integer"))
    }

    /// A non-negative integer, if given.
    pub fn uint(&self, name: &str) -> Result<Option<u64>, OipError> {
        if let Some(Param::Uint(u)) = self.params.get(name) {
            return Ok(Some(*u));
        }
        match self.int(name)? {
            None => Ok(None),
            Some(i) => u64::try_from(i)
                .map(Some)
                .map_err(|_| self.invalid(name, "must be a non-negative integer")),
        }
    }

    /// A boolean, if given (also `"true"` and `"false"`).
    pub fn bool(&self, name: &str) -> Result<Option<bool>, OipError> {
        match self.params.get(name) {
            None => Ok(None),
            Some(Param::Bool(b)) => Ok(Some(*b)),
            Some(Param::Str(s)) if s == "true" || s == "false" => Ok(Some(s == "true")),
            Some(_) => Err(self.invalid(name, "must be a boolean")),
        }
    }

    /// Strings: one string, a list of them, or a string holding a JSON list of them.
    pub fn strings(&self, name: &str) -> Result<Vec<String>, OipError> {
        match self.params.get(name) {
            None => Ok(Vec::new()),
            Some(Param::List(items)) => Ok(items.clone()),
            Some(Param::Str(s)) if s.trim_start().starts_with('[') => serde_json::from_str(s)
                .map_err(|_| self.invalid(name, "must be a string or a JSON array of strings")),
            Some(Param::Str(s)) => Ok(vec![s.clone()]),
            Some(_) => Err(self.invalid(name, "must be a string or an array of strings")),
        }
    }
}

/// Most stop strings a request may carry (as `/v1/completions`).
const MAX_STOPS: usize = 16;

/// What a text-generation request asks for besides its prompt.
#[derive(Debug, Clone, PartialEq)]
pub struct Generation {
    /// `max_tokens`, if given.
    pub max_tokens: Option<usize>,
    /// The sampling settings (OpenAI's defaults where not given: temperature 1).
    pub sampling: SamplingParams,
    /// `stop`.
    pub stop: Vec<String>,
}

/// The generation settings in `params` (found at `prefix`).
pub fn generation(params: &Params, prefix: &str) -> Result<Generation, OipError> {
    let r = Reader::new(params, prefix);
    let max_tokens = match r.uint("max_tokens")? {
        Some(0) => return Err(r.invalid("max_tokens", "must be at least 1")),
        n => n.map(|n| usize::try_from(n).unwrap_or(usize::MAX)),
    };
    let top_k = match r.int("top_k")? {
        None | Some(-1) => 0,
        Some(k) => usize::try_from(k)
            .map_err(|_| r.invalid("top_k", "must be a non-negative integer (or -1: no limit)"))?,
    };
    let top_p = r.float("top_p", 0.0..=1.0)?.unwrap_or(1.0);
    if top_p == 0.0 {
        return Err(r.invalid("top_p", "must be greater than 0"));
    }
    let seed = match r.params.get("seed") {
        Some(Param::Uint(u)) => Some(*u),
        _ => r.int("seed")?.map(|s| s as u64),
    };
    let sampling = SamplingParams {
        temperature: r.float("temperature", 0.0..=2.0)?.unwrap_or(1.0) as f32,
        top_p: top_p as f32,
        top_k,
        seed,
        repetition_penalty: r.float("repetition_penalty", 0.01..=10.0)?.unwrap_or(1.0) as f32,
        frequency_penalty: r.float("frequency_penalty", -2.0..=2.0)?.unwrap_or(0.0) as f32,
        presence_penalty: r.float("presence_penalty", -2.0..=2.0)?.unwrap_or(0.0) as f32,
        logprobs: None,
        ignore_eos: r.bool("ignore_eos")?.unwrap_or(false),
    };
    let stop = r.strings("stop")?;
    if stop.len() > MAX_STOPS {
        return Err(r.invalid("stop", format!("at most {MAX_STOPS} strings")));
    }
    Ok(Generation { max_tokens, sampling, stop })
}
