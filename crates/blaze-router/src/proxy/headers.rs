//! Header handling: hop-by-hop headers, `x-forwarded-*`, request ids, session cookies.

use std::net::IpAddr;

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
    // Every `connection` line counts: each may name more hop-by-hop headers.
    let listed: Vec<HeaderValue> = h.get_all(CONNECTION).iter().cloned().collect();
    for conn in &listed {
        for name in conn.to_str().unwrap_or("").split(',') {
            let name = name.trim();
            if !name.is_empty() && !name.eq_ignore_ascii_case("te") {
                h.remove(name);
            }
        }
    }
    h.remove(CONNECTION);
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

/// What the router adds to a request on its way to an endpoint: the client appended to
/// `x-forwarded-for`, `x-forwarded-proto` when absent, and an `x-request-id` when absent.
/// Kept apart from the header map so the router's own HTTP/1.1 client can write them straight
/// into the request head; [`Forwarding::apply`] puts them into a map for hyper's clients.
#[derive(Debug, Clone)]
pub struct Forwarding {
    prev_xff: Option<HeaderValue>,
    client: IpAddr,
    add_proto: bool,
    https: bool,
    request_id: HeaderValue,
    add_id: bool,
}

impl Forwarding {
    /// The client connected over TLS: `x-forwarded-proto` says `https`.
    pub fn set_https(&mut self) {
        self.https = true;
    }

    /// The request id the request travels with (the client's, or a new one).
    pub fn request_id(&self) -> &HeaderValue {
        &self.request_id
    }

    /// The new `x-forwarded-for` value.
    fn xff_into(&self, dst: &mut Vec<u8>) {
        if let Some(prev) = &self.prev_xff {
            dst.extend_from_slice(prev.as_bytes());
            dst.extend_from_slice(b", ");
        }
        push_ip(dst, self.client);
    }

    /// Puts the headers into `h` (which [`prepare_request`] was given).
    pub fn apply(&self, h: &mut HeaderMap) {
        let mut xff = Vec::with_capacity(48);
        self.xff_into(&mut xff);
        if let Ok(v) = HeaderValue::from_maybe_shared(bytes::Bytes::from(xff)) {
            h.insert(X_FORWARDED_FOR.clone(), v);
        }
        if self.add_proto {
            let proto = if self.https { "https" } else { "http" };
            h.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static(proto));
        }
        if self.add_id {
            h.insert(REQUEST_ID.clone(), self.request_id.clone());
        }
    }

    /// Writes the headers as HTTP/1.1 header lines into `dst`. The caller leaves out any
    /// `x-forwarded-for` of its own map ([`Forwarding::replaces`]).
    pub fn encode(&self, dst: &mut Vec<u8>) {
        dst.extend_from_slice(b"x-forwarded-for: ");
        self.xff_into(dst);
        dst.extend_from_slice(b"\r\n");
        if self.add_proto {
            let line: &[u8] = if self.https {
                b"x-forwarded-proto: https\r\n"
            } else {
                b"x-forwarded-proto: http\r\n"
            };
            dst.extend_from_slice(line);
        }
        if self.add_id {
            dst.extend_from_slice(b"x-request-id: ");
            dst.extend_from_slice(self.request_id.as_bytes());
            dst.extend_from_slice(b"\r\n");
        }
    }

    /// Whether a header of the client's map is replaced by [`Forwarding::encode`].
    pub fn replaces(name: &HeaderName) -> bool {
        name == X_FORWARDED_FOR
    }
}

/// Prepares a client's request headers for an endpoint: strips hop-by-hop headers and works
/// out the [`Forwarding`] headers (the client appended to `x-forwarded-for`,
/// `x-forwarded-proto` if absent, an `x-request-id` if absent). `traceparent` and
/// `tracestate` pass as they are.
pub fn prepare_request(h: &mut HeaderMap, client: IpAddr) -> Forwarding {
    strip_hop_by_hop(h);
    // A value that is not text cannot be extended; it is replaced, as before.
    let prev_xff = h.get(&X_FORWARDED_FOR).filter(|v| v.to_str().is_ok()).cloned();
    let add_proto = !h.contains_key(&X_FORWARDED_PROTO);
    let (request_id, add_id) = match h.get(&REQUEST_ID) {
        Some(id) => (id.clone(), false),
        None => (new_request_id(), true),
    };
    Forwarding { prev_xff, client, add_proto, https: false, request_id, add_id }
}

/// Appends `ip` in its usual text form; IPv4 without the formatter.
fn push_ip(dst: &mut Vec<u8>, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    dst.push(b'.');
                }
                if octet >= 100 {
                    dst.push(b'0' + octet / 100);
                }
                if octet >= 10 {
                    dst.push(b'0' + octet / 10 % 10);
                }
                dst.push(b'0' + octet % 10);
            }
        }
        IpAddr::V6(v6) => {
            use std::io::Write as _;
            let _ = write!(dst, "{v6}");
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
        let fwd = prepare_request(&mut h, "10.1.2.3".parse().unwrap());
        fwd.apply(&mut h);
        let id = fwd.request_id().clone();
        assert!(h.get("connection").is_none() && h.get("keep-alive").is_none());
        assert!(h.get("x-private").is_none() && h.get("transfer-encoding").is_none());
        assert_eq!(h["te"], "trailers");
        assert_eq!(h["traceparent"], "00-abc-def-01");
        assert_eq!(h["x-forwarded-for"], "10.1.2.3");
        assert_eq!(h["x-request-id"], id);
        assert_eq!(id.len(), 36);
    }

    #[test]
    fn every_connection_line_names_hop_by_hop_headers() {
        let mut h = map(&[
            ("connection", "keep-alive"),
            ("connection", "x-internal"),
            ("x-internal", "secret"),
            ("x-kept", "1"),
        ]);
        strip_hop_by_hop(&mut h);
        assert!(h.get("x-internal").is_none() && h.get("connection").is_none(), "{h:?}");
        assert_eq!(h["x-kept"], "1");
    }

    #[test]
    fn forwarded_for_appends_and_request_id_is_kept() {
        let mut h = map(&[("x-forwarded-for", "1.1.1.1"), ("x-request-id", "abc"), ("te", "gzip")]);
        let fwd = prepare_request(&mut h, "::1".parse().unwrap());
        fwd.apply(&mut h);
        assert_eq!(h["x-forwarded-for"], "1.1.1.1, ::1");
        assert_eq!(fwd.request_id(), "abc");
        assert!(h.get("te").is_none());
    }

    #[test]
    fn forwarding_lines_match_the_map_and_ipv4_prints_plainly() {
        for ip in ["0.0.0.0", "10.1.2.3", "192.168.100.255", "8.80.9.99"] {
            let mut v = Vec::new();
            push_ip(&mut v, ip.parse().unwrap());
            assert_eq!(v, ip.as_bytes());
        }
        let mut h = map(&[("x-forwarded-for", "1.1.1.1"), ("x-forwarded-proto", "https")]);
        let fwd = prepare_request(&mut h, "10.0.0.7".parse().unwrap());
        let mut lines = Vec::new();
        fwd.encode(&mut lines);
        let want = format!(
            "x-forwarded-for: 1.1.1.1, 10.0.0.7\r\nx-request-id: {}\r\n",
            fwd.request_id().to_str().unwrap()
        );
        assert_eq!(String::from_utf8(lines).unwrap(), want);
        assert!(Forwarding::replaces(&X_FORWARDED_FOR));
    }

    #[test]
    fn cookies_are_found() {
        let h = map(&[("cookie", "a=1; session=xyz"), ("cookie", "b=2")]);
        assert_eq!(cookie(&h, "session"), Some("xyz"));
        assert_eq!(cookie(&h, "b"), Some("2"));
        assert_eq!(cookie(&h, "c"), None);
    }
}
