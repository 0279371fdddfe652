//! The diffusion engine: a thread that owns a pipeline and denoises batches of images, fed
//! through a bounded admission queue, with the same watchdog as the other engines. A
//! request is one prompt and its `n` images; the engine streams progress (step i of n) and
//! then the images, or an error. Dropping the receiver cancels the request's images from
//! the next step on.
//!
//! Batching: images that share a size, a step count and whether guidance is on are
//! denoised together, one UNet pass per step for the whole batch, up to `max_batch_size`
//! images; the oldest waiting request decides the next batch's shape, and requests of that
//! shape join it in arrival order while there is room. A request of another shape waits
//! for the next batch: a batch runs to its end (steps do not mix timesteps), so the wait is
//! bounded by one batch.

mod batch;

use std::sync::Arc;
use std::sync::mpsc::SyncSender;
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use tokio::sync::mpsc;

use crate::engine::health::{self, Ending, Shared};
use crate::engine::{EngineError, Health, SubmitError};
use crate::metrics::Metrics;
use crate::model::diffusion::{DiffusionModel, ImageSpec};

/// Most images one request may ask for (OpenAI's limit for `n`).
pub const MAX_IMAGES: usize = 10;

/// Batching and request limits.
#[derive(Debug, Clone)]
pub struct DiffusionConfig {
    /// Most images denoised together.
    pub max_batch_size: usize,
    /// Most requests waiting; one more is refused at once.
    pub max_queue: usize,
    /// How long an idle engine holds a first request for others to join its batch.
    pub max_wait: Duration,
    /// Longest the engine may go without progress (a step) while requests wait.
    pub stall_timeout: Duration,
    /// Largest width or height a request may ask for.
    pub max_side: usize,
    /// Most steps a request may ask for.
    pub max_steps: usize,
    /// Width and height of a request that gives no size.
    pub default_size: (usize, usize),
    /// Steps of a request that gives none.
    pub default_steps: usize,
}

impl Default for DiffusionConfig {
    fn default() -> Self {
        Self {
            max_batch_size: 4,
            max_queue: 64,
            max_wait: Duration::from_millis(5),
            stall_timeout: Duration::from_secs(120),
            max_side: 2048,
            max_steps: 150,
            default_size: (512, 512),
            default_steps: 30,
        }
    }
}

/// One request: `images`, all of one prompt, size, step count and guidance scale (each with
/// its own seed).
#[derive(Debug, Clone, PartialEq)]
pub struct ImageRequest {
    /// The images.
    pub images: Vec<ImageSpec>,
    /// After this the request ends with an error.
    pub deadline: Option<Instant>,
}

/// A generated image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GeneratedImage {
    /// The image as PNG.
    pub png: Vec<u8>,
    /// The seed it was drawn from (the same seed and settings give the same image).
    pub seed: u64,
}

/// What the engine sends back for a request.
#[derive(Debug, Clone, PartialEq)]
pub enum ImageEvent {
    /// A denoising step finished.
    Progress {
        /// Steps done.
        step: usize,
        /// Steps in all.
        steps: usize,
    },
    /// The images, in the order of the request's; the last event.
    Done(Vec<GeneratedImage>),
    /// The request ended without images; the last event.
    Error(EngineError),
}

impl Ending for ImageEvent {
    fn failed(error: EngineError) -> Self {
        ImageEvent::Error(error)
    }
}

blaze_telemetry::metrics! {
    /// The diffusion engine's own metrics (request counts, latency and queue gauges are the
    /// shared ones in [`Metrics`]).
    #[derive(Clone)]
    pub struct DiffusionMetrics {
        /// Images generated.
        images: Counter = "blaze_diffusion_images", "Images generated";
        /// Seconds per denoising step of a batch.
        step_seconds: Histogram = "blaze_diffusion_step_seconds",
            "Seconds per denoising step (one UNet pass over the batch)",
            Histogram::new([0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0].into_iter());
        /// Seconds to decode a batch's latents into images.
        decode_seconds: Histogram = "blaze_diffusion_decode_seconds",
            "Seconds to decode a batch's latents into images",
            Histogram::new([0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0].into_iter());
        /// Images per batch.
        batch_images: Histogram = "blaze_diffusion_batch_images", "Images per denoising batch",
            Histogram::new([1.0, 2.0, 4.0, 8.0, 16.0].into_iter());
    }
}

impl DiffusionMetrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        Self::create(registry)
    }
}

/// A queued request with the channel its events go to.
pub(crate) struct Admission {
    request: ImageRequest,
    sink: mpsc::UnboundedSender<ImageEvent>,
    admitted_at: Instant,
}

/// Serves a diffusion pipeline.
pub struct DiffusionEngine {
    name: String,
    model: Arc<DiffusionModel>,
    queue: SyncSender<Admission>,
    shared: Arc<Shared<ImageEvent>>,
    metrics: Metrics,
    config: DiffusionConfig,
}

impl DiffusionEngine {
    /// Starts the denoising thread for `model`, serving it as `name`, and its watchdog.
    pub fn start(
        name: String,
        model: DiffusionModel,
        config: DiffusionConfig,
        metrics: Metrics,
        own: DiffusionMetrics,
    ) -> Self {
        let model = Arc::new(model);
        let (queue, shared) = health::start_engine_thread(
            "blaze-diffuser",
            &metrics,
            config.max_queue,
            config.stall_timeout,
            |receiver, shared| {
                batch::Worker::new(
                    model.clone(),
                    receiver,
                    shared,
                    metrics.clone(),
                    own,
                    config.clone(),
                )
            },
            batch::Worker::run,
        );
        Self { name, model, queue, shared, metrics, config }
    }

    /// Generates one small image on the calling thread before the engine starts, so that
    /// the first request does not pay for first use. Returns how long it took.
    pub fn warm_up(model: &DiffusionModel) -> crate::Result<Duration> {
        let started = Instant::now();
        let side = 8 * model.size_multiple();
        let spec = ImageSpec {
            prompt: "warm-up".into(),
            negative_prompt: String::new(),
            width: side,
            height: side,
            steps: 1,
            guidance_scale: model.default_guidance(),
            seed: 0,
        };
        model.generate(&[spec])?;
        Ok(started.elapsed())
    }

    /// The loaded pipeline.
    pub fn model(&self) -> &Arc<DiffusionModel> {
        &self.model
    }

    /// The limits.
    pub fn config(&self) -> &DiffusionConfig {
        &self.config
    }

    /// The name clients use for the served model.
    pub fn model_name(&self) -> &str {
        &self.name
    }

    health::lifecycle_methods!(pub);

    /// Queues `request` after checking it; the receiver gets progress events, then the
    /// images or an error.
    pub fn submit(
        &self,
        request: ImageRequest,
    ) -> Result<mpsc::UnboundedReceiver<ImageEvent>, SubmitError> {
        let health = self.shared.health();
        if health != Health::Ready {
            return Err(SubmitError::Unavailable(health));
        }
        self.check(&request)?;
        let (sink, events) = mpsc::unbounded_channel();
        self.shared.register(&sink).map_err(SubmitError::Unavailable)?;
        let admission = Admission { request, sink, admitted_at: Instant::now() };
        health::enqueue(
            &self.shared,
            &self.metrics,
            &self.queue,
            admission,
            self.config.max_queue,
        )?;
        Ok(events)
    }

    /// Refuses what cannot be served, naming the request field.
    fn check(&self, request: &ImageRequest) -> Result<(), SubmitError> {
        let invalid = |field, message: String| SubmitError::Invalid { field, message };
        let Some(first) = request.images.first() else {
            return Err(invalid("n", "must be at least 1".into()));
        };
        let most = MAX_IMAGES.min(self.config.max_batch_size);
        if request.images.len() > most {
            let n = request.images.len();
            return Err(invalid(
                "n",
                format!(
                    "{n} images; at most {most} per request (this engine batches {} images)",
                    self.config.max_batch_size
                ),
            ));
        }
        let multiple = self.model.size_multiple();
        let max = self.config.max_side;
        for (field, side) in [("width", first.width), ("height", first.height)] {
            if side < 64 || side > max || side % multiple != 0 {
                return Err(invalid(
                    field,
                    format!(
                        "{field} {side} is not a multiple of {multiple} from 64 to {max} pixels"
                    ),
                ));
            }
        }
        if first.steps == 0 || first.steps > self.config.max_steps {
            let max = self.config.max_steps;
            return Err(invalid("steps", format!("{}: from 1 to {max}", first.steps)));
        }
        let g = first.guidance_scale;
        if !g.is_finite() || !(0.0..=50.0).contains(&g) {
            return Err(invalid("guidance_scale", format!("{g}: from 0 to 50")));
        }
        if request.images.iter().any(|i| {
            (i.width, i.height, i.steps, i.guided())
                != (first.width, first.height, first.steps, first.guided())
        }) {
            return Err(invalid(
                "n",
                "the images of one request share size, steps and guidance".into(),
            ));
        }
        Ok(())
    }
}
