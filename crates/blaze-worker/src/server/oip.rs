//! The Open Inference Protocol's REST form: `/v2/health/{live,ready}`, `/v2`,
//! `/v2/models/{name}[/versions/{version}]`, its `/ready` and its `/infer`, over
//! [`crate::oip`]. Errors are `{"error": "..."}` with 400, 404, 429, 503 or 500.
//!
//! Triton's binary tensor data extension, which its HTTP client uses by default: a body
//! whose `Inference-Header-Content-Length` header says how many of its bytes are the JSON
//! carries, after them, the raw elements of each input whose `parameters.binary_data_size`
//! says how many bytes it has, in the inputs' order. Outputs come back the same way when the
//! request's `binary_data_output` parameter or the output's `binary_data` parameter is true,
//! and always for BYTES outputs that are not UTF-8 text (an image model's PNGs), which JSON
//! strings cannot carry.

use axum::Json;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use serde::Serialize;
use serde_json::{Value, json};

use super::AppState;
use super::body::read_limited;
use super::error::RETRY_AFTER_SECONDS;
use crate::oip::params::{self, Param};
use crate::oip::tensor::{Elements, Input, Output, OutputData};
use crate::oip::{self as core, InferRequest, InferResponse, OipError, RequestedOutput};

/// The header that says how many bytes of a body are its JSON, the rest binary tensor data.
pub const HEADER_LENGTH: &str = "inference-header-content-length";

/// The `/v2` routes.
pub fn routes() -> axum::Router<AppState> {
    axum::Router::new()
        .route("/v2", get(server_metadata))
        .route("/v2/health/live", get(live))
        .route("/v2/health/ready", get(ready))
        .route("/v2/models/{name}", get(model_metadata))
        .route("/v2/models/{name}/versions/{version}", get(versioned_metadata))
        .route("/v2/models/{name}/ready", get(model_ready))
        .route("/v2/models/{name}/versions/{version}/ready", get(versioned_ready))
        .route("/v2/models/{name}/infer", post(infer))
        .route("/v2/models/{name}/versions/{version}/infer", post(versioned_infer))
}

/// An error as the protocol's REST form writes it.
fn error(e: OipError) -> Response {
    let status = match e {
        OipError::Invalid(_) => StatusCode::BAD_REQUEST,
        OipError::NotFound(_) => StatusCode::NOT_FOUND,
        OipError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        OipError::Exhausted(_) => StatusCode::TOO_MANY_REQUESTS,
        OipError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
    };
    let body = Json(json!({"error": e.to_string()}));
    if status == StatusCode::SERVICE_UNAVAILABLE {
        let retry_after = [(header::RETRY_AFTER, RETRY_AFTER_SECONDS.to_string())];
        return (status, retry_after, body).into_response();
    }
    (status, body).into_response()
}

/// 200 when `yes`, else 503, with `{key: yes}`.
fn flag(key: &str, yes: bool) -> Response {
    let status = if yes { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(json!({ key: yes }))).into_response()
}

async fn live(State(state): State<AppState>) -> Response {
    flag("live", core::live(&state))
}

async fn ready(State(state): State<AppState>) -> Response {
    flag("ready", core::ready(&state))
}

async fn server_metadata() -> Response {
    let body = json!({
        "name": core::SERVER_NAME,
        "version": env!("CARGO_PKG_VERSION"),
        "extensions": core::EXTENSIONS,
    });
    Json(body).into_response()
}

async fn model_metadata(State(state): State<AppState>, Path(name): Path<String>) -> Response {
    metadata(&state, &name, "")
}

async fn versioned_metadata(
    State(state): State<AppState>,
    Path((name, version)): Path<(String, String)>,
) -> Response {
    metadata(&state, &name, &version)
}

fn metadata(state: &AppState, name: &str, version: &str) -> Response {
    match core::model_metadata(state, name, version) {
        Ok(m) => {
            let tensors = |ts: &[core::TensorMetadata]| -> Vec<Value> {
                ts.iter()
                    .map(|t| json!({"name": t.name, "datatype": t.datatype, "shape": t.shape}))
                    .collect()
            };
            Json(json!({
                "name": m.name, "versions": [], "platform": m.platform,
                "inputs": tensors(&m.inputs), "outputs": tensors(&m.outputs),
            }))
            .into_response()
        }
        Err(e) => error(e),
    }
}

async fn model_ready(State(state): State<AppState>, Path(name): Path<String>) -> Response {
    readiness(&state, &name, "")
}

async fn versioned_ready(
    State(state): State<AppState>,
    Path((name, version)): Path<(String, String)>,
) -> Response {
    readiness(&state, &name, &version)
}

fn readiness(state: &AppState, name: &str, version: &str) -> Response {
    match core::model_ready(state, name, version) {
        Ok(yes) => flag("ready", yes),
        Err(e) => error(e),
    }
}

async fn infer(
    State(state): State<AppState>,
    Path(name): Path<String>,
    request: Request,
) -> Response {
    infer_at(state, name, String::new(), request).await
}

async fn versioned_infer(
    State(state): State<AppState>,
    Path((name, version)): Path<(String, String)>,
    request: Request,
) -> Response {
    infer_at(state, name, version, request).await
}

async fn infer_at(state: AppState, model: String, version: String, request: Request) -> Response {
    let headers = request.headers().clone();
    let body = match read_limited(request).await {
        Ok(body) => body,
        Err(response) => return response,
    };
    let (request, binary) = match parse(&headers, body, model, version) {
        Ok(parsed) => parsed,
        Err(e) => return error(e),
    };
    match core::infer(&state, request).await {
        Ok(answer) => respond(answer, &binary),
        Err(e) => error(e),
    }
}

/// Which outputs go back as binary data: the request's default and each named output's own.
#[derive(Debug, Default, PartialEq)]
struct Binary {
    default: bool,
    outputs: Vec<(String, bool)>,
}

impl Binary {
    fn of(&self, name: &str) -> bool {
        self.outputs.iter().find(|(n, _)| n == name).map_or(self.default, |(_, b)| *b)
    }
}

/// A `/infer` body (JSON, then any binary tensor data) as a request.
fn parse(
    headers: &HeaderMap,
    body: Bytes,
    model: String,
    version: String,
) -> Result<(InferRequest, Binary), OipError> {
    let json_length = match headers.get(HEADER_LENGTH) {
        None => body.len(),
        Some(v) => match v.to_str().ok().and_then(|v| v.trim().parse::<usize>().ok()) {
            Some(n) if n <= body.len() => n,
            _ => {
                let message = format!("{v:?} is not a length within the body's {}", body.len());
                return Err(OipError::invalid("Inference-Header-Content-Length", message));
            }
        },
    };
    let mut binary = body.slice(json_length..);
    let doc: Value = serde_json::from_slice(&body[..json_length])
        .map_err(|e| OipError::invalid("body", format!("malformed JSON: {e}")))?;
    let Value::Object(doc) = doc else {
        return Err(OipError::invalid("body", "must be a JSON object"));
    };
    let id = match doc.get("id") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(_) => return Err(OipError::invalid("id", "must be a string")),
    };
    let parameters =
        params::from_json(doc.get("parameters").unwrap_or(&Value::Null), "parameters")?;
    let default = matches!(parameters.get("binary_data_output"), Some(Param::Bool(true)));
    let Some(Value::Array(raw_inputs)) = doc.get("inputs") else {
        return Err(OipError::invalid("inputs", "is required and must be an array"));
    };
    let mut inputs = Vec::with_capacity(raw_inputs.len());
    for (i, raw) in raw_inputs.iter().enumerate() {
        inputs.push(input(raw, i, &mut binary)?);
    }
    if !binary.is_empty() {
        let message = format!(
            "{} bytes of binary data follow the JSON that no input's binary_data_size claims",
            binary.len()
        );
        return Err(OipError::invalid("inputs", message));
    }
    let (outputs, choice) = requested_outputs(doc.get("outputs"), default)?;
    let request = InferRequest { model, version, id, parameters, inputs, outputs };
    Ok((request, choice))
}

/// `outputs`, and which of them go back as binary data (`default` unless they say).
fn requested_outputs(
    raw: Option<&Value>,
    default: bool,
) -> Result<(Vec<RequestedOutput>, Binary), OipError> {
    let mut outputs = Vec::new();
    let mut choice = Binary { default, outputs: Vec::new() };
    let raw = match raw {
        None | Some(Value::Null) => return Ok((outputs, choice)),
        Some(Value::Array(raw)) => raw,
        Some(_) => return Err(OipError::invalid("outputs", "must be an array")),
    };
    for (i, o) in raw.iter().enumerate() {
        let field = format!("outputs[{i}]");
        let Some(name) = o.get("name").and_then(Value::as_str) else {
            return Err(OipError::invalid(&format!("{field}.name"), "must be a string"));
        };
        let own = params::from_json(o.get("parameters").unwrap_or(&Value::Null), &field)?;
        if let Some(Param::Bool(b)) = own.get("binary_data") {
            choice.outputs.push((name.to_owned(), *b));
        }
        outputs.push(RequestedOutput { name: name.to_owned() });
    }
    Ok((outputs, choice))
}

/// One entry of `inputs`, taking its binary data from the front of `binary`.
fn input(raw: &Value, i: usize, binary: &mut Bytes) -> Result<Input, OipError> {
    let field = format!("inputs[{i}]");
    let Value::Object(raw) = raw else {
        return Err(OipError::invalid(&field, "must be an object"));
    };
    let text = |key: &str| match raw.get(key) {
        Some(Value::String(s)) => Ok(s.clone()),
        _ => Err(OipError::invalid(&format!("{field}.{key}"), "must be a string")),
    };
    let (name, datatype) = (text("name")?, text("datatype")?);
    let shape = match raw.get("shape") {
        Some(Value::Array(dims)) => dims.iter().map(Value::as_i64).collect::<Option<Vec<_>>>(),
        _ => None,
    }
    .ok_or_else(|| OipError::invalid(&format!("{field}.shape"), "must be an array of integers"))?;
    let own = params::from_json(raw.get("parameters").unwrap_or(&Value::Null), &field)?;
    let size_field = format!("{field}.parameters.binary_data_size");
    let (elements, source) = match own.get("binary_data_size") {
        Some(Param::Int(n)) if *n >= 0 && (*n as usize) <= binary.len() => {
            let data = binary.split_to(*n as usize);
            (Elements::Raw(data), size_field)
        }
        Some(Param::Int(n)) if *n >= 0 => {
            let message = format!("{n}, but {} bytes of binary data are left", binary.len());
            return Err(OipError::invalid(&size_field, message));
        }
        Some(_) => return Err(OipError::invalid(&size_field, "must be a non-negative integer")),
        None => {
            let source = format!("{field}.data");
            (elements(raw.get("data"), &datatype, &source)?, source)
        }
    };
    Ok(Input { name, datatype, shape, elements, source })
}

/// The elements of a JSON `data` (nested arrays are flattened, row-major).
fn elements(data: Option<&Value>, datatype: &str, field: &str) -> Result<Elements, OipError> {
    let Some(data) = data else { return Ok(Elements::Missing) };
    let mut flat = Vec::new();
    flatten(data, &mut flat);
    let wrong = |i: usize, what: &str| {
        OipError::invalid(field, format!("element {i} is not {what} ({datatype} elements are)"))
    };
    match datatype {
        "BYTES" => flat
            .iter()
            .enumerate()
            .map(|(i, v)| {
                v.as_str().map(|s| s.as_bytes().to_vec()).ok_or_else(|| wrong(i, "a string"))
            })
            .collect::<Result<_, _>>()
            .map(Elements::Bytes),
        "BOOL" => flat
            .iter()
            .enumerate()
            .map(|(i, v)| v.as_bool().ok_or_else(|| wrong(i, "a boolean")))
            .collect::<Result<_, _>>()
            .map(Elements::Bools),
        _ => Ok(Elements::Numbers(flat.len())),
    }
}

fn flatten<'a>(value: &'a Value, out: &mut Vec<&'a Value>) {
    match value {
        Value::Array(items) => items.iter().for_each(|i| flatten(i, out)),
        other => out.push(other),
    }
}

#[derive(Serialize)]
struct Answer<'a> {
    model_name: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    id: &'a str,
    outputs: Vec<AnswerOutput<'a>>,
}

#[derive(Serialize)]
struct AnswerOutput<'a> {
    name: &'a str,
    datatype: &'a str,
    shape: &'a [i64],
    #[serde(skip_serializing_if = "Option::is_none")]
    parameters: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<Data<'a>>,
}

/// JSON elements: f32 numbers serialize in their shortest exact form.
#[derive(Serialize)]
#[serde(untagged)]
enum Data<'a> {
    Fp32(&'a [f32]),
    Text(Vec<std::borrow::Cow<'a, str>>),
}

fn respond(answer: InferResponse, binary: &Binary) -> Response {
    let mut tail = Vec::new();
    let outputs = answer
        .outputs
        .iter()
        .map(|o: &Output| {
            // Bytes that are not text (PNG images) cannot be JSON strings: they go as binary
            // data whether or not the request asked for it.
            let not_text = matches!(&o.data, OutputData::Bytes(items)
                if items.iter().any(|i| std::str::from_utf8(i).is_err()));
            let (parameters, data) = if binary.of(o.name) || not_text {
                let raw = o.raw();
                let size = raw.len();
                tail.extend_from_slice(&raw);
                (Some(json!({"binary_data_size": size})), None)
            } else {
                let data = match &o.data {
                    OutputData::Fp32(values) => Data::Fp32(values),
                    OutputData::Bytes(items) => {
                        Data::Text(items.iter().map(|i| String::from_utf8_lossy(i)).collect())
                    }
                };
                (None, Some(data))
            };
            AnswerOutput { name: o.name, datatype: o.datatype(), shape: &o.shape, parameters, data }
        })
        .collect();
    let doc = Answer { model_name: &answer.model, id: &answer.id, outputs };
    let mut body = match serde_json::to_vec(&doc) {
        Ok(body) => body,
        Err(e) => return error(OipError::Internal(e.to_string())),
    };
    if tail.is_empty() {
        let json = HeaderValue::from_static("application/json");
        return ([(header::CONTENT_TYPE, json)], body).into_response();
    }
    let length = HeaderValue::from(body.len());
    body.extend_from_slice(&tail);
    let octets = HeaderValue::from_static("application/octet-stream");
    (
        [(header::CONTENT_TYPE, octets), (header::HeaderName::from_static(HEADER_LENGTH), length)],
        body,
    )
        .into_response()
}

#[cfg(test)]
mod tests;
