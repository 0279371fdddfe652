use std::net::SocketAddr;

use http_body::Body as _;
use http_body_util::BodyExt as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpListener;

use super::*;
use crate::proxy::headers::prepare_request;

/// An endpoint that answers each request on one connection with the next of `answers`,
/// then closes (`close`) or waits for the client to; it returns the requests it read.
async fn endpoint(
    answers: Vec<&'static [u8]>,
    close: bool,
) -> (SocketAddr, tokio::task::JoinHandle<Vec<u8>>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let (mut s, _) = l.accept().await.unwrap();
        let mut seen = Vec::new();
        for answer in answers {
            let start = seen.len();
            // Requests here have no body: a head ends the request.
            while !seen[start..].windows(4).any(|w| w == b"\r\n\r\n") {
                let mut chunk = [0u8; 1024];
                let n = s.read(&mut chunk).await.unwrap();
                assert!(n > 0, "client closed early");
                seen.extend_from_slice(&chunk[..n]);
            }
            s.write_all(answer).await.unwrap();
        }
        let mut rest = Vec::new();
        if !close {
            let _ = s.read_to_end(&mut rest).await;
        }
        seen
    });
    (addr, task)
}

fn get(path: &str, host: Option<&str>) -> (Parts, Forwarding) {
    let mut b = http::Request::get(path);
    if let Some(h) = host {
        b = b.header("host", h);
    }
    let (mut parts, ()) = b.body(()).unwrap().into_parts();
    let fwd = prepare_request(&mut parts.headers, "10.0.0.9".parse().unwrap());
    (parts, fwd)
}

async fn exchange(
    conn: &mut Option<Conn>,
    addr: SocketAddr,
    parts: &Parts,
    fwd: &Forwarding,
) -> Response<ResponseBody> {
    let mut c = match conn.take() {
        Some(c) => c,
        None => Conn::new(TcpStream::connect(addr).await.unwrap()),
    };
    c.write_request(parts, fwd, &addr.to_string(), &Bytes::new()).await.unwrap();
    c.read_response(&parts.method).await.unwrap()
}

/// Reads a body to the end: its data, its trailers, and the connection if reusable.
async fn drain(mut body: ResponseBody) -> (Vec<u8>, Option<HeaderMap>, Option<Conn>) {
    let (mut data, mut trailers) = (Vec::new(), None);
    while let Some(frame) = body.frame().await {
        let frame = frame.unwrap();
        match frame.into_data() {
            Ok(d) => data.extend_from_slice(&d),
            Err(f) => trailers = f.into_trailers().ok(),
        }
    }
    (data, trailers, body.take_reusable())
}

#[tokio::test]
async fn sized_and_chunked_bodies_come_through_and_the_connection_is_reused() {
    let (addr, server) = endpoint(vec![
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 5\r\nx-a: 1\r\n\r\nhello",
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3;ext=1\r\nabc\r\n2\r\nde\r\n0\r\nx-t: 9\r\n\r\n",
        b"HTTP/1.1 204 No Content\r\n\r\n",
    ], false)
    .await;
    let (parts, fwd) = get("/a?b=1", Some("api.example"));
    let mut conn = None;
    let resp = exchange(&mut conn, addr, &parts, &fwd).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-a"], "1");
    assert_eq!(resp.body().size_hint().exact(), Some(5));
    let (data, trailers, c) = drain(resp.into_body()).await;
    assert_eq!((data.as_slice(), trailers), (b"hello".as_slice(), None));
    conn = Some(c.expect("reusable after a sized body"));

    let resp = exchange(&mut conn, addr, &parts, &fwd).await;
    let (data, trailers, c) = drain(resp.into_body()).await;
    assert_eq!(data, b"abcde");
    assert_eq!(trailers.expect("trailers")["x-t"], "9");
    conn = Some(c.expect("reusable after a chunked body"));

    let resp = exchange(&mut conn, addr, &parts, &fwd).await;
    assert_eq!(resp.status(), 204);
    assert!(resp.body().is_end_stream());
    let mut body = resp.into_body();
    assert!(body.take_reusable().is_some());
    drop(body);

    let seen = String::from_utf8(server.await.unwrap()).unwrap();
    let first = seen.split("\r\n\r\n").next().unwrap();
    let want = format!(
        "GET /a?b=1 HTTP/1.1\r\nhost: api.example\r\nx-forwarded-for: 10.0.0.9\r\n\
         x-forwarded-proto: http\r\nx-request-id: {}",
        fwd.request_id().to_str().unwrap()
    );
    assert_eq!(first, want);
    assert_eq!(seen.matches("GET /a?b=1").count(), 3);
}

#[tokio::test]
async fn close_delimited_and_closing_answers_are_not_reused() {
    let (addr, _server) = endpoint(
        vec![b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\nok"],
        true,
    )
    .await;
    let (parts, fwd) = get("http://api.example/x", None);
    let resp = exchange(&mut None, addr, &parts, &fwd).await;
    let (data, _, c) = drain(resp.into_body()).await;
    assert_eq!(data, b"ok");
    assert!(c.is_none(), "the endpoint said close");

    let (addr, server) = endpoint(vec![b"HTTP/1.1 200 OK\r\n\r\nuntil the end"], true).await;
    let resp = exchange(&mut None, addr, &parts, &fwd).await;
    assert_eq!(resp.body().size_hint().exact(), None);
    let (data, _, c) = drain(resp.into_body()).await;
    assert_eq!(data, b"until the end");
    assert!(c.is_none());
    // Absolute-form without a host: the host comes from the URI.
    assert!(String::from_utf8(server.await.unwrap()).unwrap().contains("host: api.example\r\n"));
}

#[tokio::test]
async fn a_short_body_is_an_error_and_a_closed_idle_connection_is_not_reusable() {
    let (addr, _server) =
        endpoint(vec![b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nshort"], true).await;
    let (parts, fwd) = get("/", Some("h"));
    let resp = exchange(&mut None, addr, &parts, &fwd).await;
    let mut body = resp.into_body();
    assert_eq!(body.frame().await.unwrap().unwrap().into_data().unwrap(), "short");
    assert!(matches!(body.frame().await, Some(Err(Error::Read(_)))));
    assert!(body.take_reusable().is_none());

    // The endpoint answers once, then closes while the connection idles: it must not go
    // back to a pool.
    let (addr, server) =
        endpoint(vec![b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"], false).await;
    let resp = exchange(&mut None, addr, &parts, &fwd).await;
    let mut conn = resp.into_body().take_reusable().expect("empty body, fresh connection");
    server.abort();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while conn.is_reusable() {
        assert!(std::time::Instant::now() < deadline, "the close never showed");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn malformed_answers_are_errors() {
    for answer in [
        b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\nx".as_slice(),
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n".as_slice(),
        b"SMTP ready\r\n\r\n".as_slice(),
        b"HTTP/1.0 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n".as_slice(),
    ] {
        let (addr, _server) = endpoint(vec![answer], true).await;
        let (parts, fwd) = get("/", Some("h"));
        let mut c = Conn::new(TcpStream::connect(addr).await.unwrap());
        c.write_request(&parts, &fwd, "h", &Bytes::new()).await.unwrap();
        let failed = match c.read_response(&parts.method).await {
            Err(_) => true,
            Ok(resp) => resp.into_body().collect().await.is_err(),
        };
        assert!(failed, "{}", String::from_utf8_lossy(answer));
    }
}

#[tokio::test]
async fn a_chunked_answer_that_also_claims_a_length_loses_the_length_and_its_connection() {
    let (addr, _server) = endpoint(
        vec![b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"],
        true,
    )
    .await;
    let (parts, fwd) = get("/", Some("h"));
    let resp = exchange(&mut None, addr, &parts, &fwd).await;
    // Passed on, the length would frame the client's connection at 2 bytes.
    assert!(resp.headers().get("content-length").is_none(), "{:?}", resp.headers());
    let (data, _, c) = drain(resp.into_body()).await;
    assert_eq!(data, b"hello");
    assert!(c.is_none(), "a message with both framings is read, then its connection closed");
}

#[test]
fn expect_continue_is_answered_here_not_passed_on() {
    let b = http::Request::post("/v1/completions").header("host", "h");
    let (mut parts, ()) = b.header("expect", "100-continue").body(()).unwrap().into_parts();
    let fwd = prepare_request(&mut parts.headers, "10.0.0.9".parse().unwrap());
    let mut out = Vec::new();
    encode(&parts, &fwd, "e:1", 3, &mut out);
    let text = String::from_utf8(out).unwrap();
    assert!(!text.contains("expect"), "{text}");
}

#[test]
fn a_buffered_body_replaces_the_clients_length() {
    let mut b = http::Request::post("/echo").header("content-length", "3").header("host", "h");
    b = b.header("x-forwarded-for", "1.2.3.4");
    let (mut parts, ()) = b.body(()).unwrap().into_parts();
    let fwd = prepare_request(&mut parts.headers, "10.0.0.9".parse().unwrap());
    let mut out = Vec::new();
    encode(&parts, &fwd, "e:1", 3, &mut out);
    let text = String::from_utf8(out).unwrap();
    assert!(text.starts_with("POST /echo HTTP/1.1\r\nhost: h\r\n"), "{text}");
    assert_eq!(text.matches("content-length").count(), 1, "{text}");
    assert!(text.contains("x-forwarded-for: 1.2.3.4, 10.0.0.9\r\n"), "{text}");
    assert!(text.ends_with("content-length: 3\r\n\r\n"), "{text}");
    let mut n = Vec::new();
    push_decimal(&mut n, 1_048_576);
    assert_eq!(n, b"1048576");
    assert_eq!(decimal(b"0"), Some(0));
    assert_eq!(decimal(b"18446744073709551615"), Some(u64::MAX));
    for bad in [b"".as_slice(), b"18446744073709551616", b"+1", b"1 2", b"-0"] {
        assert_eq!(decimal(bad), None);
    }
}

/// An endpoint that reads one request head, sends `answer` at once without reading the body,
/// then closes (`close`: the unread body makes that a reset) or keeps the connection open
/// and reads nothing more.
async fn early_answer(answer: &'static [u8], close: bool) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut s, _) = l.accept().await.unwrap();
        let mut seen = Vec::new();
        while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
            let mut chunk = [0u8; 1024];
            let n = s.read(&mut chunk).await.unwrap();
            seen.extend_from_slice(&chunk[..n]);
        }
        s.write_all(answer).await.unwrap();
        if close {
            drop(s);
        } else {
            tokio::time::sleep(std::time::Duration::from_secs(60)).await;
        }
    });
    addr
}

#[tokio::test]
async fn an_answer_before_the_whole_body_is_passed_on_and_ends_the_upload() {
    // Far more than the socket buffers hold while the endpoint reads nothing.
    let body = Bytes::from(vec![b'x'; 8 << 20]);
    let b = http::Request::post("/v1/completions").header("host", "h");
    let (mut parts, ()) = b.body(()).unwrap().into_parts();
    let fwd = prepare_request(&mut parts.headers, "10.0.0.9".parse().unwrap());
    let too_large: &[u8] = b"HTTP/1.1 413 Payload Too Large\r\ncontent-length: 9\r\n\r\ntoo large";
    // A whole 2xx answer: the endpoint is done with the request and reads no more.
    let whole: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
    for (answer, close) in [(too_large, false), (too_large, true), (whole, false)] {
        let addr = early_answer(answer, close).await;
        let mut c = Conn::new(TcpStream::connect(addr).await.unwrap());
        let exchange = async {
            c.write_request(&parts, &fwd, "h", &body).await?;
            c.read_response(&parts.method).await
        };
        let resp = tokio::time::timeout(std::time::Duration::from_secs(10), exchange)
            .await
            .unwrap_or_else(|_| panic!("close {close}: still writing after the answer"))
            .unwrap_or_else(|e| panic!("close {close}: {e}"));
        let (status, want) = (resp.status(), answer.rsplit(|b| *b == b'\n').next().unwrap());
        assert!(answer.starts_with(format!("HTTP/1.1 {}", status.as_u16()).as_bytes()));
        let (data, _, conn) = drain(resp.into_body()).await;
        assert_eq!(data, want, "close {close}");
        assert!(conn.is_none(), "close {close}: the rest of the body would poison the connection");
    }
}

#[tokio::test]
async fn a_close_before_any_answer_is_told_apart_from_one_part_way() {
    let (parts, fwd) = get("/", Some("h"));
    let (addr, _server) = endpoint(vec![b"HTTP/1.1 200 OK\r\n"], true).await;
    let mut c = Conn::new(TcpStream::connect(addr).await.unwrap());
    c.write_request(&parts, &fwd, "h", &Bytes::new()).await.unwrap();
    let e = c.read_response(&parts.method).await.unwrap_err();
    assert!(matches!(e, Error::Read(_)), "{e:?}");

    let (addr, _server) = endpoint(vec![b""], true).await;
    let mut c = Conn::new(TcpStream::connect(addr).await.unwrap());
    c.write_request(&parts, &fwd, "h", &Bytes::new()).await.unwrap();
    let e = c.read_response(&parts.method).await.unwrap_err();
    assert!(matches!(e, Error::Closed(_)), "{e:?}");
}

#[tokio::test]
async fn an_endpoint_streaming_its_answer_while_it_reads_gets_the_whole_body() {
    // Echoed as it arrives behind an immediate 200; small socket buffers on both sides, so
    // the body takes many writes and the answer starts coming while they go on.
    let n = 1 << 20;
    let small = 64 * 1024;
    let listener = tokio::net::TcpSocket::new_v4().unwrap();
    listener.set_recv_buffer_size(small).unwrap();
    listener.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let l = listener.listen(16).unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut s, _) = l.accept().await.unwrap();
        let mut seen = Vec::new();
        let body_start = loop {
            let mut chunk = [0u8; 4096];
            let k = s.read(&mut chunk).await.unwrap();
            seen.extend_from_slice(&chunk[..k]);
            if let Some(at) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
        };
        s.write_all(format!("HTTP/1.1 200 OK\r\ncontent-length: {n}\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut echoed = seen.len() - body_start;
        s.write_all(&seen[body_start..]).await.unwrap();
        while echoed < n {
            let mut chunk = vec![0u8; 64 * 1024];
            let k = s.read(&mut chunk).await.unwrap();
            assert!(k > 0, "the client stopped sending the body");
            s.write_all(&chunk[..k]).await.unwrap();
            echoed += k;
        }
        let _ = s.read(&mut [0u8; 1]).await;
    });
    let body = Bytes::from(vec![b'y'; n]);
    let b = http::Request::post("/echo").header("host", "h");
    let (mut parts, ()) = b.body(()).unwrap().into_parts();
    let fwd = prepare_request(&mut parts.headers, "10.0.0.9".parse().unwrap());
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_send_buffer_size(small).unwrap();
    let mut c = Conn::new(socket.connect(addr).await.unwrap());
    let exchange = async {
        c.write_request(&parts, &fwd, "h", &body).await.unwrap();
        assert!(!c.buf.is_empty(), "the answer came while the body was being written");
        let resp = c.read_response(&parts.method).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        drain(resp.into_body()).await
    };
    let (data, _, conn) = tokio::time::timeout(std::time::Duration::from_secs(20), exchange)
        .await
        .expect("the exchange stalled");
    assert_eq!(data.len(), n);
    assert!(data.iter().all(|b| *b == b'y'));
    assert!(conn.is_some(), "a complete exchange leaves the connection reusable");
}

/// The same request and canned answer through this client and through hyper's
/// (`hyper::client::conn::http1`), compared as a caller sees them.
mod against_hyper {
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
        let answer =
            b"HTTP/1.1 101 Switching Protocols\r\nupgrade: x\r\nconnection: upgrade\r\n\r\n";
        let (ours, hypers) = both(&case("101", answer, Then::Answer)).await;
        assert_eq!(ours, Got::failed());
        assert_eq!((hypers.status, hypers.failed), (Some(101), None), "{hypers:?}");
    }
}
