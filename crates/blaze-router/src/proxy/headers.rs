//! Header handling: hop-by-hop headers, `x-forwarded-*`, request ids, session keys.

use std::net::IpAddr;

use std::fmt::Write as _;

use bytes::BytesMut;
use http::header::{
    CONNECTION, COOKIE, HeaderMap, HeaderName, HeaderValue, PROXY_AUTHENTICATE,
    PROXY_AUTHORIZATION, TE, TRAILER, TRANSFER_ENCODING, UPGRADE,
};
use rand::Rng;

/// `x-request-id`.
pub static REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");

static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// Headers that describe one connection, not the message (RFC 9110 section 7.6.1), besides
/// those the `Connection` header names and `te` (kept when it is `trailers`).
fn is_hop_by_hop(name: &HeaderName) -> bool {
    [CONNECTION, TRANSFER_ENCODING, UPGRADE, PROXY_AUTHENTICATE, PROXY_AUTHORIZATION, TRAILER]
        .iter()
        .any(|n| n == name)
        || name == KEEP_ALIVE
        || name == PROXY_CONNECTION
}

/// Removes hop-by-hop headers. `te: trailers` stays: gRPC needs it end to end.
pub fn strip_hop_by_hop(h: &mut HeaderMap) {
    // Most messages carry none: one pass over the names, no lookups, finds that out.
    if !h.keys().any(|k| k == TE || is_hop_by_hop(k)) {
        return;
    }
    if let Some(conn) = h.get(CONNECTION).cloned() {
        for name in conn.to_str().unwrap_or("").split(',') {
            let name = name.trim();
            if !name.is_empty() && !name.eq_ignore_ascii_case("te") {
                h.remove(name);
            }
        }
        h.remove(CONNECTION);
    }
    if h.contains_key(TRANSFER_ENCODING) {
        h.remove(TRANSFER_ENCODING);
    }
    if h.contains_key(UPGRADE) {
        h.remove(UPGRADE);
    }
    for name in [PROXY_AUTHENTICATE, PROXY_AUTHORIZATION, TRAILER] {
        h.remove(name);
    }
    h.remove(&KEEP_ALIVE);
    h.remove(&PROXY_CONNECTION);
    if let Some(te) = h.get(TE)
        && !te.as_bytes().eq_ignore_ascii_case(b"trailers")
    {
        h.remove(TE);
    }
}

/// Prepares a client's request headers for an endpoint: strips hop-by-hop headers, appends
/// the client to `x-forwarded-for`, sets `x-forwarded-proto` if absent, and makes sure there
/// is an `x-request-id`. Returns the request id. `traceparent` and `tracestate` pass as they
/// are.
pub fn prepare_request(h: &mut HeaderMap, client: IpAddr) -> HeaderValue {
    strip_hop_by_hop(h);
    let prev = h.get(&X_FORWARDED_FOR).and_then(|v| v.to_str().ok());
    let mut xff = BytesMut::with_capacity(prev.map_or(0, |p| p.len() + 2) + 39);
    let _ = match prev {
        Some(prev) => write!(xff, "{prev}, {client}"),
        None => write!(xff, "{client}"),
    };
    if let Ok(v) = HeaderValue::from_maybe_shared(xff.freeze()) {
        h.insert(X_FORWARDED_FOR.clone(), v);
    }
    if !h.contains_key(&X_FORWARDED_PROTO) {
        h.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static("http"));
    }
    match h.get(&REQUEST_ID) {
        Some(id) => id.clone(),
        None => {
            let id = new_request_id();
            h.insert(REQUEST_ID.clone(), id.clone());
            id
        }
    }
}

/// A random UUID (v4) from the thread's fast generator: no system call per request.
pub fn new_request_id() -> HeaderValue {
    let bytes: [u8; 16] = rand::rng().random();
    let id = uuid::Builder::from_random_bytes(bytes).into_uuid();
    let mut buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
    let s = id.hyphenated().encode_lower(&mut buf);
    HeaderValue::from_str(s).unwrap_or_else(|_| HeaderValue::from_static("invalid"))
}

/// The value of cookie `name` in the `Cookie` headers.
pub fn cookie<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get_all(COOKIE).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(';')).find_map(
        |pair| {
            let (k, v) = pair.trim().split_once('=')?;
            (k == name).then_some(v)
        },
    )
}

/// The text a prompt starts with, for prefix-aware routing: the `prompt` of a completion
/// request, or the concatenated message contents of a chat request, else the raw body.
pub fn prompt_prefix(body: &[u8], max: usize) -> Vec<u8> {
    let mut out = Vec::new();
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) {
        if let Some(p) = v.get("prompt").and_then(|p| p.as_str()) {
            out.extend_from_slice(p.as_bytes());
        } else if let Some(msgs) = v.get("messages").and_then(|m| m.as_array()) {
            for m in msgs {
                if let Some(c) = m.get("content").and_then(|c| c.as_str()) {
                    out.extend_from_slice(c.as_bytes());
                    out.push(0);
                }
                if out.len() >= max {
                    break;
                }
            }
        }
    }
    if out.is_empty() {
        out.extend_from_slice(body);
    }
    out.truncate(max);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn hop_by_hop_headers_go_and_te_trailers_stays() {
        let mut h = map(&[
            ("connection", "keep-alive, x-private"),
            ("keep-alive", "timeout=5"),
            ("x-private", "1"),
            ("te", "trailers"),
            ("transfer-encoding", "chunked"),
            ("traceparent", "00-abc-def-01"),
        ]);
        let id = prepare_request(&mut h, "10.1.2.3".parse().unwrap());
        assert!(h.get("connection").is_none() && h.get("keep-alive").is_none());
        assert!(h.get("x-private").is_none() && h.get("transfer-encoding").is_none());
        assert_eq!(h["te"], "trailers");
        assert_eq!(h["traceparent"], "00-abc-def-01");
        assert_eq!(h["x-forwarded-for"], "10.1.2.3");
        assert_eq!(h["x-request-id"], id);
        assert_eq!(id.len(), 36);
    }

    #[test]
    fn forwarded_for_appends_and_request_id_is_kept() {
        let mut h = map(&[("x-forwarded-for", "1.1.1.1"), ("x-request-id", "abc"), ("te", "gzip")]);
        let id = prepare_request(&mut h, "::1".parse().unwrap());
        assert_eq!(h["x-forwarded-for"], "1.1.1.1, ::1");
        assert_eq!(id, "abc");
        assert!(h.get("te").is_none());
    }

    #[test]
    fn cookies_and_prompts_are_found() {
        let h = map(&[("cookie", "a=1; session=xyz"), ("cookie", "b=2")]);
        assert_eq!(cookie(&h, "session"), Some("xyz"));
        assert_eq!(cookie(&h, "b"), Some("2"));
        assert_eq!(cookie(&h, "c"), None);
        let chat = br#"{"model":"m","messages":[{"role":"system","content":"You are kind."},{"role":"user","content":"hi"}]}"#;
        assert_eq!(prompt_prefix(chat, 8), b"You are ");
        assert_eq!(prompt_prefix(br#"{"prompt":"Once upon"}"#, 100), b"Once upon");
        assert_eq!(prompt_prefix(b"raw bytes", 3), b"raw");
    }
}
