//! Blaze's inference worker: loads a model with candle, schedules requests on a thread that
//! owns it, and serves the OpenAI-compatible HTTP API, the Open Inference Protocol (v2, REST
//! and gRPC), a streaming gRPC service, health and Prometheus metrics.

pub mod args;
pub mod auth;
pub mod cache;
pub mod chat;
pub mod engine;
pub mod error;
pub mod grpc;
pub mod metrics;
pub mod model;
pub mod oip;
pub mod peak_memory;
pub mod sampling;
pub mod server;
pub mod source;
pub mod testing;
pub mod threads;
pub mod tokenizer;

pub use error::{Error, Result};
