//! The router's own HTTP/1.1 server against hyper's (`--http1-server hyper`): two routers on
//! one routing document, in front of one scripted upstream whose framing the test controls,
//! get the same client bytes, and what comes back is compared as a client reads it (status,
//! headers but for `date` and `x-request-id` values, de-chunked body, trailers, whether the
//! connection stays open).

use crate::support::process as support;
use crate::support::raw_http;

use std::time::Duration;

use raw_http::{Canned, Conversation, RawClient, UpRequest, converse, scripted};
use support::*;

/// A chunked head.
const CHUNKED: &str = "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n";

/// The upstream's answer to each path: the framings a router must pass on.
fn script(req: &UpRequest) -> Canned {
    match req.path.as_str() {
        "/length" => {
            Canned::new("HTTP/1.1 200 OK\r\ncontent-length: 5\r\nx-up: 1\r\n\r\n", b"hello")
        }
        "/chunked" => Canned::new(CHUNKED, b"3;ext=1\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"),
        "/trailers" => Canned::new(
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ntrailer: x-checksum\r\n\r\n",
            b"4\r\nbody\r\n0\r\nx-checksum: 42\r\n\r\n",
        ),
        "/interim" => Canned::new(
            "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </a>; rel=preload\r\n\r\n\
             HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n",
            b"ok",
        ),
        "/no-content" => Canned::new("HTTP/1.1 204 No Content\r\nx-up: 1\r\n\r\n", b""),
        "/no-content-length" => {
            Canned::new("HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n", b"")
        }
        "/not-modified" => Canned::new(
            "HTTP/1.1 304 Not Modified\r\netag: \"v1\"\r\ncontent-length: 7\r\n\r\n",
            b"",
        ),
        "/empty" => Canned::new("HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n", b""),
        "/short" => Canned::closing("HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n", b"short"),
        "/eof" => Canned::closing("HTTP/1.1 200 OK\r\n\r\n", b"until the end"),
        "/slow" => Canned {
            head: CHUNKED.into(),
            parts: vec![
                b"1\r\na\r\n".to_vec(),
                b"1\r\nb\r\n".to_vec(),
                b"1\r\nc\r\n0\r\n\r\n".to_vec(),
            ],
            pause: Duration::from_millis(40),
            close: false,
        },
        "/echo" => {
            let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", req.body.len());
            Canned::new(&head, &req.body)
        }
        _ => Canned::new("HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n", b""),
    }
}

/// The router's own server and hyper's, in front of one scripted upstream.
struct Pair {
    own: Routed,
    hyper: Routed,
}

impl Pair {
    async fn start() -> Self {
        let up = scripted(script).await;
        // Every answer reaches the client as the upstream framed it: no health checks (the
        // upstream answers no probe), no retries and no breaker between.
        let routing = format!(
            "healthCheck: null\nslowStartSeconds: 0\nretries: {{attempts: 0}}\n\
             circuitBreaker: {{consecutiveFailures: 1000, failureRateThreshold: 1.0}}\n{}",
            endpoints_yaml(&[&up])
        );
        let (own, hyper) = tokio::join!(
            routed(&routing, &["--worker-threads", "1"]),
            routed(&routing, &["--worker-threads", "1", "--http1-server", "hyper"]),
        );
        Self { own, hyper }
    }

    /// The two routers' addresses: the router's own server's, then hyper's.
    fn addrs(&self) -> [&str; 2] {
        [&self.own.r.addr, &self.hyper.r.addr]
    }

    /// `input` to both, one response per entry of `methods` awaited: the router's own
    /// server's conversation and hyper's.
    async fn both(&self, input: &[u8], methods: &[&str]) -> (Conversation, Conversation) {
        tokio::join!(
            converse(&self.own.r.addr, input, methods),
            converse(&self.hyper.r.addr, input, methods)
        )
    }

    /// Each case's input to both, which must answer alike and in full; panics naming every
    /// case that differs. The conversations, in the order of `cases`.
    async fn alike(&self, cases: &[(&str, Vec<u8>, &[&str])]) -> Vec<Conversation> {
        let mut differ = Vec::new();
        let mut seen = Vec::new();
        for (case, input, methods) in cases {
            let (own, hyper) = self.both(input, methods).await;
            if own != hyper {
                differ.push(format!("{case}:\n  own:   {own:?}\n  hyper: {hyper:?}"));
            } else if own.responses.len() != methods.len() {
                differ.push(format!("{case}: answers missing from both: {own:?}"));
            }
            seen.push(own);
        }
        assert!(
            differ.is_empty(),
            "the router's own server and hyper's differ:\n{}",
            differ.join("\n")
        );
        seen
    }
}

fn get(path: &str, extra: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nhost: t\r\n{extra}\r\n").into_bytes()
}

fn post(body: &[u8], extra: &str) -> Vec<u8> {
    let head =
        format!("POST /echo HTTP/1.1\r\nhost: t\r\ncontent-length: {}\r\n{extra}\r\n", body.len());
    [head.as_bytes(), body].concat()
}

const GET: &[&str] = &["GET"];
const HEAD: &[&str] = &["HEAD"];
const POST: &[&str] = &["POST"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_are_framed_as_hyper_frames_them() {
    let p = Pair::start().await;
    let head = |path: &str| format!("HEAD {path} HTTP/1.1\r\nhost: t\r\n\r\n").into_bytes();
    p.alike(&[
        ("content-length", get("/length", ""), GET),
        ("chunked with an extension", get("/chunked", ""), GET),
        ("interim answers before the final one", get("/interim", ""), GET),
        ("204", get("/no-content", ""), GET),
        ("empty", get("/empty", ""), GET),
        ("a streamed chunked answer", get("/slow", ""), GET),
        ("a close-delimited answer", get("/eof", ""), GET),
        ("trailers, not asked for", get("/trailers", ""), GET),
        ("HEAD of a sized answer", head("/length"), HEAD),
        ("HEAD of a chunked answer", head("/chunked"), HEAD),
        ("HEAD of a close-delimited answer", head("/eof"), HEAD),
        ("HEAD of interim answers", head("/interim"), HEAD),
        ("connection: close", get("/length", "connection: close\r\n"), GET),
        ("connection: close, chunked", get("/chunked", "connection: close\r\n"), GET),
        ("connection: close, streamed", get("/slow", "connection: close\r\n"), GET),
        ("keep-alive, close", get("/length", "connection: keep-alive, close\r\n"), GET),
        ("HTTP/1.0", b"GET /chunked HTTP/1.0\r\nhost: t\r\n\r\n".to_vec(), GET),
        ("HTTP/1.0, close-delimited", b"GET /eof HTTP/1.0\r\n\r\n".to_vec(), GET),
        (
            "HTTP/1.0 keep-alive",
            b"GET /length HTTP/1.0\r\nconnection: keep-alive\r\n\r\n".to_vec(),
            GET,
        ),
        ("an upstream 404", get("/nope", ""), GET),
    ])
    .await;

    // The upstream's trailers to a client that asked for them (`te: trailers`): the router's
    // own server sends them; hyper's sends a trailer field only when the response's `trailer`
    // header names it, and the proxy drops `trailer` with the other hop-by-hop headers, so
    // hyper's sends none. Body and framing are the same.
    for te in ["te: trailers\r\n", "te: deflate, trailers\r\n"] {
        let (own, hyper) = p.both(&get("/trailers", te), GET).await;
        let (mut own_r, hyper_r) = (own.responses[0].clone(), &hyper.responses[0]);
        assert_eq!(own_r.trailers, [("x-checksum".to_owned(), "42".to_owned())], "{own:?}");
        assert!(hyper_r.trailers.is_empty(), "{hyper:?}");
        own_r.trailers.clear();
        assert_eq!((&own_r, own.closed), (hyper_r, hyper.closed), "{te}");
    }

    // A 304's `content-length` (that of the 200 it stands for): the router's own server
    // passes the upstream's on, hyper's drops it. RFC 9110 8.6 allows both; neither sends a
    // body.
    let (own, hyper) = p.both(&get("/not-modified", ""), GET).await;
    assert_eq!(own.responses[0].header("content-length").as_deref(), Some("7"), "{own:?}");
    assert_eq!(hyper.responses[0].header("content-length"), None, "{hyper:?}");
    let mut own_r = own.responses[0].clone();
    own_r.headers.remove("content-length");
    assert_eq!((&own_r, own.closed), (&hyper.responses[0], hyper.closed));

    // An upstream body shorter than its length: the router's own server sends what came and
    // closes, so the client sees the body cut short; hyper's drops the connection when the
    // body fails, and what it had buffered (here the head and the first bytes, read
    // together) may never go out. Both close, and neither passes a short body off as whole.
    let (own, hyper) = p.both(&get("/short", ""), GET).await;
    let own_r = &own.responses[0];
    assert_eq!(
        (own_r.status, own_r.body.as_slice(), own_r.complete),
        (200, b"short".as_slice(), false)
    );
    assert!(own.closed && hyper.closed, "{own:?} {hyper:?}");
    assert!(hyper.responses.iter().all(|r| !r.complete), "{hyper:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_are_read_as_hyper_reads_them() {
    let p = Pair::start().await;
    let hello = post(b"hello world", "");
    let pipelined = [
        get("/length", ""),
        get("/chunked", ""),
        hello.clone(),
        b"HEAD /length HTTP/1.1\r\nhost: t\r\n\r\n".to_vec(),
    ]
    .concat();
    let chunked = b"POST /echo HTTP/1.1\r\nhost: t\r\ntransfer-encoding: chunked\r\n\r\n\
                    5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
        .to_vec();
    let gzip_chunked =
        b"POST /echo HTTP/1.1\r\nhost: t\r\ntransfer-encoding: gzip, chunked\r\n\r\n\
                    2\r\nhi\r\n0\r\n\r\n"
            .to_vec();
    // Smuggling's classic: both framings. Read as chunked, and the connection closed.
    let both_framings = b"POST /echo HTTP/1.1\r\nhost: t\r\ncontent-length: 2\r\n\
                          transfer-encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n"
        .to_vec();
    // Past the size the router's own server buffers: hyper's takes the connection.
    let large = post(&vec![b'z'; 2 << 20], "");
    let seen = p
        .alike(&[
            ("a sized body", hello.clone(), POST),
            ("pipelined", pipelined, &["GET", "GET", "POST", "HEAD"]),
            ("a chunked body", chunked, POST),
            ("gzip, then chunked", gzip_chunked, POST),
            ("content-length and chunked", both_framings, POST),
            ("a body larger than the router buffers", large, POST),
            ("a body on a GET", [&b"GET"[..], &post(b"hi", "")[4..]].concat(), GET),
            (
                "expect: 100-continue, the body at once",
                post(b"hi", "expect: 100-continue\r\n"),
                POST,
            ),
            (
                // The second request is never answered.
                "connection: close, then more",
                [get("/length", "connection: close\r\n"), get("/chunked", "")].concat(),
                GET,
            ),
            ("absolute form", b"GET http://t/length HTTP/1.1\r\nhost: t\r\n\r\n".to_vec(), GET),
            ("OPTIONS *", b"OPTIONS * HTTP/1.1\r\nhost: t\r\n\r\n".to_vec(), &["OPTIONS"]),
            (
                "an upgrade asked for",
                get("/length", "connection: upgrade\r\nupgrade: websocket\r\n"),
                GET,
            ),
            ("no host", b"GET /length HTTP/1.1\r\n\r\n".to_vec(), GET),
            ("bare LF line ends", b"GET /length HTTP/1.1\nhost: t\n\n".to_vec(), GET),
            ("an empty line first", [b"\r\n".to_vec(), get("/length", "")].concat(), GET),
            (
                // hyper's server keeps an HTTP/1.0 connection only when the response says
                // `connection: keep-alive`, and the proxy drops that header: one answer.
                "HTTP/1.0 keep-alive, then HTTP/1.1",
                [
                    b"GET /length HTTP/1.0\r\nconnection: keep-alive\r\n\r\n".to_vec(),
                    get("/chunked", ""),
                ]
                .concat(),
                GET,
            ),
        ])
        .await;
    let bodies: Vec<&[u8]> = seen[1].responses.iter().map(|r| r.body.as_slice()).collect();
    assert_eq!(bodies, [b"hello".as_slice(), b"abcde", b"hello world", b""]);
    assert_eq!(seen[2].responses[0].body, b"hello world");
    assert!(seen[4].closed, "{:?}", seen[4]);
    assert_eq!(seen[5].responses[0].body.len(), 2 << 20);
    assert_eq!(seen[7].responses[0].interim, [100]);

    // A client that waits for `100 Continue` before its body.
    let mut answers = Vec::new();
    for addr in p.addrs() {
        let mut c = RawClient::connect(addr).await;
        let head = post(b"hi", "expect: 100-continue\r\n");
        c.send(&head[..head.len() - 2]).await;
        assert_eq!(c.interim().await, 100);
        c.send(b"hi").await;
        answers.push((c.response(false).await, c.closed().await));
    }
    assert_eq!(answers[0], answers[1], "expect, body after 100 Continue");
    assert_eq!(answers[0].0.as_ref().map(|r| r.body.as_slice()), Some(b"hi".as_slice()));

    // A `content-length` list of equal values: the router's own server takes it as the one
    // length, hyper's refuses it; RFC 9110 8.6 allows either. The endpoint gets one
    // `content-length` either way, written by the router.
    let (own, hyper) = p.both(&post_with_length(b"hi", "2, 2"), POST).await;
    assert_eq!(
        (own.responses[0].status, own.responses[0].body.as_slice(), own.closed),
        (200, b"hi".as_slice(), false)
    );
    assert_eq!((hyper.responses[0].status, hyper.closed), (400, true), "{hyper:?}");
}

/// A POST of `body` whose `content-length` value reads `value`.
fn post_with_length(body: &[u8], value: &str) -> Vec<u8> {
    let head = format!("POST /echo HTTP/1.1\r\nhost: t\r\ncontent-length: {value}\r\n\r\n");
    [head.as_bytes(), body].concat()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_heads_are_refused_and_the_connection_closed() {
    let p = Pair::start().await;
    let many: String = (0..101).map(|i| format!("x-h{i}: v\r\n")).collect();
    // Far over hyper's read buffer (about 400 KiB): a head of 500 KiB arriving in one read
    // was sometimes parsed whole.
    let huge = format!("x-big: {}\r\n", "a".repeat(4 * 1024 * 1024));
    let cases: &[(&str, Vec<u8>, u16)] = &[
        ("a header line without a colon", get("/length", "no colon here\r\n"), 400),
        ("a space before the colon", get("/length", "x-a : 1\r\n"), 400),
        ("a folded header line", get("/length", "x-a: 1\r\n 2\r\n"), 400),
        ("a bad version", b"GET /length HTTP/9.9\r\nhost: t\r\n\r\n".to_vec(), 400),
        ("two content-lengths", get("/length", "content-length: 1\r\ncontent-length: 2\r\n"), 400),
        ("a signed content-length", post_with_length(b"hi", "+2"), 400),
        (
            "a transfer-encoding that is not chunked",
            b"POST /echo HTTP/1.1\r\nhost: t\r\ntransfer-encoding: gzip\r\n\r\nhi".to_vec(),
            400,
        ),
        ("more than 100 headers", get("/length", &many), 431),
        ("a head over both servers' limits", get("/length", &huge), 431),
    ];
    let mut differ = Vec::new();
    for (case, input, status) in cases {
        let (own, hyper) = p.both(input, GET).await;
        // The answers' headers and bodies differ: the router's own server says why in a
        // short text body; hyper's sends an empty one. Status and the close are what a client
        // acts on.
        for (server, c) in [("own", &own), ("hyper", &hyper)] {
            let statuses: Vec<u16> = c.responses.iter().map(|r| r.status).collect();
            if (statuses.as_slice(), c.closed) != ([*status].as_slice(), true) {
                differ.push(format!("{case}: {server} answered {c:?}"));
            }
        }
    }
    assert!(differ.is_empty(), "not refused with the expected status:\n{}", differ.join("\n"));

    // A 100 KiB head: over the router's own server's limit (64 KiB, as for response heads)
    // and under hyper's (its read buffer, about 400 KiB).
    let input = get("/length", &format!("x-big: {}\r\n", "a".repeat(100 * 1024)));
    let (own, hyper) = p.both(&input, GET).await;
    assert_eq!((own.responses[0].status, own.closed), (431, true), "{own:?}");
    assert_eq!((hyper.responses[0].status, hyper.closed), (200, false), "{hyper:?}");
}

/// A client that closes its sending side while the upstream is still answering: both servers
/// take it as gone (no half-close), cancel the request and close without an answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_half_closes_gets_no_answer() {
    let p = Pair::start().await;
    let mut got = Vec::new();
    for addr in p.addrs() {
        let mut c = RawClient::connect(addr).await;
        c.send(&get("/slow", "")).await;
        c.shutdown_write().await;
        got.push(String::from_utf8_lossy(&c.until_closed().await).into_owned());
    }
    assert_eq!(got[0], got[1], "the router's own server (left) and hyper's (right) differ");
    assert_eq!(got[0], "");
}

/// The body of a request the router answers without reading it (an admin page here; a `401`
/// for a missing API key takes the same path) must be read past, not taken for the next
/// request: hyper's server does; the router's own answers the body as a request, so a client
/// (or a proxy in front that pools connections) can slip a request past it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_body_of_a_request_answered_without_reading_it_is_not_a_request() {
    let p = Pair::start().await;
    let inner = get("/length", "");
    let head = format!("GET /livez HTTP/1.1\r\nhost: t\r\ncontent-length: {}\r\n\r\n", inner.len());
    let input = [head.into_bytes(), inner, get("/empty", "")].concat();
    let seen = p.alike(&[("a body on an admin path", input, &["GET", "GET"])]).await;
    assert_eq!(seen[0].responses[1].header("content-length").as_deref(), Some("0"));
}

/// No `content-length` on a 204 (RFC 9110 8.6: a server must not send one), even when the
/// upstream sent it: hyper's server drops it; the router's own passes it on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_204_carries_no_content_length() {
    let p = Pair::start().await;
    let seen = p.alike(&[("204 with a length", get("/no-content-length", ""), GET)]).await;
    assert_eq!(seen[0].responses[0].header("content-length"), None);
}
