//! `CacheReady`: whether the caches `spec.cache` turns on work in the ready workers, judged
//! from the scrape loop's latest scrape of their `/metrics` (one scrape of the ready pods,
//! kept per engine; see [`crate::controller::scrape`]).
//!
//! The condition exists only while `spec.cache` turns a cache on (memory, disk, Redis or the
//! prefix cache); otherwise it is removed. What the workers show:
//! - memory and disk levels: nothing to check beyond a ready worker (the worker refuses to
//!   start with a cache folder it cannot use);
//! - Redis: `blaze_response_cache_redis_up`, 1 after a command Redis carried out, 0 after one
//!   that failed (the worker pings Redis every 10 s without traffic). Absent is no verdict
//!   yet, not a failure;
//! - the prefix cache: `blaze_prefix_cache_capacity_bytes`, the bytes it may hold, 0 when off;
//!   0 or absent (a worker image without the prefix cache) while `prefixCache` is true is a
//!   fault.
//!
//! Ready workers the loop has not scraped yet (just ready, or not answering `/metrics`) are
//! named in the message but do not flip the condition, so a scale-up does not make it
//! `Unknown` for the two seconds until the next scrape.

use std::collections::BTreeMap;

use blaze_api::conditions::ConditionStatus;
use blaze_api::engine::CacheSpec;

use super::engine::Cond;
use crate::policy::prom::{self, Sample, series};

/// Reason: every scraped ready worker reports its caches working.
pub const READY: &str = "Ready";
/// Reason: a ready worker reports `blaze_response_cache_redis_up 0`.
pub const REDIS_UNREACHABLE: &str = "RedisUnreachable";
/// Reason: `prefixCache` is on but a ready worker reports no prefix cache.
pub const PREFIX_CACHE_OFF: &str = "PrefixCacheOff";
/// Reason: no worker is ready, so no cache can be judged.
pub const NO_READY_PODS: &str = "NoReadyPods";
/// Reason: workers are ready but none has been scraped yet.
pub const NOT_SCRAPED: &str = "NotScraped";

/// What one worker's `/metrics` says of its caches.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PodCache {
    /// `blaze_response_cache_redis_up`: whether the last Redis command worked; `None` when
    /// the worker does not report it.
    pub redis_up: Option<bool>,
    /// `blaze_prefix_cache_capacity_bytes`; `None` when the worker does not report it.
    pub prefix_capacity_bytes: Option<f64>,
}

impl PodCache {
    /// The cache gauges of one scrape.
    pub fn from_samples(s: &[Sample]) -> Self {
        let gauge = |name| s.iter().any(|x| x.name == name).then(|| prom::sum(s, name));
        Self {
            redis_up: gauge(series::REDIS_UP).map(|v| v > 0.0),
            prefix_capacity_bytes: gauge(series::PREFIX_CACHE_CAPACITY),
        }
    }
}

/// Whether `spec` turns any cache on, and so whether the engine has a `CacheReady` condition.
pub fn wanted(spec: &CacheSpec) -> bool {
    spec.memory_bytes > 0 || spec.disk_bytes > 0 || spec.redis.is_some() || spec.prefix_cache
}

/// The `CacheReady` condition of an engine with cache settings `spec`, whose ready worker pods
/// are `ready`, from the latest scrape `scraped` (by pod). `None`: no cache is on, so no
/// condition.
pub fn cache_ready(
    spec: &CacheSpec,
    ready: &[&str],
    scraped: &BTreeMap<String, PodCache>,
) -> Option<Cond> {
    if !wanted(spec) {
        return None;
    }
    if ready.is_empty() {
        return Some(Cond::new(
            ConditionStatus::Unknown,
            NO_READY_PODS,
            "no worker is ready: caches are judged on ready workers".into(),
        ));
    }
    let seen: Vec<(&str, &PodCache)> =
        ready.iter().filter_map(|p| Some((*p, scraped.get(*p)?))).collect();
    let unseen: Vec<&str> = ready.iter().copied().filter(|p| !scraped.contains_key(*p)).collect();
    if seen.is_empty() {
        return Some(Cond::new(
            ConditionStatus::Unknown,
            NOT_SCRAPED,
            format!("waiting for a scrape of the ready workers' /metrics ({})", unseen.join(", ")),
        ));
    }
    let mut faults: Vec<(&'static str, String)> = Vec::new();
    if let Some(redis) = &spec.redis {
        let down = pods_where(&seen, |c| c.redis_up == Some(false));
        if !down.is_empty() {
            faults.push((
                REDIS_UNREACHABLE,
                format!(
                    "{} cannot reach Redis at {} (blaze_response_cache_redis_up 0): check spec.cache.redis (address, passwordSecret) and that Redis runs and accepts connections from the workers; meanwhile they answer without the shared level",
                    workers(&down),
                    redis.address
                ),
            ));
        }
    }
    if spec.prefix_cache {
        let off = pods_where(&seen, |c| c.prefix_capacity_bytes.is_none_or(|b| b <= 0.0));
        if !off.is_empty() {
            faults.push((
                PREFIX_CACHE_OFF,
                format!(
                    "no prefix cache in {} (blaze_prefix_cache_capacity_bytes 0 or missing) although spec.cache.prefixCache is true: check that the worker image has the prefix cache (spec.image) and the workers' logs",
                    workers(&off)
                ),
            ));
        }
    }
    let pending = if unseen.is_empty() {
        String::new()
    } else {
        format!(" ({} not scraped yet)", unseen.join(", "))
    };
    if let Some((reason, _)) = faults.first() {
        let msg: Vec<&str> = faults.iter().map(|(_, m)| m.as_str()).collect();
        return Some(Cond::new(false, reason, format!("{}{pending}", msg.join("; "))));
    }
    Some(Cond::new(
        true,
        READY,
        format!(
            "{} of {} ready workers report their caches working ({}){pending}",
            seen.len(),
            ready.len(),
            levels(spec).join(", ")
        ),
    ))
}

fn pods_where<'a>(seen: &[(&'a str, &PodCache)], f: impl Fn(&PodCache) -> bool) -> Vec<&'a str> {
    seen.iter().filter(|(_, c)| f(c)).map(|(p, _)| *p).collect()
}

/// `worker a` or `workers a, b`.
fn workers(pods: &[&str]) -> String {
    let s = if pods.len() == 1 { "" } else { "s" };
    format!("worker{s} {}", pods.join(", "))
}

/// The cache levels `spec` turns on, as the message names them.
fn levels(spec: &CacheSpec) -> Vec<&'static str> {
    [
        (spec.memory_bytes > 0, "memory"),
        (spec.disk_bytes > 0, "disk"),
        (spec.redis.is_some(), "Redis"),
        (spec.prefix_cache, "prefix"),
    ]
    .into_iter()
    .filter_map(|(on, name)| on.then_some(name))
    .collect()
}

#[cfg(test)]
mod tests;
