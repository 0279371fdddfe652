//! The gRPC surface: `blaze.generate.v1.Generate/GenerateStream`, the Open Inference
//! Protocol's `inference.GRPCInferenceService` ([`oip`]) and `grpc.health.v1`. An embedding
//! worker answers the generate service `UNIMPLEMENTED`: it generates no text (its gRPC API
//! is the Open Inference Protocol's).

pub mod oip;

use std::pin::Pin;
use std::time::Instant;

use blaze_proto::generate::generate_server::{Generate, GenerateServer};
use blaze_proto::generate::{GenerateRequest as ProtoRequest, GenerateResponse};
use futures::Stream;
use tonic::{Request, Response, Status};

use blaze_worker_cli::Kind;

use crate::engine::{EngineError, Event, GenerateRequest, SubmitError};
use crate::sampling::SamplingParams;
use crate::server::AppState;

/// The generate service over the worker's engine.
pub struct GenerateService {
    state: AppState,
}

impl GenerateService {
    /// A tonic server for `state`'s engine.
    pub fn server(state: AppState) -> GenerateServer<Self> {
        GenerateServer::new(Self { state })
    }
}

fn status(e: SubmitError) -> Status {
    match e {
        SubmitError::QueueFull(_) => Status::resource_exhausted(e.to_string()),
        SubmitError::Unavailable(_) => Status::unavailable(e.to_string()),
        SubmitError::Invalid { .. } => Status::invalid_argument(e.to_string()),
    }
}

/// A request the engine ended early: `UNAVAILABLE` (retriable) when the worker failed.
fn engine_status(e: &EngineError) -> Status {
    if e.is_retriable() {
        Status::unavailable(e.to_string())
    } else {
        Status::internal(e.to_string())
    }
}

type EventStream = Pin<Box<dyn Stream<Item = Result<GenerateResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Generate for GenerateService {
    type GenerateStreamStream = EventStream;

    async fn generate_stream(
        &self,
        request: Request<ProtoRequest>,
    ) -> Result<Response<EventStream>, Status> {
        if self.state.kind != Kind::Llm {
            return Err(Status::unimplemented(format!(
                "blaze.generate.v1.Generate is for text-generation models; this worker serves \
                 --kind {} (embeddings: POST /v1/embeddings or \
                 inference.GRPCInferenceService/ModelInfer)",
                self.state.kind
            )));
        }
        let r = request.into_inner();
        let engine = self
            .state
            .ready_engine()
            .ok_or_else(|| Status::unavailable("the worker is not ready"))?
            .clone();
        if !r.model.is_empty() && r.model != engine.model_name() {
            return Err(Status::not_found(format!("model {:?} is not served here", r.model)));
        }
        let s = r.sampling.unwrap_or_default();
        let sampling = SamplingParams {
            temperature: s.temperature.unwrap_or(0.0),
            top_p: s.top_p.unwrap_or(1.0),
            top_k: s.top_k.unwrap_or(0) as usize,
            seed: s.seed,
            repetition_penalty: s.repetition_penalty.unwrap_or(1.0),
            frequency_penalty: s.frequency_penalty.unwrap_or(0.0),
            presence_penalty: s.presence_penalty.unwrap_or(0.0),
            logprobs: None,
            ignore_eos: s.ignore_eos.unwrap_or(false),
        };
        let invalid = |field: &str, ok: bool| {
            if ok {
                Ok(())
            } else {
                Err(Status::invalid_argument(format!("sampling.{field} is out of range")))
            }
        };
        invalid("temperature", (0.0..=2.0).contains(&sampling.temperature))?;
        invalid("top_p", sampling.top_p > 0.0 && sampling.top_p <= 1.0)?;
        invalid("repetition_penalty", sampling.repetition_penalty > 0.0)?;
        let prompt = engine.tokenize(&r.prompt).map_err(status)?;
        let room = engine.context_length().saturating_sub(prompt.len());
        let max_tokens = if r.max_tokens == 0 {
            self.state.default_max_tokens.min(room)
        } else {
            r.max_tokens as usize
        };
        if max_tokens > room {
            return Err(Status::invalid_argument(format!(
                "max_tokens: {max_tokens} do not fit in the context"
            )));
        }
        let request = GenerateRequest {
            prompt,
            max_tokens,
            sampling,
            stop: r.stop,
            deadline: Some(Instant::now() + self.state.request_timeout),
        };
        let mut events = engine.submit(request).map_err(status)?;
        let stream = async_stream::stream! {
            while let Some(event) = events.recv().await {
                match event {
                    Event::Token { id, text, .. } => yield Ok(GenerateResponse { text, token_ids: vec![id], ..Default::default() }),
                    Event::Done { reason, prompt_tokens, completion_tokens } => {
                        yield Ok(GenerateResponse {
                            finish_reason: reason.as_openai().into(),
                            prompt_tokens: prompt_tokens as u32,
                            completion_tokens: completion_tokens as u32,
                            ..Default::default()
                        });
                        break;
                    }
                    Event::Error(e) => { yield Err(engine_status(&e)); break; }
                }
            }
        };
        Ok(Response::new(Box::pin(stream)))
    }
}
