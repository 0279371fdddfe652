//! The node side's integration tests, in one binary: each module is what one file of tests covers.

#![allow(clippy::unwrap_used)] // a test fails by panicking

mod cluster;
mod pod_runtime;
