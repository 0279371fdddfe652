//! Kubernetes' protobuf request bodies (`application/vnd.kubernetes.protobuf`), which kubectl
//! sends for built-in kinds: the `k8s\0` magic, a `runtime.Unknown` envelope naming apiVersion
//! and kind, and the typed message, turned into the JSON the server stores. The messages are
//! read with a table of each field's number, JSON name and JSON rules (`schema`, generated from
//! the Go types), so the JSON is what kube-apiserver's own JSON encoding of the same object
//! would be: RFC 3339 times, Quantity strings, IntOrString as a number or a string, maps from
//! their entries, base64 bytes, and zero values left out where the Go field is `omitempty` and
//! not a pointer. Answers stay JSON, which every client that sends protobuf also accepts.

use base64::Engine;
use serde_json::{Map, Value};

use crate::error::{ApiError, ApiResult};

mod schema;
#[cfg(test)]
mod tests;
mod wire;

use wire::{Wire, fields};

/// The media type of Kubernetes' protobuf encoding.
pub const MEDIA_TYPE: &str = "application/vnd.kubernetes.protobuf";

/// One protobuf message: its Go name (for errors) and its fields.
pub struct Msg {
    name: &'static str,
    fields: &'static [Field],
}

/// One field of a message.
pub struct Field {
    number: u64,
    json: &'static str,
    ty: Ty,
    card: Card,
    /// Whether a zero value stays in the JSON (a pointer, or a field without `omitempty`).
    keep_zero: bool,
}

const fn f(number: u64, json: &'static str, ty: Ty, card: Card, keep_zero: bool) -> Field {
    Field { number, json, ty, card, keep_zero }
}

/// How a field's value is encoded and how its JSON reads.
pub enum Ty {
    Str,
    Int,
    Bool,
    /// Bytes, base64 in JSON.
    Bytes,
    Msg(&'static Msg),
    /// `metav1.Time`: `seconds`, `nanos`; RFC 3339 to the second in JSON.
    Time,
    /// `metav1.MicroTime`: RFC 3339 with microseconds.
    MicroTime,
    /// `resource.Quantity`: its string.
    Quantity,
    /// `intstr.IntOrString`: `type`, `intVal`, `strVal`.
    IntOrString,
    /// `runtime.RawExtension` or `metav1.FieldsV1`: JSON bytes.
    Raw,
    /// A named list as a map value: a message whose field 1 repeats.
    List(&'static Ty),
}

/// How many values a field holds.
pub enum Card {
    One,
    Rep,
    /// A map: repeated entries with the key in field 1 and the value in field 2.
    Map,
    /// An embedded message whose fields are the parent's in JSON (`json:",inline"`).
    Inline,
}

fn bad(what: &str) -> ApiError {
    ApiError::bad_request(format!("the body of the request was in an unknown format: {what}"))
}

/// The JSON object of a `k8s\0`-prefixed protobuf body.
pub fn decode(body: &[u8]) -> ApiResult<Value> {
    let envelope = body.strip_prefix(b"k8s\0").ok_or_else(|| {
        ApiError::bad_request(
            "provided data does not appear to be a protobuf message, expected prefix [107 56 115 0]",
        )
    })?;
    let (mut api_version, mut kind, mut raw) = (String::new(), String::new(), None);
    for (number, value) in fields(envelope)? {
        match (number, value) {
            (1, Wire::Bytes(type_meta)) => {
                for (n, v) in fields(type_meta)? {
                    match (n, v) {
                        (1, Wire::Bytes(b)) => api_version = utf8(b)?.to_owned(),
                        (2, Wire::Bytes(b)) => kind = utf8(b)?.to_owned(),
                        _ => {}
                    }
                }
            }
            (2, Wire::Bytes(b)) => raw = Some(b),
            (3, Wire::Bytes(b)) if !b.is_empty() => {
                return Err(bad(&format!("content encoding {:?}", String::from_utf8_lossy(b))));
            }
            _ => {}
        }
    }
    let Some(&(_, _, msg)) = schema::KINDS.iter().find(|(v, k, _)| *v == api_version && *k == kind)
    else {
        return Err(unsupported(&format!("{kind} ({api_version})")));
    };
    let mut out = Map::new();
    out.insert("kind".into(), Value::String(kind));
    out.insert("apiVersion".into(), Value::String(api_version));
    message_into(raw.unwrap_or_default(), msg, &mut out)?;
    Ok(Value::Object(out))
}

/// 415 for a protobuf body this server cannot read.
fn unsupported(what: &str) -> ApiError {
    let mut e = ApiError::unsupported_media_type(MEDIA_TYPE);
    e.message = format!(
        "the body of the request was in an unknown format - protobuf bodies of {what} are not supported by this server; send application/json"
    );
    e
}

fn utf8(b: &[u8]) -> ApiResult<&str> {
    std::str::from_utf8(b).map_err(|_| bad("a string is not UTF-8"))
}

/// Reads the fields of `buf` as `msg` into `out`.
fn message_into(buf: &[u8], msg: &Msg, out: &mut Map<String, Value>) -> ApiResult<()> {
    for (number, value) in fields(buf)? {
        let field = msg.fields.iter().find(|f| f.number == number).ok_or_else(|| {
            unsupported(&format!("{} with field {number} (a newer Kubernetes field)", msg.name))
        })?;
        match field.card {
            Card::Inline => {
                let (Ty::Msg(inner), Wire::Bytes(b)) = (&field.ty, value) else {
                    return Err(bad("an inline field is not a message"));
                };
                message_into(b, inner, out)?;
            }
            Card::One => {
                let v = scalar(&field.ty, &value)?;
                if field.keep_zero || !is_zero(&v, &field.ty) {
                    out.insert(field.json.into(), v);
                }
            }
            Card::Rep => {
                let list = out.entry(field.json).or_insert_with(|| Value::Array(vec![]));
                let Value::Array(list) = list else { unreachable!("only lists are kept here") };
                match (&field.ty, value) {
                    (Ty::Int | Ty::Bool, Wire::Bytes(mut packed)) => {
                        while !packed.is_empty() {
                            let n = wire::varint(&mut packed)?;
                            list.push(scalar(&field.ty, &Wire::Varint(n))?);
                        }
                    }
                    (ty, value) => list.push(scalar(ty, &value)?),
                }
            }
            Card::Map => {
                let Wire::Bytes(entry) = value else { return Err(bad("a map entry")) };
                let (mut key, mut val) = (String::new(), None);
                for (n, v) in fields(entry)? {
                    match (n, v) {
                        (1, Wire::Bytes(b)) => key = utf8(b)?.to_owned(),
                        (2, v) => val = Some(scalar(&field.ty, &v)?),
                        _ => {}
                    }
                }
                let val = match val {
                    Some(v) => v,
                    None => scalar(&field.ty, &Wire::Bytes(&[]))?,
                };
                let map = out.entry(field.json).or_insert_with(|| Value::Object(Map::new()));
                if let Value::Object(map) = map {
                    map.insert(key, val);
                }
            }
        }
    }
    Ok(())
}

/// Whether `v` is the zero value of a scalar (messages, times and the other structs of Go are
/// never left out by `omitempty`).
fn is_zero(v: &Value, ty: &Ty) -> bool {
    match (ty, v) {
        (Ty::Str | Ty::Bytes, Value::String(s)) => s.is_empty(),
        (Ty::Bool, Value::Bool(b)) => !b,
        (Ty::Int, Value::Number(n)) => n.as_i64() == Some(0),
        _ => false,
    }
}

/// One value of type `ty`.
fn scalar(ty: &Ty, value: &Wire<'_>) -> ApiResult<Value> {
    Ok(match (ty, value) {
        (Ty::Int, Wire::Varint(n)) => Value::from(*n as i64),
        (Ty::Bool, Wire::Varint(n)) => Value::Bool(*n != 0),
        (Ty::Str, Wire::Bytes(b)) => Value::String(utf8(b)?.to_owned()),
        (Ty::Bytes, Wire::Bytes(b)) => {
            Value::String(base64::engine::general_purpose::STANDARD.encode(b))
        }
        (Ty::Msg(msg), Wire::Bytes(b)) => {
            let mut out = Map::new();
            message_into(b, msg, &mut out)?;
            Value::Object(out)
        }
        (Ty::Time | Ty::MicroTime, Wire::Bytes(b)) => time(b, matches!(ty, Ty::MicroTime))?,
        (Ty::Quantity, Wire::Bytes(b)) => {
            let q = str_field(b, 1)?;
            Value::String(if q.is_empty() { "0".into() } else { q })
        }
        (Ty::IntOrString, Wire::Bytes(b)) => {
            if int_field(b, 1)? == 1 {
                Value::String(str_field(b, 3)?)
            } else {
                Value::from(int_field(b, 2)?)
            }
        }
        (Ty::Raw, Wire::Bytes(b)) => {
            let raw = fields(b)?.into_iter().find_map(|(n, v)| match (n, v) {
                (1, Wire::Bytes(raw)) => Some(raw),
                _ => None,
            });
            match raw {
                None | Some([]) => Value::Null,
                Some(raw) => serde_json::from_slice(raw)
                    .map_err(|_| bad("an embedded object is not JSON"))?,
            }
        }
        (Ty::List(inner), Wire::Bytes(b)) => Value::Array(
            fields(b)?
                .into_iter()
                .filter(|(n, _)| *n == 1)
                .map(|(_, v)| scalar(inner, &v))
                .collect::<ApiResult<_>>()?,
        ),
        _ => return Err(bad("a field has the wrong wire type")),
    })
}

fn int_field(buf: &[u8], number: u64) -> ApiResult<i64> {
    let mut out = 0;
    for (n, v) in fields(buf)? {
        if let (true, Wire::Varint(x)) = (n == number, v) {
            out = x as i64;
        }
    }
    Ok(out)
}

fn str_field(buf: &[u8], number: u64) -> ApiResult<String> {
    let mut out = String::new();
    for (n, v) in fields(buf)? {
        if let (true, Wire::Bytes(b)) = (n == number, v) {
            utf8(b)?.clone_into(&mut out);
        }
    }
    Ok(out)
}

/// `metav1.Time` (`micro`: `MicroTime`) as its JSON: `null` for the zero time.
fn time(buf: &[u8], micro: bool) -> ApiResult<Value> {
    let (seconds, nanos) = (int_field(buf, 1)?, int_field(buf, 2)?);
    if seconds == 0 && nanos == 0 {
        return Ok(Value::Null);
    }
    let t = chrono::DateTime::from_timestamp(seconds, u32::try_from(nanos).unwrap_or(0))
        .ok_or_else(|| bad("a time out of range"))?;
    let format = if micro { "%Y-%m-%dT%H:%M:%S%.6fZ" } else { "%Y-%m-%dT%H:%M:%SZ" };
    Ok(Value::String(t.format(format).to_string()))
}
