//! `/livez`, `/readyz` and `/metrics`, on the admin port or, without one, on the proxy port.

use std::sync::Arc;
use std::time::Instant;

use http::{Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

use crate::hold;
use crate::metrics::EndpointLabels;
use crate::proxy::local;
use crate::relay::Downstream;
use crate::routes::Table;

/// The admin endpoints.
pub struct Admin {
    registry: Registry,
    table: Arc<Table>,
}

impl std::fmt::Debug for Admin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admin").finish_non_exhaustive()
    }
}

impl Admin {
    /// Admin pages over `table`, rendering `registry`.
    pub fn new(registry: Registry, table: Arc<Table>) -> Arc<Self> {
        Arc::new(Self { registry, table })
    }

    /// The page for `path`, or `None` when it is not an admin path.
    pub fn serve(&self, path: &str) -> Option<Response<Downstream>> {
        match path {
            "/livez" => Some(local(StatusCode::OK, "ok\n")),
            "/readyz" => Some(self.readyz()),
            "/metrics" => Some(self.metrics()),
            _ => None,
        }
    }

    /// Ready with an endpoint to send to, or, when there is none at all, with requests held
    /// for one ([`crate::hold`]): a router of engines scaled to zero must still take the
    /// requests that wake them.
    fn readyz(&self) -> Response<Downstream> {
        let routes = self.table.load();
        let ready = routes.ready_endpoints(Instant::now());
        if ready > 0 {
            local(
                StatusCode::OK,
                format!("ok: {ready} of {} endpoints ready\n", routes.endpoints.len()),
            )
        } else if routes.weighted == 0 && hold::Bounds::from(&routes.config.hold).enabled() {
            local(StatusCode::OK, "ok: no endpoint yet; requests are held until one is ready\n")
        } else {
            local(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("no endpoint ready (of {})\n", routes.endpoints.len()),
            )
        }
    }

    fn metrics(&self) -> Response<Downstream> {
        let routes = self.table.load();
        let m = self.table.metrics();
        let now = Instant::now();
        for e in &routes.endpoints {
            let l = EndpointLabels { endpoint: e.address.clone(), engine: e.engine.clone() };
            m.in_flight.get_or_create(&l).set(i64::try_from(e.in_flight()).unwrap_or(i64::MAX));
            let state = match e.breaker_state(now) {
                blaze_api::router::BreakerState::Closed => 0,
                blaze_api::router::BreakerState::Open => 1,
                blaze_api::router::BreakerState::HalfOpen => 2,
            };
            m.breaker_state.get_or_create(&l).set(state);
            m.healthy.get_or_create(&l).set(i64::from(e.is_healthy()));
            m.weight.get_or_create(&l).set(i64::from(e.weight()));
        }
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            return local(StatusCode::INTERNAL_SERVER_ERROR, format!("encoding metrics: {e}\n"));
        }
        let mut r = local(StatusCode::OK, out);
        r.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static(
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            ),
        );
        r
    }
}

/// Serves the admin pages on their own listener.
pub async fn serve_admin(listener: TcpListener, admin: Arc<Admin>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        let admin = admin.clone();
        let svc = hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
            let resp = admin
                .serve(req.uri().path())
                .unwrap_or_else(|| local(StatusCode::NOT_FOUND, "not found\n"));
            async move { Ok::<_, std::convert::Infallible>(resp) }
        });
        tokio::spawn(async move {
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            let _ = builder.serve_connection(TokioIo::new(stream), svc).await;
        });
    }
}
