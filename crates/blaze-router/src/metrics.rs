//! The router's Prometheus metrics. One registry, made in `main`; per-endpoint handles are
//! resolved once per endpoint so the request path never looks labels up.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Labels naming an endpoint.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndpointLabels {
    /// `HOST:PORT`.
    pub endpoint: String,
    /// Engine name.
    pub engine: String,
}

/// Labels naming an API key.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KeyLabels {
    /// The key's name (never the key).
    pub key: String,
}

/// Result of a configuration reload.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum ReloadResult {
    /// Applied.
    Ok,
    /// Rejected; the last good configuration stays.
    Error,
}

/// Labels of reloads.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReloadLabels {
    /// Outcome.
    pub result: ReloadResult,
}

/// Labels of a count by reason.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    /// Why.
    pub reason: &'static str,
}

fn ttfb_histogram() -> Histogram {
    // 1 ms to about 65 s: token streams start in milliseconds on an idle engine and in
    // tens of seconds behind a long prompt on a busy one.
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(0.001, 2.0, 17))
}

fn ttft_histogram() -> Histogram {
    // 5 ms to about 110 s in steps of a quarter: the operator weighs endpoints by quantiles
    // of it over a few seconds, and buckets a factor of two apart made two alike endpoints
    // look 2.5 times apart.
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(0.005, 1.25, 45))
}

fn hold_histogram() -> Histogram {
    // 10 ms to about 5.5 min: a reload that is already coming, up to an engine woken from
    // zero that pulls an image and loads a model.
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(0.01, 2.0, 16))
}

blaze_telemetry::metrics! {
    /// Every metric the router exports.
    #[derive(Clone)]
    pub struct Metrics {
        /// Requests sent to each endpoint (tries, retries included).
        requests: Family<EndpointLabels, Counter> =
            "endpoint_requests", "Tries sent to each endpoint";
        /// Tries that failed (connection errors, timeouts, 5xx, gRPC failures).
        errors: Family<EndpointLabels, Counter> =
            "endpoint_errors", "Tries that failed, per endpoint";
        /// Requests in flight until their response ends.
        in_flight: Family<EndpointLabels, Gauge> =
            "endpoint_in_flight", "Requests in flight until their response ends";
        /// Time to response headers.
        ttfb: Family<EndpointLabels, Histogram, fn() -> Histogram> =
            "endpoint_ttfb_seconds", "Time to response headers",
            Family::new_with_constructor(ttfb_histogram);
        /// Time to the first response body byte (a stream's first token).
        ttft: Family<EndpointLabels, Histogram, fn() -> Histogram> =
            "endpoint_ttft_seconds",
            "Time to the first response body byte (a stream's first token)",
            Family::new_with_constructor(ttft_histogram);
        /// Endpoints found stalled (requests in flight, nothing arriving, the health probe
        /// failing) and taken out.
        stalls: Family<EndpointLabels, Counter> = "endpoint_stalls",
            "Endpoints taken out for sending nothing with requests in flight and failing a probe";
        /// Requests sent again because their endpoint was ejected before anything reached the
        /// client, by reason (`unhealthy`, `breaker`, `removed`).
        resent: Family<ReasonLabels, Counter> = "resent_requests",
            "Requests sent again because their endpoint was ejected before answering";
        /// Requests held now for want of an endpoint.
        held: Gauge = "held_requests", "Requests held now for want of an endpoint";
        /// Time held, for the held requests that got an endpoint.
        hold_seconds: Histogram = "hold_seconds",
            "Time held for want of an endpoint, of requests that got one", hold_histogram();
        /// Requests not held or no longer held, by reason (`full`, `timeout`).
        hold_rejected: Family<ReasonLabels, Counter> = "hold_rejected",
            "Requests answered 503 for want of an endpoint: hold full or timed out";
        /// Breaker state: 0 closed, 1 open, 2 half-open.
        breaker_state: Family<EndpointLabels, Gauge> =
            "endpoint_breaker_state", "Breaker state: 0 closed, 1 open, 2 half-open";
        /// 1 when active health checks pass.
        healthy: Family<EndpointLabels, Gauge> =
            "endpoint_healthy", "1 when active health checks pass";
        /// Configured weight.
        weight: Family<EndpointLabels, Gauge> = "endpoint_weight", "Configured weight";
        /// Times a breaker opened.
        ejections: Family<EndpointLabels, Counter> =
            "endpoint_ejections", "Times a breaker opened";
        /// Breaker openings refused by `maxEjectionPercent`.
        ejections_refused: Counter =
            "ejections_refused", "Breaker openings refused by maxEjectionPercent";
        /// Requests balanced over every endpoint because none was usable.
        panic: Counter =
            "panic", "Requests balanced over all endpoints because none was usable";
        /// Retries sent.
        retries: Counter = "retries", "Retries sent";
        /// Retries wanted but refused by the retry budget.
        budget_exhausted: Counter =
            "retry_budget_exhausted", "Retries refused by the retry budget";
        /// Requests that found no endpoint at all.
        no_endpoint: Counter = "no_endpoint", "Requests that found no endpoint";
        /// Configuration reloads.
        reloads: Family<ReloadLabels, Counter> = "config_reloads", "Configuration reloads";
        /// TLS certificate reloads (after the files changed).
        tls_reloads: Family<ReloadLabels, Counter> = "tls_reloads", "TLS certificate reloads";
        /// Requests per API key name.
        key_requests: Family<KeyLabels, Counter> =
            "api_key_requests", "Requests per API key name";
        /// Requests refused for a missing or wrong API key.
        unauthorized: Counter =
            "unauthorized", "Requests refused for a missing or wrong API key";
    }
}

impl Metrics {
    /// Creates the metrics and registers them under `blaze_router_`.
    pub fn new(registry: &mut Registry) -> Self {
        Self::create(registry.sub_registry_with_prefix("blaze_router"))
    }

    /// Handles for one endpoint.
    pub fn endpoint(&self, labels: &EndpointLabels) -> EndpointMetrics {
        EndpointMetrics {
            requests: self.requests.get_or_create(labels).clone(),
            errors: self.errors.get_or_create(labels).clone(),
            ttfb: self.ttfb.get_or_create(labels).clone(),
            ttft: self.ttft.get_or_create(labels).clone(),
            ejections: self.ejections.get_or_create(labels).clone(),
            stalls: self.stalls.get_or_create(labels).clone(),
        }
    }
}

/// One endpoint's request-path metric handles.
#[derive(Clone, Debug)]
pub struct EndpointMetrics {
    /// Tries.
    pub requests: Counter<u64, AtomicU64>,
    /// Failed tries.
    pub errors: Counter<u64, AtomicU64>,
    /// Time to headers.
    pub ttfb: Histogram,
    /// Time to the first body byte.
    pub ttft: Histogram,
    /// Breaker openings.
    pub ejections: Counter<u64, AtomicU64>,
    /// Stalls found.
    pub stalls: Counter<u64, AtomicU64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_with_the_prefix() {
        let mut reg = Registry::default();
        let m = Metrics::new(&mut reg);
        let l = EndpointLabels { endpoint: "a:1".into(), engine: "chat".into() };
        m.endpoint(&l).requests.inc();
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &reg).unwrap();
        assert!(
            out.contains(
                "blaze_router_endpoint_requests_total{endpoint=\"a:1\",engine=\"chat\"} 1"
            ),
            "{out}"
        );
    }
}
