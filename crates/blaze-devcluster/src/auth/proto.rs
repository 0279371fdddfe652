//! Just enough of Kubernetes' protobuf encoding to read the review requests kubectl sends
//! (`kubectl auth can-i` encodes built-in kinds as `application/vnd.kubernetes.protobuf`):
//! the `k8s\0` envelope (`runtime.Unknown`) and the messages a review's spec is made of,
//! turned into the JSON the handlers read. Answers are JSON, which kubectl also accepts.

use serde_json::{Map, Value};

use crate::error::{ApiError, ApiResult};

/// How one field of a message reads.
pub enum Field {
    /// A string, under this JSON name.
    Str(&'static str),
    /// An embedded message, under this JSON name.
    Msg(&'static str, &'static [(u64, Field)]),
}

/// `ResourceAttributes` (authorization.k8s.io/v1).
const RESOURCE_ATTRIBUTES: &[(u64, Field)] = &[
    (1, Field::Str("namespace")),
    (2, Field::Str("verb")),
    (3, Field::Str("group")),
    (4, Field::Str("version")),
    (5, Field::Str("resource")),
    (6, Field::Str("subresource")),
    (7, Field::Str("name")),
];
/// `NonResourceAttributes`.
const NON_RESOURCE_ATTRIBUTES: &[(u64, Field)] =
    &[(1, Field::Str("path")), (2, Field::Str("verb"))];
/// `SelfSubjectAccessReviewSpec`.
const ACCESS_SPEC: &[(u64, Field)] = &[
    (1, Field::Msg("resourceAttributes", RESOURCE_ATTRIBUTES)),
    (2, Field::Msg("nonResourceAttributes", NON_RESOURCE_ATTRIBUTES)),
];
/// `SelfSubjectRulesReviewSpec`.
const RULES_SPEC: &[(u64, Field)] = &[(1, Field::Str("namespace"))];
/// `SelfSubjectAccessReview` (metadata is field 1, left out).
pub const ACCESS_REVIEW: &[(u64, Field)] = &[(2, Field::Msg("spec", ACCESS_SPEC))];
/// `SelfSubjectRulesReview`.
pub const RULES_REVIEW: &[(u64, Field)] = &[(2, Field::Msg("spec", RULES_SPEC))];

fn bad(what: &str) -> ApiError {
    ApiError::bad_request(format!("the body of the request was in an unknown format: {what}"))
}

/// The object inside a `k8s\0`-prefixed protobuf body, read with `schema`.
pub fn decode(body: &[u8], schema: &[(u64, Field)]) -> ApiResult<Value> {
    let envelope = body.strip_prefix(b"k8s\0").ok_or_else(|| bad("no protobuf envelope"))?;
    let mut raw = None;
    for (number, value) in fields(envelope)? {
        if let (2, Wire::Bytes(b)) = (number, value) {
            raw = Some(b);
        }
    }
    message(raw.ok_or_else(|| bad("empty envelope"))?, schema)
}

enum Wire<'a> {
    Varint,
    Bytes(&'a [u8]),
}

fn message(buf: &[u8], schema: &[(u64, Field)]) -> ApiResult<Value> {
    let mut out = Map::new();
    for (number, value) in fields(buf)? {
        let (Some((_, field)), Wire::Bytes(b)) = (schema.iter().find(|(n, _)| *n == number), value)
        else {
            continue;
        };
        match field {
            Field::Str(name) => {
                let s = std::str::from_utf8(b).map_err(|_| bad("a string is not UTF-8"))?;
                out.insert((*name).into(), Value::String(s.into()));
            }
            Field::Msg(name, inner) => {
                out.insert((*name).into(), message(b, inner)?);
            }
        }
    }
    Ok(Value::Object(out))
}

/// The fields of one message, in order.
fn fields(mut buf: &[u8]) -> ApiResult<Vec<(u64, Wire<'_>)>> {
    let mut out = Vec::new();
    while !buf.is_empty() {
        let key = varint(&mut buf)?;
        let value = match key & 7 {
            0 => {
                varint(&mut buf)?;
                Wire::Varint
            }
            2 => {
                let len = usize::try_from(varint(&mut buf)?).map_err(|_| bad("length"))?;
                if len > buf.len() {
                    return Err(bad("truncated field"));
                }
                let (b, rest) = buf.split_at(len);
                buf = rest;
                Wire::Bytes(b)
            }
            1 | 5 => {
                let n = if key & 7 == 1 { 8 } else { 4 };
                buf = buf.get(n..).ok_or_else(|| bad("truncated field"))?;
                Wire::Varint
            }
            _ => return Err(bad("unsupported wire type")),
        };
        out.push((key >> 3, value));
    }
    Ok(out)
}

fn varint(buf: &mut &[u8]) -> ApiResult<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let (&b, rest) = buf.split_first().ok_or_else(|| bad("truncated varint"))?;
        *buf = rest;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err(bad("varint too long"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_kubectl_auth_can_i_sends() {
        // `kubectl auth can-i list pods -n demo`, as kubectl 1.33 encodes it.
        let body = b"k8s\x00\n2\n\x17authorization.k8s.io/v1\x12\x17SelfSubjectAccessReview\x12:\n\x10\n\x00\x12\x00\x1a\x00\"\x00*\x002\x008\x00B\x00\x12\x1c\n\x1a\n\x04demo\x12\x04list\x1a\x00\"\x00*\x04pods2\x00:\x00\x1a\x08\x08\x00\x12\x00\x1a\x00 \x00\x1a\x00\"\x00";
        let review = decode(body, ACCESS_REVIEW).unwrap();
        let attrs = &review["spec"]["resourceAttributes"];
        assert_eq!(
            (attrs["namespace"].as_str(), attrs["verb"].as_str()),
            (Some("demo"), Some("list"))
        );
        assert_eq!(attrs["resource"], "pods");
        assert!(review["spec"].get("nonResourceAttributes").is_none());
        assert!(decode(&body[..40], ACCESS_REVIEW).is_err(), "a truncated body is refused");
    }
}
