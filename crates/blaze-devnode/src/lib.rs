//! The node side of Blaze's development control plane.
//!
//! A real cluster runs a kubelet, a scheduler and the workload controllers next to the API
//! server. This crate is those parts for a single development machine, where there is no
//! container engine: a pod's container runs as a local process of the Blaze binary its image
//! names. Everything here talks to the API server only through the Kubernetes API, so it works
//! against any API server.
//!
//! The pieces, bottom up:
//! - [`image`]: which local binary runs an image;
//! - [`expand`], [`env`], [`volumes`], [`service_account`]: a container's environment,
//!   command line and files, its ServiceAccount credentials among them;
//! - [`ipam`]: a loopback address per pod;
//! - [`backoff`], [`process`], [`probe`], [`container`], [`pod`]: running and supervising
//!   containers as processes, with probes, restarts and graceful termination;
//! - [`quantity`], [`scheduler`], [`devices`]: which node a pod fits on, and which GPUs it
//!   gets there;
//! - [`rollout`], [`replicas`], [`endpoints`]: the controllers' arithmetic, pure;
//! - [`k8s`]: the loops that talk to an API server (scheduler, Deployment, ReplicaSet and
//!   EndpointSlice controllers, kubelet), through kube-rs only.

pub mod backoff;
pub mod container;
pub mod devices;
pub mod endpoints;
pub mod env;
pub mod error;
pub mod expand;
pub mod image;
pub mod ipam;
pub mod k8s;
pub mod pod;
pub mod probe;
pub mod process;
pub mod quantity;
pub mod replicas;
pub mod rollout;
pub mod scheduler;
pub mod service_account;
pub mod volumes;

pub use error::{Error, Result};
