//! The response cache: answers to deterministic requests (greedy, or with a seed) kept so an
//! identical request is answered without running the model. Three levels, each optional: L1
//! in memory and L2 on the pod's disk, each bounded by bytes with least-recently-used
//! eviction, and L3 in Redis, shared by every replica of the engine (Redis bounds and evicts
//! it). A lookup reads L1, then L2, then L3, and a hit is copied into the levels above it; an
//! answer goes into every level. Entries expire after the TTL. Redis is never in the way: a
//! Redis that is down or slow costs a lookup at most its timeout, then is left alone for a
//! second, and counts as `outcome="error"`, never as an error to the client. An answer is kept as the bytes the client got: the JSON body, or the data of
//! each server-sent event of a stream, so a hit is the same bytes again (its `id` and
//! `created` included) and a streamed hit streams them.
//!
//! The key is a SHA-256 over what decides the answer: the worker's version, the model (its
//! source, revision and how it is held), the endpoint, the prompt's tokens (so JSON spacing
//! or key order do not matter), `max_tokens`, the sampling settings, the stop strings, and
//! the shape of the answer (streamed or not, usage chunk or not). A sampled request without a
//! seed is never looked up nor kept.

mod disk;
mod memory;
pub mod redis;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::{Buf as _, BufMut as _, Bytes, BytesMut};
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use sha2::{Digest as _, Sha256};

use crate::sampling::SamplingParams;
pub use disk::Disk;
pub use memory::Memory;
pub use redis::Redis;

/// A cache key: SHA-256 of what decides the answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key([u8; 32]);

impl Key {
    /// The key's file name form.
    pub fn hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    fn from_hex(s: &str) -> Option<Self> {
        if s.len() != 64 {
            return None;
        }
        let mut out = [0u8; 32];
        for (i, o) in out.iter_mut().enumerate() {
            *o = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
        }
        Some(Self(out))
    }
}

/// What decides an answer.
#[derive(Debug)]
pub struct Request<'a> {
    /// The model's identity: source, revision, dtype, quantization (the worker's
    /// `/v1/models` `blaze` object).
    pub model: &'a str,
    /// `chat` or `completion`.
    pub endpoint: &'a str,
    pub prompt: &'a [u32],
    pub max_tokens: usize,
    pub sampling: &'a SamplingParams,
    pub stop: &'a [String],
    pub stream: bool,
    pub include_usage: bool,
}

impl Request<'_> {
    /// Whether the answer is determined by the request: greedy, or sampled from a seed.
    pub fn deterministic(&self) -> bool {
        self.sampling.temperature == 0.0 || self.sampling.top_k == 1 || self.sampling.seed.is_some()
    }

    /// The key of this request's answer.
    pub fn key(&self) -> Key {
        let mut h = Sha256::new();
        let mut field = |b: &[u8]| {
            h.update((b.len() as u64).to_le_bytes());
            h.update(b);
        };
        field(env!("CARGO_PKG_VERSION").as_bytes());
        field(self.model.as_bytes());
        field(self.endpoint.as_bytes());
        let tokens: Vec<u8> = self.prompt.iter().flat_map(|t| t.to_le_bytes()).collect();
        field(&tokens);
        field(&(self.max_tokens as u64).to_le_bytes());
        // Every sampling field, by its derived form: a new field changes the key.
        field(format!("{:?}", self.sampling).as_bytes());
        field(format!("{:?}", self.stop).as_bytes());
        field(&[u8::from(self.stream), u8::from(self.include_usage)]);
        Key(h.finalize().into())
    }
}

/// A cached answer, as the client received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// A JSON response body.
    Whole(Bytes),
    /// The data of each server-sent event, in order (`[DONE]` included).
    Stream(Vec<Bytes>),
}

impl Answer {
    /// The answer as bytes: a tag, then the body, or each event's length and data.
    pub fn encode(&self) -> Bytes {
        match self {
            Answer::Whole(body) => {
                let mut b = BytesMut::with_capacity(1 + body.len());
                b.put_u8(0);
                b.put_slice(body);
                b.freeze()
            }
            Answer::Stream(events) => {
                let len = events.iter().map(|e| 4 + e.len()).sum::<usize>();
                let mut b = BytesMut::with_capacity(1 + len);
                b.put_u8(1);
                for e in events {
                    b.put_u32_le(e.len() as u32);
                    b.put_slice(e);
                }
                b.freeze()
            }
        }
    }

    /// The answer [`Answer::encode`] made; `None` for anything else.
    pub fn decode(mut b: Bytes) -> Option<Self> {
        if b.is_empty() {
            return None;
        }
        match b.get_u8() {
            0 => Some(Answer::Whole(b)),
            1 => {
                let mut events = Vec::new();
                while !b.is_empty() {
                    if b.len() < 4 {
                        return None;
                    }
                    let n = b.get_u32_le() as usize;
                    if b.len() < n {
                        return None;
                    }
                    events.push(b.split_to(n));
                }
                Some(Answer::Stream(events))
            }
            _ => None,
        }
    }
}

/// How the cache is set up (the worker's `--response-cache-*` flags).
#[derive(Debug, Clone)]
pub struct Config {
    /// L1 bytes; 0: no L1.
    pub memory_bytes: u64,
    /// L2 bytes; 0: no L2.
    pub disk_bytes: u64,
    /// L2's folder.
    pub dir: Option<PathBuf>,
    /// How long an answer stays valid.
    pub ttl: Duration,
    /// L3: Redis, when given.
    pub redis: Option<redis::Config>,
}

/// A cache level, for metric labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum Level {
    l1,
    l2,
    l3,
}

/// What a lookup found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum Outcome {
    hit,
    miss,
    /// An L2 entry that failed its checksum or could not be read: dropped.
    corrupt,
    /// Redis failed, was too slow, or is being left alone after a failure.
    error,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct LevelLabels {
    level: Level,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct LookupLabels {
    level: Level,
    outcome: Outcome,
}

// prometheus-client appends `_total` to counters.
blaze_telemetry::metrics! {
    /// The cache's metrics.
    #[derive(Debug, Clone)]
    struct Metrics {
        /// Lookups by level and outcome.
        lookups: Family<LookupLabels, Counter> = "blaze_response_cache_lookups",
            "Response cache lookups by level and outcome (hit, miss, corrupt, error)";
        /// Answers evicted by level.
        evictions: Family<LevelLabels, Counter> = "blaze_response_cache_evictions",
            "Answers evicted to stay within a level's bytes";
        /// Bytes held by level.
        bytes: Family<LevelLabels, Gauge> = "blaze_response_cache_bytes",
            "Bytes held by each cache level";
        /// Answers held by level.
        entries: Family<LevelLabels, Gauge> = "blaze_response_cache_entries",
            "Answers held by each cache level";
        /// Lookup time by level.
        seconds: Family<LevelLabels, Histogram, fn() -> Histogram> =
            "blaze_response_cache_lookup_seconds", "Time of a lookup at each level",
            Family::new_with_constructor(lookup_histogram);
        /// Whether Redis answers: 1 after a command it carried out, 0 after a failed one
        /// (checked every 10 s besides the lookups); only with a Redis level.
        redis_up: Gauge = "blaze_response_cache_redis_up",
            "1 while Redis answers the worker, 0 after a failed command";
        /// Answers not written to disk or Redis.
        errors: Counter = "blaze_response_cache_write_errors",
            "Answers that could not be written to the disk level or to Redis";
    }
}

/// Lookup time buckets, 50 us to 50 ms: a memory hit takes microseconds, a disk hit well
/// under a millisecond from the page cache.
fn lookup_histogram() -> Histogram {
    Histogram::new([0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05])
}

impl Metrics {
    fn lookup(&self, level: Level, outcome: Outcome, started: Instant) {
        self.lookups.get_or_create(&LookupLabels { level, outcome }).inc();
        self.seconds.get_or_create(&LevelLabels { level }).observe(started.elapsed().as_secs_f64());
    }

    fn size(&self, level: Level, bytes: u64, entries: usize) {
        self.bytes.get_or_create(&LevelLabels { level }).set(bytes as i64);
        self.entries.get_or_create(&LevelLabels { level }).set(entries as i64);
    }
}

/// The response cache.
#[derive(Debug)]
pub struct ResponseCache {
    memory: Option<Memory>,
    disk: Option<Arc<Disk>>,
    redis: Option<Arc<Redis>>,
    ttl: Duration,
    metrics: Metrics,
}

/// Checks Redis now and every [`redis::PROBE_EVERY`] until the cache is dropped, so that its
/// `up` gauge is true without traffic too.
fn spawn_probe(redis: std::sync::Weak<Redis>) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
    runtime.spawn(async move {
        let mut every = tokio::time::interval(redis::PROBE_EVERY);
        loop {
            every.tick().await;
            let Some(redis) = redis.upgrade() else { return };
            if let Err(e) = redis.probe().await
                && !matches!(e, redis::Error::Backoff)
            {
                tracing::warn!(error = %e, "response cache: Redis does not answer");
            }
        }
    });
}

impl ResponseCache {
    /// A cache as `config` says, or `None` when both levels are off. Opens L2 (creating its
    /// folder, and dropping what is over its bytes or unreadable); its entries from before a
    /// restart are served again.
    pub fn open(config: &Config, registry: &mut Registry) -> anyhow::Result<Option<Arc<Self>>> {
        if config.memory_bytes == 0 && config.disk_bytes == 0 && config.redis.is_none() {
            return Ok(None);
        }
        let metrics = Metrics::create(registry);
        let memory = (config.memory_bytes > 0).then(|| Memory::new(config.memory_bytes));
        let disk = match (&config.dir, config.disk_bytes) {
            (_, 0) => None,
            (Some(dir), bytes) => Some(Arc::new(Disk::open(dir, bytes)?)),
            (None, _) => anyhow::bail!("--response-cache-disk-bytes needs --response-cache-dir"),
        };
        let redis = config.redis.clone().map(|r| Arc::new(Redis::new(r, metrics.redis_up.clone())));
        let cache = Self { memory, disk, redis, ttl: config.ttl, metrics };
        cache.sizes();
        if let Some(redis) = &cache.redis {
            spawn_probe(Arc::downgrade(redis));
        }
        Ok(Some(Arc::new(cache)))
    }

    fn sizes(&self) {
        if let Some(m) = &self.memory {
            let (bytes, entries) = m.usage();
            self.metrics.size(Level::l1, bytes, entries);
        }
        if let Some(d) = &self.disk {
            let (bytes, entries) = d.usage();
            self.metrics.size(Level::l2, bytes, entries);
        }
    }

    /// The answer kept for `key`, from the first level that has it (which then fills the
    /// levels above it).
    pub async fn get(self: &Arc<Self>, key: Key) -> Option<Answer> {
        if let Some(m) = &self.memory {
            let started = Instant::now();
            if let Some(bytes) = m.get(&key, started) {
                self.metrics.lookup(Level::l1, Outcome::hit, started);
                return Answer::decode(bytes);
            }
            self.metrics.lookup(Level::l1, Outcome::miss, started);
        }
        if let Some(disk) = self.disk.clone() {
            let started = Instant::now();
            // A miss is known from the index in memory: only a read goes to the blocking pool.
            let found = if disk.contains(&key) {
                tokio::task::spawn_blocking(move || disk.get(&key, SystemTime::now()))
                    .await
                    .unwrap_or(disk::Found::Miss)
            } else {
                disk::Found::Miss
            };
            match found {
                disk::Found::Hit(bytes, expires) => {
                    self.metrics.lookup(Level::l2, Outcome::hit, started);
                    let left = expires.duration_since(SystemTime::now()).unwrap_or_default();
                    self.fill_memory(key, &bytes, left);
                    return Answer::decode(bytes);
                }
                disk::Found::Miss => self.metrics.lookup(Level::l2, Outcome::miss, started),
                disk::Found::Corrupt => {
                    self.metrics.lookup(Level::l2, Outcome::corrupt, started);
                    self.sizes();
                }
            }
        }
        let redis = self.redis.as_ref()?;
        let started = Instant::now();
        match redis.get(&key).await {
            Ok(Some(bytes)) => {
                // Something else may share the database: only an answer that decodes counts.
                let answer = Answer::decode(bytes.clone())?;
                self.metrics.lookup(Level::l3, Outcome::hit, started);
                self.fill_memory(key, &bytes, self.ttl);
                if let Some(disk) = self.disk.clone() {
                    self.write_disk(disk, key, bytes, SystemTime::now() + self.ttl);
                }
                Some(answer)
            }
            Ok(None) => {
                self.metrics.lookup(Level::l3, Outcome::miss, started);
                None
            }
            Err(e) => {
                if !matches!(e, redis::Error::Backoff) {
                    tracing::warn!(error = %e, "response cache: Redis lookup failed; a miss");
                }
                self.metrics.lookup(Level::l3, Outcome::error, started);
                None
            }
        }
    }

    fn fill_memory(&self, key: Key, bytes: &Bytes, left: Duration) {
        if let Some(m) = &self.memory {
            let evicted = m.put(key, bytes.clone(), Instant::now() + left);
            self.evicted(Level::l1, evicted);
            self.sizes();
        }
    }

    /// Keeps `answer` for `key` in every level (L2 and L3 in the background).
    pub fn put(self: &Arc<Self>, key: Key, answer: &Answer) {
        let bytes = answer.encode();
        if let Some(m) = &self.memory {
            let evicted = m.put(key, bytes.clone(), Instant::now() + self.ttl);
            self.evicted(Level::l1, evicted);
        }
        self.sizes();
        if let Some(disk) = self.disk.clone() {
            self.write_disk(disk, key, bytes.clone(), SystemTime::now() + self.ttl);
        }
        if let Some(redis) = self.redis.clone() {
            let (cache, ttl) = (self.clone(), self.ttl);
            tokio::spawn(async move {
                if let Err(e) = redis.set(&key, &bytes, ttl).await {
                    if !matches!(e, redis::Error::Backoff) {
                        tracing::warn!(error = %e, "response cache: storing in Redis failed");
                    }
                    cache.metrics.errors.inc();
                }
            });
        }
    }

    fn write_disk(self: &Arc<Self>, disk: Arc<Disk>, key: Key, bytes: Bytes, expires: SystemTime) {
        let cache = self.clone();
        tokio::task::spawn_blocking(move || {
            match disk.put(key, &bytes, expires) {
                Ok(evicted) => cache.evicted(Level::l2, evicted),
                Err(e) => {
                    tracing::warn!(error = %e, "writing a cached answer to disk failed");
                    cache.metrics.errors.inc();
                }
            }
            cache.sizes();
        });
    }

    fn evicted(&self, level: Level, n: usize) {
        if n > 0 {
            self.metrics.evictions.get_or_create(&LevelLabels { level }).inc_by(n as u64);
        }
    }
}

#[cfg(test)]
mod tests;
