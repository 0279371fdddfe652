//! Conformance suite: every behaviour of the development API server driven through kube-rs
//! (typed and dynamic `Api`), asserting what the Kubernetes API concepts and conventions say.

#![allow(clippy::unwrap_used)] // a test fails by panicking

mod conformance {
    pub mod apply;
    pub mod authorization;
    pub mod common;
    pub mod controller;
    pub mod crds;
    pub mod crud;
    pub mod deletion;
    pub mod garbage;
    pub mod kubectl;
    pub mod paging;
    pub mod persistence;
    pub mod pod_security;
    pub mod protobuf;
    pub mod watch;
}
