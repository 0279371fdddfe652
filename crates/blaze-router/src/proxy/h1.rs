//! A small HTTP/1.1 client for the common try: a request whose body is already in memory,
//! written to a pooled endpoint connection and answered on it, all inside the request's own
//! task. hyper's client would run every connection as a task of its own, reached through
//! channels, so each request would hop between two tasks several times; here the request
//! task writes the request, reads the response head and then (through [`ResponseBody`]) the response
//! body straight from the socket. Requests whose bodies stream from the client still go
//! through hyper (`pool`), which can send and receive at once.
//!
//! Framing follows RFC 9112 section 6.3: no body after `HEAD`, 1xx, 204 and 304; chunked when
//! `Transfer-Encoding` ends in `chunked`; else `Content-Length`; else until the endpoint
//! closes. A connection is reused only after a complete, well-framed exchange that neither
//! side asked to close.

mod response_body;

use std::io;
use std::mem::MaybeUninit;
use std::task::{Context, Poll, Waker};

use bytes::{Bytes, BytesMut};
use http::header::{CONNECTION, CONTENT_LENGTH, EXPECT, HOST, TRANSFER_ENCODING};
use http::request::Parts;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Response, StatusCode, Version};
use tokio::io::AsyncReadExt as _;
use tokio::net::TcpStream;

pub use response_body::ResponseBody;

use super::headers::Forwarding;

/// Most header lines a response head may have (hyper's default too).
pub(super) const MAX_HEADERS: usize = 100;
/// Largest response head (or chunk-size line, or trailer block) accepted.
pub(super) const MAX_HEAD: usize = 64 * 1024;
const _: () = assert!(MAX_HEAD < u32::MAX as usize);
/// Bytes read from the socket at a time at least.
pub(super) const READ_SIZE: usize = 8 * 1024;
/// Bodies up to this size are copied behind the head and go out in one write.
pub(super) const COPY_BODY: usize = 16 * 1024;
/// Largest write buffer a connection keeps between requests.
pub(super) const KEEP_WRITE_BUFFER: usize = 64 * 1024;
/// Most bytes of an answer kept while the request body is still being written (an endpoint
/// echoing the body as it reads it); past it, reading waits until the body is out.
const MAX_EARLY_ANSWER: usize = 4 << 20;

/// One endpoint connection with the bytes read from it and not yet used.
#[derive(Debug)]
pub struct Conn {
    io: TcpStream,
    buf: BytesMut,
    wbuf: Vec<u8>,
    /// False once the endpoint answered before the whole request body went out: what is
    /// left of the body on the connection would be read as the next request.
    reuse: bool,
}

/// Why an exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Writing the request failed: the endpoint got nothing it could act on.
    #[error("sending the request: {0}")]
    Write(io::Error),
    /// The endpoint closed or reset the connection before the first byte of an answer (an
    /// endpoint closing an idle connection as the request went out looks like this).
    #[error("connection closed before any response: {0}")]
    Closed(io::Error),
    /// Reading the response failed, or the endpoint closed part way through its head.
    #[error("reading the response: {0}")]
    Read(io::Error),
    /// The endpoint's answer is not HTTP/1.1 we accept.
    #[error("invalid response: {0}")]
    Invalid(&'static str),
}

/// How much of a request went out.
enum Sent {
    All,
    /// The endpoint answered first.
    Answered,
}

/// A final answer read while the request is still being written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    /// None yet (or only interim 1xx ones).
    None,
    /// 2xx and not yet whole: the endpoint may be streaming its answer while it reads.
    Success,
    /// A refusal (not 2xx), or a 2xx answer already whole: the endpoint will not use the
    /// rest of the body.
    Done,
}

/// How the response body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    Empty,
    Length(u64),
    Chunked,
    Eof,
}

impl Conn {
    /// Wraps a connected stream.
    pub fn new(io: TcpStream) -> Self {
        Self { io, buf: BytesMut::new(), wbuf: Vec::new(), reuse: true }
    }

    /// Lets go of a read buffer grown large (an answer read while a large body was written),
    /// so an idle pooled connection holds no more than a small one.
    pub(super) fn shrink(&mut self) {
        if self.buf.is_empty() && self.buf.capacity() > KEEP_WRITE_BUFFER {
            self.buf = BytesMut::new();
        }
    }

    /// Whether an idle connection can carry a request: nothing arrived on it since its last
    /// exchange (an endpoint that closed it has sent its FIN). Costs no system call unless
    /// the runtime's readiness flag is set; leaves a no-op waker behind, so an idle
    /// connection holds no finished request task's waker.
    pub fn is_reusable(&mut self) -> bool {
        if !self.buf.is_empty() {
            return false;
        }
        let mut cx = Context::from_waker(Waker::noop());
        match self.io.poll_read_ready(&mut cx) {
            Poll::Pending => true,
            Poll::Ready(Err(_)) => false,
            Poll::Ready(Ok(())) => {
                // The flag may be stale (the last read filled its buffer exactly): ask the
                // socket, which clears it when nothing is there.
                let mut one = [0u8; 1];
                match self.io.try_read(&mut one) {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        self.io.poll_read_ready(&mut cx).is_pending()
                    }
                    _ => false,
                }
            }
        }
    }

    /// Writes the request `parts` describe, with `fwd`'s headers and `body`, to `address`.
    /// Nothing of the request was acted on if this fails. An endpoint may answer before it
    /// has read the whole body (a 413 or 401 for a large upload): writing then stops, the
    /// answer is read as usual by [`Conn::read_response`], and the connection is not reused.
    pub async fn write_request(
        &mut self,
        parts: &Parts,
        fwd: &Forwarding,
        address: &str,
        body: &Bytes,
    ) -> Result<(), Error> {
        encode(parts, fwd, address, body.len(), &mut self.wbuf);
        let copy = body.len() <= COPY_BODY;
        if copy {
            self.wbuf.extend_from_slice(body);
        }
        let head = std::mem::take(&mut self.wbuf);
        let written = self.write_watching(&head).await;
        // An idle pooled connection keeps no buffer sized by one large request.
        if head.capacity() <= KEEP_WRITE_BUFFER {
            self.wbuf = head;
        }
        match written? {
            Sent::All if !copy => {
                self.write_watching(body).await?;
            }
            Sent::All | Sent::Answered => {}
        }
        Ok(())
    }

    /// Writes `data`, reading whatever the endpoint sends meanwhile. A refusal (a final
    /// answer that is not 2xx: 413, 401, ...) or a 2xx answer already whole ends the write
    /// early, as does a failed write after any answer (an endpoint that answered and closed
    /// resets the connection while the rest of the body is still coming). A 2xx answer still
    /// coming does not: an endpoint may stream its answer while it reads (full duplex), so
    /// the body goes on; its answer is kept in the buffer, up to [`MAX_EARLY_ANSWER`] bytes.
    async fn write_watching(&mut self, data: &[u8]) -> Result<Sent, Error> {
        // The common case: everything fits in the socket's buffer at once.
        let mut off = match self.io.try_write(data) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
            Err(e) => return self.answered_after(e).await,
        };
        while off < data.len() {
            let room = self.buf.len() < MAX_EARLY_ANSWER;
            tokio::select! {
                biased;
                ready = self.io.readable(), if room => {
                    ready.map_err(Error::Write)?;
                    self.buf.reserve(READ_SIZE);
                    match self.io.try_read_buf(&mut self.buf) {
                        Ok(0) => {
                            let eof = io::ErrorKind::UnexpectedEof.into();
                            return self.answered_after(eof).await;
                        }
                        // A head that never ends is refused here rather than buffered
                        // and parsed again at every read; `read_response` reports it.
                        Ok(_) if self.answer() == Answer::Done
                            || self.buf.len() >= MAX_HEAD && self.answer() == Answer::None =>
                        {
                            self.reuse = false;
                            return Ok(Sent::Answered);
                        }
                        Ok(_) => {}
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                        Err(e) => return self.answered_after(e).await,
                    }
                }
                ready = self.io.writable() => {
                    ready.map_err(Error::Write)?;
                    match self.io.try_write(&data[off..]) {
                        Ok(n) => off += n,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                        Err(e) => return self.answered_after(e).await,
                    }
                }
            }
        }
        Ok(Sent::All)
    }

    /// After writing failed with `e`: the endpoint's answer if it sent one before closing
    /// (read from what the socket still holds), else the write error. The socket failed, so
    /// it is readable at once (data, end of stream or the error); the runtime may not know
    /// yet, hence the wait for readiness rather than a bare read.
    async fn answered_after(&mut self, e: io::Error) -> Result<Sent, Error> {
        loop {
            if self.io.readable().await.is_err() {
                break;
            }
            self.buf.reserve(READ_SIZE);
            match self.io.try_read_buf(&mut self.buf) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(_) => break,
            }
            if self.buf.len() > MAX_HEAD {
                break;
            }
        }
        if self.answer() != Answer::None {
            self.reuse = false;
            return Ok(Sent::Answered);
        }
        Err(Error::Write(e))
    }

    /// What the buffer holds of a final (not 1xx) response head.
    fn answer(&self) -> Answer {
        let mut at = 0;
        loop {
            let mut slots = [const { MaybeUninit::uninit() }; MAX_HEADERS];
            let mut spans = [(0u32, 0u32, 0u32, 0u32); MAX_HEADERS];
            match parse_head(&self.buf[at..], &mut slots, &mut spans) {
                Ok(Some(head)) if head.status.is_informational() => at += head.len,
                Ok(Some(head)) if head.status.is_success() => {
                    // Whole already (no body, or all of its length here): the endpoint is
                    // done with this request, whatever is left of the body.
                    let bytes = Bytes::copy_from_slice(&self.buf[at..at + head.len]);
                    let seen = head_map(&bytes, &spans[..head.count]).map(|(_, seen)| seen);
                    let have = (self.buf.len() - at - head.len) as u64;
                    let whole = match seen.and_then(|s| framing(&Method::POST, head.status, &s)) {
                        Ok((Framing::Empty, _)) => true,
                        Ok((Framing::Length(n), _)) => have >= n,
                        _ => false,
                    };
                    return if whole { Answer::Done } else { Answer::Success };
                }
                Ok(Some(_)) => return Answer::Done,
                // A malformed answer is reported by `read_response`: stop writing.
                Err(_) => return Answer::Done,
                Ok(None) => return Answer::None,
            }
        }
    }

    /// Reads the response head (skipping 1xx interim responses) and returns the response
    /// with a body that reads the rest from this connection.
    pub async fn read_response(mut self, method: &Method) -> Result<Response<ResponseBody>, Error> {
        // Whether any byte of an answer came (an interim 1xx one included).
        let mut started = false;
        loop {
            started |= !self.buf.is_empty();
            let Some((parts, framing, keep_alive)) = self.take_head(method)? else {
                if self.buf.len() >= MAX_HEAD {
                    return Err(Error::Invalid("response head too large"));
                }
                self.fill(started).await?;
                continue;
            };
            let keep_alive = keep_alive && self.reuse;
            return Ok(Response::from_parts(parts, ResponseBody::new(self, framing, keep_alive)));
        }
    }

    /// Splits a complete final response head off the buffer (dropping 1xx interim ones):
    /// `None` while incomplete. Synchronous, so its scratch arrays never live in a future.
    fn take_head(
        &mut self,
        method: &Method,
    ) -> Result<Option<(http::response::Parts, Framing, bool)>, Error> {
        loop {
            let mut slots = [const { MaybeUninit::uninit() }; MAX_HEADERS];
            let mut spans = [(0u32, 0u32, 0u32, 0u32); MAX_HEADERS];
            let Some(head) = parse_head(&self.buf, &mut slots, &mut spans)? else {
                return Ok(None);
            };
            let bytes = self.buf.split_to(head.len).freeze();
            if head.status.is_informational() {
                if head.status == StatusCode::SWITCHING_PROTOCOLS {
                    return Err(Error::Invalid("unexpected protocol switch"));
                }
                continue;
            }
            let (mut headers, seen) = head_map(&bytes, &spans[..head.count])?;
            if seen.te.is_some() {
                // Transfer-Encoding framing is HTTP/1.1's (RFC 9112 6.1); with it, a
                // Content-Length is wrong and must not reach the client, whose connection
                // would be framed by it.
                if head.version == Version::HTTP_10 {
                    return Err(Error::Invalid("transfer-encoding in an HTTP/1.0 response"));
                }
                headers.remove(CONTENT_LENGTH);
            }
            let (framing, keep_alive) = framing(method, head.status, &seen)?;
            let keep_alive = keep_alive && head.version == Version::HTTP_11 && !seen.close;
            let (mut parts, ()) = Response::new(()).into_parts();
            parts.status = head.status;
            parts.version = head.version;
            parts.headers = headers;
            return Ok(Some((parts, framing, keep_alive)));
        }
    }

    /// Reads more bytes into the buffer; the endpoint closing is an error ([`Error::Closed`]
    /// unless an answer had `started`).
    async fn fill(&mut self, started: bool) -> Result<(), Error> {
        self.buf.reserve(READ_SIZE);
        let e = match self.io.read_buf(&mut self.buf).await {
            Ok(0) => io::ErrorKind::UnexpectedEof.into(),
            Ok(_) => return Ok(()),
            Err(e) => e,
        };
        Err(if started { Error::Read(e) } else { Error::Closed(e) })
    }

    /// Polls a read of more bytes into the buffer; `Ok(0)` is the end of the stream.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.buf.capacity() - self.buf.len() < READ_SIZE / 4 {
            self.buf.reserve(READ_SIZE);
        }
        let read = self.io.read_buf(&mut self.buf);
        std::pin::pin!(read).poll(cx)
    }
}

use std::future::Future as _;

/// Where a header's name and value lie in the head: name start and end, value start and end.
pub(super) type Span = (u32, u32, u32, u32);

/// A parsed head; its headers are positions into the buffer, so no value is copied.
struct Head {
    len: usize,
    status: StatusCode,
    version: Version,
    count: usize,
}

/// Parses a response head at the start of `buf`, its headers into `spans`: `None` while
/// incomplete.
fn parse_head<'b>(
    buf: &'b [u8],
    slots: &mut [MaybeUninit<httparse::Header<'b>>],
    spans: &mut [Span],
) -> Result<Option<Head>, Error> {
    if buf.is_empty() {
        return Ok(None);
    }
    let mut resp = httparse::Response::new(&mut []);
    let config = httparse::ParserConfig::default();
    let len = match config.parse_response_with_uninit_headers(&mut resp, buf, slots) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(Error::Invalid("too many headers")),
        Err(_) => return Err(Error::Invalid("malformed response head")),
    };
    let status = resp
        .code
        .and_then(|c| StatusCode::from_u16(c).ok())
        .ok_or(Error::Invalid("bad status code"))?;
    let version = if resp.version == Some(1) { Version::HTTP_11 } else { Version::HTTP_10 };
    let base = buf.as_ptr() as usize;
    // Offsets fit: the head is at most MAX_HEAD bytes.
    let at = |part: &[u8]| {
        let start = (part.as_ptr() as usize).saturating_sub(base) as u32;
        (start, start + part.len() as u32)
    };
    for (slot, h) in spans.iter_mut().zip(resp.headers.iter()) {
        let (name, value) = (at(h.name.as_bytes()), at(h.value));
        *slot = (name.0, name.1, value.0, value.1);
    }
    Ok(Some(Head { len, status, version, count: resp.headers.len() }))
}

/// What the framing needs from a head's headers, noted while the map is built (no lookups
/// afterwards).
#[derive(Debug, Default)]
pub(super) struct Seen {
    /// A `Transfer-Encoding` header, and whether the last one ends in `chunked`.
    pub(super) te: Option<bool>,
    /// The `Content-Length`, or why it is unusable.
    pub(super) len: Option<Result<u64, &'static str>>,
    /// `Connection: close`.
    pub(super) close: bool,
}

impl Seen {
    fn note(&mut self, name: &HeaderName, value: &[u8]) {
        if name == TRANSFER_ENCODING {
            let last = value.rsplit(|b| *b == b',').next().unwrap_or_default();
            self.te = Some(last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
        } else if name == CONTENT_LENGTH {
            // Usually one value of plain digits; a list of equal values is allowed too.
            for part in value.split(|b| *b == b',') {
                let n = decimal(part.trim_ascii()).ok_or("bad content-length");
                self.len = match (self.len, n) {
                    (Some(Err(e)), _) | (_, Err(e)) => Some(Err(e)),
                    (Some(Ok(l)), Ok(n)) if l != n => Some(Err("conflicting content-length")),
                    (_, Ok(n)) => Some(Ok(n)),
                };
            }
        } else if name == CONNECTION {
            self.close |=
                value.split(|b| *b == b',').any(|t| t.trim_ascii().eq_ignore_ascii_case(b"close"));
        }
    }
}

/// The header map of a head, its values sharing the head's bytes, with room for the
/// `x-request-id` the router adds.
pub(super) fn head_map(bytes: &Bytes, spans: &[Span]) -> Result<(HeaderMap, Seen), Error> {
    let mut map = HeaderMap::with_capacity(spans.len() + 1);
    let mut seen = Seen::default();
    for &(ns, ne, vs, ve) in spans {
        let name = HeaderName::from_bytes(&bytes[ns as usize..ne as usize])
            .map_err(|_| Error::Invalid("bad header name"))?;
        let value = bytes.slice(vs as usize..ve as usize);
        seen.note(&name, &value);
        let value = HeaderValue::from_maybe_shared(value)
            .map_err(|_| Error::Invalid("bad header value"))?;
        map.append(name, value);
    }
    Ok((map, seen))
}

/// The body's framing, and whether it lets the connection be reused.
fn framing(method: &Method, status: StatusCode, seen: &Seen) -> Result<(Framing, bool), Error> {
    if method == Method::HEAD
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        return Ok((Framing::Empty, true));
    }
    if let Some(chunked) = seen.te {
        // With both headers the message is suspect: read it, then close (RFC 9112 6.3).
        let reuse = seen.len.is_none();
        return Ok(if chunked { (Framing::Chunked, reuse) } else { (Framing::Eof, false) });
    }
    Ok(match seen.len {
        Some(Err(e)) => return Err(Error::Invalid(e)),
        Some(Ok(0)) => (Framing::Empty, true),
        Some(Ok(n)) => (Framing::Length(n), true),
        None => (Framing::Eof, false),
    })
}

/// A non-empty run of ASCII digits as a number, if it fits.
pub(super) fn decimal(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0u64, |n, d| {
        let d = d.wrapping_sub(b'0');
        (d < 10).then_some(())?;
        n.checked_mul(10)?.checked_add(u64::from(d))
    })
}

/// Writes the request head into `dst`: origin-form target, the client's headers (hop-by-hop
/// ones already gone) with the [`Forwarding`] ones, a `host` when the client sent none (an
/// HTTP/2 client, or an absolute-form request), and a `content-length` for a non-empty body
/// in place of the client's, which said the same.
fn encode(parts: &Parts, fwd: &Forwarding, address: &str, body_len: usize, dst: &mut Vec<u8>) {
    dst.clear();
    dst.extend_from_slice(parts.method.as_str().as_bytes());
    dst.push(b' ');
    let target = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    dst.extend_from_slice(target.as_bytes());
    dst.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in &parts.headers {
        // The body goes at once, so `expect: 100-continue` is answered here (hyper's server
        // did, to the client); passed on, an endpoint that answers early without reading the
        // body could take the body for the next request on a connection the pool reuses.
        if (body_len > 0 && name == CONTENT_LENGTH) || name == EXPECT || Forwarding::replaces(name)
        {
            continue;
        }
        header_line(dst, name.as_str().as_bytes(), value.as_bytes());
    }
    if !parts.headers.contains_key(HOST) {
        let host = parts.uri.authority().map_or(address, |a| a.as_str());
        header_line(dst, b"host", host.as_bytes());
    }
    fwd.encode(dst);
    if body_len > 0 {
        dst.extend_from_slice(b"content-length: ");
        push_decimal(dst, body_len);
        dst.extend_from_slice(b"\r\n");
    }
    dst.extend_from_slice(b"\r\n");
}

pub(super) fn header_line(dst: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    dst.extend_from_slice(name);
    dst.extend_from_slice(b": ");
    dst.extend_from_slice(value);
    dst.extend_from_slice(b"\r\n");
}

/// Appends `n` in decimal, without going through the formatter.
pub(super) fn push_decimal(dst: &mut Vec<u8>, mut n: usize) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    dst.extend_from_slice(&digits[i..]);
}

#[cfg(test)]
mod tests;
