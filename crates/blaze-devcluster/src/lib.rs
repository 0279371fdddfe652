//! Blaze's embedded development control plane: a Kubernetes API server that kube-rs and
//! kubectl talk to unchanged, for development and tests where no cluster can be had.
//!
//! ```no_run
//! # async fn demo() -> blaze_devcluster::Result<()> {
//! let server = blaze_devcluster::ApiServer::start(Default::default()).await?;
//! println!("{}", server.kubeconfig());
//! server.shutdown().await;
//! # Ok(()) }
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

mod api;
mod apply;
pub mod auth;
pub mod bench;
mod binding;
mod bootstrap;
mod crd;
mod defaults;
mod discovery;
mod error;
mod event_versions;
mod fields;
mod gc;
mod handlers;
mod list;
mod meta;
mod patch;
mod persist;
pub mod pod_security;
mod protobuf;
mod resources;
mod scale;
mod schema;
mod selectable;
mod selectors;
mod server;
mod store;
mod table;
mod tls;
mod watch;
mod writes;

pub use server::{ApiServer, Config, State, kubeconfig_yaml};

/// Errors starting or running the server.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The listen address could not be bound.
    #[error("cannot listen on {0}: {1}")]
    Bind(SocketAddr, #[source] std::io::Error),
    /// A file could not be read or written.
    #[error("{0}: {1}")]
    Io(PathBuf, #[source] std::io::Error),
    /// The TLS certificate or configuration could not be made.
    #[error("TLS: {0}")]
    Tls(String),
    /// A saved object could not be read back.
    #[error("{0}: corrupt saved object: {1}")]
    Corrupt(PathBuf, String),
}

impl Error {
    fn io(path: &Path, e: std::io::Error) -> Self {
        Self::Io(path.to_owned(), e)
    }

    /// A short label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::Bind(..) => "bind",
            Self::Io(..) => "io",
            Self::Corrupt(..) => "corrupt",
            Self::Tls(..) => "tls",
        }
    }
}

/// Result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
