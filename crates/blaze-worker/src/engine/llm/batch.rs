//! The scheduler thread: admits queued requests, prefills their prompts in chunks of a
//! token budget, and between two chunks decodes every running sequence together, one token
//! per step.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use tokio::sync::mpsc::UnboundedSender;

use super::stop::StopMatcher;
use super::{Admission, SchedulerConfig};
use crate::engine::health::Shared;
use crate::engine::{EngineError, Event, FinishReason, fault};
use crate::metrics::Metrics;
use crate::model::{KvCache, KvPool, LoadedModel, PrefixCache, SeqInput};
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
    shared: Arc<Shared<Event>>,
    metrics: Metrics,
    config: SchedulerConfig,
    running: Vec<Sequence>,
    /// Keys and values of recent prompts, when `config.prefix_cache_bytes` is not zero.
    prefixes: Option<PrefixCache>,
    /// Bytes of cache a full batch may take: the denominator of `vllm:kv_cache_usage_perc`.
    kv_budget: usize,
    /// The slots running sequences keep their keys and values in, with `config.kv_slots`.
    slots: Option<Arc<KvPool>>,
}

impl Worker {
    pub(crate) fn new(
        model: Arc<LoadedModel>,
        queue: Receiver<Admission>,
        shared: Arc<Shared<Event>>,
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
        let slots = config.kv_slots.then(|| {
            tracing::info!("keys and values in slots: one batched attention per decode step");
            model.llama.kv_pool(config.max_batch_size)
        });
        Self {
            model,
            queue,
            shared,
            metrics,
            config,
            running: Vec::new(),
            prefixes,
            kv_budget,
            slots,
        }
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
            self.admit(new);
            self.prefill();
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

    /// Adds newly admitted requests to the running sequences, each with the longest prefix
    /// of its prompt the prefix cache holds; the prefill passes compute the rest.
    fn admit(&mut self, admissions: Vec<Admission>) {
        for a in admissions {
            self.metrics.waiting.dec();
            if a.sink.is_closed() {
                self.finished("cancelled");
                continue;
            }
            let r = a.request;
            self.metrics.prompt_tokens.inc_by(r.prompt.len() as u64);
            // A sequence that may grow past a slot keeps its own cache (see SLOT_POSITIONS).
            let fits = |slots: &KvPool| r.prompt.len() + r.max_tokens <= slots.slot_positions();
            let empty = match self.slots.as_ref().filter(|s| fits(s)) {
                None => Ok(KvCache::default()),
                Some(slots) => slots.cache_for(r.prompt.len()),
            };
            let mut cache = match empty {
                Ok(cache) => cache,
                Err(e) => {
                    tracing::error!(error = %e, "taking a KV slot failed");
                    let _ = a.sink.send(Event::Error(EngineError::Forward(e.to_string())));
                    self.finished("error");
                    continue;
                }
            };
            self.reuse(&r.prompt, &mut cache);
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
    }

    /// One prefill pass: chunks of the prompts not yet prefilled, `max_batch_tokens` tokens
    /// in all (see [`chunks`]); a prompt left unfinished goes on in the next pass, after a
    /// decode step of the running sequences. A sequence whose prompt is complete emits its
    /// first token, and its prompt goes into the prefix cache.
    fn prefill(&mut self) {
        let left: Vec<(usize, usize)> = (self.running.iter().enumerate())
            .filter(|(_, s)| !s.done && s.cache.len() < s.prompt.len())
            .map(|(i, s)| (i, s.prompt.len() - s.cache.len()))
            .collect();
        let chunks = chunks(&left, self.config.max_batch_tokens.max(1));
        if chunks.is_empty() {
            return;
        }
        self.metrics.prefill_batch_size.observe(chunks.len() as f64);
        let Some(rows) = self.pass(&chunks, true) else { return };
        for (&(i, _), mut row) in chunks.iter().zip(rows) {
            if self.running[i].cache.len() < self.running[i].prompt.len() {
                continue; // more chunks to go: these logits are of a prompt token
            }
            self.emit(i, &mut row);
            let s = &self.running[i];
            if let Some(prefixes) = &mut self.prefixes
                && let Err(e) = prefixes.insert(&s.prompt, &s.cache)
            {
                tracing::warn!(error = %e, "keeping a prompt in the prefix cache failed");
            }
        }
        if let Some(prefixes) = &self.prefixes {
            let evicted = prefixes.evictions() - self.metrics.prefix_evictions.get();
            self.metrics.prefix_evictions.inc_by(evicted);
            self.metrics.prefix_bytes.set(i64::try_from(prefixes.bytes()).unwrap_or(i64::MAX));
        }
        self.update_gauges();
    }

    /// Copies `prompt`'s longest prefix found in the prefix cache into `cache` (empty, in a
    /// slot or not).
    fn reuse(&self, prompt: &[u32], cache: &mut KvCache) {
        let Some(prefixes) = &self.prefixes else { return };
        self.metrics.prefix_queries.inc_by(prompt.len() as u64);
        match prefixes.lookup_into(prompt, cache) {
            Ok(tokens) => {
                self.metrics.prefix_hits.inc_by(tokens as u64);
            }
            Err(e) => {
                tracing::warn!(error = %e, "reading the prefix cache failed; prefilling all");
                cache.clear();
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
        // Sequences whose prompt is prefilled (and first token emitted) take a step.
        let decoding: Vec<(usize, usize)> = (0..self.running.len())
            .filter(|&i| self.running[i].cache.len() >= self.running[i].prompt.len())
            .map(|i| (i, 1))
            .collect();
        if !decoding.is_empty() {
            self.metrics.batch_size.observe(decoding.len() as f64);
            if let Some(rows) = self.pass(&decoding, false) {
                for (&(i, _), mut row) in decoding.iter().zip(rows) {
                    self.emit(i, &mut row);
                }
            }
        }
        self.running.retain(|s| !s.done);
        self.update_gauges();
    }

    /// Runs one forward pass over `picks` (index into `running`, tokens): the next `tokens`
    /// of each prompt when `prefill`, else each sequence's last token. Returns each pick's
    /// logits, or `None` after ending the picked sequences with the pass's error.
    fn pass(&mut self, picks: &[(usize, usize)], prefill: bool) -> Option<Vec<Vec<f32>>> {
        let last: Vec<[u32; 1]> = self.running.iter().map(|s| [s.last]).collect();
        let mut wanted = picks.iter().peekable();
        let mut inputs: Vec<SeqInput<'_>> = Vec::with_capacity(picks.len());
        for ((i, s), l) in self.running.iter_mut().enumerate().zip(&last) {
            let Some(&&(want, n)) = wanted.peek() else { break };
            if i != want {
                continue;
            }
            wanted.next();
            let at = s.cache.len();
            // A prompt's prefix may be in the cache already (from the prefix cache, or from
            // the chunks before).
            let tokens = if prefill { &s.prompt[at..at + n] } else { l.as_slice() };
            inputs.push(SeqInput { tokens, cache: &mut s.cache });
        }
        self.shared.mark_progress();
        fault::before_forward();
        let llama = &self.model.llama;
        let logits = if prefill { llama.prefill(&mut inputs) } else { llama.forward(&mut inputs) };
        let logits = logits.and_then(|l| Ok(l.to_vec2::<f32>()?));
        drop(inputs);
        self.shared.mark_progress();
        match logits {
            Ok(rows) => Some(rows),
            Err(e) => {
                tracing::error!(error = %e, "forward pass failed");
                for &(i, _) in picks {
                    let s = &mut self.running[i];
                    let _ = s.sink.send(Event::Error(EngineError::Forward(e.to_string())));
                    s.done = true;
                    self.metrics.finish("error");
                    self.shared.in_flight.fetch_sub(1, Ordering::SeqCst);
                }
                self.update_gauges();
                None
            }
        }
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
        let text = if self.model.eos_ids.contains(&token) && !s.sampler.ignores_eos() {
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

/// Splits one prefill pass's `budget` tokens among prompts (`(index, tokens left)`, oldest
/// first), returning `(index, tokens)` in index order. The oldest takes up to half the budget,
/// so it always advances; the rest goes to the others, fewest tokens left first, so a short
/// prompt behind a long one is prefilled in the next pass instead of after the long one; what
/// is left over goes back to the oldest.
fn chunks(left: &[(usize, usize)], budget: usize) -> Vec<(usize, usize)> {
    let Some((&(oldest, oldest_left), others)) = left.split_first() else { return Vec::new() };
    let first = oldest_left.min(budget.div_ceil(2));
    let mut spare = budget - first;
    let mut out = vec![(oldest, first)];
    let mut others = others.to_vec();
    others.sort_by_key(|&(i, n)| (n, i));
    for (i, n) in others {
        if spare == 0 {
            break;
        }
        let take = n.min(spare);
        spare -= take;
        out.push((i, take));
    }
    out[0].1 += (oldest_left - first).min(spare);
    out.sort_unstable();
    out
}

#[cfg(test)]
mod tests {
    use super::chunks;

    #[test]
    fn the_oldest_prompt_advances_and_short_ones_pass_long_ones() {
        // Alone, a prompt takes the whole budget.
        assert_eq!(chunks(&[(0, 5000)], 2048), [(0, 2048)]);
        assert_eq!(chunks(&[(3, 10)], 2048), [(3, 10)]);
        // A long prompt and two short ones behind it: the short ones finish in this pass.
        assert_eq!(chunks(&[(0, 5000), (1, 300), (2, 20)], 2048), [(0, 1728), (1, 300), (2, 20)]);
        // Many short ones cannot starve the oldest: it keeps half.
        let left: Vec<(usize, usize)> =
            std::iter::once((0, 5000)).chain((1..20).map(|i| (i, 200))).collect();
        let got = chunks(&left, 2048);
        assert_eq!(got[0], (0, 1024));
        assert_eq!(got.iter().map(|c| c.1).sum::<usize>(), 2048);
        assert_eq!(got.len(), 1 + 6, "five whole short prompts and part of a sixth");
        assert_eq!(got[6], (6, 24));
        assert_eq!(chunks(&[], 2048), []);
    }
}
