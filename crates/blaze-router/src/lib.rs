//! `blaze-router`: the data-plane proxy in front of Blaze inference workers.
//!
//! Every inference request passes through it. It proxies HTTP/1.1 and HTTP/2 (gRPC included;
//! in cleartext with HTTP/2 by prior knowledge, or over [`tls`] with ALPN choosing, the
//! certificate re-read when its files change) with bodies streamed both ways, picks an endpoint with one of the
//! [`balance`] strategies, ejects failing endpoints with per-endpoint circuit [`breaker`]s,
//! active [`health`] checks and a [`stall`] detector (an endpoint silent with requests in
//! flight is probed at once), and retries only what is safe to retry within a retry
//! [`budget`]. A response is handed on once its first body byte has come, so until then a
//! request whose endpoint is ejected is sent to another. A request counts as in flight until
//! its response body ends, so a long token stream weighs on its endpoint for as long as it
//! runs. With no endpoint at all, requests are held until a reload brings one ([`hold`]).
//!
//! # Threads and connections
//!
//! `--worker-threads N` (default: one per CPU) runs N single-threaded runtimes that accept
//! from one shared listener, as HAProxy's `nbthread` does. Each thread keeps its own idle
//! HTTP/1.1 connections to endpoints (`proxy::pool`), so a request and the endpoint connection
//! it uses are driven by the same thread: no lock and no cross-thread wake-up on the request
//! path. A request whose body is in memory (all but large or unsized uploads) is written to its
//! endpoint connection and answered on it by the request's own task (`proxy::h1`, a small
//! HTTP/1.1 client): no connection task, no channel between tasks. Streamed request bodies go
//! through hyper's HTTP/1.1 client on connections with a task of their own. A connection goes
//! back to its thread's pool once the response body has been read to the end. HTTP/2 (gRPC)
//! requests share multiplexed connections through hyper's pooling client across threads.
//! Configuration watching, health checks, the stall detector and the admin port run on the
//! first thread.
//!
//! # Performance
//!
//! `make bench-router` (`blaze-router-bench`) runs the router and HAProxy side by side over
//! four upstream processes under the same `wrk` load: both proxies pinned to the same CPU,
//! `wrk` and the upstreams to the others, the targets taking turns over `--rounds` rounds (5
//! by default). It prints each target's median throughput and latency, the median of the
//! per-round router/HAProxy ratios, and each proxy's CPU time per request (user and system,
//! from `/proc`).
//!
//! On the 2-core development machine (one thread each, `wrk -t1 -c32`, 10 s runs, quiet
//! machine) two runs gave router/HAProxy throughput ratios of 0.976 and 1.058 (router 54,403
//! and 52,866 req/s, HAProxy 55,714 and 49,977), added p99 over direct equal or lower (0.54
//! against 0.54 ms, 0.61 against 0.80 ms), and CPU per request 2% and 9% below HAProxy's
//! (16.6 against 17.0 us, 17.3 against 19.1 us). There the CPU running `wrk` and the four
//! upstreams is the bottleneck (99% busy, the proxy's about 93%), so throughput measures the
//! machine more than the proxy: rounds swing between two levels (about 46k and 55k req/s) for
//! both proxies alike, and a proxy's own cost shows in its CPU per request. Removing the
//! router's header work (`x-forwarded-*`, `x-request-id`) changed nothing measurable; the
//! TCP segments per request are the same four for both.
//!
//! User-space instructions per proxied request (callgrind, same load): 20.5k, HAProxy 26.4k.
//! Four fifths of either proxy's CPU time is the kernel's loopback TCP work and the wake-ups
//! of its peers (two sends and two receives per request, the same system calls for both).
//!
//! # How endpoints and weights reach the router
//!
//! Decision: **the operator renders one routing document per BlazeRouter**
//! ([`blaze_api::routing::RoutingConfig`]: endpoints with weights plus every balancing, breaker,
//! health, retry and timeout setting) into the ConfigMap
//! [`blaze_api::routing::config_map_name`] under the key `routing.yaml`, and **every router
//! replica watches that one ConfigMap through the API server** (a watch, not a volume mount:
//! the kubelet refreshes mounted ConfigMaps only every minute or so). Outside Kubernetes the
//! same document is a YAML file (`--config FILE`) that the router reloads when it changes.
//!
//! Why this rather than each router watching the BlazeRouter and the EndpointSlices itself:
//! - The operator must compute the endpoint set and the automatic weights anyway (it reports
//!   them in the BlazeRouter status); rendering them once keeps a single source of truth, and
//!   endpoints and weights change together, atomically, in one object.
//! - Each router needs one watch on one object (RBAC: get/list/watch on one ConfigMap) instead
//!   of watches on BlazeRouters, BlazeEngines and EndpointSlices, so the API server carries
//!   N watches rather than 3N, and a router never needs to understand engine selection.
//! - The standalone file and the in-cluster document are the same format, so the file mode
//!   exercises every code path the cluster mode uses.
//! - The two-second budget holds: a watch event reaches every replica in milliseconds, and
//!   the operator reconciles on EndpointSlice events without delay.
//!
//! The cost is a dependency on the operator for endpoint changes: if it is down, routers keep
//! routing with the last document they saw. Dead endpoints are still ejected within a second
//! by the breakers and health checks, which need no control plane.
//!
//! Both modes are implemented: `--config FILE` ([`config::FileWatch`], tested end to end) and
//! `--config-map NAME` ([`kube_watch`], which reads the document from the ConfigMap and then
//! follows a watch), which the operator gives its router pods, with a ServiceAccount whose
//! Role grants `get`, `list` and `watch` on that one ConfigMap. The end-to-end test on the
//! development control plane (`crates/blaze/tests/dev_up.rs`) scales an engine and measures
//! how long after the ConfigMap lists each new endpoint the router's `/metrics` shows it
//! (asserting under two seconds). Both feed the same reload path ([`routes::Table::apply`]).

pub mod admin;
pub mod auth;
pub mod balance;
pub mod breaker;
pub mod budget;
pub mod config;
pub mod endpoint;
pub mod health;
pub mod hold;
pub mod kube_watch;
pub mod metrics;
pub mod progress;
pub mod proxy;
pub mod relay;
pub mod routes;
pub mod stall;
pub mod tls;
pub mod worker_tokens;

/// Errors of the router.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration file could not be read.
    #[error("cannot read configuration {path}: {source}")]
    ReadConfig {
        /// The file.
        path: String,
        /// What went wrong.
        #[source]
        source: std::io::Error,
    },
    /// The configuration does not parse.
    #[error("invalid configuration {path}: {source}")]
    ParseConfig {
        /// The file.
        path: String,
        /// What went wrong (boxed: the parser's error, with its location, is large).
        #[source]
        source: Box<serde_saphyr::Error>,
    },
    /// The configuration parses but makes no sense.
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
    /// A listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: String,
        /// What went wrong.
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// A short, stable label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::ReadConfig { .. } => "read_config",
            Error::ParseConfig { .. } => "parse_config",
            Error::InvalidConfig(_) => "invalid_config",
            Error::Bind { .. } => "bind",
        }
    }
}

/// The result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
