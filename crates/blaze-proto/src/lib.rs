//! Blaze's protobuf messages and tonic services, generated at build time from `proto/`.

/// The streaming text-generation service (`blaze.generate.v1`).
pub mod generate {
    #![allow(missing_docs, clippy::all)]
    tonic::include_proto!("blaze.generate.v1");
}

/// The Open Inference Protocol (v2) service, `inference.GRPCInferenceService`, from KServe's
/// `grpc_predict_v2.proto`: the gRPC API of KServe, Triton and their clients.
pub mod inference {
    #![allow(missing_docs, clippy::all)]
    tonic::include_proto!("inference");
}
