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

mod against_hyper;
