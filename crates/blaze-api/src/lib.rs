//! The Blaze API: the `BlazeEngine` and `BlazeRouter` custom resources (group `blaze.ai`,
//! version `v1alpha1`), their defaults and validation rules, and helpers for status
//! conditions.
//!
//! Everything here is pure data and pure functions: no IO, no clients. Defaults and
//! validation rules live in the generated OpenAPI schema, so any Kubernetes API server fills
//! in the defaults and enforces the rules; the Rust defaults mirror them for code that builds
//! specs by hand.

pub mod conditions;
pub mod crds;
pub mod engine;
pub mod router;
pub mod routing;
mod schema;

pub use engine::{BlazeEngine, BlazeEngineSpec, BlazeEngineStatus};
pub use router::{BlazeRouter, BlazeRouterSpec, BlazeRouterStatus};

/// The API group of every Blaze resource.
pub const GROUP: &str = "blaze.ai";
/// The API version served and stored.
pub const VERSION: &str = "v1alpha1";

/// Errors of this crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A CRD could not be rendered as YAML.
    #[error("cannot render CRD {name} as YAML: {source}")]
    Render {
        /// The CRD's name.
        name: String,
        /// What went wrong.
        #[source]
        source: serde_saphyr::ser_error::Error,
    },
}

impl Error {
    /// A short, stable label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Render { .. } => "render",
        }
    }
}

/// The result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
