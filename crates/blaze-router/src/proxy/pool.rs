//! HTTP/1.1 connections to endpoints, kept alive and reused, pooled per thread.
//!
//! The router runs one single-threaded runtime per worker thread (see `main`), so keeping the
//! idle lists per thread means a request only ever reuses connections of its own thread: no
//! lock, no cross-thread wake-up per request. Two kinds are pooled: connections the request's
//! own task drives ([`h1`], for requests whose bodies are in memory, nearly all of them) and
//! hyper connections with a task of their own (for bodies streamed from the client). A
//! connection goes back to its list when its response body has been read to the end; one
//! whose response was abandoned half way is closed instead, since the bytes left on it would
//! poison the next request.

use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::http1::{Builder, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::h1;
use super::headers::Forwarding;
use crate::relay::Upstream;

/// Time to establish a connection to an endpoint. Endpoints are on the cluster network: a
/// connection that takes longer is as good as refused, and the try moves on.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Idle connections kept per endpoint and thread. Beyond it a finished connection is
/// closed; the number in use at once is not limited.
pub const MAX_IDLE_PER_ENDPOINT: usize = 512;
/// A connection idle this long is closed (as hyper's own pool does by default), so endpoints
/// that left the configuration do not keep sockets open for ever.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// Checkouts between two sweeps of idle connections that timed out.
const SWEEP_EVERY: u32 = 4096;

/// Why a request could not be sent.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// No connection could be made: nothing reached the endpoint.
    #[error("connecting: {0}")]
    Connect(std::io::Error),
    /// The connection failed during the exchange.
    #[error("{0}")]
    Http(#[from] hyper::Error),
    /// The pooling HTTP/2 client failed (it says itself whether it connected).
    #[error("{0}")]
    Client(hyper_util::client::legacy::Error),
    /// An exchange driven by the request's own task failed after connecting.
    #[error("{0}")]
    H1(h1::Error),
    /// A pooled connection was closed by the endpoint with no answer after the request went
    /// out: most likely the endpoint closed it as idle while the request crossed, so the
    /// endpoint is not to blame, but it may also have failed with the request in hand.
    #[error("reused connection closed before any response: {0}")]
    Stale(h1::Error),
}

impl SendError {
    /// Whether no connection was made (so nothing was sent).
    pub fn is_connect(&self) -> bool {
        match self {
            SendError::Connect(_) => true,
            SendError::Http(_) | SendError::H1(_) | SendError::Stale(_) => false,
            SendError::Client(e) => e.is_connect(),
        }
    }
}

/// A connection that can wait in a pool.
trait Pooled {
    /// Whether it can still carry a request.
    fn alive(&mut self) -> bool;
}

impl Pooled for SendRequest<Upstream> {
    fn alive(&mut self) -> bool {
        !self.is_closed()
    }
}

impl Pooled for h1::Conn {
    fn alive(&mut self) -> bool {
        self.is_reusable()
    }
}

struct Idle<C> {
    conn: C,
    since: Instant,
}

/// FNV-1a: endpoint addresses are short and chosen by the operator, not by clients, so a
/// fast non-keyed hash is safe here.
#[derive(Default)]
struct Fnv(u64);

impl Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        let mut h = if self.0 == 0 { 0xcbf2_9ce4_8422_2325 } else { self.0 };
        for b in bytes {
            h = (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3);
        }
        self.0 = h;
    }
}

struct Pool<C> {
    idle: HashMap<Box<str>, Vec<Idle<C>>, BuildHasherDefault<Fnv>>,
    checkouts: u32,
}

impl<C> Default for Pool<C> {
    fn default() -> Self {
        Self { idle: HashMap::default(), checkouts: 0 }
    }
}

thread_local! {
    /// hyper connections, for requests whose bodies stream from the client.
    static POOL: RefCell<Pool<SendRequest<Upstream>>> = RefCell::new(Pool::default());
    /// Connections the request's own task drives ([`h1`]), for buffered requests.
    static RAW: RefCell<Pool<h1::Conn>> = RefCell::new(Pool::default());
}

impl<C: Pooled> Pool<C> {
    fn take(&mut self, addr: &str) -> Option<C> {
        self.checkouts = self.checkouts.wrapping_add(1);
        if self.checkouts.is_multiple_of(SWEEP_EVERY) {
            self.sweep(Instant::now());
        }
        let list = self.idle.get_mut(addr)?;
        // Most recently used first: it is the likeliest to be alive, and the others age out.
        while let Some(mut c) = list.pop() {
            if c.conn.alive() {
                return Some(c.conn);
            }
        }
        None
    }

    fn put(&mut self, addr: &str, mut conn: C) {
        if !conn.alive() {
            return;
        }
        let idle = Idle { conn, since: Instant::now() };
        match self.idle.get_mut(addr) {
            Some(list) if list.len() < MAX_IDLE_PER_ENDPOINT => list.push(idle),
            Some(_) => {}
            None => {
                self.idle.insert(addr.into(), vec![idle]);
            }
        }
    }

    fn sweep(&mut self, now: Instant) {
        for list in self.idle.values_mut() {
            list.retain_mut(|c| c.conn.alive() && now.duration_since(c.since) < IDLE_TIMEOUT);
        }
        self.idle.retain(|_, list| !list.is_empty());
    }
}

/// A connection lent to one request. Give it back with [`Lease::release`] once the response
/// body has ended; dropped otherwise, it closes.
#[derive(Debug)]
pub struct Lease {
    tx: SendRequest<Upstream>,
}

impl Lease {
    /// Returns the connection to this thread's pool for `addr`.
    pub fn release(self, addr: &str) {
        POOL.with_borrow_mut(|p| p.put(addr, self.tx));
    }
}

/// Returns a connection whose response was read to the end to this thread's pool for `addr`.
pub fn release_conn(addr: &str, conn: h1::Conn) {
    RAW.with_borrow_mut(|p| p.put(addr, conn));
}

/// Sends `req` with its buffered `body` to `addr` on a pooled connection, or a new one, and
/// reads the response head, all in the caller's task. A pooled connection that fails while
/// the request is written is replaced by a new one at no risk: an incomplete request is not
/// acted on. One that the endpoint closes with no answer after the request went out is
/// [`SendError::Stale`], which the caller may send again: the request's parts are left as
/// they were (this is the only path that gives `Stale`).
pub async fn send_buffered(
    addr: &str,
    parts: &http::request::Parts,
    fwd: &Forwarding,
    body: &Bytes,
) -> Result<Response<h1::ResponseBody>, SendError> {
    if let Some(mut conn) = RAW.with_borrow_mut(|p| p.take(addr)) {
        match conn.write_request(parts, fwd, addr, body).await {
            Ok(()) => {
                return conn.read_response(&parts.method).await.map_err(|e| match e {
                    h1::Error::Closed(_) => SendError::Stale(e),
                    e => SendError::H1(e),
                });
            }
            Err(e) => tracing::debug!(endpoint = addr, error = %e, "pooled connection closed"),
        }
    }
    // Boxed: connecting is rare once the pool is warm.
    let mut conn = h1::Conn::new(Box::pin(tcp(addr)).await?);
    conn.write_request(parts, fwd, addr, body).await.map_err(SendError::H1)?;
    conn.read_response(&parts.method).await.map_err(SendError::H1)
}

/// Sends `req` to `addr` over a pooled connection, or a new one. A pooled connection that
/// turns out closed before the request went out is replaced by a new one at no risk: the
/// request was not sent.
pub async fn send(
    addr: &str,
    mut req: Request<Upstream>,
) -> Result<(Response<Incoming>, Lease), SendError> {
    if let Some(mut tx) = POOL.with_borrow_mut(|p| p.take(addr))
        && tx.ready().await.is_ok()
    {
        match tx.try_send_request(req).await {
            Ok(resp) => return Ok((resp, Lease { tx })),
            Err(mut e) => match e.take_message() {
                Some(back) => req = back,
                None => return Err(SendError::Http(e.into_error())),
            },
        }
    }
    // Boxed: connecting is rare once the pool is warm, and its large future would otherwise
    // be part of every request's.
    let mut tx = Box::pin(connect(addr)).await?;
    let resp = tx.send_request(req).await?;
    Ok((resp, Lease { tx }))
}

async fn connect(addr: &str) -> Result<SendRequest<Upstream>, SendError> {
    let stream = tcp(addr).await?;
    let (tx, conn) = Builder::new().handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "endpoint connection ended with an error");
        }
    });
    Ok(tx)
}

/// A new TCP connection to `addr`, with `TCP_NODELAY`.
async fn tcp(addr: &str) -> Result<TcpStream, SendError> {
    let stream = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Err(SendError::Connect(e)),
        Err(_) => {
            return Err(SendError::Connect(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("no connection within {CONNECT_TIMEOUT:?}"),
            )));
        }
    };
    stream.set_nodelay(true).map_err(SendError::Connect)?;
    Ok(stream)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv_matches_the_reference_vectors() {
        let h = |s: &[u8]| {
            let mut f = Fnv::default();
            f.write(s);
            f.finish()
        };
        assert_eq!(h(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(h(b"foobar"), 0x8594_4171_f739_67e8);
    }
}
