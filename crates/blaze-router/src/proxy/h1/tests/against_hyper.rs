//! The same request and canned answer through this client and through hyper's
//! (`hyper::client::conn::http1`), compared as a caller sees them.

use std::time::Duration;

use http_body_util::Full;
use hyper_util::rt::TokioIo;

use super::*;

/// How the canned endpoint treats a connection after reading a request head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Then {
    /// Reads the body, answers, and keeps the connection open (reading on).
    Answer,
    /// Reads the body, answers, and closes.
    AnswerAndClose,
    /// Answers at once without reading the body, and keeps the connection open without
    /// reading more.
    AnswerEarly,
    /// The same, then closes (with the body unread: a reset).
    AnswerEarlyAndClose,
}

/// An endpoint that answers every connection's first request with `answer`.
async fn canned(answer: &'static [u8], then: Then) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            tokio::spawn(answer_one(s, answer, then));
        }
    });
    addr
}

async fn answer_one(mut s: TcpStream, answer: &'static [u8], then: Then) {
    let mut seen = Vec::new();
    let head_end = loop {
        if let Some(at) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        let mut chunk = [0u8; 4096];
        match s.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => seen.extend_from_slice(&chunk[..n]),
        }
    };
    let early = matches!(then, Then::AnswerEarly | Then::AnswerEarlyAndClose);
    if !early {
        let head = String::from_utf8_lossy(&seen[..head_end]).to_ascii_lowercase();
        let len: usize = head
            .split("\r\n")
            .find_map(|l| l.strip_prefix("content-length: "))
            .map_or(0, |v| v.trim().parse().unwrap());
        let mut body = seen.len() - head_end;
        while body < len {
            let mut chunk = vec![0u8; 64 * 1024];
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => body += n,
            }
        }
    }
    if s.write_all(answer).await.is_err() {
        return;
    }
    match then {
        Then::Answer => {
            let _ = s.read_to_end(&mut Vec::new()).await;
        }
        Then::AnswerEarly => tokio::time::sleep(Duration::from_secs(30)).await,
        Then::AnswerAndClose | Then::AnswerEarlyAndClose => {}
    }
}

/// Where an exchange failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failed {
    /// No response.
    Response,
    /// The body, after the response head (and `data` of the body) came.
    Body,
}

/// An exchange as the caller sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Got {
    status: Option<u16>,
    version: Option<Version>,
    /// Names and values, sorted.
    headers: Vec<(String, String)>,
    data: Vec<u8>,
    trailers: Option<Vec<(String, String)>>,
    failed: Option<Failed>,
    /// The connection may carry another request.
    reusable: bool,
}

impl Got {
    fn failed() -> Self {
        Self {
            status: None,
            version: None,
            headers: Vec::new(),
            data: Vec::new(),
            trailers: None,
            failed: Some(Failed::Response),
            reusable: false,
        }
    }

    fn head(parts: &http::response::Parts) -> Self {
        Self {
            status: Some(parts.status.as_u16()),
            version: Some(parts.version),
            headers: sorted(&parts.headers),
            ..Self::failed()
        }
    }
}

fn sorted(map: &HeaderMap) -> Vec<(String, String)> {
    let mut all: Vec<(String, String)> = map
        .iter()
        .map(|(n, v)| (n.to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
        .collect();
    all.sort();
    all
}

/// Reads `body` to its end or first error into `got`.
async fn read_body<B>(mut body: B, got: &mut Got)
where
    B: http_body::Body<Data = Bytes> + Unpin,
{
    got.failed = None;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => match frame.into_data() {
                Ok(d) => got.data.extend_from_slice(&d),
                Err(f) => got.trailers = f.into_trailers().ok().map(|t| sorted(&t)),
            },
            Err(_) => {
                got.failed = Some(Failed::Body);
                return;
            }
        }
    }
}

fn request(method: &Method, body_len: usize) -> (Parts, Bytes) {
    let b = http::Request::builder().method(method.clone()).uri("/v1/x").header("host", "h");
    let (parts, ()) = b.body(()).unwrap().into_parts();
    (parts, Bytes::from(vec![b'x'; body_len]))
}

/// The exchange through [`Conn`].
async fn ours(addr: SocketAddr, method: &Method, body_len: usize) -> Got {
    let (mut parts, body) = request(method, body_len);
    let fwd = prepare_request(&mut parts.headers, "10.0.0.9".parse().unwrap());
    let mut c = Conn::new(TcpStream::connect(addr).await.unwrap());
    if c.write_request(&parts, &fwd, "h", &body).await.is_err() {
        return Got::failed();
    }
    let Ok(resp) = c.read_response(method).await else { return Got::failed() };
    let (head, mut body) = resp.into_parts();
    let mut got = Got::head(&head);
    read_body(&mut body, &mut got).await;
    got.reusable = got.failed.is_none() && body.take_reusable().is_some();
    got
}

/// The exchange through hyper's client connection.
async fn hypers(addr: SocketAddr, method: &Method, body_len: usize) -> Got {
    let io = TokioIo::new(TcpStream::connect(addr).await.unwrap());
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake::<_, Full<Bytes>>(io).await.unwrap();
    tokio::spawn(conn);
    let (parts, body) = request(method, body_len);
    let req = http::Request::from_parts(parts, Full::new(body));
    let Ok(resp) = sender.send_request(req).await else { return Got::failed() };
    let (head, body) = resp.into_parts();
    let mut got = Got::head(&head);
    read_body(body, &mut got).await;
    // Ready for another request at once, or never: a connection that is to close goes
    // (and one still writing a refused body stays busy).
    let ready = tokio::time::timeout(Duration::from_secs(1), sender.ready()).await;
    got.reusable = got.failed.is_none() && matches!(ready, Ok(Ok(())));
    got
}

struct Case {
    name: &'static str,
    method: Method,
    body_len: usize,
    answer: &'static [u8],
    then: Then,
}

fn case(name: &'static str, answer: &'static [u8], then: Then) -> Case {
    Case { name, method: Method::GET, body_len: 0, answer, then }
}

/// Far more than the socket buffers hold while the endpoint reads nothing.
const LARGE: usize = 8 << 20;

fn cases() -> Vec<Case> {
    use Then::*;
    let head = |c: Case| Case { method: Method::HEAD, ..c };
    let upload = |c: Case| Case { method: Method::POST, body_len: LARGE, ..c };
    vec![
        case("content-length", b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello", Answer),
        case(
            "a content-length list of equal values",
            b"HTTP/1.1 200 OK\r\ncontent-length: 2, 2\r\n\r\nok",
            Answer,
        ),
        case(
            "chunked with an extension",
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3;a=b\r\nabc\r\n0\r\n\r\n",
            Answer,
        ),
        case(
            "chunked with trailers",
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ntrailer: x-t\r\n\r\n\
              2\r\nok\r\n0\r\nx-t: 1\r\nx-u: 2\r\n\r\n",
            Answer,
        ),
        case(
            "1xx before the final answer",
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\n\
              HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
            Answer,
        ),
        case("204", b"HTTP/1.1 204 No Content\r\nx-a: 1\r\n\r\n", Answer),
        case(
            "304 with a length",
            b"HTTP/1.1 304 Not Modified\r\ncontent-length: 9\r\n\r\n",
            Answer,
        ),
        head(case("HEAD, sized", b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n", Answer)),
        head(case(
            "HEAD, chunked",
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n",
            Answer,
        )),
        case("empty", b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n", Answer),
        case(
            "a body cut short",
            b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nshort",
            AnswerAndClose,
        ),
        case("close-delimited", b"HTTP/1.1 200 OK\r\n\r\nuntil the end", AnswerAndClose),
        case(
            "a transfer-encoding that is not chunked",
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\n\r\nraw",
            AnswerAndClose,
        ),
        case(
            "connection: close",
            b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\nok",
            Answer,
        ),
        case("HTTP/1.0", b"HTTP/1.0 200 OK\r\ncontent-length: 2\r\n\r\nok", Answer),
        case("closed without an answer", b"", AnswerAndClose),
        case("closed part way through the head", b"HTTP/1.1 200 OK\r\nx-a", AnswerAndClose),
        case(
            "conflicting content-lengths",
            b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\nok",
            Answer,
        ),
        case(
            "a bad chunk size",
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n",
            Answer,
        ),
        upload(case(
            "an early refusal, left open",
            b"HTTP/1.1 413 Payload Too Large\r\ncontent-length: 9\r\n\r\ntoo large",
            AnswerEarly,
        )),
        upload(case(
            "an early refusal, then closed",
            b"HTTP/1.1 413 Payload Too Large\r\ncontent-length: 9\r\n\r\ntoo large",
            AnswerEarlyAndClose,
        )),
        upload(case(
            "an early whole 200",
            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
            AnswerEarly,
        )),
    ]
}

/// `c` through this client and through hyper's, each on a connection of its own.
async fn both(c: &Case) -> (Got, Got) {
    let addr = canned(c.answer, c.then).await;
    let run = async {
        tokio::join!(ours(addr, &c.method, c.body_len), hypers(addr, &c.method, c.body_len))
    };
    tokio::time::timeout(Duration::from_secs(10), run)
        .await
        .unwrap_or_else(|_| panic!("{}: stalled", c.name))
}

#[tokio::test]
async fn answers_read_as_hyper_reads_them() {
    let mut differ = Vec::new();
    for c in cases() {
        let (ours, hypers) = both(&c).await;
        if ours != hypers {
            differ.push(format!("{}:\n  ours:  {ours:?}\n  hyper: {hypers:?}", c.name));
        }
    }
    assert!(differ.is_empty(), "this client and hyper's differ:\n{}", differ.join("\n"));
}

#[tokio::test]
async fn where_this_client_parts_from_hyper() {
    // Both framings: read as chunked by both. hyper keeps the `content-length` and the
    // connection; this client drops the length, which would frame the client's
    // connection wrongly if passed on, and closes the connection, as RFC 9112 6.3 asks
    // of a message it cannot trust.
    let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ntransfer-encoding: chunked\r\n\r\n\
                   5\r\nhello\r\n0\r\n\r\n";
    let (ours, hypers) = both(&case("chunked and content-length", answer, Then::Answer)).await;
    let te = ("transfer-encoding".to_owned(), "chunked".to_owned());
    assert_eq!((&ours.headers, ours.reusable), (&vec![te.clone()], false), "{ours:?}");
    let length = ("content-length".to_owned(), "2".to_owned());
    assert_eq!((&hypers.headers, hypers.reusable), (&vec![length, te], true), "{hypers:?}");
    assert_eq!((ours.data, ours.failed), (hypers.data, hypers.failed));

    // A protocol switch the request did not ask for (it never carries `upgrade`): an
    // invalid answer here; hyper hands the 101 to its caller, for an upgrade.
    let answer = b"HTTP/1.1 101 Switching Protocols\r\nupgrade: x\r\nconnection: upgrade\r\n\r\n";
    let (ours, hypers) = both(&case("101", answer, Then::Answer)).await;
    assert_eq!(ours, Got::failed());
    assert_eq!((hypers.status, hypers.failed), (Some(101), None), "{hypers:?}");
}
