//! The worker's integration tests, in one binary: each module is what one file of tests covers.

#![allow(clippy::unwrap_used)] // a test fails by panicking

mod support {
    pub mod compare;
    pub mod hub;
    pub mod tiny;
    pub mod worker;
}

mod auth;
mod diffusion;
mod embeddings;
mod engine;
mod families;
mod flags;
mod gguf_tokenizers;
mod grpc;
mod http;
mod hub;
mod images;
mod oip;
mod prefix_cache;
mod quantized;
mod response_cache;
mod smollm2;
mod watchdog;
