//! One try: the request sent to one endpoint, up to the first byte of its answer, while the
//! try can still be given up. It ends with a response for the client, or with a
//! [`TryFailure`] that says whether another endpoint may be tried.

use std::pin::{Pin, pin};
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use blaze_api::routing::UpstreamProtocol;
use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderName};
use http::{Request, Response, StatusCode, Version};
use http_body::Body as _;
use http_body_util::Either;
use tokio::sync::futures::Notified;

use super::pool::{self, Lease, SendError};
use super::request::{ReqBody, upstream_request};
use super::{Forwarding, Proxy, RetryType, millis, strip_hop_by_hop};
use crate::endpoint::{Ejection, Endpoint};
use crate::hold;
use crate::progress;
use crate::relay::{self, BoxError, Downstream, First, FromEndpoint, Upstream, grpc_failure};
use crate::routes::{Choice, Routes, Table};

static GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");

/// Why a try failed, and whether another endpoint may be tried.
#[derive(Debug)]
pub(super) struct TryFailure {
    pub(super) status: StatusCode,
    pub(super) message: String,
    pub(super) retry: RetryType,
    /// The endpoint is not to blame (a reused connection it closed as idle): a retry may go
    /// to it again.
    pub(super) blameless: bool,
    /// The try was given up because its endpoint was ejected: the next one is a re-send.
    pub(super) ejected: Option<Ejection>,
}

impl TryFailure {
    fn new(status: StatusCode, message: String, retry: RetryType) -> Self {
        Self { status, message, retry, blameless: false, ejected: None }
    }

    /// What a request that found no endpoint is told.
    pub(super) fn no_endpoint() -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "no endpoint available".into(), RetryType::Never)
    }
}

/// How a try ends early while it waits: the ejections of its endpoint that give it up.
struct Watch<'a> {
    table: &'a Table,
    ep: &'a Endpoint,
    /// The request can be sent again (buffered body, tries left).
    resend: bool,
}

impl<'a> Watch<'a> {
    /// Whether an ejection for `why` gives the try up. Only a try that can go elsewhere is
    /// given up: for an unhealthy or broken endpoint, when a healthy one is there to take it;
    /// for one dropped from the document, when the new routes have an endpoint or hold
    /// requests for one. Any other try waits on, as it would have without the signal (an
    /// endpoint taken out by mistake, or draining, still answers it).
    fn ends_on(&self, why: Ejection) -> bool {
        if !self.resend {
            return false;
        }
        let routes = self.table.load();
        match why {
            Ejection::Removed => {
                routes.weighted > 0 || hold::Bounds::from(&routes.config.hold).enabled()
            }
            Ejection::Unhealthy | Ejection::Breaker => routes.endpoints.iter().any(|e| {
                !std::ptr::eq(&**e, self.ep) && e.weight() > 0 && e.is_healthy() && !e.is_removed()
            }),
        }
    }

    /// Waits for an ejection that ends the try, on `signal`, created from the endpoint before
    /// the try's request went out.
    async fn ended(&self, mut signal: Pin<&mut Notified<'a>>) -> Ejection {
        loop {
            signal.as_mut().await;
            signal.set(self.ep.ejection());
            let why = self.ep.last_ejection();
            if self.ends_on(why) {
                return why;
            }
        }
    }
}

/// What ended the wait for a response's first byte.
enum FirstFailure {
    Ejected(Ejection),
    Body(BoxError),
    Idle,
}

impl Proxy {
    /// Sends the request to the endpoint `try_` holds and returns the response once its
    /// first body byte (or its end) has come.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn one_try(
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
        let ep = &*routes.endpoints[try_.index];
        let em = &routes.endpoint_metrics[try_.index];
        let use_h2 = match cfg.upstream_protocol {
            UpstreamProtocol::Auto => parts.version == Version::HTTP_2,
            UpstreamProtocol::Http1 => false,
            UpstreamProtocol::Http2 => true,
        };
        if let Some(tokens) = &self.worker_tokens {
            tokens.apply(&ep.engine, &mut parts.headers);
        }
        let (out, retry) = outgoing(parts, fwd, body, &ep.address, use_h2, last_try)?;
        let guard = routes.endpoints[try_.index].start(started);
        em.requests.inc();
        // Created before the request goes out: an ejection from now on wakes this try, and
        // one since the pick shows in the epoch.
        let mut signal = pin!(ep.ejection());
        let watch = Watch { table: &self.table, ep, resend: retry == RetryType::Safe && !last_try };
        if let Some(why) = ep.ejected_since(try_.epoch)
            && watch.ends_on(why)
        {
            return Err(try_.abandon(why, retry));
        }
        let per_try =
            millis(cfg.retries.per_try_timeout_ms.unwrap_or(cfg.timeouts.headers_timeout_ms));
        // The deadline from the try's start time: no second clock read.
        let deadline = tokio::time::Instant::from_std(started) + per_try;
        let send = tokio::time::timeout_at(deadline, self.send(&ep.address, out, fwd, use_h2));
        let result = tokio::select! {
            biased;
            r = send => r,
            why = watch.ended(signal.as_mut()) => return Err(try_.abandon(why, retry)),
        };
        let now = Instant::now();
        let (rparts, mut rbody, lease) = match result {
            Ok(Ok(r)) => r,
            Ok(Err(e @ SendError::Stale(_))) => {
                // No verdict for the breaker: the endpoint may just have closed an idle
                // connection. The request is sent again as the retry policy allows, and an
                // idempotent one once more on top (see `Proxy::tries`).
                drop(try_);
                tracing::debug!(endpoint = %ep.address, error = %e, "reused connection closed");
                let m = format!("endpoint {} failed: {e}", ep.address);
                let f = TryFailure::new(StatusCode::BAD_GATEWAY, m, retry);
                return Err(TryFailure { blameless: true, ..f });
            }
            Ok(Err(e)) => {
                try_.finish(false, now);
                // A connection that was never made carries nothing: always safe to try elsewhere.
                let retry = if e.is_connect() { body.retry_type() } else { retry };
                tracing::debug!(endpoint = %ep.address, error = %e, "try failed");
                let m = format!("endpoint {} failed: {e}", ep.address);
                return Err(TryFailure::new(StatusCode::BAD_GATEWAY, m, retry));
            }
            Err(_) => {
                try_.finish(false, now);
                let m = format!("no response headers from {} within {per_try:?}", ep.address);
                return Err(TryFailure::new(StatusCode::GATEWAY_TIMEOUT, m, retry));
            }
        };
        ep.progress.mark(progress::millis(now));
        em.ttfb.observe((now - started).as_secs_f64());
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
            return Err(TryFailure::new(status, m, retry));
        }
        let idle = millis(cfg.timeouts.idle_timeout_ms);
        let (first, at) = match first_frame(&mut rbody, now, idle, &watch, signal).await {
            Ok(f) => f,
            Err(e) => return Err(try_.first_failed(e, idle, retry)),
        };
        let ttft = at - started;
        ep.observe_ttft(ttft, at);
        em.ttft.observe(ttft.as_secs_f64());
        if at != now {
            ep.progress.mark(progress::millis(at));
        }
        strip_hop_by_hop(&mut rparts.headers);
        rparts.version = parts.version;
        let verdict = match (is_grpc, grpc_status) {
            (true, None) => Some(try_.into_verdict()),
            (_, Some(s)) => {
                try_.finish(!grpc_failure(&s) && status.is_success(), at);
                None
            }
            (false, None) => {
                try_.finish(!status.is_server_error(), at);
                None
            }
        };
        let body = Downstream::proxied(first, rbody, idle, guard, verdict, lease);
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
                return Ok((rparts, Either::Right(body), None));
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
        Ok((rparts, Either::Left(body), lease))
    }
}

/// The request a try sends, and whether it may be sent again.
fn outgoing<'a>(
    parts: &'a mut http::request::Parts,
    fwd: &Forwarding,
    body: &mut ReqBody,
    address: &str,
    use_h2: bool,
    last_try: bool,
) -> Result<(TryRequest<'a>, RetryType), TryFailure> {
    let (out, retry) = match body {
        // The common case: written and answered by this task on its own connection,
        // straight from the client's parts.
        ReqBody::Buffered(b) if !use_h2 => (Outgoing::Buffered(b.clone()), RetryType::Safe),
        ReqBody::Buffered(b) => (Outgoing::Hyper(relay::buffered(b.clone())), RetryType::Safe),
        ReqBody::Streamed(s) => match s.take() {
            Some(s) => (Outgoing::Hyper(Either::Right(s)), RetryType::Never),
            None => {
                let m = "request body already sent".into();
                return Err(TryFailure::new(StatusCode::BAD_GATEWAY, m, RetryType::Never));
            }
        },
    };
    let out = match out {
        Outgoing::Hyper(b) => {
            // The last try may take the headers; earlier ones leave them for the next.
            let mut headers =
                if last_try { std::mem::take(&mut parts.headers) } else { parts.headers.clone() };
            fwd.apply(&mut headers);
            match upstream_request(parts, headers, address, use_h2, b) {
                Ok(r) => TryRequest::Hyper(Box::new(r)),
                Err(e) => {
                    return Err(TryFailure::new(StatusCode::BAD_GATEWAY, e, RetryType::Never));
                }
            }
        }
        Outgoing::Buffered(b) => TryRequest::Buffered(parts, b),
    };
    Ok((out, retry))
}

/// Waits for the first frame of `body`, whose headers came at `headers_at`, and returns it
/// with the time it came. Most answers carry their first bytes with their headers: those
/// are taken without a timer and without another clock read.
async fn first_frame<'a>(
    body: &mut FromEndpoint,
    headers_at: Instant,
    idle: Duration,
    watch: &Watch<'a>,
    signal: Pin<&mut Notified<'a>>,
) -> Result<(First, Instant), FirstFailure> {
    if body.is_end_stream() {
        return Ok((First::Unread, headers_at));
    }
    let poll = std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut *body).poll_frame(cx))).await;
    let (frame, at) = match poll {
        Poll::Ready(f) => (f, headers_at),
        Poll::Pending => {
            let idle_end = tokio::time::Instant::from_std(headers_at) + idle;
            let f = tokio::select! {
                biased;
                f = std::future::poll_fn(|cx| Pin::new(&mut *body).poll_frame(cx)) => f,
                why = watch.ended(signal) => return Err(FirstFailure::Ejected(why)),
                () = tokio::time::sleep_until(idle_end) => return Err(FirstFailure::Idle),
            };
            (f, Instant::now())
        }
    };
    match frame {
        Some(Ok(f)) => Ok((First::Frame(f), at)),
        None => Ok((First::End, at)),
        Some(Err(e)) => Err(FirstFailure::Body(e)),
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

/// One try's claim on its endpoint: reports the outcome to the breaker once, and gives back a
/// half-open probe slot if the try ends with no outcome (the client went away).
pub(super) struct TryGuard {
    routes: Arc<Routes>,
    index: usize,
    probe: bool,
    epoch: u64,
    armed: bool,
}

impl TryGuard {
    pub(super) fn new(routes: Arc<Routes>, choice: Choice) -> Self {
        Self { routes, index: choice.index, probe: choice.probe, epoch: choice.epoch, armed: true }
    }

    fn finish(mut self, ok: bool, now: Instant) {
        self.armed = false;
        self.routes.record(self.index, ok, now);
    }

    fn into_verdict(self) -> relay::Verdict {
        Box::new(move |ok| self.finish(ok, Instant::now()))
    }

    /// Gives the try up because its endpoint was ejected: a failure for the breaker, unless
    /// the endpoint was only removed from the routing document.
    fn abandon(self, why: Ejection, retry: RetryType) -> TryFailure {
        let address = self.routes.endpoints[self.index].address.clone();
        if why == Ejection::Removed {
            drop(self);
        } else {
            self.finish(false, Instant::now());
        }
        tracing::debug!(endpoint = %address, reason = why.label(), "try given up");
        let m = format!("endpoint {address} {why} before answering");
        TryFailure { ejected: Some(why), ..TryFailure::new(StatusCode::BAD_GATEWAY, m, retry) }
    }

    /// The try's failure when the wait for the first body byte ended without one.
    fn first_failed(self, e: FirstFailure, idle: Duration, retry: RetryType) -> TryFailure {
        let address = self.routes.endpoints[self.index].address.clone();
        let (status, m) = match e {
            FirstFailure::Ejected(why) => return self.abandon(why, retry),
            FirstFailure::Body(e) => (
                StatusCode::BAD_GATEWAY,
                format!("endpoint {address} failed before answering: {e}"),
            ),
            FirstFailure::Idle => (
                StatusCode::GATEWAY_TIMEOUT,
                format!("no response body from {address} within {idle:?} of its headers"),
            ),
        };
        self.finish(false, Instant::now());
        TryFailure::new(status, m, retry)
    }
}

impl Drop for TryGuard {
    fn drop(&mut self) {
        if self.armed && self.probe {
            self.routes.endpoints[self.index].release_probe();
        }
    }
}
