//! Blaze end to end: the real binaries (`blaze dev up`, the operator, workers and routers as
//! pods, that is local processes) on the development control plane, with the real SmolLM2
//! model, driven as a user drives them (the Kubernetes API, kubectl, HTTP through a router).
//!
//! - [`Setup`] finds the binaries and the model, and says how to get what is missing.
//! - [`DevCluster`] is one `blaze dev up`, stopped with `blaze dev down` when dropped.
//! - [`Quickstart`] is the quickstart's engine and router in a namespace of their own, so
//!   scenarios can share a control plane without seeing each other's workers.
//! - [`closed_loop`] has the load and disturbance scenarios that `bench-loop` prints and the
//!   `scenarios` test holds to their targets.

pub mod binaries;
pub mod closed_loop;
pub mod cluster;
pub mod http;
pub mod load;
pub mod pods;
pub mod quickstart;

pub use binaries::Setup;
pub use blaze_testing::until;
pub use cluster::DevCluster;
pub use quickstart::Quickstart;
