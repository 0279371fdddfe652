//! The Open Inference Protocol's gRPC form, `inference.GRPCInferenceService`, over
//! [`crate::oip`].
//!
//! An input's elements come in `contents` (the field of its datatype) or, for every input at
//! once, in `raw_input_contents` (what Triton's clients send). The answer is raw, in
//! `raw_output_contents`, when the request was (Triton's clients read only that), and in
//! `contents` otherwise.

use blaze_proto::inference::grpc_inference_service_server::{
    GrpcInferenceService, GrpcInferenceServiceServer,
};
use blaze_proto::inference::infer_parameter::ParameterChoice;
use blaze_proto::inference::model_infer_request::InferInputTensor;
use blaze_proto::inference::model_infer_response::InferOutputTensor;
use blaze_proto::inference::model_metadata_response::TensorMetadata;
use blaze_proto::inference::{
    InferParameter, InferTensorContents, ModelInferRequest, ModelInferResponse,
    ModelMetadataRequest, ModelMetadataResponse, ModelReadyRequest, ModelReadyResponse,
    ServerLiveRequest, ServerLiveResponse, ServerMetadataRequest, ServerMetadataResponse,
    ServerReadyRequest, ServerReadyResponse,
};
use tonic::{Request, Response, Status};

use crate::oip::params::{Param, Params};
use crate::oip::tensor::{Elements, Input, OutputData};
use crate::oip::{self as core, InferRequest, InferResponse, OipError, RequestedOutput};
use crate::server::AppState;

/// `inference.GRPCInferenceService` over the worker's engine.
pub struct OipService {
    state: AppState,
}

impl OipService {
    /// A tonic server for `state`'s engine.
    pub fn server(state: AppState) -> GrpcInferenceServiceServer<Self> {
        GrpcInferenceServiceServer::new(Self { state })
            .max_decoding_message_size(crate::server::MAX_BODY_BYTES)
    }
}

fn status(e: OipError) -> Status {
    let message = e.to_string();
    match e {
        OipError::Invalid(_) => Status::invalid_argument(message),
        OipError::NotFound(_) => Status::not_found(message),
        OipError::Unavailable(_) => Status::unavailable(message),
        OipError::Exhausted(_) => Status::resource_exhausted(message),
        OipError::Internal(_) => Status::internal(message),
    }
}

#[tonic::async_trait]
impl GrpcInferenceService for OipService {
    async fn server_live(
        &self,
        _: Request<ServerLiveRequest>,
    ) -> Result<Response<ServerLiveResponse>, Status> {
        Ok(Response::new(ServerLiveResponse { live: core::live(&self.state) }))
    }

    async fn server_ready(
        &self,
        _: Request<ServerReadyRequest>,
    ) -> Result<Response<ServerReadyResponse>, Status> {
        Ok(Response::new(ServerReadyResponse { ready: core::ready(&self.state) }))
    }

    async fn model_ready(
        &self,
        request: Request<ModelReadyRequest>,
    ) -> Result<Response<ModelReadyResponse>, Status> {
        let r = request.into_inner();
        let ready = core::model_ready(&self.state, &r.name, &r.version).map_err(status)?;
        Ok(Response::new(ModelReadyResponse { ready }))
    }

    async fn server_metadata(
        &self,
        _: Request<ServerMetadataRequest>,
    ) -> Result<Response<ServerMetadataResponse>, Status> {
        Ok(Response::new(ServerMetadataResponse {
            name: core::SERVER_NAME.into(),
            version: env!("CARGO_PKG_VERSION").into(),
            extensions: core::EXTENSIONS.iter().map(|e| e.to_string()).collect(),
        }))
    }

    async fn model_metadata(
        &self,
        request: Request<ModelMetadataRequest>,
    ) -> Result<Response<ModelMetadataResponse>, Status> {
        let r = request.into_inner();
        let m = core::model_metadata(&self.state, &r.name, &r.version).map_err(status)?;
        let tensors = |ts: Vec<core::TensorMetadata>| {
            ts.into_iter()
                .map(|t| TensorMetadata {
                    name: t.name.into(),
                    datatype: t.datatype.into(),
                    shape: t.shape,
                })
                .collect()
        };
        Ok(Response::new(ModelMetadataResponse {
            name: m.name,
            versions: Vec::new(),
            platform: m.platform.into(),
            inputs: tensors(m.inputs),
            outputs: tensors(m.outputs),
        }))
    }

    async fn model_infer(
        &self,
        request: Request<ModelInferRequest>,
    ) -> Result<Response<ModelInferResponse>, Status> {
        let r = request.into_inner();
        let raw = !r.raw_input_contents.is_empty();
        let request = infer_request(r).map_err(status)?;
        let answer = core::infer(&self.state, request).await.map_err(status)?;
        Ok(Response::new(infer_response(answer, raw)))
    }
}

fn param(p: &InferParameter) -> Param {
    match &p.parameter_choice {
        Some(ParameterChoice::BoolParam(b)) => Param::Bool(*b),
        Some(ParameterChoice::Int64Param(i)) => Param::Int(*i),
        Some(ParameterChoice::StringParam(s)) => Param::Str(s.clone()),
        Some(ParameterChoice::DoubleParam(f)) => Param::Float(*f),
        Some(ParameterChoice::Uint64Param(u)) => Param::Uint(*u),
        None => Param::Other,
    }
}

fn params(map: &std::collections::HashMap<String, InferParameter>) -> Params {
    map.iter().map(|(k, v)| (k.clone(), param(v))).collect()
}

/// A `ModelInferRequest` as the protocol's request, its elements taken from `contents` or
/// `raw_input_contents`.
pub fn infer_request(r: ModelInferRequest) -> Result<InferRequest, OipError> {
    let n = r.raw_input_contents.len();
    if n > 0 && n != r.inputs.len() {
        let message = format!("{n} entries for {} inputs; one per input", r.inputs.len());
        return Err(OipError::invalid("raw_input_contents", message));
    }
    let mut raw = r.raw_input_contents.into_iter();
    let mut inputs = Vec::with_capacity(r.inputs.len());
    for (i, tensor) in r.inputs.into_iter().enumerate() {
        let InferInputTensor { name, datatype, shape, contents, .. } = tensor;
        let (elements, source) = match (raw.next(), contents) {
            (Some(_), Some(_)) => {
                let message = "set together with raw_input_contents; send one or the other";
                return Err(OipError::invalid(&format!("inputs[{i}].contents"), message));
            }
            (Some(bytes), None) => {
                (Elements::Raw(bytes.into()), format!("raw_input_contents[{i}]"))
            }
            (None, contents) => listed(contents.unwrap_or_default(), &datatype, i),
        };
        inputs.push(Input { name, datatype, shape, elements, source });
    }
    let outputs = r.outputs.into_iter().map(|o| RequestedOutput { name: o.name }).collect();
    Ok(InferRequest {
        model: r.model_name,
        version: r.model_version,
        id: r.id,
        parameters: params(&r.parameters),
        inputs,
        outputs,
    })
}

/// Elements listed in `contents`, in the field of the datatype.
fn listed(c: InferTensorContents, datatype: &str, i: usize) -> (Elements, String) {
    let at = |field: &str| format!("inputs[{i}].contents.{field}");
    match datatype {
        "BYTES" if !c.bytes_contents.is_empty() => {
            (Elements::Bytes(c.bytes_contents), at("bytes_contents"))
        }
        "BOOL" if !c.bool_contents.is_empty() => {
            (Elements::Bools(c.bool_contents), at("bool_contents"))
        }
        _ => {
            let count = c.bool_contents.len()
                + c.int_contents.len()
                + c.int64_contents.len()
                + c.uint_contents.len()
                + c.uint64_contents.len()
                + c.fp32_contents.len()
                + c.fp64_contents.len()
                + c.bytes_contents.len();
            let elements = if count == 0 { Elements::Missing } else { Elements::Numbers(count) };
            (elements, format!("inputs[{i}].contents"))
        }
    }
}

/// The answer, raw or in `contents`.
pub fn infer_response(answer: InferResponse, raw: bool) -> ModelInferResponse {
    let mut raw_output_contents = Vec::new();
    let outputs = answer
        .outputs
        .into_iter()
        .map(|o| {
            let (datatype, shape) = (o.datatype().to_owned(), o.shape.clone());
            let contents = if raw {
                raw_output_contents.push(o.raw());
                None
            } else {
                Some(match o.data {
                    OutputData::Fp32(fp32_contents) => {
                        InferTensorContents { fp32_contents, ..Default::default() }
                    }
                    OutputData::Bytes(items) => {
                        InferTensorContents { bytes_contents: items, ..Default::default() }
                    }
                })
            };
            InferOutputTensor {
                name: o.name.into(),
                datatype,
                shape,
                contents,
                ..Default::default()
            }
        })
        .collect();
    ModelInferResponse {
        model_name: answer.model,
        id: answer.id,
        outputs,
        raw_output_contents,
        ..Default::default()
    }
}
