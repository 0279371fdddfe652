//! The accept loop: HTTP/1.1 and HTTP/2 on one port, in cleartext (HTTP/2 by prior
//! knowledge) or over TLS (HTTP/2 or HTTP/1.1 as ALPN agrees; without ALPN, by the client's
//! first bytes). Cleartext connections start on the router's own HTTP/1.1 server ([`h1`]),
//! which hands anything but the common case to hyper's; TLS connections are hyper's.

mod h1;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use std::pin::Pin;
use std::task::{Context, Poll};

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use pin_project_lite::pin_project;
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::Proxy;
use crate::relay::Downstream;
use crate::tls::{HANDSHAKE_TIMEOUT, Tls};

/// Time a client has to send a request's headers (slowloris protection); bodies then follow
/// the idle timeout.
pub const CLIENT_HEADER_TIMEOUT: Duration = Duration::from_secs(30);

/// Which server answers HTTP/1.1 on cleartext connections.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Http1Server {
    /// The router's own for the common case, hyper's for the rest.
    #[default]
    Router,
    /// hyper's for everything (for comparison; slower).
    Hyper,
}

/// Serves `listener` (over TLS when `tls` is given) until `shutdown` completes, then stops
/// accepting and waits up to `drain` for open connections (and their streams) to finish.
pub async fn serve(
    listener: TcpListener,
    proxy: Arc<Proxy>,
    tls: Option<Arc<Tls>>,
    shutdown: impl Future<Output = ()>,
    drain: Duration,
    http1: Http1Server,
) {
    let (graceful, _) = watch::channel(());
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // One write per response (head and small body copied together), as a proxy answering
    // short requests mostly sends; large bodies still go out as they come.
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(CLIENT_HEADER_TIMEOUT)
        .writev(false);
    builder.http2().timer(TokioTimer::new()).adaptive_window(true);
    let builder = Arc::new(builder);
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let (proxy, builder, signal) = (proxy.clone(), builder.clone(), graceful.subscribe());
        let Some(tls) = &tls else {
            tokio::spawn(async move {
                let rest = match http1 {
                    Http1Server::Router => {
                        match h1::serve(stream, peer, proxy.clone(), signal.clone()).await {
                            Some(rest) => rest,
                            None => return,
                        }
                    }
                    Http1Server::Hyper => h1::Rewind::new(stream),
                };
                let conn =
                    builder.serve_connection(TokioIo::new(rest), service(proxy, peer, false));
                run(Graceful::new(conn, signal, |c: Pin<&mut _>| {
                    auto::Connection::graceful_shutdown(c)
                }))
                .await;
            });
            continue;
        };
        let acceptor = tls.acceptor();
        tokio::spawn(async move {
            let stream =
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => return tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                    Err(_) => return tracing::debug!(%peer, "TLS handshake timed out"),
                };
            // ALPN decides the protocol; without it, hyper tells by the first bytes.
            let builder = match stream.get_ref().1.alpn_protocol() {
                Some(b"h2") => (*builder).clone().http2_only(),
                Some(b"http/1.1") => (*builder).clone().http1_only(),
                _ => (*builder).clone(),
            };
            let conn = builder.serve_connection(TokioIo::new(stream), service(proxy, peer, true));
            run(Graceful::new(conn, signal, |c: Pin<&mut _>| {
                auto::Connection::graceful_shutdown(c)
            }))
            .await;
        });
    }
    tracing::info!("draining connections");
    let _ = graceful.send(());
    if tokio::time::timeout(drain, graceful.closed()).await.is_err() {
        tracing::warn!("connections still open after the drain time");
    }
}

/// The proxy as a hyper service for connections from `peer` (over TLS when `https`).
fn service(
    proxy: Arc<Proxy>,
    peer: SocketAddr,
    https: bool,
) -> impl hyper::service::Service<
    Request<Incoming>,
    Response = Response<Downstream>,
    Error = Infallible,
    Future = impl Future<Output = Result<Response<Downstream>, Infallible>> + Send + 'static,
> + Clone
+ Send
+ 'static {
    hyper::service::service_fn(move |req| {
        let proxy = proxy.clone();
        async move { Ok::<_, Infallible>(proxy.handle(req, peer, https).await) }
    })
}

/// Drives one client connection to its end, logging how it ended.
async fn run<E: std::fmt::Display>(conn: impl Future<Output = Result<(), E>>) {
    if let Err(e) = conn.await {
        tracing::debug!(error = %e, "client connection ended with an error");
    }
}

pin_project! {
    /// A client connection that starts a graceful shutdown once the serve loop stops. It
    /// registers for the signal on its first poll and afterwards only compares a version
    /// number (hyper-util's watcher registers again on every poll, several times a request).
    struct Graceful<C, S, F> {
        #[pin]
        conn: C,
        #[pin]
        signal: S,
        rx: watch::Receiver<()>,
        registered: bool,
        shutdown: Option<F>,
    }
}

impl<C, F> Graceful<C, std::pin::Pin<Box<dyn Future<Output = ()> + Send>>, F> {
    fn new(conn: C, rx: watch::Receiver<()>, shutdown: F) -> Self {
        let mut waiting = rx.clone();
        let signal = Box::pin(async move {
            let _ = waiting.changed().await;
        });
        Self { conn, signal, rx, registered: false, shutdown: Some(shutdown) }
    }
}

impl<C: Future, S: Future<Output = ()>, F: FnOnce(Pin<&mut C>)> Future for Graceful<C, S, F> {
    type Output = C::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<C::Output> {
        let mut this = self.project();
        if this.shutdown.is_some() {
            let stop = if *this.registered {
                // A closed channel stops connections too, as hyper-util's watcher does.
                this.rx.has_changed().unwrap_or(true)
            } else {
                *this.registered = true;
                this.signal.as_mut().poll(cx).is_ready()
            };
            if stop && let Some(shutdown) = this.shutdown.take() {
                shutdown(this.conn.as_mut());
            }
        }
        this.conn.poll(cx)
    }
}
