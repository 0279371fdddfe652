//! The proxy: one request in, tries out to endpoints, one response streamed back.
//!
//! A request body whose size is known and at most [`MAX_BUFFERED`] is read first, so the
//! request can be tried again elsewhere, as is the one message of a gRPC call that takes one
//! (`grpc`: the Open Inference Protocol's methods, Blaze's generate RPC, health checks) up to
//! that size; any other body is streamed and tried once.
//!
//! A response is handed to the client only once its first body byte has arrived (or its end,
//! or its trailers): workers send a stream's headers at once and its first token much later,
//! and until that byte nothing has reached the client, so the try can still be given up and
//! the request sent elsewhere. The first frame then goes out ahead of the rest of the body,
//! which is not copied. A try that fails before that point (no connection, reset, per-try
//! timeout on the headers, idle timeout on the first byte, 502/503/504, gRPC `UNAVAILABLE`
//! without a body, an error before the first byte) is retried on another endpoint while tries
//! and the retry budget last. Once a byte goes to the client nothing is retried. There is no
//! total timeout: headers must come within the per-try timeout, the first byte within the
//! idle timeout after them, and then bodies may flow as long as bytes keep moving within the
//! idle timeout.
//!
//! A try waiting for headers or its first byte also listens to its endpoint's ejection
//! signal: when the endpoint turns unhealthy (health checks, or the stall detector finding it
//! silent and unresponsive), its breaker opens, or a reload drops it, the try is given up
//! (its connection dropped, the breaker told of a failure unless the endpoint was only
//! removed) and the request sent again, counted in `blaze_router_resent_requests_total`. Only
//! a try that can be sent again is given up: a buffered body, tries left, and somewhere to go
//! (another healthy endpoint; for a removed one, new routes with an endpoint or a hold);
//! other tries wait on as before.
//!
//! Time to headers is `blaze_router_endpoint_ttfb_seconds`; time to the first body byte (a
//! stream's first token) is `blaze_router_endpoint_ttft_seconds`, and feeds the endpoint's
//! peak-EWMA latency that the adaptive strategy balances on.
//!
//! A request that finds no endpoint at all (none in the routing document with a weight above
//! zero) is held until a reload brings one ([`crate::hold`]), or answered 503 with
//! `Retry-After` beyond the hold's bounds.
//!
//! HTTP/1.1 tries go out on this thread's own keep-alive connections (`pool`); HTTP/2 tries
//! (gRPC) share multiplexed connections through hyper's pooling client.

mod attempt;
mod grpc;
mod h1;
mod headers;
mod pool;
mod prefix;
mod request;
mod server;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

pub use h1::ResponseBody as H1ResponseBody;
pub use headers::{Forwarding, REQUEST_ID, prepare_request, strip_hop_by_hop};
pub use pool::{CONNECT_TIMEOUT, Lease, SendError, release_conn};
pub use server::{Http1Server, serve};

use crate::auth::Auth;
use crate::balance::PickContext;
use crate::hold;
use crate::metrics::ReasonLabels;
use crate::relay::{Downstream, Upstream};
use crate::routes::{Routes, Table};
use crate::worker_tokens::WorkerTokens;
use attempt::{TryFailure, TryGuard};
use request::{ReqBody, read_small, session_key};

/// Largest request body read in full so the request can be retried. Inference requests
/// (prompts, chat histories) are well under it; larger or unsized bodies are streamed.
pub const MAX_BUFFERED: u64 = 1 << 20;
/// Endpoints a request is tried on at most, whatever `retries.attempts` says.
pub const MAX_TRIES: usize = 16;

/// The proxy's shared state.
pub struct Proxy {
    table: Arc<Table>,
    h2: Client<HttpConnector, Upstream>,
    auth: arc_swap::ArcSwapOption<Auth>,
    admin: Option<Arc<crate::admin::Admin>>,
    worker_tokens: Option<Arc<WorkerTokens>>,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy").finish_non_exhaustive()
    }
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
        Self::with_worker_tokens(table, auth, admin, None)
    }

    /// [`Proxy::new`] presenting `worker_tokens` to workers (see [`crate::worker_tokens`]).
    pub fn with_worker_tokens(
        table: Arc<Table>,
        auth: Option<Auth>,
        admin: Option<Arc<crate::admin::Admin>>,
        worker_tokens: Option<Arc<WorkerTokens>>,
    ) -> Arc<Self> {
        Arc::new(Self {
            table,
            h2: h2_client(),
            auth: arc_swap::ArcSwapOption::from(auth.map(Arc::new)),
            admin,
            worker_tokens: worker_tokens.filter(|t| !t.is_empty()),
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
        if let Some(resp) = self.gate(req.uri().path(), req.headers()) {
            return resp;
        }
        let routes = self.table.load();
        let (parts, body) = req.into_parts();
        let idle = millis(routes.config.timeouts.idle_timeout_ms);
        let body = match read_small(&parts, body, idle).await {
            Ok(b) => b,
            Err(e) => {
                return local(StatusCode::BAD_REQUEST, format!("reading the request body: {e}\n"));
            }
        };
        self.forward(routes, parts, body, peer, https).await
    }

    /// The answer to a request the router answers itself before reading its body: an admin
    /// page on the proxy port, or `401` for a request without a valid API key.
    fn gate(&self, path: &str, headers: &http::HeaderMap) -> Option<Response<Downstream>> {
        if let Some(admin) = &self.admin
            && let Some(resp) = admin.serve(path)
        {
            return Some(resp);
        }
        if let Some(auth) = self.auth.load().as_ref()
            && !auth.check(headers, self.table.metrics())
        {
            return Some(local(StatusCode::UNAUTHORIZED, "unauthorized\n"));
        }
        None
    }

    /// Sends a request that passed the [gate](Self::gate) to its endpoints over `routes`.
    async fn forward(
        &self,
        routes: Arc<Routes>,
        mut parts: http::request::Parts,
        mut body: ReqBody,
        peer: SocketAddr,
        https: bool,
    ) -> Response<Downstream> {
        let mut fwd = prepare_request(&mut parts.headers, peer.ip());
        if https {
            fwd.set_https();
        }
        let key = session_key(&routes.config, &parts.headers, peer, &body);
        let mut resp = self.tries(routes, &mut parts, &fwd, &mut body, key).await;
        resp.headers_mut().insert(REQUEST_ID.clone(), fwd.request_id().clone());
        resp
    }

    async fn tries(
        &self,
        mut routes: Arc<Routes>,
        parts: &mut http::request::Parts,
        fwd: &Forwarding,
        body: &mut ReqBody,
        key: Option<u64>,
    ) -> Response<Downstream> {
        let metrics = self.table.metrics();
        let mut max_tries = match body {
            ReqBody::Buffered(_) => {
                (1 + routes.config.retries.attempts.max(0) as usize).min(MAX_TRIES)
            }
            ReqBody::Streamed(_) => 1,
        };
        // An idempotent request that finds its pooled connection closed under it goes once
        // more on top of the policy's tries, as HTTP clients resend such requests on their
        // own (RFC 9112 9.3.1): the endpoint most likely closed the connection as idle. Only
        // the buffered HTTP/1.1 path reports that (`SendError::Stale`), and it leaves the
        // request's headers in `parts` even on what was to be the last try.
        let mut stale_resend = parts.method.is_idempotent();
        let now = Instant::now();
        self.table.budget.deposit(now);
        let mut tried = [0usize; MAX_TRIES + 1];
        let mut last = TryFailure::no_endpoint();
        let mut attempt = 0;
        while attempt < max_tries {
            let mut now = if attempt == 0 { now } else { Instant::now() };
            if attempt > 0 {
                if !self.table.budget.try_withdraw(now) {
                    metrics.budget_exhausted.inc();
                    break;
                }
                metrics.retries.inc();
                // A reload since the last try: go on over the new routes.
                routes = follow(routes, self.table.load(), &mut tried[..attempt]);
            }
            if routes.weighted == 0 && hold::Bounds::from(&routes.config.hold).enabled() {
                routes = match self.hold(routes, &mut tried[..attempt]).await {
                    Ok(fresh) => fresh,
                    Err(refused) => return refused,
                };
                now = Instant::now();
            }
            let cx = PickContext { now, key };
            let Some(choice) = routes.choose(&cx, &tried[..attempt], metrics) else {
                if attempt == 0 {
                    metrics.no_endpoint.inc();
                }
                break;
            };
            if let Some(why) = last.ejected.take() {
                metrics.resent.get_or_create(&ReasonLabels { reason: why.label() }).inc();
            }
            tried[attempt] = choice.index;
            let try_ = TryGuard::new(routes.clone(), choice);
            // Boxed: a try's future is large, and moving it through every enclosing future
            // (down to the server's slot for the handler) would copy it several times.
            let last_try = attempt + 1 == max_tries;
            let one = Box::pin(self.one_try(&routes, parts, fwd, body, try_, now, last_try));
            match one.await {
                Ok(resp) => return resp,
                Err(f) => {
                    let again = f.retry == RetryType::Safe;
                    if f.blameless {
                        // Not excluded from the next pick.
                        tried[attempt] = usize::MAX;
                        if again && std::mem::take(&mut stale_resend) {
                            max_tries += 1;
                        }
                    }
                    last = f;
                    if !again {
                        break;
                    }
                }
            }
            attempt += 1;
        }
        local(last.status, format!("{}\n", last.message))
    }

    /// Holds a request that found no endpoint in `routes` until a reload brings one, and
    /// returns the routes that have it; or the 503 (come back later) beyond the hold's bounds.
    async fn hold(
        &self,
        routes: Arc<Routes>,
        tried: &mut [usize],
    ) -> Result<Arc<Routes>, Response<Downstream>> {
        match hold::wait(&self.table, hold::Bounds::from(&routes.config.hold)).await {
            Ok(fresh) => Ok(follow(routes, fresh, tried)),
            Err(refused) => {
                self.table.metrics().no_endpoint.inc();
                let mut r = local(StatusCode::SERVICE_UNAVAILABLE, format!("{refused}\n"));
                let after = hold::RETRY_AFTER_SECONDS.into();
                r.headers_mut().insert(http::header::RETRY_AFTER, after);
                Err(r)
            }
        }
    }
}

/// `fresh` in place of `routes` when it is a later generation, with the endpoints already
/// `tried` found in it (those it lacks can no longer be picked anyway).
fn follow(routes: Arc<Routes>, fresh: Arc<Routes>, tried: &mut [usize]) -> Arc<Routes> {
    if Arc::ptr_eq(&routes, &fresh) {
        return routes;
    }
    for t in tried {
        *t = routes.endpoints.get(*t).and_then(|e| fresh.position(e)).unwrap_or(usize::MAX);
    }
    fresh
}

/// A response made by the router itself.
pub fn local(status: StatusCode, body: impl Into<Bytes>) -> Response<Downstream> {
    let mut r = Response::new(Downstream::local(body));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, http::HeaderValue::from_static("text/plain; charset=utf-8"));
    r
}
