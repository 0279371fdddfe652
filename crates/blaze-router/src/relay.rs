//! The bodies the router relays between clients and endpoints, whatever the protocol on
//! either side: request bodies sent upstream (buffered, so they can be retried, or streamed),
//! and response bodies streamed back that start with the first frame the proxy waited for,
//! hold their endpoint's in-flight count until they end, note the endpoint's progress at each
//! frame, enforce the idle timeout, and deliver a late verdict (gRPC status in trailers) to
//! the breaker.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::{Either, Full};
use pin_project_lite::pin_project;
use tokio::time::Sleep;

use crate::endpoint::InFlight;
use crate::proxy::{H1ResponseBody, Lease};

/// The error type of every body the router produces.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A body that sat idle longer than the idle timeout.
#[derive(Debug, thiserror::Error)]
#[error("no data for {0:?}: idle timeout")]
pub struct IdleTimeout(pub Duration);

pin_project! {
    /// Wraps a body with an idle timeout: an error if no frame moves for `timeout`.
    /// The idle time starts when the inner body is first pending after a frame (or at all),
    /// and the timer is armed only then: a body whose frames are ready when asked for, as
    /// most short answers are, costs no clock read and no timer.
    pub struct Idle<B> {
        #[pin]
        inner: B,
        sleep: Option<Pin<Box<Sleep>>>,
        timeout: Duration,
        // When the current idle spell began; `None` after a frame moved.
        idle_since: Option<tokio::time::Instant>,
    }
}

impl<B> Idle<B> {
    /// Wraps `inner`.
    pub fn new(inner: B, timeout: Duration) -> Self {
        Self { inner, sleep: None, timeout, idle_since: None }
    }

    /// The wrapped body.
    pub fn inner_mut(self: Pin<&mut Self>) -> Pin<&mut B> {
        self.project().inner
    }
}

impl<B> Body for Idle<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        match this.inner.poll_frame(cx) {
            Poll::Ready(Some(Ok(f))) => {
                *this.idle_since = None;
                return Poll::Ready(Some(Ok(f)));
            }
            Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(None) => return Poll::Ready(None),
            Poll::Pending => {}
        }
        let since = *this.idle_since.get_or_insert_with(tokio::time::Instant::now);
        loop {
            let deadline = since + *this.timeout;
            match this.sleep {
                None => *this.sleep = Some(Box::pin(tokio::time::sleep_until(deadline))),
                Some(s) if s.deadline() != deadline => s.as_mut().reset(deadline),
                Some(s) => {
                    ready!(s.as_mut().poll(cx));
                    return Poll::Ready(Some(Err(Box::new(IdleTimeout(*this.timeout)))));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The body of a request sent upstream: buffered (left), so a retry can send it again, or
/// streamed from the client (right), sent once.
pub type Upstream = Either<Full<Bytes>, Idle<Resumed<hyper::body::Incoming>>>;

pin_project! {
    /// A streamed request body, after the bytes of it already read: the proxy reads a gRPC
    /// call's one message whole to keep it for retries, and streams on from what it read
    /// when the message turns out larger than it keeps.
    pub struct Resumed<B> {
        head: Option<Bytes>,
        #[pin]
        rest: B,
    }
}

impl<B> Resumed<B> {
    /// `rest`, nothing read from it yet.
    pub fn new(rest: B) -> Self {
        Self { head: None, rest }
    }

    /// Puts `head`, read from the body, back in front of what is left of it.
    pub fn put_back(self: Pin<&mut Self>, head: Bytes) {
        *self.project().head = (!head.is_empty()).then_some(head);
    }
}

impl<B: Body<Data = Bytes>> Body for Resumed<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.project();
        match this.head.take() {
            Some(head) => Poll::Ready(Some(Ok(Frame::data(head)))),
            None => this.rest.poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.head.is_none() && self.rest.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let mut hint = self.rest.size_hint();
        let head = self.head.as_ref().map_or(0, |h| h.len() as u64);
        // The upper bound first: a lower bound above the old upper one would panic.
        if let Some(upper) = hint.upper() {
            hint.set_upper(upper + head);
        }
        hint.set_lower(hint.lower() + head);
        hint
    }
}

/// A buffered request body.
pub fn buffered(data: Bytes) -> Upstream {
    Either::Left(Full::new(data))
}

/// A response body as it comes from an endpoint: through hyper's client (left: HTTP/2, and
/// HTTP/1.1 requests with streamed bodies), or read by the request's own task from its
/// HTTP/1.1 connection (right).
pub type FromEndpoint = Either<hyper::body::Incoming, H1ResponseBody>;

/// Gives the HTTP/1.1 connection `body` arrived on back to this thread's pool for `addr` if
/// the body was read to the end and the connection may be reused.
fn release(body: Pin<&mut FromEndpoint>, addr: &str) {
    if let Either::Right(body) = body.get_mut()
        && let Some(conn) = body.take_reusable()
    {
        crate::proxy::release_conn(addr, conn);
    }
}

/// Called once with the outcome of a response decided only at its end (`true`: success).
pub type Verdict = Box<dyn FnOnce(bool) + Send + Sync>;

/// What the proxy read of a response body before handing the response on.
#[derive(Debug)]
pub enum First {
    /// Nothing: the body was complete with the headers (or has not been read).
    Unread,
    /// The first frame, sent before the rest of the body.
    Frame(Frame<Bytes>),
    /// The body ended without a frame.
    End,
}

impl First {
    fn is_end(&self) -> bool {
        matches!(self, First::End)
    }
}

pin_project! {
    /// The body of a response sent to the client.
    #[project = DownstreamProj]
    pub enum Downstream {
        /// Generated by the router (errors, admin pages).
        Local { #[pin] body: Full<Bytes> },
        /// Streamed from an endpoint; holds its in-flight count until it ends or is dropped,
        /// and its HTTP/1.1 connection until the body has been read to the end.
        Proxied {
            first: First,
            #[pin] body: Idle<FromEndpoint>,
            guard: Option<InFlight>,
            verdict: Option<Verdict>,
            lease: Option<Lease>,
        },
    }
}

impl Downstream {
    /// A local body.
    pub fn local(data: impl Into<Bytes>) -> Self {
        Downstream::Local { body: Full::new(data.into()) }
    }

    /// An endpoint's body, after `first`, what was read of it already. `verdict`, when
    /// given, hears whether the stream ended well: a `grpc-status` of 0 in the trailers, or
    /// any clean end when there are no trailers. The pooled connection the body arrives on
    /// (`lease`, or the body's own) goes back to the pool when the body ends (at once when
    /// it was read to the end already: the server never polls an empty body).
    pub fn proxied(
        first: First,
        mut body: FromEndpoint,
        idle: Duration,
        guard: InFlight,
        mut verdict: Option<Verdict>,
        lease: Option<Lease>,
    ) -> Self {
        let done = first.is_end() || body.is_end_stream();
        let lease = match lease {
            Some(l) if done => {
                l.release(&guard.endpoint().address);
                None
            }
            l => l,
        };
        if done {
            release(Pin::new(&mut body), &guard.endpoint().address);
        }
        if first.is_end()
            && let Some(v) = verdict.take()
        {
            v(true);
        }
        let body = Idle::new(body, idle);
        Downstream::Proxied { first, body, guard: Some(guard), verdict, lease }
    }
}

/// gRPC codes that mean the endpoint, not the request, is at fault.
pub fn grpc_failure(status: &[u8]) -> bool {
    // UNKNOWN, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED, INTERNAL, UNAVAILABLE.
    matches!(status, b"2" | b"4" | b"8" | b"13" | b"14")
}

impl Body for Downstream {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.project() {
            DownstreamProj::Local { body } => body.poll_frame(cx).map_err(|never| match never {}),
            DownstreamProj::Proxied { first, mut body, guard, verdict, lease } => {
                let frame = match first {
                    First::Unread => {
                        let frame = ready!(body.as_mut().poll_frame(cx));
                        if let (Some(Ok(_)), Some(g)) = (&frame, guard.as_ref()) {
                            g.endpoint().progress.mark_coarse();
                        }
                        frame
                    }
                    First::End => return Poll::Ready(None),
                    First::Frame(_) => {
                        let First::Frame(f) = std::mem::replace(first, First::Unread) else {
                            return Poll::Ready(None);
                        };
                        Some(Ok(f))
                    }
                };
                // A body of known length is complete with its last data frame, and the server
                // never polls it again: the connection is free as soon as that frame is out.
                let complete = match &frame {
                    None => true,
                    Some(Ok(_)) => body.is_end_stream(),
                    Some(Err(_)) => false,
                };
                if complete && let Some(g) = guard.as_ref() {
                    let addr = &g.endpoint().address;
                    if let Some(l) = lease.take() {
                        l.release(addr);
                    }
                    release(body.as_mut().inner_mut(), addr);
                }
                let ok = match &frame {
                    Some(Ok(f)) => f
                        .trailers_ref()
                        .and_then(|t| t.get("grpc-status"))
                        .map(|s| !grpc_failure(s.as_bytes())),
                    None => Some(true),
                    Some(Err(_)) => Some(false),
                };
                // A data frame: nothing decided yet.
                let Some(ok) = ok else { return Poll::Ready(frame) };
                if let Some(v) = verdict.take() {
                    v(ok);
                }
                if frame.is_none() || !ok {
                    guard.take();
                }
                Poll::Ready(frame)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Downstream::Local { body } => body.is_end_stream(),
            Downstream::Proxied { first: First::Unread, body, .. } => body.is_end_stream(),
            Downstream::Proxied { first: First::Frame(_), .. } => false,
            Downstream::Proxied { first: First::End, .. } => true,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Downstream::Local { body } => body.size_hint(),
            Downstream::Proxied { first: First::End, .. } => SizeHint::with_exact(0),
            Downstream::Proxied { first, body, .. } => {
                // The first frame counts: a server checks the hint against `content-length`.
                let held = match first {
                    First::Frame(f) => f.data_ref().map_or(0, |d| d.len() as u64),
                    _ => 0,
                };
                let rest = body.size_hint();
                let mut hint = SizeHint::new();
                hint.set_lower(rest.lower() + held);
                if let Some(upper) = rest.upper() {
                    hint.set_upper(upper + held);
                }
                hint
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt as _;
    use http_body_util::{BodyExt, StreamBody};

    #[tokio::test(start_paused = true)]
    async fn a_body_idle_past_the_timeout_ends_in_an_error_and_a_busy_one_does_not() {
        let frames = futures::stream::iter([Ok::<_, BoxError>(Frame::data(Bytes::from("a")))])
            .chain(futures::stream::pending());
        let mut body = Idle::new(StreamBody::new(frames), Duration::from_secs(5));
        let start = tokio::time::Instant::now();
        let first = body.frame().await.unwrap().unwrap();
        assert_eq!(first.into_data().unwrap(), "a");
        let err = body.frame().await.unwrap().unwrap_err();
        assert!(err.is::<IdleTimeout>(), "{err}");
        let waited = start.elapsed();
        assert!(waited >= Duration::from_secs(5) && waited < Duration::from_secs(6), "{waited:?}");

        // Frames 3 s apart never trip a 5 s idle timeout.
        let slow = futures::stream::unfold(0, |i| async move {
            (i < 4).then_some(())?;
            tokio::time::sleep(Duration::from_secs(3)).await;
            Some((Ok::<_, BoxError>(Frame::data(Bytes::from("x"))), i + 1))
        });
        let all = Idle::new(StreamBody::new(slow), Duration::from_secs(5)).collect().await;
        assert_eq!(all.unwrap().to_bytes(), "xxxx");
    }
}
