//! The router's integration tests, in one binary: each module is what one file of tests covers.

#![allow(clippy::unwrap_used)] // a test fails by panicking

mod support {
    pub mod process;
    pub mod raw_http;
}

mod failover;
mod h1_server;
mod hold;
mod proxy;
mod stalls;
mod tls;
