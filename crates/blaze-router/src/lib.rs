//! `blaze-router`: the data-plane proxy in front of Blaze inference workers.
//!
//! Every inference request passes through it. It proxies HTTP/1.1 and HTTP/2 (cleartext, prior
//! knowledge; gRPC included) with bodies streamed both ways, picks an endpoint with one of the
//! [`balance`] strategies, ejects failing endpoints with per-endpoint circuit [`breaker`]s and
//! active [`health`] checks, and retries only what is safe to retry within a retry
//! [`budget`]. A request counts as in flight until its response body ends, so a long token
//! stream weighs on its endpoint for as long as it runs.
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
//! Configuration watching, health checks and the admin port run on the first thread.
//!
//! # Performance
//!
//! `make bench-router` (`blaze-router-bench`) runs the router and HAProxy side by side over
//! four upstream processes under the same `wrk` load, both proxies pinned to the same CPU.
//! It prints each target's median over `--rounds` rounds (5 by default, the targets taking
//! turns) and the median of the per-round router/HAProxy ratios. On the 2-core development
//! machine, shared with other builds, single runs swing by a quarter either way (HAProxy
//! against itself: 0.83 to 1.51 over ten 3 s pairs unpinned), so only many rounds say much.
//!
//! Figures (one thread each, `wrk -t1 -c32`, 10 s runs): with the load average at 4 to 6,
//! router 28,349 req/s (p99 4.10 ms), HAProxy 28,928 (p99 3.77 ms), HAProxy doing the
//! router's header work (`x-forwarded-for`, `x-forwarded-proto`, `x-request-id` both ways)
//! 26,616 (p99 3.86 ms): 0.98 of plain HAProxy, 1.07 of HAProxy with the same headers. With
//! the load average at 9 to 10: router 24,008, HAProxy 24,647, HAProxy with headers 26,089
//! req/s (0.97 and 0.92; p99 figures of 8 to 160 ms there measure the neighbours). Before the
//! request-task client below the same benchmark gave 0.92 and 1.00.
//!
//! Steadier than throughput: user-space instructions per proxied request (callgrind, same
//! load): 20.5k, against 31.5k before and HAProxy's 26.4k. CPU time per request (`/proc`,
//! interleaved 3 s runs, both pinned, load average 8): router 4.2 us user + 17.2 us system,
//! HAProxy 3.8 + 17.0. So the router now costs what HAProxy costs per request; the kernel's
//! loopback TCP work and the wake-ups of its peers (two sends, two receives per request, the
//! same for both) are four fifths of it. What plain HAProxy saves is the header work: the
//! upstreams parse three more headers and `wrk` reads a longer answer, which no proxy doing
//! that work can avoid.
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
//! follows a watch; so far tested only as far as decoding the ConfigMap, not yet against an
//! API server). Both feed the same reload path ([`routes::Table::apply`]).

pub mod admin;
pub mod auth;
pub mod balance;
pub mod body;
pub mod breaker;
pub mod budget;
pub mod config;
pub mod endpoint;
pub mod health;
pub mod kube_watch;
pub mod metrics;
pub mod proxy;
pub mod routes;

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
        /// What went wrong.
        #[source]
        source: serde_yaml::Error,
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
