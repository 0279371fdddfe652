//! The crate's error type.

use std::path::PathBuf;

/// Everything that can go wrong on the node side of the development control plane.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No local binary is known for a container image.
    #[error("no local binary for image {image:?} (looked in {searched:?})")]
    ImageNotFound {
        /// The image as the pod spec names it.
        image: String,
        /// The places that were searched, in order.
        searched: Vec<PathBuf>,
    },
    /// A pod spec asks for something this runtime does not support.
    #[error("unsupported pod spec: {0}")]
    Unsupported(String),
    /// A referenced ConfigMap, Secret or key is missing.
    #[error("missing {kind} {name:?}{}", key.as_ref().map(|k| format!(" key {k:?}")).unwrap_or_default())]
    MissingSource {
        /// `ConfigMap`, `Secret` or `PersistentVolumeClaim` (missing or not bound).
        kind: &'static str,
        /// The object name.
        name: String,
        /// The key inside it, when a key was asked for.
        key: Option<String>,
    },
    /// The loopback address pool is exhausted.
    #[error("no free loopback address for a pod")]
    NoFreeAddress,
    /// A label selector names an operator Kubernetes does not have.
    #[error("label selector: {0}")]
    Selector(#[from] kube::core::ParseExpressionError),
    /// A Kubernetes API call failed.
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// A filesystem or process operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// A short, stable label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::ImageNotFound { .. } => "image_not_found",
            Error::Unsupported(_) => "unsupported",
            Error::MissingSource { .. } => "missing_source",
            Error::NoFreeAddress => "no_free_address",
            Error::Io { .. } => "io",
            Error::Selector(_) => "selector",
            Error::Kube(_) => "kube",
        }
    }

    /// The reason a kubelet shows in a waiting container state for this error.
    pub fn waiting_reason(&self) -> &'static str {
        match self {
            Error::ImageNotFound { .. } => "ErrImageNeverPull",
            Error::MissingSource { .. } => "CreateContainerConfigError",
            _ => "RunContainerError",
        }
    }
}

/// Wraps an io error with what was being done.
pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    let context = context.into();
    move |source| Error::Io { context, source }
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
