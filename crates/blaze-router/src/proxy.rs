//! The proxy: one request in, tries out to endpoints, one response streamed back.
//!
//! A request body whose size is known and at most [`MAX_BUFFERED`] is read first, so the
//! request can be tried again elsewhere; any other body is streamed and tried once. A try that
//! fails before its response starts (no connection, reset, per-try timeout, 502/503/504, gRPC
//! `UNAVAILABLE` without a body) is retried on another endpoint while tries and the retry
//! budget last. Once response headers go to the client nothing is retried. There is no total
//! timeout: headers must come within the per-try timeout, and after that bodies may flow for
//! as long as bytes keep moving within the idle timeout.
//!
//! HTTP/1.1 tries go out on this thread's own keep-alive connections (`pool`); HTTP/2 tries
//! (gRPC) share multiplexed connections through hyper's pooling client.

mod h1;
mod headers;
mod pool;
mod request;
mod server;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use blaze_api::routing::UpstreamProtocol;
use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderName};
use http::{Request, Response, StatusCode, Version};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

pub use h1::Body as H1Body;
pub use headers::{Forwarding, REQUEST_ID, prepare_request, strip_hop_by_hop};
pub use pool::{CONNECT_TIMEOUT, Lease, SendError, release_conn};
pub use server::serve;

use crate::auth::Auth;
use crate::balance::PickContext;
use crate::body::{Downstream, FromEndpoint, Upstream, grpc_failure};
use crate::routes::{Routes, Table};
use request::{ReqBody, read_small, session_key, upstream_request};

/// Largest request body read in full so the request can be retried. Inference requests
/// (prompts, chat histories) are well under it; larger or unsized bodies are streamed.
pub const MAX_BUFFERED: u64 = 1 << 20;
/// Endpoints a request is tried on at most, whatever `retries.attempts` says.
pub const MAX_TRIES: usize = 16;

static GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");

/// The proxy's shared state.
pub struct Proxy {
    table: Arc<Table>,
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
    /// The endpoint is not to blame (a reused connection it closed as idle): a retry may go
    /// to it again.
    blameless: bool,
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

fn h2_client() -> Client<HttpConnector, Upstream> {
    let mut conn = HttpConnector::new();
    conn.set_nodelay(true);
    conn.set_connect_timeout(Some(CONNECT_TIMEOUT));
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(pool::IDLE_TIMEOUT)
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        .http2_only(true)
        .http2_adaptive_window(true)
        .build(conn)
}

/// Milliseconds from the configuration as a duration of at least 1 ms.
fn millis(ms: i32) -> Duration {
    Duration::from_millis(u64::try_from(ms).unwrap_or(1).max(1))
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
            h2: h2_client(),
            auth: arc_swap::ArcSwapOption::from(auth.map(Arc::new)),
            admin,
        })
    }

    /// Replaces the API keys.
    pub fn set_auth(&self, auth: Option<Auth>) {
        self.auth.store(auth.map(Arc::new));
    }

    /// Handles one client request from `peer`, which came over TLS when `https`.
    pub async fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
        peer: SocketAddr,
        https: bool,
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
        let mut fwd = prepare_request(&mut parts.headers, peer.ip());
        if https {
            fwd.set_https();
        }
        let mut body = match read_small(body, millis(routes.config.timeouts.idle_timeout_ms)).await
        {
            Ok(b) => b,
            Err(e) => {
                return local(StatusCode::BAD_REQUEST, format!("reading the request body: {e}\n"));
            }
        };
        let key = session_key(&routes.config, &parts.headers, peer, &body);
        let mut resp = self.tries(&routes, &mut parts, &fwd, &mut body, key).await;
        resp.headers_mut().insert(REQUEST_ID.clone(), fwd.request_id().clone());
        resp
    }

    async fn tries(
        &self,
        routes: &Arc<Routes>,
        parts: &mut http::request::Parts,
        fwd: &Forwarding,
        body: &mut ReqBody,
        key: Option<u64>,
    ) -> Response<Downstream> {
        let cfg = &routes.config;
        let metrics = self.table.metrics();
        let max_tries = match body {
            ReqBody::Buffered(_) => (1 + cfg.retries.attempts.max(0) as usize).min(MAX_TRIES),
            ReqBody::Streamed(_) => 1,
        };
        let now = Instant::now();
        self.table.budget.deposit(now);
        let mut tried = [0usize; MAX_TRIES];
        let mut last = TryFailure {
            status: StatusCode::SERVICE_UNAVAILABLE,
            message: "no endpoint available".into(),
            retry: RetryType::Never,
            blameless: false,
        };
        for attempt in 0..max_tries {
            let now = if attempt == 0 { now } else { Instant::now() };
            if attempt > 0 {
                if !self.table.budget.try_withdraw(now) {
                    metrics.budget_exhausted.inc();
                    break;
                }
                metrics.retries.inc();
            }
            let cx = PickContext { now, key };
            let Some(choice) = routes.choose(&cx, &tried[..attempt], metrics) else {
                if attempt == 0 {
                    metrics.no_endpoint.inc();
                }
                break;
            };
            tried[attempt] = choice.index;
            let try_ = TryGuard {
                routes: routes.clone(),
                index: choice.index,
                probe: choice.probe,
                armed: true,
            };
            // Boxed: a try's future is large, and moving it through every enclosing future
            // (down to the server's slot for the handler) would copy it several times.
            let last_try = attempt + 1 == max_tries;
            let one = Box::pin(self.one_try(routes, parts, fwd, body, try_, now, last_try));
            match one.await {
                Ok(resp) => return resp,
                Err(f) => {
                    let again = f.retry == RetryType::Safe;
                    if f.blameless {
                        // Not excluded from the next pick.
                        tried[attempt] = usize::MAX;
                    }
                    last = f;
                    if !again {
                        break;
                    }
                }
            }
        }
        local(last.status, format!("{}\n", last.message))
    }

    #[allow(clippy::too_many_arguments)]
    async fn one_try(
        &self,
        routes: &Arc<Routes>,
        parts: &mut http::request::Parts,
        fwd: &Forwarding,
        body: &mut ReqBody,
        try_: TryGuard,
        started: Instant,
        last_try: bool,
    ) -> Result<Response<Downstream>, TryFailure> {
        let cfg = &routes.config;
        let ep = &routes.endpoints[try_.index];
        let em = &routes.endpoint_metrics[try_.index];
        let use_h2 = match cfg.upstream_protocol {
            UpstreamProtocol::Auto => parts.version == Version::HTTP_2,
            UpstreamProtocol::Http1 => false,
            UpstreamProtocol::Http2 => true,
        };
        let fail =
            |status, message, retry| Err(TryFailure { status, message, retry, blameless: false });
        let (out, retry) = match &mut *body {
            // The common case: written and answered by this task on its own connection,
            // straight from the client's parts.
            ReqBody::Buffered(b) if !use_h2 => (Outgoing::Buffered(b.clone()), RetryType::Safe),
            ReqBody::Buffered(b) => (Outgoing::Hyper(Upstream::full(b.clone())), RetryType::Safe),
            ReqBody::Streamed(s) => match s.take() {
                Some(s) => (Outgoing::Hyper(Upstream::Stream { body: s }), RetryType::Never),
                None => {
                    let m = "request body already sent".into();
                    return fail(StatusCode::BAD_GATEWAY, m, RetryType::Never);
                }
            },
        };
        let out = match out {
            Outgoing::Hyper(b) => {
                // The last try may take the headers; earlier ones leave them for the next.
                let mut headers = if last_try {
                    std::mem::take(&mut parts.headers)
                } else {
                    parts.headers.clone()
                };
                fwd.apply(&mut headers);
                match upstream_request(parts, headers, &ep.address, use_h2, b) {
                    Ok(r) => TryRequest::Hyper(Box::new(r)),
                    Err(e) => return fail(StatusCode::BAD_GATEWAY, e, RetryType::Never),
                }
            }
            Outgoing::Buffered(b) => TryRequest::Buffered(parts, b),
        };
        let guard = ep.start();
        em.requests.inc();
        let per_try =
            millis(cfg.retries.per_try_timeout_ms.unwrap_or(cfg.timeouts.headers_timeout_ms));
        // The deadline from the try's start time: no second clock read.
        let deadline = tokio::time::Instant::from_std(started) + per_try;
        let result =
            tokio::time::timeout_at(deadline, self.send(&ep.address, out, fwd, use_h2)).await;
        let now = Instant::now();
        let (rparts, rbody, lease) = match result {
            Ok(Ok(r)) => r,
            Ok(Err(e @ SendError::Stale(_))) => {
                // No verdict for the breaker: the endpoint may just have closed an idle
                // connection. The request is sent again only as the retry policy allows.
                drop(try_);
                tracing::debug!(endpoint = %ep.address, error = %e, "reused connection closed");
                let message = format!("endpoint {} failed: {e}", ep.address);
                let status = StatusCode::BAD_GATEWAY;
                return Err(TryFailure { status, message, retry, blameless: true });
            }
            Ok(Err(e)) => {
                try_.finish(false, now);
                // A connection that was never made carries nothing: always safe to try elsewhere.
                let retry = if e.is_connect() { body.retry_type() } else { retry };
                tracing::debug!(endpoint = %ep.address, error = %e, "try failed");
                let m = format!("endpoint {} failed: {e}", ep.address);
                return fail(StatusCode::BAD_GATEWAY, m, retry);
            }
            Err(_) => {
                try_.finish(false, now);
                let m = format!("no response headers from {} within {per_try:?}", ep.address);
                return fail(StatusCode::GATEWAY_TIMEOUT, m, retry);
            }
        };
        let ttfb = now - started;
        ep.observe_ttfb(ttfb, now);
        em.ttfb.observe(ttfb.as_secs_f64());
        let mut rparts = rparts;
        let grpc_status = rparts.headers.get(&GRPC_STATUS).map(|s| s.as_bytes().to_vec());
        let is_grpc = rparts
            .headers
            .get(CONTENT_TYPE)
            .is_some_and(|c| c.as_bytes().starts_with(b"application/grpc"));
        let status = rparts.status;
        let unavailable = matches!(status.as_u16(), 502..=504)
            || grpc_status.as_deref() == Some(b"14".as_slice());
        if unavailable && retry == RetryType::Safe && !last_try {
            try_.finish(false, now);
            let m = format!("endpoint {} answered {status}", ep.address);
            return fail(status, m, retry);
        }
        strip_hop_by_hop(&mut rparts.headers);
        rparts.version = parts.version;
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
        let idle = millis(cfg.timeouts.idle_timeout_ms);
        let body = Downstream::proxied(rbody, idle, guard, verdict, lease);
        Ok(Response::from_parts(rparts, body))
    }

    async fn send(
        &self,
        address: &str,
        out: TryRequest<'_>,
        fwd: &Forwarding,
        h2: bool,
    ) -> Result<(http::response::Parts, FromEndpoint, Option<Lease>), SendError> {
        let req = match out {
            TryRequest::Buffered(parts, b) => {
                let resp = pool::send_buffered(address, parts, fwd, &b).await?;
                let (rparts, body) = resp.into_parts();
                return Ok((rparts, FromEndpoint::H1 { body }, None));
            }
            TryRequest::Hyper(req) => *req,
        };
        // Boxed: these futures are large, and the common case above should not carry them.
        let (resp, lease) = if h2 {
            (Box::pin(self.h2.request(req)).await.map_err(SendError::Client)?, None)
        } else {
            let (r, l) = Box::pin(pool::send(address, req)).await?;
            (r, Some(l))
        };
        let (rparts, body) = resp.into_parts();
        Ok((rparts, FromEndpoint::Hyper { body }, lease))
    }
}

/// A try's request body: in memory for this task's own HTTP/1.1 exchange, or a body for
/// hyper's clients.
enum Outgoing {
    Buffered(Bytes),
    Hyper(Upstream),
}

/// A try's request, ready to go.
enum TryRequest<'a> {
    /// For this task's own HTTP/1.1 exchange: the client's parts (hop-by-hop headers gone)
    /// and the body.
    Buffered(&'a http::request::Parts, Bytes),
    /// For hyper's clients: the whole request, forwarding headers included.
    Hyper(Box<Request<Upstream>>),
}

/// A response made by the router itself.
pub fn local(status: StatusCode, body: impl Into<Bytes>) -> Response<Downstream> {
    let mut r = Response::new(Downstream::local(body));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, http::HeaderValue::from_static("text/plain; charset=utf-8"));
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
