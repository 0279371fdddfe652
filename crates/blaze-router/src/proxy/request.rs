//! The request as the tries see it: its body (kept for retries when small), its session key,
//! and the request each try sends.

use std::net::SocketAddr;
use std::pin::Pin;
use std::time::Duration;

use blaze_api::router::{SessionAffinityMode, Strategy};
use blaze_api::routing::RoutingConfig;
use bytes::Bytes;
use http::{HeaderMap, Request, Uri, Version};
use hyper::body::Incoming;

use super::{MAX_BUFFERED, RetryType, grpc, headers, prefix};
use crate::balance::hash_bytes;
use crate::relay::{BoxError, Idle, Resumed};

/// The request body as the tries see it.
pub(super) enum ReqBody {
    /// Read in full: every try sends it again.
    Buffered(Bytes),
    /// Streamed from the client: only one try can send it.
    Streamed(Option<Idle<Resumed<Incoming>>>),
}

impl ReqBody {
    /// Whether a try that failed without reaching the endpoint may be repeated.
    pub(super) fn retry_type(&self) -> RetryType {
        match self {
            ReqBody::Buffered(_) => RetryType::Safe,
            ReqBody::Streamed(_) => RetryType::Never,
        }
    }
}

/// Reads a small body in full: one of known size, or the one message of a gRPC call that
/// takes one ([`grpc::one_message`]) while it stays within [`MAX_BUFFERED`]. Streams any
/// other, and a gRPC message found larger on from the bytes read.
pub(super) async fn read_small(
    parts: &http::request::Parts,
    body: Incoming,
    idle: Duration,
) -> Result<ReqBody, BoxError> {
    use http_body::Body as _;
    if body.is_end_stream() {
        return Ok(ReqBody::Buffered(Bytes::new()));
    }
    let upper = body.size_hint().upper();
    let sized = upper.is_some_and(|n| n <= MAX_BUFFERED);
    let one_message =
        upper.is_none() && grpc::is_grpc(&parts.headers) && grpc::one_message(parts.uri.path());
    let mut body = Idle::new(Resumed::new(body), idle);
    if !sized && !one_message {
        return Ok(ReqBody::Streamed(Some(body)));
    }
    let (mut chunks, mut total) = (Vec::new(), 0);
    while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
        let Ok(data) = frame?.into_data() else { continue };
        total += data.len() as u64;
        chunks.push(data);
        if total > MAX_BUFFERED {
            Pin::new(&mut body).inner_mut().put_back(joined(chunks));
            return Ok(ReqBody::Streamed(Some(body)));
        }
    }
    Ok(ReqBody::Buffered(joined(chunks)))
}

/// The chunks as one: the only one as it is (most bodies come in one frame), or a copy.
fn joined(mut chunks: Vec<Bytes>) -> Bytes {
    match chunks.len() {
        0 => Bytes::new(),
        1 => chunks.pop().unwrap_or_default(),
        _ => chunks.concat().into(),
    }
}

/// The hash the hashing strategies place the request by, if they apply.
pub(super) fn session_key(
    cfg: &RoutingConfig,
    h: &HeaderMap,
    peer: SocketAddr,
    body: &ReqBody,
) -> Option<u64> {
    match cfg.strategy {
        // A gRPC message is not a prompt the key reads (nor is its length prefix stable):
        // gRPC calls fall back to the adaptive pick, as streamed bodies do.
        Strategy::PrefixAware if grpc::is_grpc(h) => None,
        Strategy::PrefixAware => match body {
            ReqBody::Buffered(b) if !b.is_empty() => {
                Some(hash_bytes(&prefix::prefix_key(b, cfg.prefix_bytes)))
            }
            _ => None,
        },
        Strategy::ConsistentHash => {
            let name = cfg.session_affinity.key.as_deref().unwrap_or("");
            match cfg.session_affinity.mode {
                SessionAffinityMode::None => None,
                SessionAffinityMode::Header => h.get(name).map(|v| hash_bytes(v.as_bytes())),
                SessionAffinityMode::Cookie => {
                    headers::cookie(h, name).map(|v| hash_bytes(v.as_bytes()))
                }
                SessionAffinityMode::ClientIp => Some(hash_bytes(peer.ip().to_string().as_bytes())),
            }
        }
        _ => None,
    }
}

/// The request one try sends to `address`. HTTP/1.1 goes out on a connection of our own
/// pool, so the target is origin-form (`/path?query`) with the client's `Host`; HTTP/2 goes
/// through a client that needs the absolute URI and derives `:authority` from it. `headers`
/// are moved in when no other try will need them.
pub(super) fn upstream_request<B>(
    parts: &http::request::Parts,
    headers: HeaderMap,
    address: &str,
    h2: bool,
    body: B,
) -> Result<Request<B>, String> {
    let mut req = Request::new(body);
    *req.method_mut() = parts.method.clone();
    *req.headers_mut() = headers;
    if h2 {
        let pq = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        *req.uri_mut() = Uri::builder()
            .scheme("http")
            .authority(address)
            .path_and_query(pq)
            .build()
            .map_err(|e| e.to_string())?;
        *req.version_mut() = Version::HTTP_2;
        req.headers_mut().remove(http::header::HOST);
        return Ok(req);
    }
    *req.version_mut() = Version::HTTP_11;
    *req.uri_mut() = match (parts.uri.scheme(), parts.uri.path_and_query()) {
        // Already origin-form: share the parsed URI.
        (None, _) => parts.uri.clone(),
        (Some(_), pq) => {
            Uri::from(pq.cloned().unwrap_or_else(|| http::uri::PathAndQuery::from_static("/")))
        }
    };
    if !req.headers().contains_key(http::header::HOST) {
        // An HTTP/2 client, or an absolute-form HTTP/1.1 request without `Host`.
        let host = parts.uri.authority().map_or(address, |a| a.as_str());
        if let Ok(v) = http::HeaderValue::from_str(host) {
            req.headers_mut().insert(http::header::HOST, v);
        }
    }
    Ok(req)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::relay::{self, Upstream};

    fn parts(uri: &str, host: Option<&str>) -> http::request::Parts {
        let mut b = Request::get(uri);
        if let Some(h) = host {
            b = b.header("host", h);
        }
        b.body(()).unwrap().into_parts().0
    }

    fn try_of(p: &http::request::Parts, http2: bool) -> Request<Upstream> {
        upstream_request(p, p.headers.clone(), "10.0.0.1:80", http2, relay::buffered(Bytes::new()))
            .unwrap()
    }

    #[test]
    fn http1_tries_use_origin_form_and_keep_or_make_the_host() {
        let p = parts("/v1/models?x=1", Some("api.example"));
        let r = try_of(&p, false);
        assert_eq!(r.uri(), "/v1/models?x=1");
        assert_eq!(r.headers()["host"], "api.example");
        let p = parts("http://api.example/a", None);
        let r = try_of(&p, false);
        assert_eq!(r.uri(), "/a");
        assert_eq!(r.headers()["host"], "api.example");
    }

    #[test]
    fn prefix_aware_keys_prompts_but_not_grpc_messages() {
        let cfg = RoutingConfig { strategy: Strategy::PrefixAware, ..RoutingConfig::default() };
        let peer: SocketAddr = "10.0.0.2:5000".parse().unwrap();
        let body = ReqBody::Buffered(Bytes::from_static(br#"{"prompt": "hello"}"#));
        assert!(session_key(&cfg, &HeaderMap::new(), peer, &body).is_some());
        let mut grpc = HeaderMap::new();
        grpc.insert(http::header::CONTENT_TYPE, "application/grpc".parse().unwrap());
        assert_eq!(session_key(&cfg, &grpc, peer, &body), None);
    }

    #[test]
    fn http2_tries_use_the_absolute_uri_without_host() {
        let p = parts("/svc/Method", Some("api.example"));
        let r = try_of(&p, true);
        assert_eq!(r.uri(), "http://10.0.0.1:80/svc/Method");
        assert!(r.headers().get("host").is_none());
        assert_eq!(r.version(), Version::HTTP_2);
    }
}
