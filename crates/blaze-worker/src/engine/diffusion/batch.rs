//! The denoising thread: forms a batch from the waiting requests (the oldest decides its
//! shape), runs its steps, reporting progress and dropping cancelled or expired requests'
//! images between steps, decodes the images and answers each request.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use tokio::sync::mpsc::UnboundedSender;

use super::{Admission, DiffusionConfig, DiffusionMetrics, GeneratedImage, ImageEvent};
use crate::engine::health::Shared;
use crate::engine::{EngineError, fault};
use crate::metrics::Metrics;
use crate::model::diffusion::{Denoising, DiffusionModel, ImageSpec, png};

/// How long an idle thread waits for work before it looks at its state again.
const IDLE_POLL: Duration = Duration::from_millis(50);

pub(crate) struct Worker {
    model: Arc<DiffusionModel>,
    queue: Receiver<Admission>,
    shared: Arc<Shared<ImageEvent>>,
    metrics: Metrics,
    own: DiffusionMetrics,
    config: DiffusionConfig,
    /// Taken from the queue, not yet in a batch.
    waiting: VecDeque<Admission>,
    /// The running batch's requests. Held here, not on the stack: a panic unwinds the stack,
    /// and the watchdog's trip must still find their senders.
    open: Vec<Open>,
}

/// A request of the running batch.
struct Open {
    sink: UnboundedSender<ImageEvent>,
    /// The seeds of its images, which are consecutive in the batch.
    seeds: Vec<u64>,
    deadline: Option<Instant>,
    admitted_at: Instant,
    done: bool,
}

/// What decides whether two requests can share a batch.
fn shape(spec: &ImageSpec) -> (usize, usize, usize, bool) {
    (spec.width, spec.height, spec.steps, spec.guided())
}

impl Worker {
    pub(crate) fn new(
        model: Arc<DiffusionModel>,
        queue: Receiver<Admission>,
        shared: Arc<Shared<ImageEvent>>,
        metrics: Metrics,
        own: DiffusionMetrics,
        config: DiffusionConfig,
    ) -> Self {
        Self {
            model,
            queue,
            shared,
            metrics,
            own,
            config,
            waiting: VecDeque::new(),
            open: Vec::new(),
        }
    }

    pub(crate) fn run(&mut self) {
        loop {
            self.shared.mark_progress();
            if self.waiting.is_empty() {
                match self.queue.recv_timeout(IDLE_POLL) {
                    Ok(first) => {
                        self.waiting.push_back(first);
                        self.gather();
                    }
                    Err(RecvTimeoutError::Timeout) => continue,
                    Err(RecvTimeoutError::Disconnected) => return,
                }
            } else {
                self.waiting.extend(self.queue.try_iter());
            }
            let batch = self.next_batch();
            if !batch.is_empty() {
                self.run_batch(batch);
            }
        }
    }

    /// Waits up to `max_wait` for requests to join the first one while a batch has room.
    fn gather(&mut self) {
        let until = Instant::now() + self.config.max_wait;
        let mut images: usize = self.waiting.iter().map(|a| a.request.images.len()).sum();
        while images < self.config.max_batch_size {
            match self.queue.recv_timeout(until.saturating_duration_since(Instant::now())) {
                Ok(a) => {
                    images += a.request.images.len();
                    self.waiting.push_back(a);
                }
                Err(_) => break,
            }
        }
        self.waiting.extend(self.queue.try_iter());
    }

    /// The oldest waiting request and those of its shape that fit beside it, in arrival
    /// order; cancelled ones are ended on the way.
    fn next_batch(&mut self) -> Vec<Admission> {
        let mut batch = Vec::new();
        let mut images = 0;
        let mut key = None;
        let mut kept = VecDeque::with_capacity(self.waiting.len());
        while let Some(a) = self.waiting.pop_front() {
            if a.sink.is_closed() {
                self.metrics.waiting.dec();
                self.end("cancelled");
                continue;
            }
            let this = shape(&a.request.images[0]);
            let fits = images + a.request.images.len() <= self.config.max_batch_size;
            if key.is_none_or(|k| k == this) && fits {
                key = Some(this);
                images += a.request.images.len();
                self.metrics.waiting.dec();
                batch.push(a);
            } else {
                kept.push_back(a);
            }
        }
        self.waiting = kept;
        batch
    }

    fn run_batch(&mut self, batch: Vec<Admission>) {
        self.open.clear();
        let mut specs = Vec::new();
        for a in batch {
            self.open.push(Open {
                sink: a.sink,
                seeds: a.request.images.iter().map(|i| i.seed).collect(),
                deadline: a.request.deadline,
                admitted_at: a.admitted_at,
                done: false,
            });
            specs.extend(a.request.images);
        }
        self.metrics.running.set(self.open.len() as i64);
        self.own.batch_images.observe(specs.len() as f64);
        let result = self.denoise(&specs);
        if let Err(e) = result {
            tracing::error!(error = %e, images = specs.len(), "image generation failed");
            for i in 0..self.open.len() {
                if !self.open[i].done {
                    let _ = self.open[i]
                        .sink
                        .send(ImageEvent::Error(EngineError::Forward(e.to_string())));
                    self.open[i].done = true;
                    self.end("error");
                }
            }
        }
        self.open.clear();
        self.metrics.running.set(0);
    }

    fn denoise(&mut self, specs: &[ImageSpec]) -> crate::Result<()> {
        self.shared.mark_progress();
        fault::before_forward();
        let mut state = self.model.start(specs)?;
        let steps = state.steps();
        while state.done() < steps {
            if !self.drop_finished(&mut state)? {
                return Ok(());
            }
            let started = Instant::now();
            self.shared.mark_progress();
            fault::before_forward();
            self.model.step(&mut state)?;
            self.own.step_seconds.observe(started.elapsed().as_secs_f64());
            self.shared.mark_progress();
            let step = state.done();
            for o in self.open.iter().filter(|o| !o.done) {
                let _ = o.sink.send(ImageEvent::Progress { step, steps });
            }
        }
        if !self.drop_finished(&mut state)? {
            return Ok(());
        }
        let started = Instant::now();
        let pixels = self.model.finish(state)?;
        self.own.decode_seconds.observe(started.elapsed().as_secs_f64());
        self.shared.mark_progress();
        let mut images = pixels.iter();
        for i in 0..self.open.len() {
            if self.open[i].done {
                continue;
            }
            let o = &self.open[i];
            let mut out = Vec::with_capacity(o.seeds.len());
            for &seed in &o.seeds {
                let pixels = images
                    .next()
                    .ok_or_else(|| crate::Error::Unsupported("fewer images than asked".into()))?;
                out.push(GeneratedImage { png: png(pixels)?, seed });
            }
            self.own.images.inc_by(out.len() as u64);
            let sent = o.sink.send(ImageEvent::Done(out)).is_ok();
            if sent {
                self.metrics.e2e.observe(o.admitted_at.elapsed().as_secs_f64());
            }
            self.open[i].done = true;
            self.end(if sent { "stop" } else { "cancelled" });
        }
        Ok(())
    }

    /// Ends requests that were cancelled or ran past their deadline and drops their images
    /// from `state`; false when none is left. The batch's images are those of the requests
    /// still open, in order.
    fn drop_finished(&mut self, state: &mut Denoising) -> crate::Result<bool> {
        let now = Instant::now();
        let mut keep = Vec::with_capacity(state.len());
        let mut ended = Vec::new();
        for o in self.open.iter_mut().filter(|o| !o.done) {
            let cancelled = o.sink.is_closed();
            let expired = !cancelled && o.deadline.is_some_and(|d| now >= d);
            keep.extend(std::iter::repeat_n(!(cancelled || expired), o.seeds.len()));
            if expired {
                let message = "the request's deadline passed before its images were done";
                let _ = o.sink.send(ImageEvent::Error(EngineError::Forward(message.into())));
            }
            if cancelled || expired {
                o.done = true;
                ended.push(if cancelled { "cancelled" } else { "deadline" });
            }
        }
        if !ended.is_empty() {
            ended.iter().for_each(|reason| self.end(reason));
            self.model.retain(state, &keep)?;
        }
        Ok(self.open.iter().any(|o| !o.done))
    }

    fn end(&self, reason: &str) {
        self.metrics.finish(reason);
        self.shared.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}
