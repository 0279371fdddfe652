//! The router configuration wire format: what a `blaze-router` process needs to route, in one
//! document.
//!
//! The same document reaches a router two ways:
//! - standalone: a YAML file given with `blaze-router --config FILE`, reloaded when it changes;
//! - in a cluster: the operator renders it from the `BlazeRouter` spec, the ready endpoints of
//!   the selected engines and the weights it computes, and writes it to the ConfigMap named by
//!   [`config_map_name`] under the key [`CONFIG_MAP_KEY`]. Every router replica watches that
//!   ConfigMap through the API server (a watch, not a volume mount: mounted ConfigMaps reach
//!   pods only after the kubelet's sync period, far beyond the two seconds allowed).
//!
//! Pure data: the settings types are the `BlazeRouter` spec's own, so their defaults and
//! meaning are the same in both places.

use serde::{Deserialize, Serialize};

use crate::router::{
    BlazeRouterSpec, CircuitBreakerSpec, HealthCheckSpec, HoldSpec, RetriesSpec, SessionAffinity,
    Strategy, TimeoutsSpec,
};

/// The ConfigMap key holding the rendered [`RoutingConfig`] as YAML.
pub const CONFIG_MAP_KEY: &str = "routing.yaml";

/// The ConfigMap the operator writes for the BlazeRouter named `router`.
pub fn config_map_name(router: &str) -> String {
    format!("{router}-routing")
}

/// Everything a router process needs to route requests.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RoutingConfig {
    /// How a request picks an endpoint.
    #[serde(default)]
    pub strategy: Strategy,
    /// Where the session key of `consistentHash` comes from.
    #[serde(default)]
    pub session_affinity: SessionAffinity,
    /// The endpoints that may receive traffic, with their weights.
    #[serde(default)]
    pub endpoints: Vec<RoutingEndpoint>,
    /// Seconds over which a new endpoint's share ramps up to its full weight (0: at once).
    #[serde(default = "default_slow_start")]
    pub slow_start_seconds: u32,
    /// Bounded-load factor of the hashing strategies: no endpoint takes more than this times
    /// the mean in-flight load (plus one), so a hot key cannot sink a backend.
    #[serde(default = "default_load_factor")]
    pub hash_load_factor: f64,
    /// Bytes of a prompt's shared beginning that `prefixAware` hashes, together with the
    /// model name: of a chat, its leading `system` and `developer` messages (else its first
    /// message); of a completion, its first prompt (token ids as decimal text); of any other
    /// body, the body itself.
    #[serde(default = "default_prefix_bytes")]
    pub prefix_bytes: usize,
    /// Per-endpoint circuit breaker.
    #[serde(default)]
    pub circuit_breaker: CircuitBreakerSpec,
    /// Active health checks, on with the spec's defaults when absent; `null` turns them off.
    #[serde(default = "default_health_check")]
    pub health_check: Option<HealthCheckSpec>,
    /// Retries.
    #[serde(default)]
    pub retries: RetriesSpec,
    /// Per-phase timeouts (never a total timeout).
    #[serde(default)]
    pub timeouts: TimeoutsSpec,
    /// Requests held while no endpoint is ready (none listed, or none with a weight above
    /// zero), e.g. engines scaled to zero or starting.
    #[serde(default)]
    pub hold: HoldSpec,
    /// Protocol spoken to endpoints.
    #[serde(default)]
    pub upstream_protocol: UpstreamProtocol,
    /// API keys; `None` lets every request through.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<RoutingAuth>,
}

fn default_slow_start() -> u32 {
    30
}
fn default_load_factor() -> f64 {
    1.25
}
fn default_prefix_bytes() -> usize {
    256
}
fn default_health_check() -> Option<HealthCheckSpec> {
    Some(HealthCheckSpec::default())
}

impl Default for RoutingConfig {
    fn default() -> Self {
        Self {
            strategy: Strategy::default(),
            session_affinity: SessionAffinity::default(),
            endpoints: Vec::new(),
            slow_start_seconds: default_slow_start(),
            hash_load_factor: default_load_factor(),
            prefix_bytes: default_prefix_bytes(),
            circuit_breaker: CircuitBreakerSpec::default(),
            health_check: Some(HealthCheckSpec::default()),
            retries: RetriesSpec::default(),
            timeouts: TimeoutsSpec::default(),
            hold: HoldSpec::default(),
            upstream_protocol: UpstreamProtocol::default(),
            auth: None,
        }
    }
}

/// One endpoint (a worker) that may receive traffic.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "camelCase")]
pub struct RoutingEndpoint {
    /// `HOST:PORT` the router connects to. It also identifies the endpoint across reloads:
    /// an endpoint whose address stays keeps its breaker, in-flight count and latency.
    pub address: String,
    /// The BlazeEngine the endpoint belongs to (for metrics and status).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub engine: String,
    /// The worker pod (for metrics and status).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub pod: String,
    /// Relative share of traffic; 0 sends nothing.
    #[serde(default = "default_weight")]
    pub weight: u32,
}

fn default_weight() -> u32 {
    100
}

/// The protocol spoken to endpoints.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[serde(rename_all = "camelCase")]
pub enum UpstreamProtocol {
    /// The client's: HTTP/2 (gRPC) requests go out as HTTP/2 with prior knowledge, HTTP/1.x
    /// requests as HTTP/1.1. Endpoints must serve both on one port (Blaze workers do).
    #[default]
    Auto,
    /// Always HTTP/1.1.
    Http1,
    /// Always HTTP/2 with prior knowledge (cleartext).
    Http2,
}

/// API keys.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RoutingAuth {
    /// Header carrying the key. `authorization` expects `Bearer KEY`.
    #[serde(default = "default_auth_header")]
    pub header: String,
    /// A file (a mounted Secret, say) with one `NAME: KEY` entry per key, YAML.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keys_file: Option<String>,
    /// A directory with one file per key, as Kubernetes mounts a Secret: the file name is the
    /// key's name and its content (without a trailing newline) the key. Dotfiles, such as the
    /// kubelet's `..data` link, are skipped; symbolic links are followed. Reloaded when the
    /// files change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keys_dir: Option<String>,
    /// Keys given inline, by name.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub keys: std::collections::BTreeMap<String, String>,
}

fn default_auth_header() -> String {
    "authorization".to_owned()
}

impl RoutingConfig {
    /// The configuration for a `BlazeRouter` spec and the endpoints (with their weights) the
    /// operator selected. API keys are left out: the operator mounts the Secret and sets
    /// `auth.keysDir`.
    pub fn from_spec(spec: &BlazeRouterSpec, endpoints: Vec<RoutingEndpoint>) -> Self {
        Self {
            strategy: spec.strategy,
            session_affinity: spec.session_affinity.clone(),
            endpoints,
            slow_start_seconds: u32::try_from(spec.weights.slow_start_seconds).unwrap_or(0),
            circuit_breaker: spec.circuit_breaker.clone(),
            health_check: Some(spec.health_check.clone()),
            retries: spec.retries.clone(),
            timeouts: spec.timeouts.clone(),
            hold: spec.hold.clone(),
            auth: spec.auth.as_ref().map(|a| RoutingAuth {
                header: a.header.clone(),
                keys_file: None,
                keys_dir: None,
                keys: Default::default(),
            }),
            ..Self::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_minimal_file_gets_the_spec_defaults() {
        let cfg: RoutingConfig =
            serde_saphyr::from_str("endpoints:\n- address: 127.0.0.1:9000\n").unwrap();
        assert_eq!(cfg.endpoints[0].weight, 100);
        assert_eq!(cfg.strategy, Strategy::Adaptive);
        assert_eq!(cfg.circuit_breaker.consecutive_failures, 5);
        assert_eq!(cfg.timeouts.idle_timeout_ms, 60_000);
        assert_eq!(cfg.upstream_protocol, UpstreamProtocol::Auto);
        assert!(cfg.health_check.is_some());
        assert_eq!(cfg.hold, HoldSpec::default());
        let off: RoutingConfig = serde_saphyr::from_str("healthCheck: null\n").unwrap();
        assert_eq!(off.health_check, None);
    }

    #[test]
    fn camel_case_fields_round_trip() {
        let yaml = "strategy: weightedRoundRobin\nslowStartSeconds: 0\nupstreamProtocol: http2\n\
                    endpoints:\n- address: a:1\n  engine: chat\n  weight: 3\n";
        let cfg: RoutingConfig = serde_saphyr::from_str(yaml).unwrap();
        assert_eq!(cfg.strategy, Strategy::WeightedRoundRobin);
        assert_eq!(cfg.slow_start_seconds, 0);
        assert_eq!(cfg.upstream_protocol, UpstreamProtocol::Http2);
        let back: RoutingConfig =
            serde_saphyr::from_str(&serde_saphyr::to_string(&cfg).unwrap()).unwrap();
        assert_eq!(back, cfg);
    }

    #[test]
    fn from_spec_carries_the_settings() {
        let spec: BlazeRouterSpec = serde_json::from_value(serde_json::json!({
            "engines": {"names": ["chat"]},
            "strategy": "leastConnections",
            "weights": {"slowStartSeconds": 5},
            "hold": {"maxRequests": 8, "timeoutSeconds": 30},
            "auth": {"secretName": "keys"}
        }))
        .unwrap();
        let ep = RoutingEndpoint {
            address: "10.0.0.1:8000".into(),
            engine: "chat".into(),
            pod: "chat-0".into(),
            weight: 7,
        };
        let cfg = RoutingConfig::from_spec(&spec, vec![ep.clone()]);
        assert_eq!(cfg.strategy, Strategy::LeastConnections);
        assert_eq!(cfg.slow_start_seconds, 5);
        assert_eq!(cfg.hold, HoldSpec { max_requests: 8, timeout_seconds: 30 });
        assert_eq!(cfg.endpoints, vec![ep]);
        assert_eq!(cfg.auth.unwrap().header, "authorization");
        assert_eq!(config_map_name("r"), "r-routing");
    }

    #[test]
    fn keys_dir_is_optional_and_camel_case() {
        let old: RoutingAuth = serde_saphyr::from_str("keysFile: /k.yaml\n").unwrap();
        assert_eq!(old.keys_dir, None);
        assert!(!serde_saphyr::to_string(&old).unwrap().contains("keysDir"));
        let new: RoutingAuth = serde_saphyr::from_str("keysDir: /etc/blaze/api-keys\n").unwrap();
        assert_eq!(new.keys_dir.as_deref(), Some("/etc/blaze/api-keys"));
        assert_eq!(new.header, "authorization");
        assert!(serde_saphyr::to_string(&new).unwrap().contains("keysDir: /etc/blaze/api-keys"));
    }
}
