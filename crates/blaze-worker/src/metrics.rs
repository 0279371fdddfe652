//! The worker's Prometheus metrics. Names follow vLLM's (`vllm:` prefix) where vLLM has one,
//! so its dashboards, KEDA triggers and the Gateway API Inference Extension read Blaze
//! unchanged; the rest are `blaze_`.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Label set for counters split by finish reason.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FinishLabels {
    /// `stop`, `length`, `deadline`, `cancelled` or `error`.
    pub finished_reason: String,
}

/// What tripped the scheduler's watchdog.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum WatchdogCause {
    /// The scheduler thread panicked.
    Panicked,
    /// No progress for the stall timeout while requests waited.
    Stalled,
}

impl EncodeLabelValue for WatchdogCause {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        let label = match self {
            WatchdogCause::Panicked => "panicked",
            WatchdogCause::Stalled => "stalled",
        };
        std::fmt::Write::write_str(encoder, label)
    }
}

/// Label set of the watchdog's trips.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WatchdogLabels {
    /// `panicked` or `stalled`.
    pub cause: WatchdogCause,
}

// prometheus-client appends `_total` to counters.
blaze_telemetry::metrics! {
    /// Handles to every metric the engine updates.
    #[derive(Clone)]
    pub struct Metrics {
        /// Sequences in the running batch.
        running: Gauge = "vllm:num_requests_running", "Sequences in the running batch";
        /// Requests admitted but not yet prefilled.
        waiting: Gauge = "vllm:num_requests_waiting", "Requests waiting to be scheduled";
        /// Fraction (0..1) of the memory a full batch's caches may take (`--max-batch-size`
        /// sequences at the model's context length) that the running sequences' buffers
        /// hold; the prefix cache counts apart (`blaze_prefix_cache_bytes`).
        kv_cache_usage: Gauge<f64, std::sync::atomic::AtomicU64> = "vllm:kv_cache_usage_perc",
            "Fraction of a full batch's KV cache memory the running sequences hold";
        /// Prompt tokens looked up in the prefix cache.
        prefix_queries: Counter = "vllm:prefix_cache_queries",
            "Prompt tokens looked up in the prefix cache";
        /// Prompt tokens whose keys and values came from the prefix cache.
        prefix_hits: Counter = "vllm:prefix_cache_hits",
            "Prompt tokens whose keys and values came from the prefix cache";
        /// Bytes of keys and values the prefix cache holds.
        prefix_bytes: Gauge = "blaze_prefix_cache_bytes",
            "Bytes of keys and values the prefix cache holds";
        /// Bytes the prefix cache may hold (0: off).
        prefix_capacity: Gauge = "blaze_prefix_cache_capacity_bytes",
            "Bytes the prefix cache may hold (0: off)";
        /// Blocks evicted from the prefix cache.
        prefix_evictions: Counter = "blaze_prefix_cache_evictions",
            "Blocks evicted from the prefix cache";
        /// Seconds from admission to the first token.
        ttft: Histogram = "vllm:time_to_first_token_seconds", "Time to first token",
            Histogram::new(latency_buckets());
        /// Seconds between output tokens.
        tpot: Histogram = "vllm:time_per_output_token_seconds", "Time between output tokens",
            Histogram::new(latency_buckets());
        /// Seconds from admission to the last token.
        e2e: Histogram = "vllm:e2e_request_latency_seconds", "Request latency",
            Histogram::new(latency_buckets());
        /// Prompt tokens prefilled.
        prompt_tokens: Counter = "vllm:prompt_tokens", "Prompt tokens processed";
        /// Tokens generated.
        generation_tokens: Counter = "vllm:generation_tokens", "Tokens generated";
        /// Finished requests by reason.
        finished: Family<FinishLabels, Counter> =
            "vllm:request_success", "Finished requests by reason";
        /// Requests refused because the queue was full.
        rejected: Counter = "blaze_requests_rejected", "Requests refused with a full queue";
        /// Sequences per decode step.
        batch_size: Histogram = "blaze_batch_size", "Sequences per decode step",
            Histogram::new(batch_buckets());
        /// Sequences per prefill pass.
        prefill_batch_size: Histogram = "blaze_prefill_batch_size", "Sequences per prefill pass",
            Histogram::new(batch_buckets());
        /// Times the watchdog failed the engine, by cause (0 or 1 per process: a trip is final).
        watchdog_trips: Family<WatchdogLabels, Counter> = "blaze_watchdog_trips",
            "Times the watchdog failed the engine (the scheduler panicked or stalled)";
    }
}

/// Latency buckets from 5 ms to 60 s: a 135M model's decode step on CPU is ~10 ms, a large
/// model's prefill under load can take tens of seconds.
fn latency_buckets() -> impl Iterator<Item = f64> {
    [0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.0, 10.0, 20.0, 60.0].into_iter()
}

fn batch_buckets() -> impl Iterator<Item = f64> {
    [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0].into_iter()
}

impl Metrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        Self::create(registry)
    }

    /// Counts a watchdog trip.
    pub fn watchdog_trip(&self, cause: WatchdogCause) {
        self.watchdog_trips.get_or_create(&WatchdogLabels { cause }).inc();
    }

    /// Counts a finished request.
    pub fn finish(&self, reason: &str) {
        self.finished.get_or_create(&FinishLabels { finished_reason: reason.to_string() }).inc();
    }
}
