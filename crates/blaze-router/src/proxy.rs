//! The proxy: one request in, tries out to endpoints, one response streamed back.
//!
//! A request body whose size is known and at most [`MAX_BUFFERED`] is read first, so the
//! request can be tried again elsewhere; any other body is streamed and tried once. A try that
//! fails before its response starts (no connection, reset, per-try timeout, 502/503/504, gRPC
//! `UNAVAILABLE` without a body) is retried on another endpoint while tries and the retry
//! budget last. Once response headers go to the client nothing is retried. There is no total
//! timeout: headers must come within the per-try timeout, and after that bodies may flow for
//! as long as bytes keep moving within the idle timeout.

mod headers;
mod server;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use blaze_api::router::{SessionAffinityMode, Strategy};
use blaze_api::routing::{RoutingConfig, UpstreamProtocol};
use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode, Uri, Version};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

pub use headers::{REQUEST_ID, prepare_request, strip_hop_by_hop};
pub use server::serve;

use crate::auth::Auth;
use crate::balance::{PickContext, hash_bytes};
use crate::body::{Downstream, Idle, Upstream, grpc_failure};
use crate::routes::{Routes, Table};

/// Largest request body read in full so the request can be retried. Inference requests
/// (prompts, chat histories) are well under it; larger or unsized bodies are streamed.
pub const MAX_BUFFERED: u64 = 1 << 20;
/// Time to establish a connection to an endpoint. Endpoints are on the cluster network: a
/// connection that takes longer is as good as refused, and the try moves on.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// The proxy's shared state.
pub struct Proxy {
    table: Arc<Table>,
    h1: Client<HttpConnector, Upstream>,
    h2: Client<HttpConnector, Upstream>,
    auth: arc_swap::ArcSwapOption<Auth>,
    admin: Option<Arc<crate::admin::Admin>>,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy").finish_non_exhaustive()
    }
}

/// Why a try failed, and whether another endpoint may be tried.
#[derive(Debug)]
struct TryFailure {
    status: StatusCode,
    message: String,
    retry: RetryType,
}

/// Whether a failed try may be repeated on another endpoint (a typed property, decided where
/// the failure is understood).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryType {
    /// Nothing reached the client yet and the request can be sent again.
    Safe,
    /// Sending again could duplicate or cannot be done (a streamed body was consumed).
    Never,
}

fn client(http2: bool) -> Client<HttpConnector, Upstream> {
    let mut conn = HttpConnector::new();
    conn.set_nodelay(true);
    conn.set_connect_timeout(Some(CONNECT_TIMEOUT));
    let mut b = Client::builder(TokioExecutor::new());
    b.pool_idle_timeout(Duration::from_secs(90))
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new());
    if http2 {
        b.http2_only(true).http2_adaptive_window(true);
    }
    b.build(conn)
}

impl Proxy {
    /// A proxy over `table`. `admin`, when given, answers `/livez`, `/readyz` and `/metrics`
    /// on the proxy port.
    pub fn new(
        table: Arc<Table>,
        auth: Option<Auth>,
        admin: Option<Arc<crate::admin::Admin>>,
    ) -> Arc<Self> {
        Arc::new(Self {
            table,
            h1: client(false),
            h2: client(true),
            auth: arc_swap::ArcSwapOption::from(auth.map(Arc::new)),
            admin,
        })
    }

    /// Replaces the API keys.
    pub fn set_auth(&self, auth: Option<Auth>) {
        self.auth.store(auth.map(Arc::new));
    }

    /// Handles one client request.
    pub async fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
        peer: SocketAddr,
    ) -> Response<Downstream> {
        if let Some(admin) = &self.admin
            && let Some(resp) = admin.serve(req.uri().path())
        {
            return resp;
        }
        if let Some(auth) = self.auth.load().as_ref()
            && !auth.check(req.headers(), self.table.metrics())
        {
            return local(StatusCode::UNAUTHORIZED, "unauthorized\n");
        }
        let routes = self.table.load();
        let (mut parts, body) = req.into_parts();
        let request_id = prepare_request(&mut parts.headers, peer.ip());
        let idle = Duration::from_millis(
            u64::try_from(routes.config.timeouts.idle_timeout_ms).unwrap_or(60_000),
        );
        let mut body = match read_small(body, idle).await {
            Ok(b) => b,
            Err(e) => {
                return local(StatusCode::BAD_REQUEST, format!("reading the request body: {e}\n"));
            }
        };
        let key = session_key(&routes.config, &parts.headers, peer, &body);
        let mut resp = self.tries(&routes, &mut parts, &mut body, key).await;
        resp.headers_mut().insert(REQUEST_ID.clone(), request_id);
        resp
    }

    async fn tries(
        &self,
        routes: &Arc<Routes>,
        parts: &mut http::request::Parts,
        body: &mut ReqBody,
        key: Option<u64>,
    ) -> Response<Downstream> {
        let cfg = &routes.config;
        let metrics = self.table.metrics();
        let retryable = matches!(body, ReqBody::Buffered(_));
        let max_tries = if retryable { 1 + cfg.retries.attempts.max(0) as usize } else { 1 };
        let now = Instant::now();
        self.table.budget.deposit(now);
        let mut tried: Vec<usize> = Vec::new();
        let mut last = TryFailure {
            status: StatusCode::SERVICE_UNAVAILABLE,
            message: "no endpoint available".into(),
            retry: RetryType::Never,
        };
        for attempt in 0..max_tries {
            let now = Instant::now();
            if attempt > 0 {
                if !self.table.budget.try_withdraw(now) {
                    metrics.budget_exhausted.inc();
                    break;
                }
                metrics.retries.inc();
            }
            let cx = PickContext { now, key };
            let Some(choice) = routes.choose(&cx, &tried, metrics) else {
                if attempt == 0 {
                    metrics.no_endpoint.inc();
                }
                break;
            };
            tried.push(choice.index);
            let try_ = TryGuard {
                routes: routes.clone(),
                index: choice.index,
                probe: choice.probe,
                armed: true,
            };
            match self.one_try(routes, parts, body, try_, attempt + 1 == max_tries).await {
                Ok(resp) => return resp,
                Err(f) => {
                    let again = f.retry == RetryType::Safe;
                    last = f;
                    if !again {
                        break;
                    }
                }
            }
        }
        local(last.status, format!("{}\n", last.message))
    }

    async fn one_try(
        &self,
        routes: &Arc<Routes>,
        parts: &http::request::Parts,
        body: &mut ReqBody,
        try_: TryGuard,
        last_try: bool,
    ) -> Result<Response<Downstream>, TryFailure> {
        let cfg = &routes.config;
        let ep = routes.endpoints[try_.index].clone();
        let em = &routes.endpoint_metrics[try_.index];
        let use_h2 = match cfg.upstream_protocol {
            UpstreamProtocol::Auto => parts.version == Version::HTTP_2,
            UpstreamProtocol::Http1 => false,
            UpstreamProtocol::Http2 => true,
        };
        let (upstream_body, retry) = match body {
            ReqBody::Buffered(b) => (Upstream::full(b.clone()), RetryType::Safe),
            ReqBody::Streamed(s) => match s.take() {
                Some(s) => (Upstream::Stream { body: s }, RetryType::Never),
                None => {
                    return Err(TryFailure {
                        status: StatusCode::BAD_GATEWAY,
                        message: "request body already sent".into(),
                        retry: RetryType::Never,
                    });
                }
            },
        };
        let req = match upstream_request(parts, &ep.address, use_h2, upstream_body) {
            Ok(r) => r,
            Err(e) => {
                return Err(TryFailure {
                    status: StatusCode::BAD_GATEWAY,
                    message: e,
                    retry: RetryType::Never,
                });
            }
        };
        let guard = ep.start();
        em.requests.inc();
        let per_try = cfg.retries.per_try_timeout_ms.unwrap_or(cfg.timeouts.headers_timeout_ms);
        let per_try = Duration::from_millis(u64::try_from(per_try).unwrap_or(1).max(1));
        let started = Instant::now();
        let client = if use_h2 { &self.h2 } else { &self.h1 };
        let result = tokio::time::timeout(per_try, client.request(req)).await;
        let now = Instant::now();
        let resp = match result {
            Ok(Ok(resp)) => resp,
            Ok(Err(e)) => {
                try_.finish(false, now);
                // A connection that was never made carries nothing: always safe to try elsewhere.
                let retry = if e.is_connect() { retry_if_body_kept(body) } else { retry };
                tracing::debug!(endpoint = %ep.address, error = %e, "try failed");
                return Err(TryFailure {
                    status: StatusCode::BAD_GATEWAY,
                    message: format!("endpoint {} failed: {e}", ep.address),
                    retry,
                });
            }
            Err(_) => {
                try_.finish(false, now);
                return Err(TryFailure {
                    status: StatusCode::GATEWAY_TIMEOUT,
                    message: format!("no response headers from {} within {per_try:?}", ep.address),
                    retry,
                });
            }
        };
        let ttfb = now - started;
        ep.observe_ttfb(ttfb, now);
        em.ttfb.observe(ttfb.as_secs_f64());
        let (mut rparts, rbody) = resp.into_parts();
        let grpc_status: Option<Vec<u8>> =
            rparts.headers.get("grpc-status").map(|s| s.as_bytes().to_vec());
        let is_grpc = rparts
            .headers
            .get(http::header::CONTENT_TYPE)
            .is_some_and(|c| c.as_bytes().starts_with(b"application/grpc"));
        let status = rparts.status;
        let unavailable = matches!(status.as_u16(), 502..=504)
            || grpc_status.as_deref() == Some(b"14".as_slice());
        if unavailable && retry == RetryType::Safe && !last_try {
            try_.finish(false, now);
            return Err(TryFailure {
                status,
                message: format!("endpoint {} answered {status}", ep.address),
                retry,
            });
        }
        strip_hop_by_hop(&mut rparts.headers);
        rparts.version = parts.version;
        let idle =
            Duration::from_millis(u64::try_from(cfg.timeouts.idle_timeout_ms).unwrap_or(60_000));
        let verdict = match (is_grpc, grpc_status) {
            (true, None) => Some(try_.into_verdict()),
            (_, Some(s)) => {
                try_.finish(!grpc_failure(&s) && status.is_success(), now);
                None
            }
            (false, None) => {
                try_.finish(!status.is_server_error(), now);
                None
            }
        };
        Ok(Response::from_parts(rparts, Downstream::proxied(rbody, idle, guard, verdict)))
    }
}

fn retry_if_body_kept(body: &ReqBody) -> RetryType {
    match body {
        ReqBody::Buffered(_) => RetryType::Safe,
        ReqBody::Streamed(_) => RetryType::Never,
    }
}

/// The request body as the tries see it.
enum ReqBody {
    Buffered(Bytes),
    Streamed(Option<Idle<Incoming>>),
}

async fn read_small(body: Incoming, idle: Duration) -> Result<ReqBody, crate::body::BoxError> {
    use http_body::Body as _;
    if body.is_end_stream() {
        return Ok(ReqBody::Buffered(Bytes::new()));
    }
    let small = body.size_hint().upper().is_some_and(|n| n <= MAX_BUFFERED);
    let body = Idle::new(body, idle);
    if !small {
        return Ok(ReqBody::Streamed(Some(body)));
    }
    Ok(ReqBody::Buffered(body.collect().await?.to_bytes()))
}

fn session_key(
    cfg: &RoutingConfig,
    h: &HeaderMap,
    peer: SocketAddr,
    body: &ReqBody,
) -> Option<u64> {
    match cfg.strategy {
        Strategy::PrefixAware => match body {
            ReqBody::Buffered(b) if !b.is_empty() => {
                Some(hash_bytes(&headers::prompt_prefix(b, cfg.prefix_bytes)))
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

fn upstream_request(
    parts: &http::request::Parts,
    address: &str,
    h2: bool,
    body: Upstream,
) -> Result<Request<Upstream>, String> {
    let pq = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let uri = Uri::builder()
        .scheme("http")
        .authority(address)
        .path_and_query(pq)
        .build()
        .map_err(|e| e.to_string())?;
    let mut req = Request::new(body);
    *req.method_mut() = parts.method.clone();
    *req.uri_mut() = uri;
    *req.headers_mut() = parts.headers.clone();
    if h2 {
        *req.version_mut() = Version::HTTP_2;
        req.headers_mut().remove(http::header::HOST);
    } else {
        *req.version_mut() = Version::HTTP_11;
        if let (None, Some(auth)) = (req.headers().get(http::header::HOST), parts.uri.authority())
            && let Ok(v) = http::HeaderValue::from_str(auth.as_str())
        {
            req.headers_mut().insert(http::header::HOST, v);
        }
    }
    Ok(req)
}

/// A response made by the router itself.
pub fn local(status: StatusCode, body: impl Into<Bytes>) -> Response<Downstream> {
    let mut r = Response::new(Downstream::local(body));
    *r.status_mut() = status;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// One try's claim on its endpoint: reports the outcome to the breaker once, and gives back a
/// half-open probe slot if the try ends with no outcome (the client went away).
struct TryGuard {
    routes: Arc<Routes>,
    index: usize,
    probe: bool,
    armed: bool,
}

impl TryGuard {
    fn finish(mut self, ok: bool, now: Instant) {
        self.armed = false;
        self.routes.record(self.index, ok, now);
    }

    fn into_verdict(self) -> crate::body::Verdict {
        Box::new(move |ok| self.finish(ok, Instant::now()))
    }
}

impl Drop for TryGuard {
    fn drop(&mut self) {
        if self.armed && self.probe {
            self.routes.endpoints[self.index].release_probe();
        }
    }
}
