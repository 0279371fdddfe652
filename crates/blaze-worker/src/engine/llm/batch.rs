//! The scheduler thread: admits queued requests, prefills them, and decodes every running
//! sequence together, one token per step.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use tokio::sync::mpsc::UnboundedSender;

use super::fault;
use super::health::Shared;
use super::stop::StopMatcher;
use super::{Admission, SchedulerConfig};
use crate::engine::{EngineError, Event, FinishReason};
use crate::metrics::Metrics;
use crate::model::{KvCache, LoadedModel, PrefixCache, SeqInput};
use crate::sampling::Sampler;
use crate::tokenizer::StreamDecoder;

/// How long an idle scheduler waits for work before it looks at its state again.
const IDLE_POLL: Duration = Duration::from_millis(50);

/// One sequence in the running batch.
struct Sequence {
    sink: UnboundedSender<Event>,
    sampler: Sampler,
    cache: KvCache,
    prompt: Vec<u32>,
    last: u32,
    generated: usize,
    max_tokens: usize,
    decoder: StreamDecoder,
    stop: StopMatcher,
    deadline: Option<Instant>,
    admitted_at: Instant,
    last_token_at: Instant,
    done: bool,
}

pub(crate) struct Worker {
    model: Arc<LoadedModel>,
    queue: Receiver<Admission>,
    shared: Arc<Shared>,
    metrics: Metrics,
    config: SchedulerConfig,
    running: Vec<Sequence>,
    /// Keys and values of recent prompts, when `config.prefix_cache_bytes` is not zero.
    prefixes: Option<PrefixCache>,
    /// Bytes of cache a full batch may take: the denominator of `vllm:kv_cache_usage_perc`.
    kv_budget: usize,
}

impl Worker {
    pub(crate) fn new(
        model: Arc<LoadedModel>,
        queue: Receiver<Admission>,
        shared: Arc<Shared>,
        metrics: Metrics,
        config: SchedulerConfig,
    ) -> Self {
        let per_token = model.llama.kv_bytes_per_token();
        let prefixes = (config.prefix_cache_bytes > 0)
            .then(|| PrefixCache::new(config.prefix_cache_bytes, per_token));
        let capacity = prefixes.as_ref().map_or(0, PrefixCache::capacity_bytes);
        metrics.prefix_capacity.set(i64::try_from(capacity).unwrap_or(i64::MAX));
        if config.prefix_cache_bytes > 0 && capacity == 0 {
            tracing::warn!(
                bytes = config.prefix_cache_bytes,
                block_bytes = per_token * crate::model::prefix_cache::BLOCK_TOKENS,
                "the prefix cache is smaller than one block; nothing will be kept"
            );
        }
        let kv_budget =
            (config.max_batch_size * model.llama.config().max_seq_len * per_token).max(1);
        Self { model, queue, shared, metrics, config, running: Vec::new(), prefixes, kv_budget }
    }

    pub(crate) fn run(&mut self) {
        loop {
            self.shared.mark_progress();
            let new = if self.running.is_empty() {
                // Idle: wait for one request, then up to `max_wait` for others to join it, so
                // a burst is prefilled in one pass instead of the first alone.
                match self.queue.recv_timeout(IDLE_POLL) {
                    Ok(first) => {
                        let until = Instant::now() + self.config.max_wait;
                        self.take(vec![first], until)
                    }
                    Err(RecvTimeoutError::Timeout) => continue,
                    Err(RecvTimeoutError::Disconnected) => return,
                }
            } else {
                // Decoding: never wait; whatever has arrived joins between two steps.
                self.take(Vec::new(), Instant::now())
            };
            if !new.is_empty() {
                self.prefill(new);
            }
            self.decode();
        }
    }

    /// Adds queued requests to `new` while the next prefill has room (`max_batch_size`
    /// sequences with those running, `max_batch_tokens` prompt tokens), waiting for more
    /// until `until`.
    fn take(&self, mut new: Vec<Admission>, until: Instant) -> Vec<Admission> {
        let mut tokens: usize = new.iter().map(|a| a.request.prompt.len()).sum();
        while self.running.len() + new.len() < self.config.max_batch_size
            && tokens < self.config.max_batch_tokens
        {
            let left = until.saturating_duration_since(Instant::now());
            let next = if left.is_zero() {
                self.queue.try_recv().ok()
            } else {
                self.queue.recv_timeout(left).ok()
            };
            let Some(admission) = next else { break };
            tokens += admission.request.prompt.len();
            new.push(admission);
        }
        new
    }

    /// Prefills newly admitted requests together and emits each one's first token.
    fn prefill(&mut self, admissions: Vec<Admission>) {
        let start = self.running.len();
        for a in admissions {
            self.metrics.waiting.dec();
            if a.sink.is_closed() {
                self.finished("cancelled");
                continue;
            }
            let r = a.request;
            self.metrics.prompt_tokens.inc_by(r.prompt.len() as u64);
            let cache = self.reuse(&r.prompt);
            self.running.push(Sequence {
                sink: a.sink,
                sampler: Sampler::new(r.sampling, &r.prompt),
                cache,
                last: 0,
                generated: 0,
                max_tokens: r.max_tokens,
                decoder: StreamDecoder::default(),
                stop: StopMatcher::new(r.stop),
                deadline: r.deadline,
                admitted_at: a.admitted_at,
                last_token_at: a.admitted_at,
                prompt: r.prompt,
                done: false,
            });
        }
        if self.running.len() > start {
            let sequences = self.running.len() - start;
            self.metrics.prefill_batch_size.observe(sequences as f64);
        }
        self.step(start, true);
        if let Some(prefixes) = &mut self.prefixes {
            for s in &self.running[start..] {
                // A sequence that failed its prefill holds no keys to keep.
                if s.cache.len() < s.prompt.len() {
                    continue;
                }
                if let Err(e) = prefixes.insert(&s.prompt, &s.cache) {
                    tracing::warn!(error = %e, "keeping a prompt in the prefix cache failed");
                }
            }
            let evicted = prefixes.evictions() - self.metrics.prefix_evictions.get();
            self.metrics.prefix_evictions.inc_by(evicted);
            self.metrics.prefix_bytes.set(i64::try_from(prefixes.bytes()).unwrap_or(i64::MAX));
        }
    }

    /// A cache for `prompt`: its longest prefix found in the prefix cache, or empty.
    fn reuse(&self, prompt: &[u32]) -> KvCache {
        let Some(prefixes) = &self.prefixes else { return KvCache::default() };
        self.metrics.prefix_queries.inc_by(prompt.len() as u64);
        match prefixes.lookup(prompt) {
            Ok(reuse) => {
                self.metrics.prefix_hits.inc_by(reuse.tokens as u64);
                reuse.cache
            }
            Err(e) => {
                tracing::warn!(error = %e, "reading the prefix cache failed; prefilling all");
                KvCache::default()
            }
        }
    }

    /// One decode step over every running sequence.
    fn decode(&mut self) {
        self.running.retain(|s| !s.done);
        let now = Instant::now();
        for s in &mut self.running {
            if s.sink.is_closed() {
                s.done = true;
                self.metrics.finish("cancelled");
                self.shared.in_flight.fetch_sub(1, Ordering::SeqCst);
            } else if s.deadline.is_some_and(|d| now >= d) {
                let done = Event::Done {
                    reason: FinishReason::Deadline,
                    prompt_tokens: s.prompt.len(),
                    completion_tokens: s.generated,
                };
                let _ = s.sink.send(done);
                s.done = true;
                self.metrics.finish("deadline");
                self.shared.in_flight.fetch_sub(1, Ordering::SeqCst);
            }
        }
        self.running.retain(|s| !s.done);
        if !self.running.is_empty() {
            self.metrics.batch_size.observe(self.running.len() as f64);
            self.step(0, false);
        }
        self.running.retain(|s| !s.done);
        self.update_gauges();
    }

    /// Runs the forward pass for `running[from..]` (whole prompts when `prefill`, else the
    /// last token) and handles each sampled token.
    fn step(&mut self, from: usize, prefill: bool) {
        if from >= self.running.len() {
            return;
        }
        let last: Vec<[u32; 1]> = self.running[from..].iter().map(|s| [s.last]).collect();
        let mut inputs: Vec<SeqInput<'_>> = self.running[from..]
            .iter_mut()
            .zip(&last)
            .map(|(s, l)| SeqInput {
                // A prompt's prefix may be in the cache already (from the prefix cache).
                tokens: if prefill { &s.prompt[s.cache.len()..] } else { l },
                cache: &mut s.cache,
            })
            .collect();
        self.shared.mark_progress();
        fault::before_forward();
        let llama = &self.model.llama;
        let logits = if prefill { llama.prefill(&mut inputs) } else { llama.forward(&mut inputs) };
        let logits = logits.and_then(|l| Ok(l.to_vec2::<f32>()?));
        drop(inputs);
        self.shared.mark_progress();
        match logits {
            Ok(rows) => {
                for (i, mut row) in rows.into_iter().enumerate() {
                    self.emit(from + i, &mut row);
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "forward pass failed");
                for s in &mut self.running[from..] {
                    let _ = s.sink.send(Event::Error(EngineError::Forward(e.to_string())));
                    s.done = true;
                    self.metrics.finish("error");
                    self.shared.in_flight.fetch_sub(1, Ordering::SeqCst);
                }
            }
        }
        self.update_gauges();
    }

    /// Samples sequence `i`'s next token from `logits` and sends it.
    fn emit(&mut self, i: usize, logits: &mut [f32]) {
        let context = self.model.llama.config().max_seq_len;
        let s = &mut self.running[i];
        let (token, logprob) = s.sampler.sample(logits);
        let now = Instant::now();
        if s.generated == 0 {
            self.metrics.ttft.observe((now - s.admitted_at).as_secs_f64());
        } else {
            self.metrics.tpot.observe((now - s.last_token_at).as_secs_f64());
        }
        s.last_token_at = now;
        s.generated += 1;
        s.last = token;
        self.metrics.generation_tokens.inc();
        let mut reason = None;
        let text = if self.model.eos_ids.contains(&token) {
            reason = Some(FinishReason::Stop);
            // Bytes held back for a character the model never finished.
            let rest = s.decoder.finish(&self.model.tokenizer).unwrap_or_default();
            s.stop.push(&rest, true).0
        } else {
            let mut piece = s.decoder.push(&self.model.tokenizer, token).unwrap_or_default();
            let at_limit = s.generated >= s.max_tokens || s.cache.len() + 1 >= context;
            if at_limit {
                piece.push_str(&s.decoder.finish(&self.model.tokenizer).unwrap_or_default());
            }
            let (text, hit) = s.stop.push(&piece, at_limit);
            if hit {
                reason = Some(FinishReason::Stop);
            } else if at_limit {
                reason = Some(FinishReason::Length);
            }
            text
        };
        let sent = s.sink.send(Event::Token { id: token, text, logprob }).is_ok();
        if let Some(reason) = reason.filter(|_| sent) {
            let done = Event::Done {
                reason,
                prompt_tokens: s.prompt.len(),
                completion_tokens: s.generated,
            };
            let _ = s.sink.send(done);
            self.metrics.e2e.observe((now - s.admitted_at).as_secs_f64());
            self.metrics.finish(reason.as_openai());
        } else if !sent {
            self.metrics.finish("cancelled");
        }
        if reason.is_some() || !sent {
            s.done = true;
            self.shared.in_flight.fetch_sub(1, Ordering::SeqCst);
        }
    }

    fn finished(&self, reason: &str) {
        self.metrics.finish(reason);
        self.shared.in_flight.fetch_sub(1, Ordering::SeqCst);
    }

    fn update_gauges(&self) {
        let live = self.running.iter().filter(|s| !s.done);
        let bytes: usize = live.clone().map(|s| s.cache.bytes()).sum();
        self.metrics.running.set(live.count() as i64);
        self.metrics.kv_cache_usage.set((bytes as f64 / self.kv_budget as f64).min(1.0));
    }
}
