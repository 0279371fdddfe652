//! HTTP/1.1 as bytes on plain TCP, for tests that must control the framing on both sides of
//! the router: a scripted upstream that answers each request with canned bytes
//! ([`scripted`]), and a client that writes bytes as given and reads the responses back
//! parsed into what a client can tell apart ([`RawClient`], [`Seen`]).
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};

/// Longest a test waits for bytes that should come.
const WAIT: Duration = Duration::from_secs(5);

/// A request as the scripted upstream read it.
#[derive(Debug, Clone)]
pub struct UpRequest {
    pub method: String,
    pub path: String,
    pub headers: Fields,
    /// The body, de-chunked.
    pub body: Vec<u8>,
}

/// What the scripted upstream sends back: `head` (interim heads included) and then the body
/// `parts`, each after `pause`, then it closes when `close`. A `HEAD` request gets the head
/// alone.
#[derive(Debug, Clone, Default)]
pub struct Canned {
    pub head: String,
    pub parts: Vec<Vec<u8>>,
    pub pause: Duration,
    pub close: bool,
}

impl Canned {
    /// A head and a body sent at once, the connection kept open.
    pub fn new(head: &str, body: &[u8]) -> Self {
        Self { head: head.to_owned(), parts: vec![body.to_vec()], ..Self::default() }
    }

    /// The same, then the connection closed.
    pub fn closing(head: &str, body: &[u8]) -> Self {
        Self { close: true, ..Self::new(head, body) }
    }
}

/// Starts an upstream on a loopback port that reads requests (pipelined or not, bodies sized
/// or chunked) and answers each with `script(request)`; its address.
pub async fn scripted(script: fn(&UpRequest) -> Canned) -> String {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            tokio::spawn(serve_scripted(s, script));
        }
    });
    addr
}

async fn serve_scripted(mut s: TcpStream, script: fn(&UpRequest) -> Canned) {
    let mut buf = Vec::new();
    loop {
        let req = loop {
            match parse_request(&buf) {
                Some((req, used)) => {
                    buf.drain(..used);
                    break req;
                }
                None => {
                    let mut chunk = [0u8; 16 * 1024];
                    match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
            }
        };
        let canned = script(&req);
        if s.write_all(canned.head.as_bytes()).await.is_err() {
            return;
        }
        if req.method != "HEAD" {
            for part in &canned.parts {
                tokio::time::sleep(canned.pause).await;
                if s.write_all(part).await.is_err() {
                    return;
                }
            }
        }
        if canned.close {
            return;
        }
    }
}

/// A complete request at the start of `buf`, and its length.
fn parse_request(buf: &[u8]) -> Option<(UpRequest, usize)> {
    let mut slots = [httparse::EMPTY_HEADER; 128];
    let mut req = httparse::Request::new(&mut slots);
    let httparse::Status::Complete(len) = req.parse(buf).ok()? else { return None };
    let headers: Fields = req
        .headers
        .iter()
        .map(|h| (h.name.to_ascii_lowercase(), String::from_utf8_lossy(h.value).into_owned()))
        .collect();
    let header = |name: &str| headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone());
    let (body, used) = if header("transfer-encoding").is_some_and(|v| v.ends_with("chunked")) {
        let (body, _, used) = dechunk(&buf[len..])?;
        (body, used)
    } else {
        let n: usize = header("content-length").map_or(0, |v| v.parse().unwrap());
        (buf.get(len..len + n)?.to_vec(), n)
    };
    let req =
        UpRequest { method: req.method?.to_owned(), path: req.path?.to_owned(), headers, body };
    Some((req, len + used))
}

/// Header or trailer fields, names lowercased, in order.
pub type Fields = Vec<(String, String)>;

/// A complete chunked body at the start of `buf`: its data, its trailers and its length;
/// `None` while incomplete.
fn dechunk(buf: &[u8]) -> Option<(Vec<u8>, Fields, usize)> {
    let mut at = 0;
    let mut body = Vec::new();
    loop {
        let line_end = at + buf[at..].windows(2).position(|w| w == b"\r\n")?;
        let line = std::str::from_utf8(&buf[at..line_end]).expect("chunk size line");
        let size = usize::from_str_radix(line.split(';').next().unwrap().trim(), 16)
            .unwrap_or_else(|_| panic!("bad chunk size line {line:?}"));
        at = line_end + 2;
        if size == 0 {
            let mut slots = [httparse::EMPTY_HEADER; 32];
            let httparse::Status::Complete((len, fields)) =
                httparse::parse_headers(&buf[at..], &mut slots).expect("trailers")
            else {
                return None;
            };
            let trailers = fields
                .iter()
                .map(|f| {
                    (f.name.to_ascii_lowercase(), String::from_utf8_lossy(f.value).into_owned())
                })
                .collect();
            return Some((body, trailers, at + len));
        }
        body.extend_from_slice(buf.get(at..at + size)?);
        at += size;
        if buf.get(at..at + 2)? != b"\r\n" {
            panic!("chunk without its CRLF");
        }
        at += 2;
    }
}

/// One response as a client can tell it apart from another: header names lowercased and the
/// values of `date` and `x-request-id`, which differ on every response, replaced by `*`.
#[derive(Clone, PartialEq, Eq)]
pub struct Seen {
    /// The 1xx interim responses before it.
    pub interim: Vec<u16>,
    /// `1` for HTTP/1.1, `0` for HTTP/1.0.
    pub version: u8,
    pub status: u16,
    pub headers: BTreeMap<String, Vec<String>>,
    /// The body, de-chunked.
    pub body: Vec<u8>,
    pub trailers: Fields,
    /// False when the connection ended before the body did.
    pub complete: bool,
}

impl std::fmt::Debug for Seen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // A long body as its length and start: a failing comparison stays readable.
        let text = String::from_utf8_lossy(&self.body);
        let body = match text.char_indices().nth(64) {
            Some((at, _)) => format!("{} bytes: {:?}...", self.body.len(), &text[..at]),
            None => format!("{text:?}"),
        };
        f.debug_struct("Seen")
            .field("interim", &self.interim)
            .field("version", &self.version)
            .field("status", &self.status)
            .field("headers", &self.headers)
            .field("body", &body)
            .field("trailers", &self.trailers)
            .field("complete", &self.complete)
            .finish()
    }
}

impl Seen {
    /// The values of header `name`, joined.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers.get(name).map(|v| v.join(", "))
    }
}

/// What a conversation on one connection gave: the responses, and whether the server closed
/// the connection after them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conversation {
    pub responses: Vec<Seen>,
    pub closed: bool,
}

/// A client connection that writes bytes as given and reads responses back.
pub struct RawClient {
    rx: OwnedReadHalf,
    tx: OwnedWriteHalf,
    buf: Vec<u8>,
    eof: bool,
}

impl RawClient {
    pub async fn connect(addr: &str) -> Self {
        let (rx, tx) = TcpStream::connect(addr).await.unwrap().into_split();
        Self { rx, tx, buf: Vec::new(), eof: false }
    }

    /// Writes `bytes`; a server that stops reading (it refused the request) or closed ends
    /// the write early, silently.
    pub async fn send(&mut self, bytes: &[u8]) {
        let _ = tokio::time::timeout(Duration::from_secs(2), self.tx.write_all(bytes)).await;
    }

    /// Closes the sending side (a half-close).
    pub async fn shutdown_write(&mut self) {
        let _ = self.tx.shutdown().await;
    }

    /// Reads more; false at the end of the stream (or a reset). Panics when nothing comes
    /// within the wait.
    async fn more(&mut self) -> bool {
        let mut chunk = [0u8; 16 * 1024];
        let read = tokio::time::timeout(WAIT, self.rx.read(&mut chunk)).await;
        match read.expect("the server neither answered nor closed") {
            Ok(0) | Err(_) => {
                self.eof = true;
                false
            }
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
        }
    }

    /// The next interim (1xx) response's status.
    pub async fn interim(&mut self) -> u16 {
        loop {
            let mut slots = [httparse::EMPTY_HEADER; 8];
            let mut resp = httparse::Response::new(&mut slots);
            if let httparse::Status::Complete(len) = resp.parse(&self.buf).expect("a response") {
                let code = resp.code.unwrap();
                assert!((100..200).contains(&code), "{code} is no interim response");
                self.buf.drain(..len);
                return code;
            }
            assert!(self.more().await, "closed before an interim response");
        }
    }

    /// The next final response (to a `HEAD` request when `head`), or `None` when the
    /// connection ends first.
    pub async fn response(&mut self, head: bool) -> Option<Seen> {
        loop {
            if let Some((seen, used)) = parse_response(&self.buf, head, self.eof) {
                self.buf.drain(..used);
                return Some(seen);
            }
            if self.eof {
                assert!(self.buf.is_empty(), "bytes that are no response: {:?}", self.text());
                return None;
            }
            self.more().await;
        }
    }

    /// Whether the server closed the connection: a request it answers itself (`/livez`) is
    /// sent, and either answered (open) or not (closed).
    pub async fn closed(&mut self) -> bool {
        if self.eof {
            return true;
        }
        self.send(b"GET /livez HTTP/1.1\r\nhost: probe\r\n\r\n").await;
        self.response(false).await.is_none()
    }

    /// Reads until the server closes (or resets) the connection; what came.
    pub async fn until_closed(&mut self) -> Vec<u8> {
        while self.more().await {}
        std::mem::take(&mut self.buf)
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.buf).into_owned()
    }
}

/// Writes `input` on a fresh connection to `addr`, reads one response per entry of
/// `methods` (fewer if the server closes first), then finds out whether it closed.
pub async fn converse(addr: &str, input: &[u8], methods: &[&str]) -> Conversation {
    let mut c = RawClient::connect(addr).await;
    c.send(input).await;
    let mut responses = Vec::new();
    for method in methods {
        match c.response(*method == "HEAD").await {
            Some(seen) => responses.push(seen),
            None => break,
        }
    }
    Conversation { responses, closed: c.closed().await }
}

/// A complete response at the start of `buf` and its length: `None` while incomplete. At the
/// end of the stream (`eof`) a response cut short is complete as far as it goes.
fn parse_response(buf: &[u8], head: bool, eof: bool) -> Option<(Seen, usize)> {
    let mut at = 0;
    let mut interim = Vec::new();
    loop {
        let mut slots = [httparse::EMPTY_HEADER; 128];
        let mut resp = httparse::Response::new(&mut slots);
        let status = resp.parse(&buf[at..]).unwrap_or_else(|e| {
            panic!("malformed response ({e}): {:?}", String::from_utf8_lossy(&buf[at..]))
        });
        let httparse::Status::Complete(len) = status else { return None };
        let code = resp.code.unwrap();
        at += len;
        if (100..200).contains(&code) && code != 101 {
            interim.push(code);
            continue;
        }
        let mut headers: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for h in resp.headers.iter() {
            let name = h.name.to_ascii_lowercase();
            let value = match name.as_str() {
                "date" | "x-request-id" => "*".to_owned(),
                _ => String::from_utf8_lossy(h.value).into_owned(),
            };
            headers.entry(name).or_default().push(value);
        }
        let mut seen = Seen {
            interim,
            version: resp.version.unwrap(),
            status: code,
            headers,
            body: Vec::new(),
            trailers: Vec::new(),
            complete: true,
        };
        let rest = &buf[at..];
        let chunked = seen.header("transfer-encoding").is_some_and(|v| v.ends_with("chunked"));
        let length: Option<usize> = seen.header("content-length").map(|v| v.parse().unwrap());
        if head || code == 204 || code == 304 {
            return Some((seen, at));
        }
        if chunked {
            return match dechunk(rest) {
                Some((body, trailers, used)) => {
                    seen.body = body;
                    seen.trailers = trailers;
                    Some((seen, at + used))
                }
                None if eof => {
                    // What came of it, raw: enough to compare two cut bodies.
                    seen.body = rest.to_vec();
                    seen.complete = false;
                    Some((seen, buf.len()))
                }
                None => None,
            };
        }
        return match length {
            Some(n) if rest.len() >= n => {
                seen.body = rest[..n].to_vec();
                Some((seen, at + n))
            }
            _ if eof => {
                seen.body = rest.to_vec();
                seen.complete = length.is_none();
                Some((seen, buf.len()))
            }
            _ => None,
        };
    }
}
