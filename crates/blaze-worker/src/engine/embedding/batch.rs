//! The embedding thread: takes every request that is waiting as one round, sorts the
//! round's inputs by length and runs them in batches of similar lengths, so that padding
//! stays small; then the next round.
//!
//! A batch is cut at `max_batch_size` inputs or at `max_batch_tokens` tokens with padding
//! (inputs times the longest, which is the last one taken since they are sorted), whichever
//! comes first. A request arriving while a round runs waits for that round to end: the wait
//! is bounded by one round, and a stream of short inputs cannot starve a long one.

use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use tokio::sync::mpsc::UnboundedSender;

use super::{Admission, EmbeddingConfig, EmbeddingMetrics, Embeddings, Reply};
use crate::engine::health::Shared;
use crate::engine::{EngineError, fault};
use crate::metrics::Metrics;
use crate::model::embedding::{EmbeddingModel, shorten};

/// How long an idle thread waits for work before it looks at its state again.
const IDLE_POLL: Duration = Duration::from_millis(50);

pub(crate) struct Worker {
    model: Arc<EmbeddingModel>,
    queue: Receiver<Admission>,
    shared: Arc<Shared<Reply>>,
    metrics: Metrics,
    own: EmbeddingMetrics,
    config: EmbeddingConfig,
    /// The running round's requests. Held here, not on the stack: a panic unwinds the
    /// stack, and the watchdog's trip must still find their senders to tell them why.
    open: Vec<Open>,
}

/// A request of the running round.
struct Open {
    sink: UnboundedSender<Reply>,
    vectors: Vec<Vec<f32>>,
    /// Inputs not embedded yet.
    left: usize,
    dimensions: Option<usize>,
    prompt_tokens: usize,
    admitted_at: Instant,
    /// Answered (with its vectors or an error) or cancelled.
    done: bool,
}

/// One input of the round: which request, which of its inputs, its tokens.
struct Item {
    request: usize,
    index: usize,
    tokens: Vec<u32>,
}

impl Worker {
    pub(crate) fn new(
        model: Arc<EmbeddingModel>,
        queue: Receiver<Admission>,
        shared: Arc<Shared<Reply>>,
        metrics: Metrics,
        own: EmbeddingMetrics,
        config: EmbeddingConfig,
    ) -> Self {
        Self { model, queue, shared, metrics, own, config, open: Vec::new() }
    }

    pub(crate) fn run(&mut self) {
        loop {
            self.shared.mark_progress();
            let first = match self.queue.recv_timeout(IDLE_POLL) {
                Ok(first) => first,
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => return,
            };
            let round = self.take(first);
            self.run_round(round);
        }
    }

    /// `first` and the requests that arrive within `max_wait` while the round has fewer
    /// inputs than one full batch, then every request already waiting.
    fn take(&self, first: Admission) -> Vec<Admission> {
        let until = Instant::now() + self.config.max_wait;
        let mut inputs = first.request.inputs.len();
        let mut round = vec![first];
        while inputs < self.config.max_batch_size {
            let left = until.saturating_duration_since(Instant::now());
            match self.queue.recv_timeout(left) {
                Ok(a) => {
                    inputs += a.request.inputs.len();
                    round.push(a);
                }
                Err(_) => break,
            }
        }
        round.extend(self.queue.try_iter());
        round
    }

    fn run_round(&mut self, round: Vec<Admission>) {
        self.open.clear();
        let mut items = Vec::new();
        for a in round {
            self.metrics.waiting.dec();
            if a.sink.is_closed() {
                self.end("cancelled");
                continue;
            }
            let r = a.request;
            let prompt_tokens = r.inputs.iter().map(Vec::len).sum();
            self.metrics.prompt_tokens.inc_by(prompt_tokens as u64);
            let request = self.open.len();
            self.open.push(Open {
                sink: a.sink,
                vectors: vec![Vec::new(); r.inputs.len()],
                left: r.inputs.len(),
                dimensions: r.dimensions,
                prompt_tokens,
                admitted_at: a.admitted_at,
                done: false,
            });
            let inputs = r.inputs.into_iter().enumerate();
            items.extend(inputs.map(|(index, tokens)| Item { request, index, tokens }));
        }
        self.metrics.running.set(self.open.len() as i64);
        // Stable: inputs of one length keep their arrival order.
        items.sort_by_key(|item| item.tokens.len());
        let lengths: Vec<usize> = items.iter().map(|item| item.tokens.len()).collect();
        for range in plan(&lengths, self.config.max_batch_size, self.config.max_batch_tokens) {
            self.run_batch(&items[range]);
        }
        self.open.clear();
        self.metrics.running.set(0);
    }

    /// One forward pass over the inputs of `batch` whose requests still wait for them.
    fn run_batch(&mut self, batch: &[Item]) {
        let gone = self.open.iter_mut().filter(|o| !o.done && o.sink.is_closed());
        let cancelled = gone.map(|o| o.done = true).count();
        (0..cancelled).for_each(|_| self.end("cancelled"));
        let open = &self.open;
        let batch: Vec<&Item> = batch.iter().filter(|item| !open[item.request].done).collect();
        let Some(longest) = batch.iter().map(|item| item.tokens.len()).max() else { return };
        let inputs: Vec<&[u32]> = batch.iter().map(|item| item.tokens.as_slice()).collect();
        let real: usize = inputs.iter().map(|i| i.len()).sum();
        self.own.batch_size.observe(inputs.len() as f64);
        self.own.padding.observe(1.0 - real as f64 / (inputs.len() * longest) as f64);
        self.shared.mark_progress();
        fault::before_forward();
        let vectors = self.model.embed(&inputs);
        self.shared.mark_progress();
        match vectors {
            Ok(vectors) => {
                for (item, vector) in batch.iter().zip(vectors) {
                    let o = &mut self.open[item.request];
                    o.vectors[item.index] = vector;
                    o.left -= 1;
                    if o.left == 0 {
                        self.answer(item.request);
                    }
                }
            }
            Err(e) => {
                tracing::error!(error = %e, inputs = inputs.len(), "embedding forward pass failed");
                for item in &batch {
                    let o = &mut self.open[item.request];
                    if !o.done {
                        let _ = o.sink.send(Err(EngineError::Forward(e.to_string())));
                        o.done = true;
                        self.end("error");
                    }
                }
            }
        }
    }

    /// Sends request `i` of the round, whose every input is embedded, its vectors.
    fn answer(&mut self, i: usize) {
        let o = &mut self.open[i];
        let mut vectors = std::mem::take(&mut o.vectors);
        if let Some(d) = o.dimensions.filter(|&d| d < self.model.dimensions()) {
            let normalized = self.model.sentence().normalize;
            vectors.iter_mut().for_each(|v| shorten(v, d, normalized));
        }
        let embeddings = Embeddings { vectors, prompt_tokens: o.prompt_tokens };
        let sent = o.sink.send(Ok(embeddings)).is_ok();
        o.done = true;
        if sent {
            self.metrics.e2e.observe(o.admitted_at.elapsed().as_secs_f64());
        }
        let reason = if sent { "stop" } else { "cancelled" };
        self.end(reason);
    }

    fn end(&self, reason: &str) {
        self.metrics.finish(reason);
        self.shared.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Cuts `lengths` (sorted, shortest first) into batches of at most `max_inputs` inputs and
/// at most `max_tokens` tokens with padding (count times the last, longest, length); an
/// input longer than `max_tokens` gets a batch of its own.
pub(crate) fn plan(lengths: &[usize], max_inputs: usize, max_tokens: usize) -> Vec<Range<usize>> {
    let mut batches = Vec::new();
    let mut start = 0;
    for (i, &len) in lengths.iter().enumerate() {
        let count = i - start;
        if count > 0 && (count >= max_inputs || (count + 1) * len > max_tokens) {
            batches.push(start..i);
            start = i;
        }
    }
    if start < lengths.len() {
        batches.push(start..lengths.len());
    }
    batches
}

#[cfg(test)]
mod tests {
    use super::plan;

    #[test]
    fn batches_stop_at_the_input_count_and_the_padded_token_budget() {
        assert!(plan(&[], 4, 100).is_empty());
        assert_eq!(plan(&[3, 3, 3, 3, 3], 2, 100), [0..2, 2..4, 4..5]);
        // 3 x 10 = 30 fits 32; a fourth of 10 would make 40.
        assert_eq!(plan(&[5, 8, 10, 10, 10], 8, 32), [0..3, 3..5]);
        // Longer than the budget: alone, never dropped.
        assert_eq!(plan(&[2, 50, 60], 8, 32), [0..1, 1..2, 2..3]);
    }

    #[test]
    fn sorted_batches_bound_padding_waste() {
        // Lengths 1..=64 in batches of 8: eight consecutive lengths pad by 0 + 1 + ... + 7 =
        // 28 tokens a batch, where the same lengths in a shuffled order pad by hundreds.
        let lengths: Vec<usize> = (1..=64).collect();
        let batches = plan(&lengths, 8, 10_000);
        assert_eq!(batches.len(), 8);
        for b in batches {
            let padded = b.len() * lengths[b.end - 1];
            let real: usize = lengths[b.clone()].iter().sum();
            assert_eq!(padded - real, 28, "{b:?}");
        }
    }
}
