//! Active health checks: every `intervalSeconds`, a GET of `path` on every endpoint, with
//! `timeoutSeconds`; `unhealthyThreshold` failures in a row take an endpoint out of balancing,
//! `healthyThreshold` passes in a row bring it back. The breaker handles failures seen in
//! traffic; health checks find endpoints that fail without traffic and confirm recovery.
//!
//! With `path: /grpc.health.v1.Health/Check` the check is a gRPC health call over HTTP/2
//! instead ([`grpc`]), passing when the endpoint answers `SERVING`.
//!
//! An endpoint that turns unhealthy wakes the tries waiting on it, which go elsewhere. The
//! stall detector ([`crate::stall`]) sends the same probe out of turn to an endpoint that has
//! gone quiet with requests in flight.

pub mod grpc;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::future::join_all;
use http::{Request, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::endpoint::Endpoint;
use crate::relay::{self, Upstream};
use crate::routes::Table;

/// Runs health checks forever over whatever endpoints the table holds.
pub async fn run(table: Arc<Table>) {
    let clients = Clients::new();
    loop {
        let routes = table.load();
        let Some(hc) = routes.config.health_check.clone() else {
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        };
        let interval = Duration::from_secs(u64::try_from(hc.interval_seconds).unwrap_or(1).max(1));
        let timeout = Duration::from_secs(u64::try_from(hc.timeout_seconds).unwrap_or(1).max(1));
        let (up, down) = (
            u32::try_from(hc.healthy_threshold).unwrap_or(1),
            u32::try_from(hc.unhealthy_threshold).unwrap_or(1),
        );
        let checks = routes.endpoints.iter().map(|ep| {
            let client = &clients;
            let path = hc.path.as_str();
            async move {
                let ok = probe(client, ep, path, timeout).await;
                if let Some(healthy) = ep.record_health(ok, up, down) {
                    if healthy {
                        tracing::info!(endpoint = %ep.address, "health checks pass again");
                    } else {
                        tracing::warn!(endpoint = %ep.address, "health checks fail: endpoint taken out");
                    }
                }
            }
        });
        // The next round starts one interval after this one started, however long it took.
        let next = tokio::time::Instant::now() + interval;
        join_all(checks).await;
        tokio::time::sleep_until(next).await;
    }
}

/// The probes' clients: HTTP/1.1 for paths, HTTP/2 for gRPC health.
pub(crate) struct Clients {
    http: Client<HttpConnector, Upstream>,
    h2: Client<HttpConnector, Upstream>,
}

impl Clients {
    pub(crate) fn new() -> Self {
        let mut conn = HttpConnector::new();
        conn.set_nodelay(true);
        conn.set_connect_timeout(Some(Duration::from_secs(1)));
        let http = Client::builder(TokioExecutor::new()).build(conn.clone());
        let h2 = Client::builder(TokioExecutor::new()).http2_only(true).build(conn);
        Self { http, h2 }
    }
}

/// Whether `ep` answers `path` (2xx, or `SERVING` for gRPC health) within `timeout`.
pub(crate) async fn probe(clients: &Clients, ep: &Endpoint, path: &str, timeout: Duration) -> bool {
    let Ok(uri) =
        Uri::builder().scheme("http").authority(ep.address.as_str()).path_and_query(path).build()
    else {
        return false;
    };
    if path == grpc::GRPC_HEALTH_PATH {
        let call = async {
            match clients.h2.request(grpc::request(uri)).await {
                Ok(resp) => grpc::serving(resp).await,
                Err(_) => false,
            }
        };
        return tokio::time::timeout(timeout, call).await.unwrap_or(false);
    }
    let client = &clients.http;
    let mut req = Request::new(relay::buffered(Bytes::new()));
    *req.uri_mut() = uri;
    match tokio::time::timeout(timeout, client.request(req)).await {
        Ok(Ok(resp)) => resp.status().is_success(),
        _ => false,
    }
}
