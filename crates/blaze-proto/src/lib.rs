//! Blaze's protobuf messages and tonic services, generated at build time from `proto/`.

/// The streaming text-generation service (`blaze.generate.v1`).
pub mod generate {
    #![allow(missing_docs, clippy::all)]
    tonic::include_proto!("blaze.generate.v1");
}
