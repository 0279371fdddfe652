//! The router's own HTTP/1.1 server for the common case on cleartext connections: a request
//! with a small body of known length (or none), read, sent on and answered all inside the
//! connection's task. hyper's server runs the handler behind a dispatcher that moves every
//! request and response through its own state machine and buffers, polls the connection
//! several times per exchange and, for the response, writes head and body separately unless
//! told otherwise; here one task reads the head, the body, calls the proxy and writes the
//! answer, with one write for a short response.
//!
//! Anything else goes to hyper's server for the rest of the connection, starting with the
//! bytes already read ([`Rewind`]): HTTP/2 by prior knowledge, HTTP/1.0, a request body that
//! is chunked or larger than [`MAX_BUFFERED`], `Expect`, `Upgrade`, and request targets that
//! are not a path (absolute form, `*`, `CONNECT`).
//!
//! Behaviour follows hyper's server as the router configures it, which the differential tests
//! (`tests/h1_server.rs`) check: the head must arrive within [`CLIENT_HEADER_TIMEOUT`] of the
//! wait for it (an idle keep-alive connection is closed then too); a malformed head is
//! answered `400`, one over 64 KiB or with more than 100 headers `431`, and the connection
//! closed; a request's body is read even when the router answers without sending it on; a
//! client that closes its side while its request is being handled cancels it (no
//! half-close); pipelined requests are answered in order; responses carry `date`; a response
//! body is framed by its `content-length`, by its known size, or else chunked; no body after
//! `HEAD`, 1xx, 204 and 304, and no `content-length` on 1xx and 204; a body that fails part
//! way ends the connection after what was sent, which is how an HTTP/1.1 client learns that
//! it is incomplete. Where it differs: trailers reach a client that sent `te: trailers`
//! (hyper's server sends only those the response's `trailer` header announces, a header the
//! proxy drops as hop-by-hop, so none); a `content-length` listing one value twice is
//! accepted (RFC 9110 8.6 allows either); refusals carry a text body saying why. Once the
//! router stops, idle connections close and busy ones close after their response.

use std::cell::RefCell;
use std::future::{Future, poll_fn};
use std::io;
use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use bytes::{Buf as _, Bytes, BytesMut};
use http::header::{CONTENT_LENGTH, DATE, EXPECT, TE, TRANSFER_ENCODING, UPGRADE};
use http::request::Parts;
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body::Body as _;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt as _, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::{Instant, Sleep};

use super::CLIENT_HEADER_TIMEOUT;
use crate::proxy::h1::{
    COPY_BODY, KEEP_WRITE_BUFFER, MAX_HEAD, MAX_HEADERS, READ_SIZE, Span, head_map, header_line,
    push_decimal,
};
use crate::proxy::request::ReqBody;
use crate::proxy::{MAX_BUFFERED, Proxy, millis};
use crate::relay::Downstream;

/// Most bytes of pipelined requests read ahead while a request is being handled; past it the
/// client waits (its requests stay in the socket).
const MAX_READ_AHEAD: usize = MAX_HEAD + MAX_BUFFERED as usize;

/// The start of HTTP/2's connection preface.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0";

/// Serves HTTP/1.1 requests on a cleartext client connection until it ends, or returns it
/// (with what was read of it) when hyper's server should take it from here.
pub(super) async fn serve(
    io: TcpStream,
    peer: SocketAddr,
    proxy: Arc<Proxy>,
    stop: watch::Receiver<()>,
) -> Option<Rewind> {
    let mut conn =
        Conn { io, buf: BytesMut::new(), wbuf: Vec::new(), timer: None, stop: Stop::new(stop) };
    loop {
        let (parts, meta) = match conn.read_head().await {
            Read::Request(parts, meta) => (parts, meta),
            Read::Handoff => return Some(Rewind { pre: conn.buf.freeze(), io: conn.io }),
            Read::Refuse(status, why) => {
                conn.refuse(status, why).await;
                return None;
            }
            Read::Close => return None,
        };
        // The body is read even when the router answers itself: left in the buffer, it would
        // be taken for the next request.
        let routes = proxy.table.load();
        let idle = millis(routes.config.timeouts.idle_timeout_ms);
        let body = match conn.read_body(meta.body_len, idle).await {
            Ok(body) => body,
            Err(Read::Refuse(status, why)) => {
                conn.refuse(status, why).await;
                return None;
            }
            Err(_) => return None,
        };
        let resp = match proxy.gate(parts.uri.path(), &parts.headers) {
            Some(resp) => resp,
            None => {
                let answer = proxy.forward(routes, parts, ReqBody::Buffered(body), peer, false);
                conn.watching(answer).await?
            }
        };
        if !conn.respond(resp, &meta).await {
            return None;
        }
    }
}

/// A client connection served by this module.
struct Conn {
    io: TcpStream,
    /// Bytes read and not yet used.
    buf: BytesMut,
    /// The response being put together.
    wbuf: Vec<u8>,
    /// The connection's one timer, moved on for every wait.
    timer: Option<Pin<Box<Sleep>>>,
    stop: Stop,
}

/// What a request head asks of the connection.
// Returned once per request and taken apart at once: boxing the parts would cost an
// allocation per request for nothing.
#[allow(clippy::large_enum_variant)]
enum Read {
    Request(Parts, Meta),
    /// hyper's server takes the connection, from the first unused byte on.
    Handoff,
    /// Answered with this status, and the connection closed.
    Refuse(StatusCode, &'static str),
    /// The client closed or went silent, or the router is stopping.
    Close,
}

/// What the server needs to know of a request besides its parts.
struct Meta {
    body_len: usize,
    keep_alive: bool,
    /// A `HEAD` request: the response has no body.
    head: bool,
    /// The client accepts trailers (`te: trailers`).
    trailers: bool,
}

/// How a response body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    Empty,
    Length(u64),
    Chunked,
}

impl Conn {
    /// Reads the next request head; the body stays in the buffer.
    async fn read_head(&mut self) -> Read {
        let deadline = Instant::now() + CLIENT_HEADER_TIMEOUT;
        loop {
            if !self.buf.is_empty() {
                let n = self.buf.len().min(H2_PREFACE.len());
                if self.buf[..n] == H2_PREFACE[..n] {
                    if n == H2_PREFACE.len() {
                        return Read::Handoff;
                    }
                } else if let Some(read) = self.take_head() {
                    return read;
                } else if self.buf.len() >= MAX_HEAD {
                    return Read::Refuse(
                        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                        "request head too large",
                    );
                }
            }
            // Only a connection between requests stops for the router.
            if !self.fill(deadline, self.buf.is_empty()).await {
                return Read::Close;
            }
        }
    }

    /// Splits a complete request head off the buffer: `None` while incomplete. Leaves the
    /// buffer as it was when hyper is to take the connection. Synchronous, so its scratch
    /// arrays never live in a future.
    fn take_head(&mut self) -> Option<Read> {
        let mut slots = [const { MaybeUninit::uninit() }; MAX_HEADERS];
        let mut spans: [Span; MAX_HEADERS] = [(0, 0, 0, 0); MAX_HEADERS];
        let mut req = httparse::Request::new(&mut []);
        let config = httparse::ParserConfig::default();
        let len = match config.parse_request_with_uninit_headers(&mut req, &self.buf, &mut slots) {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) => return None,
            Err(httparse::Error::TooManyHeaders) => {
                return Some(Read::Refuse(
                    StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                    "too many headers",
                ));
            }
            Err(_) => return Some(Read::Refuse(StatusCode::BAD_REQUEST, "malformed request head")),
        };
        let (Some(method), Some(path), Some(1)) = (req.method, req.path, req.version) else {
            // HTTP/1.0 (keep-alive rules of its own): hyper's server.
            return Some(Read::Handoff);
        };
        // Only origin-form targets here; absolute form, `*` and `CONNECT` go to hyper.
        if !path.starts_with('/') || method == "CONNECT" {
            return Some(Read::Handoff);
        }
        let method = match Method::from_bytes(method.as_bytes()) {
            Ok(m) => m,
            Err(_) => return Some(Read::Refuse(StatusCode::BAD_REQUEST, "bad method")),
        };
        let base = self.buf.as_ptr() as usize;
        // Offsets fit: the head is at most MAX_HEAD bytes.
        let at = |part: &[u8]| {
            let start = (part.as_ptr() as usize).saturating_sub(base) as u32;
            (start, start + part.len() as u32)
        };
        let target = at(path.as_bytes());
        let count = req.headers.len();
        for (slot, h) in spans.iter_mut().zip(req.headers.iter()) {
            let (name, value) = (at(h.name.as_bytes()), at(h.value));
            *slot = (name.0, name.1, value.0, value.1);
        }
        let head = self.buf.split_to(len).freeze();
        let read = request(&head, method, target, &spans[..count]);
        if matches!(read, Read::Handoff) {
            let mut all = BytesMut::with_capacity(head.len() + self.buf.len());
            all.extend_from_slice(&head);
            all.extend_from_slice(&self.buf);
            self.buf = all;
        }
        Some(read)
    }

    /// Reads a request body of `len` bytes, each wait for more at most `idle` long.
    async fn read_body(&mut self, len: usize, idle: Duration) -> Result<Bytes, Read> {
        while self.buf.len() < len {
            if !self.fill(Instant::now() + idle, false).await {
                let why = "no request body data within the idle timeout";
                return Err(Read::Refuse(StatusCode::REQUEST_TIMEOUT, why));
            }
        }
        Ok(self.buf.split_to(len).freeze())
    }

    /// Waits for more bytes from the client until `deadline` (or, when `stoppable`, until
    /// the router stops): false when none came (the client closed or failed, the time ran
    /// out, or the router stops).
    async fn fill(&mut self, deadline: Instant, stoppable: bool) -> bool {
        if self.buf.capacity() - self.buf.len() < READ_SIZE / 4 {
            self.buf.reserve(READ_SIZE);
        }
        poll_fn(|cx| {
            if stoppable && self.stop.poll_stopping(cx) {
                return Poll::Ready(false);
            }
            match poll_read(&mut self.io, &mut self.buf, cx) {
                Poll::Ready(Ok(0) | Err(_)) => return Poll::Ready(false),
                Poll::Ready(Ok(_)) => return Poll::Ready(true),
                Poll::Pending => {}
            }
            // The timer is armed only now: a request already in the socket costs none.
            let timer = match &mut self.timer {
                Some(t) => {
                    if t.deadline() != deadline {
                        t.as_mut().reset(deadline);
                    }
                    t
                }
                None => self.timer.insert(Box::pin(tokio::time::sleep_until(deadline))),
            };
            timer.as_mut().poll(cx).map(|()| false)
        })
        .await
    }

    /// Runs `answer` while watching the client: `None` (and `answer` dropped, which cancels
    /// the request upstream) when the client closes or resets the connection first. Pipelined
    /// requests that arrive meanwhile are kept for later.
    async fn watching<F: Future>(&mut self, answer: F) -> Option<F::Output> {
        let mut answer = pin!(answer);
        poll_fn(|cx| {
            if let Poll::Ready(out) = answer.as_mut().poll(cx) {
                return Poll::Ready(Some(out));
            }
            while self.buf.len() < MAX_READ_AHEAD {
                if self.buf.capacity() - self.buf.len() < READ_SIZE / 4 {
                    self.buf.reserve(READ_SIZE);
                }
                match poll_read(&mut self.io, &mut self.buf, cx) {
                    Poll::Ready(Ok(0) | Err(_)) => return Poll::Ready(None),
                    Poll::Ready(Ok(_)) => {}
                    Poll::Pending => break,
                }
            }
            Poll::Pending
        })
        .await
    }

    /// Writes `resp`; whether the connection can carry another request.
    async fn respond(&mut self, resp: Response<Downstream>, req: &Meta) -> bool {
        let (parts, body) = resp.into_parts();
        let mut body = pin!(body);
        let keep_alive = req.keep_alive && !self.stop.stopping();
        let mut framing = head(&mut self.wbuf, &parts, body.as_ref().get_ref(), req, keep_alive);
        let mut sent = 0u64;
        let mut keep = keep_alive;
        while framing != Framing::Empty {
            // Frames that are ready join the buffered head; the socket is written only when
            // the body has to wait, or at its end.
            let frame = match poll_fn(|cx| Poll::Ready(body.as_mut().poll_frame(cx))).await {
                Poll::Ready(f) => f,
                Poll::Pending => {
                    if self.flush().await.is_err() {
                        return false;
                    }
                    poll_fn(|cx| body.as_mut().poll_frame(cx)).await
                }
            };
            let frame = match frame {
                Some(Ok(f)) => f,
                None => {
                    if framing == Framing::Chunked {
                        self.wbuf.extend_from_slice(b"0\r\n\r\n");
                    }
                    // A body shorter than its length: the client must not wait for the rest.
                    keep &= !matches!(framing, Framing::Length(n) if sent < n);
                    break;
                }
                Some(Err(e)) => {
                    // Whatever went out is all the client gets; closing tells it so.
                    tracing::debug!(error = %e, "response body failed");
                    let _ = self.flush().await;
                    return false;
                }
            };
            let data = match frame.into_data() {
                Ok(data) => data,
                Err(frame) => {
                    if let (Framing::Chunked, Ok(trailers)) = (framing, frame.into_trailers()) {
                        self.wbuf.extend_from_slice(b"0\r\n");
                        if req.trailers {
                            for (name, value) in &trailers {
                                header_line(&mut self.wbuf, name.as_ref(), value.as_bytes());
                            }
                        }
                        self.wbuf.extend_from_slice(b"\r\n");
                        framing = Framing::Empty;
                    }
                    continue;
                }
            };
            if data.is_empty() {
                continue;
            }
            let mut data = data;
            match framing {
                Framing::Length(n) => {
                    if sent + data.len() as u64 > n {
                        tracing::debug!("response body longer than its content-length");
                        data.truncate((n - sent) as usize);
                        keep = false;
                    }
                    sent += data.len() as u64;
                    if self.put(&data).await.is_err() {
                        return false;
                    }
                    if sent == n {
                        break;
                    }
                }
                Framing::Chunked => {
                    push_hex(&mut self.wbuf, data.len());
                    self.wbuf.extend_from_slice(b"\r\n");
                    if self.put(&data).await.is_err() {
                        return false;
                    }
                    self.wbuf.extend_from_slice(b"\r\n");
                }
                Framing::Empty => {}
            }
            // A body that knows it is done needs no further poll (the endpoint connection
            // is released with the last frame).
            if body.is_end_stream() && framing == Framing::Chunked {
                self.wbuf.extend_from_slice(b"0\r\n\r\n");
                break;
            }
        }
        if self.flush().await.is_err() {
            return false;
        }
        keep
    }

    /// Adds `data` to the response: copied behind what is buffered when small, else written
    /// after it without a copy.
    async fn put(&mut self, data: &Bytes) -> io::Result<()> {
        if data.len() <= COPY_BODY {
            self.wbuf.extend_from_slice(data);
            return Ok(());
        }
        self.flush().await?;
        self.io.write_all(data).await
    }

    /// Writes out the buffered response bytes.
    async fn flush(&mut self) -> io::Result<()> {
        if self.wbuf.is_empty() {
            return Ok(());
        }
        let r = self.io.write_all(&self.wbuf).await;
        self.wbuf.clear();
        if self.wbuf.capacity() > KEEP_WRITE_BUFFER {
            self.wbuf = Vec::new();
        }
        r
    }

    /// Answers a request the router cannot read, and closes.
    async fn refuse(&mut self, status: StatusCode, why: &str) {
        tracing::debug!(%status, why, "refused a client request");
        self.wbuf.clear();
        status_line(&mut self.wbuf, status);
        date_line(&mut self.wbuf);
        self.wbuf.extend_from_slice(b"content-type: text/plain; charset=utf-8\r\n");
        self.wbuf.extend_from_slice(b"connection: close\r\ncontent-length: ");
        push_decimal(&mut self.wbuf, why.len() + 1);
        self.wbuf.extend_from_slice(b"\r\n\r\n");
        self.wbuf.extend_from_slice(why.as_bytes());
        self.wbuf.push(b'\n');
        let _ = self.flush().await;
        let _ = self.io.shutdown().await;
    }
}

/// Polls one read into `buf`: the bytes read, `0` at the end of the stream. Through the
/// stream's `AsyncRead`, which takes a read that left room in the buffer as proof that the
/// socket is drained: the next poll waits for readiness instead of trying a read that would
/// fail with `EWOULDBLOCK` (a system call per request saved).
fn poll_read(
    io: &mut TcpStream,
    buf: &mut BytesMut,
    cx: &mut Context<'_>,
) -> Poll<io::Result<usize>> {
    use tokio::io::AsyncReadExt as _;
    pin!(io.read_buf(buf)).poll(cx)
}

/// The request a parsed head describes (target at `target`, headers at `spans` of `head`),
/// or what else the connection must do.
fn request(head: &Bytes, method: Method, target: (u32, u32), spans: &[Span]) -> Read {
    let (headers, seen) = match head_map(head, spans) {
        Ok(h) => h,
        Err(_) => return Read::Refuse(StatusCode::BAD_REQUEST, "bad header"),
    };
    // Streamed, chunked or upgraded requests, and those waiting for `100 Continue`, are
    // hyper's.
    if seen.te.is_some() || headers.contains_key(EXPECT) || headers.contains_key(UPGRADE) {
        return Read::Handoff;
    }
    let body_len = match seen.len {
        None => 0,
        Some(Err(why)) => return Read::Refuse(StatusCode::BAD_REQUEST, why),
        Some(Ok(n)) if n > MAX_BUFFERED => return Read::Handoff,
        Some(Ok(n)) => n as usize,
    };
    let uri = match Uri::from_maybe_shared(head.slice(target.0 as usize..target.1 as usize)) {
        Ok(uri) => uri,
        Err(_) => return Read::Refuse(StatusCode::BAD_REQUEST, "bad request target"),
    };
    let trailers = headers.get_all(TE).iter().any(|v| {
        v.as_bytes().split(|b| *b == b',').any(|t| t.trim_ascii().eq_ignore_ascii_case(b"trailers"))
    });
    let meta = Meta { body_len, keep_alive: !seen.close, head: method == Method::HEAD, trailers };
    let (mut parts, ()) = Request::new(()).into_parts();
    parts.method = method;
    parts.uri = uri;
    parts.version = Version::HTTP_11;
    parts.headers = headers;
    Read::Request(parts, meta)
}

/// Writes the response head into `dst` and returns how the body is framed.
fn head(
    dst: &mut Vec<u8>,
    parts: &http::response::Parts,
    body: &Downstream,
    req: &Meta,
    keep_alive: bool,
) -> Framing {
    let status = parts.status;
    dst.clear();
    status_line(dst, status);
    let bodyless = req.head
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    let mut length = None;
    for (name, value) in &parts.headers {
        // The framing is this connection's to decide.
        if name == TRANSFER_ENCODING {
            continue;
        }
        if name == CONTENT_LENGTH {
            // None on a 1xx or 204 (RFC 9110 8.6); a 304's says what a 200 would have had.
            if status.is_informational() || status == StatusCode::NO_CONTENT {
                continue;
            }
            length = crate::proxy::h1::decimal(value.as_bytes());
            if length.is_none() {
                continue;
            }
        }
        header_line(dst, name.as_str().as_bytes(), value.as_bytes());
    }
    if !parts.headers.contains_key(DATE) {
        date_line(dst);
    }
    if !keep_alive {
        dst.extend_from_slice(b"connection: close\r\n");
    }
    let framing = if bodyless {
        Framing::Empty
    } else if let Some(n) = length {
        if n == 0 { Framing::Empty } else { Framing::Length(n) }
    } else if body.is_end_stream() {
        dst.extend_from_slice(b"content-length: 0\r\n");
        Framing::Empty
    } else if let Some(n) = body.size_hint().exact() {
        dst.extend_from_slice(b"content-length: ");
        push_decimal(dst, n as usize);
        dst.extend_from_slice(b"\r\n");
        if n == 0 { Framing::Empty } else { Framing::Length(n) }
    } else {
        dst.extend_from_slice(b"transfer-encoding: chunked\r\n");
        Framing::Chunked
    };
    dst.extend_from_slice(b"\r\n");
    framing
}

fn status_line(dst: &mut Vec<u8>, status: StatusCode) {
    dst.extend_from_slice(b"HTTP/1.1 ");
    dst.extend_from_slice(status.as_str().as_bytes());
    dst.push(b' ');
    dst.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    dst.extend_from_slice(b"\r\n");
}

/// Appends `n` in hexadecimal (a chunk size).
fn push_hex(dst: &mut Vec<u8>, mut n: usize) {
    let mut digits = [0u8; 16];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b"0123456789abcdef"[n & 15];
        n >>= 4;
        if n == 0 {
            break;
        }
    }
    dst.extend_from_slice(&digits[i..]);
}

thread_local! {
    /// The `date` value for the current second, made once a second per thread.
    static DATE_VALUE: RefCell<(u64, Vec<u8>)> = const { RefCell::new((u64::MAX, Vec::new())) };
}

/// Appends a `date` header line for now.
fn date_line(dst: &mut Vec<u8>) {
    let now = SystemTime::now();
    let secs = now.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    DATE_VALUE.with_borrow_mut(|(at, value)| {
        if *at != secs {
            *at = secs;
            value.clear();
            value.extend_from_slice(httpdate::fmt_http_date(now).as_bytes());
        }
        header_line(dst, b"date", value);
    });
}

/// Whether the router stops, asked cheaply: the signal's future is polled once, to leave the
/// task's waker with it, and afterwards only the version number is compared.
struct Stop {
    rx: watch::Receiver<()>,
    signal: Pin<Box<dyn Future<Output = ()> + Send>>,
    registered: bool,
}

impl Stop {
    fn new(rx: watch::Receiver<()>) -> Self {
        let mut waiting = rx.clone();
        let signal = Box::pin(async move {
            let _ = waiting.changed().await;
        });
        Self { rx, signal, registered: false }
    }

    fn poll_stopping(&mut self, cx: &mut Context<'_>) -> bool {
        if !self.registered {
            self.registered = true;
            if self.signal.as_mut().poll(cx).is_ready() {
                return true;
            }
        }
        self.stopping()
    }

    /// A closed channel stops connections too.
    fn stopping(&self) -> bool {
        self.rx.has_changed().unwrap_or(true)
    }
}

/// A client connection handed to hyper's server, which first reads the bytes this module
/// read and did not use.
#[derive(Debug)]
pub(super) struct Rewind {
    pre: Bytes,
    io: TcpStream,
}

impl Rewind {
    /// A connection nothing was read from.
    pub(super) fn new(io: TcpStream) -> Self {
        Self { pre: Bytes::new(), io }
    }
}

impl AsyncRead for Rewind {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.pre.is_empty() {
            let n = self.pre.len().min(buf.remaining());
            buf.put_slice(&self.pre[..n]);
            self.pre.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Rewind {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}
