//! `blaze-test-upstream`: a small backend for the router's integration tests and benchmark.
//! HTTP/1.1 and HTTP/2 (prior knowledge) on one port.
//!
//! - `GET /` : `hello from NAME` (the benchmark's request)
//! - `GET /readyz` : 200, or 503 after `POST /ready/no` (200 again after `POST /ready/yes`)
//! - `GET /connections` : how many connections this upstream has accepted
//! - `POST /grpc.health.v1.Health/Check` (HTTP/2): gRPC health, `SERVING` until
//!   `POST /grpc-health/not-serving`, again after `POST /grpc-health/serving`
//! - `GET /headers` : the request's headers, one `name: value` per line
//! - `POST /echo` : the request body back
//! - `GET /status/CODE` : an empty response with that status
//! - `GET /slow/MS` : `slow from NAME` after MS milliseconds
//! - `GET /sse/N/MS` : N server-sent events, MS milliseconds apart (with `--stall-streams`,
//!   the headers and then nothing, as from a worker wedged before its first token)
//! - `GET /late/MS` : an event stream whose headers come at once and whose one event,
//!   `data: NAME late`, comes MS milliseconds later
//! - `POST /grpc/stream/N/MS` (HTTP/2): a gRPC server stream of N messages MS apart, ending
//!   with `grpc-status: 0` in the trailers; each message is `NAME:i`.
//! - `POST /inference.GRPCInferenceService/METHOD` (HTTP/2): a unary gRPC answer whose one
//!   message is `NAME:` and then the request's message, with `grpc-status: 0` in the trailers

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use clap::Parser;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};

/// A test backend.
#[derive(Parser, Debug)]
struct Args {
    /// Address to listen on; port 0 picks one. The bound address is printed on stdout.
    #[arg(long, env = "BLAZE_TEST_UPSTREAM_LISTEN", default_value = "127.0.0.1:0")]
    listen: String,
    /// Name put in responses.
    #[arg(long, env = "BLAZE_TEST_UPSTREAM_NAME", default_value = "upstream")]
    name: String,
    /// Runtime worker threads.
    #[arg(long, env = "BLAZE_TEST_UPSTREAM_THREADS", default_value_t = 1)]
    threads: usize,
    /// `/sse/...` streams send their headers and then nothing.
    #[arg(long, env = "BLAZE_TEST_UPSTREAM_STALL_STREAMS")]
    stall_streams: bool,
}

type Body = BoxBody<Bytes, Infallible>;

/// Connections accepted so far.
static CONNECTIONS: AtomicU64 = AtomicU64::new(0);
/// What the gRPC health service answers: 1 SERVING, 2 NOT_SERVING.
static GRPC_HEALTH: AtomicU64 = AtomicU64::new(1);
/// Whether `/readyz` answers 200.
static READY: AtomicBool = AtomicBool::new(true);
/// `--stall-streams`.
static STALL_STREAMS: AtomicBool = AtomicBool::new(false);

fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).boxed()
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads.max(1))
        .enable_all()
        .build()?
        .block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(&args.listen).await?;
    STALL_STREAMS.store(args.stall_streams, Ordering::Relaxed);
    println!("listening on {}", listener.local_addr()?);
    let name: &'static str = Box::leak(args.name.into_boxed_str());
    loop {
        let (stream, _) = listener.accept().await?;
        CONNECTIONS.fetch_add(1, Ordering::Relaxed);
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| handle(req, name));
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            let _ = builder.serve_connection(TokioIo::new(stream), svc).await;
        });
    }
}

async fn handle(req: Request<Incoming>, name: &'static str) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path().to_owned();
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let num = |i: usize| parts.get(i).and_then(|s| s.parse::<u64>().ok()).unwrap_or(0);
    let resp = match parts.first().copied().unwrap_or("") {
        "" => Response::new(full(format!("hello from {name}\n"))),
        "readyz" if READY.load(Ordering::Relaxed) => Response::new(full("ok\n")),
        "readyz" => {
            let mut r = Response::new(full("not ready\n"));
            *r.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
            r
        }
        "ready" => {
            READY.store(parts.get(1) == Some(&"yes"), Ordering::Relaxed);
            Response::new(full("ok\n"))
        }
        "connections" => Response::new(full(format!("{}\n", CONNECTIONS.load(Ordering::Relaxed)))),
        "headers" => Response::new(full(render(req.headers()))),
        "echo" => {
            let body = req.into_body().collect().await.map(|c| c.to_bytes()).unwrap_or_default();
            Response::new(full(body))
        }
        "status" => {
            let mut r = Response::new(full(""));
            *r.status_mut() = StatusCode::from_u16(u16::try_from(num(1)).unwrap_or(500))
                .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            r
        }
        "slow" => {
            tokio::time::sleep(Duration::from_millis(num(1))).await;
            Response::new(full(format!("slow from {name}\n")))
        }
        "sse" if STALL_STREAMS.load(Ordering::Relaxed) => event_stream(futures::stream::pending()),
        "sse" => sse(name, num(1), num(2)),
        "late" => {
            let ms = num(1);
            let late = futures::stream::once(async move {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                Ok(Frame::data(Bytes::from(format!("data: {name} late\n\n"))))
            });
            event_stream(late)
        }
        "grpc.health.v1.Health" => grpc_health(),
        "grpc-health" => {
            let serving = parts.get(1) == Some(&"serving");
            GRPC_HEALTH.store(if serving { 1 } else { 2 }, Ordering::Relaxed);
            Response::new(full("ok\n"))
        }
        "grpc" => grpc_stream(name, num(2), num(3)),
        "inference.GRPCInferenceService" => {
            let body = req.into_body().collect().await.map(|c| c.to_bytes()).unwrap_or_default();
            grpc_echo(name, body.get(5..).unwrap_or_default())
        }
        _ => {
            let mut r = Response::new(full("not found\n"));
            *r.status_mut() = StatusCode::NOT_FOUND;
            r
        }
    };
    Ok(resp)
}

fn render(h: &HeaderMap) -> String {
    h.iter().map(|(k, v)| format!("{k}: {}\n", v.to_str().unwrap_or("?"))).collect()
}

fn sse(name: &'static str, n: u64, ms: u64) -> Response<Body> {
    let stream = async_stream(
        n,
        ms,
        move |i| Frame::data(Bytes::from(format!("id: {i}\ndata: {name} {i}\n\n"))),
        None,
    );
    let mut r = Response::new(stream);
    r.headers_mut().insert("content-type", HeaderValue::from_static("text/event-stream"));
    r
}

/// An event stream of `frames`, its headers sent at once.
fn event_stream(
    frames: impl futures::Stream<Item = Result<Frame<Bytes>, Infallible>> + Send + Sync + 'static,
) -> Response<Body> {
    let mut r = Response::new(StreamBody::new(frames).boxed());
    r.headers_mut().insert("content-type", HeaderValue::from_static("text/event-stream"));
    r
}

fn grpc_health() -> Response<Body> {
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", HeaderValue::from_static("0"));
    let status = u8::try_from(GRPC_HEALTH.load(Ordering::Relaxed)).unwrap_or(0);
    // A HealthCheckResponse with field 1 (status), length-prefixed.
    let msg = Bytes::from(vec![0, 0, 0, 0, 2, 0x08, status]);
    let stream = async_stream(1, 0, move |_| Frame::data(msg.clone()), Some(trailers));
    let mut r = Response::new(stream);
    r.headers_mut().insert("content-type", HeaderValue::from_static("application/grpc"));
    r
}

fn grpc_stream(name: &'static str, n: u64, ms: u64) -> Response<Body> {
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", HeaderValue::from_static("0"));
    let stream = async_stream(
        n,
        ms,
        move |i| {
            let msg = format!("{name}:{i}");
            let mut b = BytesMut::with_capacity(5 + msg.len());
            b.put_u8(0);
            b.put_u32(u32::try_from(msg.len()).unwrap_or(0));
            b.put_slice(msg.as_bytes());
            Frame::data(b.freeze())
        },
        Some(trailers),
    );
    let mut r = Response::new(stream);
    r.headers_mut().insert("content-type", HeaderValue::from_static("application/grpc"));
    r
}

fn grpc_echo(name: &'static str, message: &[u8]) -> Response<Body> {
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", HeaderValue::from_static("0"));
    let mut b = BytesMut::with_capacity(5 + name.len() + 1 + message.len());
    b.put_u8(0);
    b.put_u32(u32::try_from(name.len() + 1 + message.len()).unwrap_or(0));
    b.put_slice(name.as_bytes());
    b.put_u8(b':');
    b.put_slice(message);
    let msg = b.freeze();
    let stream = async_stream(1, 0, move |_| Frame::data(msg.clone()), Some(trailers));
    let mut r = Response::new(stream);
    r.headers_mut().insert("content-type", HeaderValue::from_static("application/grpc"));
    r
}

fn async_stream(
    n: u64,
    ms: u64,
    frame: impl Fn(u64) -> Frame<Bytes> + Send + Sync + 'static,
    trailers: Option<HeaderMap>,
) -> Body {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, Infallible>>(4);
    tokio::spawn(async move {
        for i in 0..n {
            if i > 0 {
                tokio::time::sleep(Duration::from_millis(ms)).await;
            }
            if tx.send(Ok(frame(i))).await.is_err() {
                return;
            }
        }
        if let Some(t) = trailers {
            let _ = tx.send(Ok(Frame::trailers(t))).await;
        }
    });
    let stream =
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|f| (f, rx)) });
    StreamBody::new(stream).boxed()
}
