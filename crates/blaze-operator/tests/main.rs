//! The operator's integration tests, in one binary: each module is what one file of tests covers.

#![allow(clippy::unwrap_used)] // a test fails by panicking

mod support;

mod cli;
mod dashboard;
mod download;
mod forbidden;
mod pod_security;
mod rbac;
