//! The response body, read from the endpoint connection by whoever polls it (the request's
//! own task): `Content-Length`, chunked (with trailers) or until the endpoint closes.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf as _, Bytes};
use http::{HeaderMap, HeaderName, HeaderValue};
use http_body::{Frame, SizeHint};

use super::{Conn, Error, Framing, MAX_HEAD, MAX_HEADERS};

/// Where the body stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Bytes left of a `Content-Length` body.
    Length(u64),
    /// A chunk-size line comes next.
    ChunkSize,
    /// Bytes left of the current chunk.
    Chunk(u64),
    /// The CRLF after a chunk's data comes next.
    ChunkEnd,
    /// Trailers, or the empty line that ends a chunked body, come next.
    Trailers,
    /// Everything until the endpoint closes.
    Eof,
    /// Read to the end.
    Done,
}

/// A response body read from its endpoint connection. The connection is given back for reuse
/// with [`ResponseBody::take_reusable`] once the body ended cleanly; dropped before that, it closes.
#[derive(Debug)]
pub struct ResponseBody {
    conn: Option<Conn>,
    state: State,
    keep_alive: bool,
}

impl ResponseBody {
    pub(super) fn new(conn: Conn, framing: Framing, keep_alive: bool) -> Self {
        let state = match framing {
            Framing::Empty => State::Done,
            Framing::Length(n) => State::Length(n),
            Framing::Chunked => State::ChunkSize,
            Framing::Eof => State::Eof,
        };
        Self { conn: Some(conn), state, keep_alive }
    }

    /// The connection, if the body was read to the end and the connection may carry another
    /// request.
    pub fn take_reusable(&mut self) -> Option<Conn> {
        if self.state != State::Done || !self.keep_alive {
            return None;
        }
        let mut conn = self.conn.take()?;
        conn.shrink();
        conn.is_reusable().then_some(conn)
    }
}

/// Reads more into the buffer; the endpoint closing mid-body is an error.
fn poll_more(conn: &mut Conn, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
    match ready!(conn.poll_fill(cx)) {
        Ok(0) => Poll::Ready(Err(Error::Read(io::ErrorKind::UnexpectedEof.into()))),
        Ok(_) => Poll::Ready(Ok(())),
        Err(e) => Poll::Ready(Err(Error::Read(e))),
    }
}

impl http_body::Body for ResponseBody {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        let this = self.get_mut();
        loop {
            let Some(conn) = this.conn.as_mut() else { return Poll::Ready(None) };
            match this.state {
                State::Done => return Poll::Ready(None),
                State::Length(left) | State::Chunk(left) => {
                    if conn.buf.is_empty() {
                        ready!(poll_more(conn, cx))?;
                    }
                    let n = usize::try_from(left).unwrap_or(usize::MAX).min(conn.buf.len());
                    let data = conn.buf.split_to(n).freeze();
                    let left = left - n as u64;
                    this.state = match (this.state, left) {
                        (State::Length(_), 0) => State::Done,
                        (State::Length(_), l) => State::Length(l),
                        (_, 0) => State::ChunkEnd,
                        (_, l) => State::Chunk(l),
                    };
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                State::Eof => {
                    if conn.buf.is_empty() {
                        match ready!(conn.poll_fill(cx)) {
                            Ok(0) => {
                                this.state = State::Done;
                                return Poll::Ready(None);
                            }
                            Ok(_) => {}
                            Err(e) => return Poll::Ready(Some(Err(Error::Read(e)))),
                        }
                    }
                    return Poll::Ready(Some(Ok(Frame::data(conn.buf.split().freeze()))));
                }
                State::ChunkSize => match chunk_size(&conn.buf)? {
                    Some((len, size)) => {
                        conn.buf.advance(len);
                        this.state = if size == 0 { State::Trailers } else { State::Chunk(size) };
                    }
                    None => ready!(poll_more(conn, cx))?,
                },
                State::ChunkEnd => {
                    if conn.buf.len() < 2 {
                        ready!(poll_more(conn, cx))?;
                        continue;
                    }
                    if &conn.buf[..2] != b"\r\n" {
                        return Poll::Ready(Some(Err(Error::Invalid("chunk without CRLF"))));
                    }
                    conn.buf.advance(2);
                    this.state = State::ChunkSize;
                }
                State::Trailers => {
                    if conn.buf.starts_with(b"\r\n") {
                        conn.buf.advance(2);
                        this.state = State::Done;
                        return Poll::Ready(None);
                    }
                    match trailers(&conn.buf)? {
                        Some((len, map)) => {
                            conn.buf.advance(len);
                            this.state = State::Done;
                            return Poll::Ready(Some(Ok(Frame::trailers(map))));
                        }
                        None => ready!(poll_more(conn, cx))?,
                    }
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.state == State::Done
    }

    fn size_hint(&self) -> SizeHint {
        match self.state {
            State::Length(n) => SizeHint::with_exact(n),
            State::Done => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}

/// A complete chunk-size line at the start of `buf`: its length with the CRLF, and the size.
fn chunk_size(buf: &[u8]) -> Result<Option<(usize, u64)>, Error> {
    let Some(end) = buf.iter().position(|b| *b == b'\n') else {
        if buf.len() > MAX_HEAD {
            return Err(Error::Invalid("chunk size line too long"));
        }
        return Ok(None);
    };
    let line = buf[..end].strip_suffix(b"\r").ok_or(Error::Invalid("chunk size without CRLF"))?;
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    let rest = &line[digits..];
    if digits == 0 || digits > 15 || !(rest.is_empty() || matches!(rest[0], b';' | b' ' | b'\t')) {
        return Err(Error::Invalid("bad chunk size"));
    }
    let hex = std::str::from_utf8(&line[..digits]).map_err(|_| Error::Invalid("bad chunk size"))?;
    let size = u64::from_str_radix(hex, 16).map_err(|_| Error::Invalid("bad chunk size"))?;
    Ok(Some((end + 1, size)))
}

/// Trailer fields and the empty line after them, complete at the start of `buf`.
fn trailers(buf: &[u8]) -> Result<Option<(usize, HeaderMap)>, Error> {
    let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
    match httparse::parse_headers(buf, &mut slots) {
        Ok(httparse::Status::Complete((len, fields))) => {
            let mut map = HeaderMap::with_capacity(fields.len());
            for f in fields {
                let name = HeaderName::from_bytes(f.name.as_bytes())
                    .map_err(|_| Error::Invalid("bad trailer name"))?;
                let value =
                    HeaderValue::from_bytes(f.value).map_err(|_| Error::Invalid("bad trailer"))?;
                map.append(name, value);
            }
            Ok(Some((len, map)))
        }
        Ok(httparse::Status::Partial) if buf.len() <= MAX_HEAD => Ok(None),
        Ok(httparse::Status::Partial) => Err(Error::Invalid("trailers too large")),
        Err(_) => Err(Error::Invalid("malformed trailers")),
    }
}
