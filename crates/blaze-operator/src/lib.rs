//! The Blaze operator: turns each `BlazeEngine` into a Deployment of `blaze-worker` pods (with
//! a Service and a PodDisruptionBudget) and each `BlazeRouter` into a Deployment of
//! `blaze-router` pods wired to the engines it selects, and reports what it sees in status.
//!
//! The crate is split so that almost everything is pure and unit-tested:
//! - [`children`]: the child objects built from a spec (no IO);
//! - [`status`]: conditions and recovery decisions from what the cluster shows (no IO);
//! - [`policy`]: autoscaling, router weights, Prometheus text parsing (no IO, simulated time);
//! - [`controller`]: the kube-runtime controllers that apply the above (IO);
//! - [`history`]: the last hour of what the controllers observed and decided.

pub mod bench;
pub mod children;
pub mod controller;
pub mod dashboard;
pub mod history;
pub mod labels;
pub mod metrics;
pub(crate) mod policy;
pub mod server;
pub(crate) mod status;

/// Errors of the operator.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A call to the Kubernetes API failed.
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// An object could not be (de)serialised.
    #[error("serialisation: {0}")]
    Serde(#[from] serde_json::Error),
    /// The routing configuration could not be rendered.
    #[error("cannot render YAML: {0}")]
    Yaml(#[from] serde_saphyr::ser_error::Error),
    /// A spec cannot be turned into children; the message says which field to fix.
    #[error("invalid spec: {0}")]
    InvalidSpec(String),
    /// An object lacks a field the API server always sets (name, namespace, uid).
    #[error("object lacks {0}")]
    MissingField(&'static str),
    /// Something did not happen in time.
    #[error("timed out: {0}")]
    Timeout(String),
    /// The metrics registry could not be encoded.
    #[error("metrics encoding: {0}")]
    Metrics(#[from] std::fmt::Error),
}

impl Error {
    /// A short, stable label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube(kube::Error::Api(_)) => "api",
            Error::Kube(_) => "client",
            Error::Serde(_) => "serde",
            Error::Yaml(_) => "yaml",
            Error::InvalidSpec(_) => "invalid_spec",
            Error::MissingField(_) => "missing_field",
            Error::Metrics(_) => "metrics",
            Error::Timeout(_) => "timeout",
        }
    }
}

/// The result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
