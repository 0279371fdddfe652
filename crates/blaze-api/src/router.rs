//! `BlazeRouter`: the data-plane proxy in front of one or more engines.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A BlazeRouter runs Blaze router pods that spread inference requests over the workers of
/// the engines it selects, with health checks, circuit breakers, retries and weights the
/// operator tunes from observed latency.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "blaze.ai",
    version = "v1alpha1",
    kind = "BlazeRouter",
    plural = "blazerouters",
    singular = "blazerouter",
    shortname = "br",
    category = "blaze",
    namespaced,
    status = "BlazeRouterStatus",
    scale(
        spec_replicas_path = ".spec.replicas",
        status_replicas_path = ".status.replicas",
        label_selector_path = ".status.selector"
    ),
    printcolumn = r#"{"name":"Strategy","type":"string","jsonPath":".spec.strategy"}"#,
    printcolumn = r#"{"name":"Ready","type":"integer","jsonPath":".status.readyReplicas"}"#,
    printcolumn = r#"{"name":"Endpoints","type":"integer","description":"endpoints receiving traffic","jsonPath":".status.readyEndpoints"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "self.weights.mode != 'manual' || (has(self.weights.manual) && size(self.weights.manual) > 0)",
        "message": "weights.mode manual needs weights.manual, a weight for each engine",
        "fieldPath": ".weights.manual",
        "reason": "FieldValueRequired"
    },
    {
        "rule": "!has(self.weights.manual) || !has(self.engines.names) || self.weights.manual.all(name, name in self.engines.names)",
        "message": "every engine in weights.manual must be listed in engines.names",
        "fieldPath": ".weights.manual",
        "reason": "FieldValueInvalid"
    },
    {
        "rule": "self.strategy != 'consistentHash' || self.sessionAffinity.mode != 'none'",
        "message": "strategy consistentHash hashes the session key: set sessionAffinity.mode to header, cookie or clientIP",
        "fieldPath": ".sessionAffinity.mode",
        "reason": "FieldValueInvalid"
    },
    {
        "rule": "!has(self.retries.perTryTimeoutMs) || self.retries.perTryTimeoutMs <= self.timeouts.headersTimeoutMs",
        "message": "retries.perTryTimeoutMs must not exceed timeouts.headersTimeoutMs",
        "fieldPath": ".retries.perTryTimeoutMs",
        "reason": "FieldValueInvalid"
    }
]))]
pub struct BlazeRouterSpec {
    /// The engines (in this namespace) whose workers receive traffic.
    pub engines: EngineSelection,

    /// How a request picks a worker.
    #[serde(default)]
    pub strategy: Strategy,

    /// Keeping a client's requests on the same worker.
    #[serde(default)]
    pub session_affinity: SessionAffinity,

    /// Traffic weights of engines.
    #[serde(default)]
    pub weights: WeightsSpec,

    /// Ejecting workers that fail.
    #[serde(default)]
    pub circuit_breaker: CircuitBreakerSpec,

    /// Active health checks of workers.
    #[serde(default)]
    pub health_check: HealthCheckSpec,

    /// Retrying requests that failed before any response reached the client.
    #[serde(default)]
    pub retries: RetriesSpec,

    /// Per-phase timeouts. There is never a total timeout: a token stream may run as long as
    /// tokens keep coming.
    #[serde(default)]
    pub timeouts: TimeoutsSpec,

    /// Requests held while no endpoint is ready, e.g. engines scaled to zero or starting.
    #[serde(default)]
    pub hold: HoldSpec,

    /// Require API keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<AuthSpec>,

    /// Serve clients over TLS (HTTP/2 and HTTP/1.1 by ALPN) instead of cleartext.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsSpec>,

    /// Router pods. Two by default, so one can restart without an outage.
    #[serde(default = "default_router_replicas")]
    #[schemars(range(min = 0, max = 1000))]
    pub replicas: i32,

    /// The Service clients call.
    #[serde(default)]
    pub service: ServiceSpec,

    /// Router container image. Defaults to the operator's own release of `blaze-router`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub image: Option<String>,
}

fn default_router_replicas() -> i32 {
    2
}

/// Which engines a router sends traffic to: by name, or by a label selector over
/// BlazeEngines, not both.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "has(self.names) != has(self.selector)",
    "message": "engines needs exactly one of names (a list of BlazeEngine names) or selector (a label selector over BlazeEngines)",
    "reason": "FieldValueInvalid"
}]))]
pub struct EngineSelection {
    /// BlazeEngine names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64))]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub names: Option<Vec<EngineName>>,
    /// A label selector over BlazeEngines.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<LabelSelector>,
}

/// The name of a BlazeEngine (an RFC 1123 DNS label).
#[derive(
    Serialize, Deserialize, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, JsonSchema,
)]
#[serde(transparent)]
pub struct EngineName(
    #[schemars(length(min = 1, max = 63), regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"))]
    pub String,
);

/// Load-balancing strategy.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum Strategy {
    /// Each worker in turn.
    RoundRobin,
    /// Each worker in turn, in proportion to its weight (smooth, earliest deadline first).
    WeightedRoundRobin,
    /// The worker with the fewest requests in flight, relative to its weight.
    LeastConnections,
    /// Power of two choices over peak-EWMA latency times requests in flight.
    #[default]
    Adaptive,
    /// Consistent hashing of the session key, with bounded load.
    ConsistentHash,
    /// A worker at random, in proportion to weight.
    Random,
    /// Bounded-load consistent hashing of the model and the prompt's shared beginning (a
    /// chat's leading system and developer messages, else its first message; a completion's
    /// first prompt), so conversations that share a system prompt land where its KV cache is
    /// warm.
    PrefixAware,
}

impl Strategy {
    /// Whether the strategy hashes a key to a ring of endpoints (`consistentHash`,
    /// `prefixAware`), where an endpoint's weight is its share of the ring.
    pub fn hashes_keys(self) -> bool {
        matches!(self, Self::ConsistentHash | Self::PrefixAware)
    }
}

/// Session affinity.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "!(self.mode in ['header', 'cookie']) || has(self.key)",
    "message": "sessionAffinity.mode header and cookie need sessionAffinity.key, the header or cookie name",
    "fieldPath": ".key",
    "reason": "FieldValueRequired"
}]))]
pub struct SessionAffinity {
    /// `none`, `header`, `cookie` or `clientIP`.
    #[serde(default)]
    pub mode: SessionAffinityMode,
    /// Header or cookie name holding the session key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256), regex(pattern = r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$"))]
    pub key: Option<String>,
}

/// Where a session key comes from.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
pub enum SessionAffinityMode {
    /// No affinity.
    #[default]
    #[serde(rename = "none")]
    None,
    /// A request header.
    #[serde(rename = "header")]
    Header,
    /// A cookie.
    #[serde(rename = "cookie")]
    Cookie,
    /// The client's IP address.
    #[serde(rename = "clientIP")]
    ClientIp,
}

/// Engine weights.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WeightsSpec {
    /// `auto`: the operator sets weights from observed latency and errors. `manual`: the
    /// weights below.
    #[serde(default)]
    pub mode: WeightsMode,
    /// Weight per engine name, for `manual` mode: the engine's share of the traffic (90 and
    /// 10 send 90% and 10%), split evenly over its ready workers whatever their number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("maxProperties" = 64))]
    pub manual: Option<BTreeMap<String, Weight>>,
    /// Smallest weight automatic tuning may give an engine that is serving, so it keeps
    /// receiving the traffic that shows it has recovered.
    #[serde(default = "default_min_weight")]
    #[schemars(range(min = 0, max = 1000))]
    pub min_weight: i32,
    /// Seconds over which a new worker's share of traffic ramps up to its full weight.
    #[serde(default = "default_slow_start")]
    #[schemars(range(min = 0, max = 3600))]
    pub slow_start_seconds: i32,
}

/// A traffic weight (0 sends nothing).
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, JsonSchema,
)]
#[serde(transparent)]
pub struct Weight(#[schemars(range(min = 0, max = 1000))] pub i32);

fn default_min_weight() -> i32 {
    1
}
fn default_slow_start() -> i32 {
    30
}

impl Default for WeightsSpec {
    fn default() -> Self {
        Self {
            mode: WeightsMode::default(),
            manual: None,
            min_weight: default_min_weight(),
            slow_start_seconds: default_slow_start(),
        }
    }
}

/// Who sets weights.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum WeightsMode {
    /// The operator, from what it measures.
    #[default]
    Auto,
    /// `spec.weights.manual`.
    Manual,
}

/// Per-worker circuit breaker.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "self.openSeconds <= self.maxOpenSeconds",
    "message": "circuitBreaker.openSeconds must not exceed circuitBreaker.maxOpenSeconds",
    "fieldPath": ".openSeconds",
    "reason": "FieldValueInvalid"
}]))]
pub struct CircuitBreakerSpec {
    /// Consecutive failures that open the breaker.
    #[serde(default = "default_consecutive_failures")]
    #[schemars(range(min = 1, max = 1000))]
    pub consecutive_failures: i32,
    /// Failure rate (0 to 1) over recent requests that opens the breaker.
    #[serde(default = "default_failure_rate")]
    #[schemars(range(min = 0.01, max = 1.0))]
    pub failure_rate_threshold: f64,
    /// Seconds the breaker stays open the first time; doubled, with jitter, each time it
    /// opens again, up to `maxOpenSeconds`.
    #[serde(default = "default_open_seconds")]
    #[schemars(range(min = 1, max = 3600))]
    pub open_seconds: i32,
    /// Longest time the breaker stays open.
    #[serde(default = "default_max_open_seconds")]
    #[schemars(range(min = 1, max = 86400))]
    pub max_open_seconds: i32,
    /// Probe requests let through while half-open.
    #[serde(default = "default_half_open_requests")]
    #[schemars(range(min = 1, max = 100))]
    pub half_open_requests: i32,
    /// Successful probes that close the breaker.
    #[serde(default = "default_success_threshold")]
    #[schemars(range(min = 1, max = 100))]
    pub success_threshold: i32,
    /// Most workers, in percent, that may be ejected at once. If more fail, the router
    /// balances over all of them and reports it.
    #[serde(default = "default_max_ejection_percent")]
    #[schemars(range(min = 0, max = 100))]
    pub max_ejection_percent: i32,
}

fn default_consecutive_failures() -> i32 {
    5
}
fn default_failure_rate() -> f64 {
    0.5
}
fn default_open_seconds() -> i32 {
    30
}
fn default_max_open_seconds() -> i32 {
    300
}
fn default_half_open_requests() -> i32 {
    1
}
fn default_success_threshold() -> i32 {
    2
}
fn default_max_ejection_percent() -> i32 {
    50
}

impl Default for CircuitBreakerSpec {
    fn default() -> Self {
        Self {
            consecutive_failures: default_consecutive_failures(),
            failure_rate_threshold: default_failure_rate(),
            open_seconds: default_open_seconds(),
            max_open_seconds: default_max_open_seconds(),
            half_open_requests: default_half_open_requests(),
            success_threshold: default_success_threshold(),
            max_ejection_percent: default_max_ejection_percent(),
        }
    }
}

/// Active health checks.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "self.timeoutSeconds <= self.intervalSeconds",
    "message": "healthCheck.timeoutSeconds must not exceed healthCheck.intervalSeconds",
    "fieldPath": ".timeoutSeconds",
    "reason": "FieldValueInvalid"
}]))]
pub struct HealthCheckSpec {
    /// HTTP path probed on each worker.
    #[serde(default = "default_health_path")]
    #[schemars(length(min = 1, max = 1024), regex(pattern = r"^/[^\s]*$"))]
    pub path: String,
    /// Seconds between probes.
    #[serde(default = "default_health_interval")]
    #[schemars(range(min = 1, max = 300))]
    pub interval_seconds: i32,
    /// Seconds before a probe counts as failed.
    #[serde(default = "default_health_timeout")]
    #[schemars(range(min = 1, max = 300))]
    pub timeout_seconds: i32,
    /// Passing probes that mark a worker healthy.
    #[serde(default = "default_healthy_threshold")]
    #[schemars(range(min = 1, max = 100))]
    pub healthy_threshold: i32,
    /// Failing probes that mark a worker unhealthy.
    #[serde(default = "default_unhealthy_threshold")]
    #[schemars(range(min = 1, max = 100))]
    pub unhealthy_threshold: i32,
}

fn default_health_path() -> String {
    "/readyz".to_owned()
}
fn default_health_interval() -> i32 {
    5
}
fn default_health_timeout() -> i32 {
    2
}
fn default_healthy_threshold() -> i32 {
    2
}
fn default_unhealthy_threshold() -> i32 {
    3
}

impl Default for HealthCheckSpec {
    fn default() -> Self {
        Self {
            path: default_health_path(),
            interval_seconds: default_health_interval(),
            timeout_seconds: default_health_timeout(),
            healthy_threshold: default_healthy_threshold(),
            unhealthy_threshold: default_unhealthy_threshold(),
        }
    }
}

/// Retries.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RetriesSpec {
    /// Retries after the first try (0 disables).
    #[serde(default = "default_attempts")]
    #[schemars(range(min = 0, max = 10))]
    pub attempts: i32,
    /// Retries allowed, in percent of recent requests, so retries cannot multiply an
    /// overload.
    #[serde(default = "default_budget_percent")]
    #[schemars(range(min = 0, max = 100))]
    pub budget_percent: i32,
    /// Milliseconds one try may wait for response headers before it is abandoned and
    /// retried elsewhere. Unset: `timeouts.headersTimeoutMs`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 3600000))]
    pub per_try_timeout_ms: Option<i32>,
}

fn default_attempts() -> i32 {
    2
}
fn default_budget_percent() -> i32 {
    20
}

impl Default for RetriesSpec {
    fn default() -> Self {
        Self {
            attempts: default_attempts(),
            budget_percent: default_budget_percent(),
            per_try_timeout_ms: None,
        }
    }
}

/// Timeouts for each phase of a request.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TimeoutsSpec {
    /// Milliseconds to wait for response headers (for a token stream: until the first
    /// token's headers). Long prompts on a busy engine need minutes.
    #[serde(default = "default_headers_timeout")]
    #[schemars(range(min = 1, max = 3600000))]
    pub headers_timeout_ms: i32,
    /// Milliseconds a request or response body may sit without a byte moving.
    #[serde(default = "default_idle_timeout")]
    #[schemars(range(min = 1, max = 3600000))]
    pub idle_timeout_ms: i32,
}

fn default_headers_timeout() -> i32 {
    120_000
}
fn default_idle_timeout() -> i32 {
    60_000
}

impl Default for TimeoutsSpec {
    fn default() -> Self {
        Self {
            headers_timeout_ms: default_headers_timeout(),
            idle_timeout_ms: default_idle_timeout(),
        }
    }
}

/// Requests held while no endpoint is ready, e.g. engines scaled to zero or starting: instead
/// of an immediate 503, a request that finds no endpoint waits until the routing document
/// lists one.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HoldSpec {
    /// Most requests held at once by one router pod; beyond it a request is answered 503 with
    /// `Retry-After`. 0 holds nothing: a request that finds no endpoint is answered 503 at once.
    #[serde(default = "default_hold_max_requests")]
    #[schemars(range(min = 0, max = 100000))]
    pub max_requests: i32,
    /// Seconds a request is held at most; then it is answered 503 with `Retry-After`. Long
    /// enough for an engine scaled to zero to start and load its model.
    #[serde(default = "default_hold_timeout")]
    #[schemars(range(min = 1, max = 3600))]
    pub timeout_seconds: i32,
}

fn default_hold_max_requests() -> i32 {
    256
}
fn default_hold_timeout() -> i32 {
    120
}

impl Default for HoldSpec {
    fn default() -> Self {
        Self { max_requests: default_hold_max_requests(), timeout_seconds: default_hold_timeout() }
    }
}

/// A Secret's name: a DNS subdomain (RFC 1123).
pub(crate) const SECRET_NAME: &str =
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";

/// API-key authentication.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuthSpec {
    /// A Secret in the router's namespace. Each of its keys is one API key: the entry's name
    /// labels the key in metrics, the entry's value is the key clients send.
    #[schemars(length(min = 1, max = 253), regex(pattern = SECRET_NAME))]
    pub secret_name: String,
    /// Header carrying the key. `authorization` expects `Bearer KEY`; any other header holds
    /// the key alone.
    #[serde(default = "default_auth_header")]
    #[schemars(length(min = 1, max = 256), regex(pattern = r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$"))]
    pub header: String,
}

fn default_auth_header() -> String {
    "authorization".to_owned()
}

/// TLS for the router's clients.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TlsSpec {
    /// A `kubernetes.io/tls` Secret in the router's namespace (keys `tls.crt`, the chain leaf
    /// first, and `tls.key`), for example one cert-manager renews. The router serves a renewed
    /// certificate once the kubelet has updated the mounted files, without a restart.
    #[schemars(length(min = 1, max = 253), regex(pattern = SECRET_NAME))]
    pub secret_name: String,
}

/// The router's Service.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceSpec {
    /// Service type.
    #[serde(default, rename = "type")]
    pub service_type: ServiceType,
    /// Port clients connect to.
    #[serde(default = "default_service_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
    /// Annotations for the Service (load-balancer settings, say).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

fn default_service_port() -> i32 {
    80
}

impl Default for ServiceSpec {
    fn default() -> Self {
        Self {
            service_type: ServiceType::default(),
            port: default_service_port(),
            annotations: BTreeMap::new(),
        }
    }
}

/// Kubernetes Service type.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
pub enum ServiceType {
    /// Reachable inside the cluster.
    #[default]
    ClusterIP,
    /// Also on a port of every node.
    NodePort,
    /// Also through a cloud load balancer.
    LoadBalancer,
}

/// What the operator observed of a router.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BlazeRouterStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, `Degraded`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// Router pods that exist.
    #[serde(default)]
    pub replicas: i32,
    /// Router pods ready to serve.
    #[serde(default)]
    pub ready_replicas: i32,
    /// Label selector of the router pods, for the scale subresource.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
    /// Endpoints receiving traffic (weight above zero, breaker not open).
    #[serde(default)]
    pub ready_endpoints: i32,
    /// Every worker endpoint the router knows.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub endpoints: Vec<EndpointStatus>,
    /// When weights last changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_weight_update: Option<Time>,
}

/// One worker endpoint as the router sees it.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EndpointStatus {
    /// The BlazeEngine the worker belongs to.
    pub engine: String,
    /// The worker pod.
    pub pod: String,
    /// `IP:PORT` the router sends to.
    pub address: String,
    /// Current weight.
    pub weight: i32,
    /// Circuit breaker state.
    pub breaker: BreakerState,
    /// 95th percentile latency in milliseconds seen by the router.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p95_latency_ms: Option<f64>,
    /// Fraction of requests that failed (0 to 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_rate: Option<f64>,
}

/// Circuit breaker state.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum BreakerState {
    /// Traffic flows.
    #[default]
    Closed,
    /// Ejected: no traffic until the open time passes.
    Open,
    /// A few probe requests decide whether to close.
    HalfOpen,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minimal_spec_deserialises_with_the_schema_defaults() {
        let spec: BlazeRouterSpec =
            serde_json::from_value(serde_json::json!({"engines": {"names": ["chat"]}})).unwrap();
        assert_eq!(spec.strategy, Strategy::Adaptive);
        assert_eq!(spec.replicas, 2);
        assert_eq!(spec.circuit_breaker, CircuitBreakerSpec::default());
        assert_eq!(spec.circuit_breaker.consecutive_failures, 5);
        assert_eq!(spec.retries.budget_percent, 20);
        assert_eq!(spec.service.port, 80);
        assert_eq!(spec.hold, HoldSpec { max_requests: 256, timeout_seconds: 120 });
        assert_eq!(spec.engines.names, Some(vec![EngineName("chat".into())]));
    }

    #[test]
    fn session_affinity_modes_use_the_documented_spelling() {
        let a: SessionAffinity =
            serde_json::from_value(serde_json::json!({"mode": "clientIP"})).unwrap();
        assert_eq!(a.mode, SessionAffinityMode::ClientIp);
        assert_eq!(serde_json::to_value(Strategy::PrefixAware).unwrap(), "prefixAware");
    }
}
