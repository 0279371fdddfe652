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

/// Every metric the router exports.
#[derive(Clone)]
pub struct Metrics {
    /// Requests sent to each endpoint (tries, retries included).
    pub requests: Family<EndpointLabels, Counter>,
    /// Tries that failed (connection errors, timeouts, 5xx, gRPC failures).
    pub errors: Family<EndpointLabels, Counter>,
    /// Requests in flight until their response ends.
    pub in_flight: Family<EndpointLabels, Gauge>,
    /// Time to response headers.
    pub ttfb: Family<EndpointLabels, Histogram, fn() -> Histogram>,
    /// Time to the first response body byte (a stream's first token).
    pub ttft: Family<EndpointLabels, Histogram, fn() -> Histogram>,
    /// Endpoints found stalled (requests in flight, nothing arriving, the health probe
    /// failing) and taken out.
    pub stalls: Family<EndpointLabels, Counter>,
    /// Requests sent again because their endpoint was ejected before anything reached the
    /// client, by reason (`unhealthy`, `breaker`, `removed`).
    pub resent: Family<ReasonLabels, Counter>,
    /// Requests held now for want of an endpoint.
    pub held: Gauge,
    /// Time held, for the held requests that got an endpoint.
    pub hold_seconds: Histogram,
    /// Requests not held or no longer held, by reason (`full`, `timeout`).
    pub hold_rejected: Family<ReasonLabels, Counter>,
    /// Breaker state: 0 closed, 1 open, 2 half-open.
    pub breaker_state: Family<EndpointLabels, Gauge>,
    /// 1 when active health checks pass.
    pub healthy: Family<EndpointLabels, Gauge>,
    /// Configured weight.
    pub weight: Family<EndpointLabels, Gauge>,
    /// Times a breaker opened.
    pub ejections: Family<EndpointLabels, Counter>,
    /// Breaker openings refused by `maxEjectionPercent`.
    pub ejections_refused: Counter,
    /// Requests balanced over every endpoint because none was usable.
    pub panic: Counter,
    /// Retries sent.
    pub retries: Counter,
    /// Retries wanted but refused by the retry budget.
    pub budget_exhausted: Counter,
    /// Requests that found no endpoint at all.
    pub no_endpoint: Counter,
    /// Configuration reloads.
    pub reloads: Family<ReloadLabels, Counter>,
    /// TLS certificate reloads (after the files changed).
    pub tls_reloads: Family<ReloadLabels, Counter>,
    /// Requests per API key name.
    pub key_requests: Family<KeyLabels, Counter>,
    /// Requests refused for a missing or wrong API key.
    pub unauthorized: Counter,
}

impl Metrics {
    /// Creates the metrics and registers them under `blaze_router_`.
    pub fn new(registry: &mut Registry) -> Self {
        let m = Self {
            requests: Family::default(),
            errors: Family::default(),
            in_flight: Family::default(),
            ttfb: Family::new_with_constructor(ttfb_histogram),
            ttft: Family::new_with_constructor(ttft_histogram),
            stalls: Family::default(),
            resent: Family::default(),
            held: Gauge::default(),
            hold_seconds: hold_histogram(),
            hold_rejected: Family::default(),
            breaker_state: Family::default(),
            healthy: Family::default(),
            weight: Family::default(),
            ejections: Family::default(),
            ejections_refused: Counter::default(),
            panic: Counter::default(),
            retries: Counter::default(),
            budget_exhausted: Counter::default(),
            no_endpoint: Counter::default(),
            reloads: Family::default(),
            tls_reloads: Family::default(),
            key_requests: Family::default(),
            unauthorized: Counter::default(),
        };
        let r = registry.sub_registry_with_prefix("blaze_router");
        r.register("endpoint_requests", "Tries sent to each endpoint", m.requests.clone());
        r.register("endpoint_errors", "Tries that failed, per endpoint", m.errors.clone());
        r.register(
            "endpoint_in_flight",
            "Requests in flight until their response ends",
            m.in_flight.clone(),
        );
        r.register("endpoint_ttfb_seconds", "Time to response headers", m.ttfb.clone());
        r.register(
            "endpoint_ttft_seconds",
            "Time to the first response body byte (a stream's first token)",
            m.ttft.clone(),
        );
        r.register(
            "endpoint_stalls",
            "Endpoints taken out for sending nothing with requests in flight and failing a probe",
            m.stalls.clone(),
        );
        r.register(
            "resent_requests",
            "Requests sent again because their endpoint was ejected before answering",
            m.resent.clone(),
        );
        r.register("held_requests", "Requests held now for want of an endpoint", m.held.clone());
        r.register(
            "hold_seconds",
            "Time held for want of an endpoint, of requests that got one",
            m.hold_seconds.clone(),
        );
        r.register(
            "hold_rejected",
            "Requests answered 503 for want of an endpoint: hold full or timed out",
            m.hold_rejected.clone(),
        );
        r.register(
            "endpoint_breaker_state",
            "Breaker state: 0 closed, 1 open, 2 half-open",
            m.breaker_state.clone(),
        );
        r.register("endpoint_healthy", "1 when active health checks pass", m.healthy.clone());
        r.register("endpoint_weight", "Configured weight", m.weight.clone());
        r.register("endpoint_ejections", "Times a breaker opened", m.ejections.clone());
        r.register(
            "ejections_refused",
            "Breaker openings refused by maxEjectionPercent",
            m.ejections_refused.clone(),
        );
        r.register(
            "panic",
            "Requests balanced over all endpoints because none was usable",
            m.panic.clone(),
        );
        r.register("retries", "Retries sent", m.retries.clone());
        r.register(
            "retry_budget_exhausted",
            "Retries refused by the retry budget",
            m.budget_exhausted.clone(),
        );
        r.register("no_endpoint", "Requests that found no endpoint", m.no_endpoint.clone());
        r.register("config_reloads", "Configuration reloads", m.reloads.clone());
        r.register("tls_reloads", "TLS certificate reloads", m.tls_reloads.clone());
        r.register("api_key_requests", "Requests per API key name", m.key_requests.clone());
        r.register(
            "unauthorized",
            "Requests refused for a missing or wrong API key",
            m.unauthorized.clone(),
        );
        m
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
