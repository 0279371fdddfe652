use serde_json::json;

use super::*;

fn spec(cache: serde_json::Value) -> CacheSpec {
    serde_json::from_value(cache).unwrap()
}

/// Every level on, Redis at `redis:6379`.
fn all_levels() -> CacheSpec {
    spec(json!({"memoryBytes": 1048576, "diskBytes": 1048576, "prefixCache": true,
        "redis": {"address": "redis:6379"}}))
}

fn healthy() -> PodCache {
    PodCache { redis_up: Some(true), prefix_capacity_bytes: Some(268435456.0) }
}

fn scraped(pods: &[(&str, PodCache)]) -> BTreeMap<String, PodCache> {
    pods.iter().map(|(p, c)| ((*p).to_owned(), c.clone())).collect()
}

fn judge(spec: &CacheSpec, ready: &[&str], pods: &[(&str, PodCache)]) -> (String, String) {
    let c = cache_ready(spec, ready, &scraped(pods)).expect("a cache is on");
    (format!("{}:{}", c.status.as_str(), c.reason), c.message)
}

#[test]
fn only_an_engine_with_a_cache_on_has_the_condition() {
    let none = CacheSpec::default();
    assert!(!wanted(&none));
    assert!(cache_ready(&none, &["a"], &scraped(&[("a", healthy())])).is_none());
    // prefixCacheBytes has a default: it alone turns nothing on.
    assert_eq!(none.prefix_cache_bytes, 256 << 20);
    for on in [
        json!({"memoryBytes": 1}),
        json!({"diskBytes": 1}),
        json!({"redis": {"address": "r:6379"}}),
        json!({"prefixCache": true}),
    ] {
        assert!(wanted(&spec(on.clone())), "{on}");
    }
}

#[test]
fn every_ready_worker_reporting_its_caches_is_ready() {
    let (state, msg) = judge(&all_levels(), &["a", "b"], &[("a", healthy()), ("b", healthy())]);
    assert_eq!(state, "True:Ready");
    assert_eq!(
        msg,
        "2 of 2 ready workers report their caches working (memory, disk, Redis, prefix)"
    );
    // Memory and disk alone have nothing to report beyond a ready worker.
    let mem = spec(json!({"memoryBytes": 1048576}));
    assert_eq!(judge(&mem, &["a"], &[("a", PodCache::default())]).0, "True:Ready");
}

#[test]
fn no_ready_worker_is_unknown() {
    let (state, msg) = judge(&all_levels(), &[], &[("gone", healthy())]);
    assert_eq!(state, "Unknown:NoReadyPods");
    assert_eq!(msg, "no worker is ready: caches are judged on ready workers");
}

#[test]
fn a_worker_that_cannot_reach_redis_is_named() {
    let down = PodCache { redis_up: Some(false), ..healthy() };
    let pods = [("a", healthy()), ("b", down.clone()), ("c", down)];
    let (state, msg) = judge(&all_levels(), &["a", "b", "c"], &pods);
    assert_eq!(state, "False:RedisUnreachable");
    assert!(
        msg.starts_with(
            "workers b, c cannot reach Redis at redis:6379 (blaze_response_cache_redis_up 0): check spec.cache.redis"
        ),
        "{msg}"
    );
    // The gauge before the worker's first Redis command (or without a Redis level) is no
    // verdict.
    let silent = PodCache { redis_up: None, ..healthy() };
    assert_eq!(judge(&all_levels(), &["a"], &[("a", silent)]).0, "True:Ready");
    // A Redis gauge of an engine without spec.cache.redis is not judged.
    let mem = spec(json!({"memoryBytes": 1048576}));
    let stray = PodCache { redis_up: Some(false), prefix_capacity_bytes: None };
    assert_eq!(judge(&mem, &["a"], &[("a", stray)]).0, "True:Ready");
}

#[test]
fn a_prefix_cache_that_is_off_or_unreported_while_asked_for_is_a_fault() {
    for capacity in [Some(0.0), None] {
        let off = PodCache { prefix_capacity_bytes: capacity, ..healthy() };
        let (state, msg) = judge(&all_levels(), &["a", "b"], &[("a", healthy()), ("b", off)]);
        assert_eq!(state, "False:PrefixCacheOff", "{capacity:?}");
        assert!(
            msg.starts_with("no prefix cache in worker b (blaze_prefix_cache_capacity_bytes 0 or missing) although spec.cache.prefixCache is true"),
            "{msg}"
        );
    }
    // Without prefixCache the gauge is not judged.
    let no_prefix = spec(json!({"memoryBytes": 1048576}));
    let off = PodCache { prefix_capacity_bytes: Some(0.0), ..healthy() };
    assert_eq!(judge(&no_prefix, &["a"], &[("a", off)]).0, "True:Ready");
}

#[test]
fn both_faults_are_told_with_redis_first() {
    let both = PodCache { redis_up: Some(false), prefix_capacity_bytes: Some(0.0) };
    let (state, msg) = judge(&all_levels(), &["a"], &[("a", both)]);
    assert_eq!(state, "False:RedisUnreachable");
    assert!(msg.contains("cannot reach Redis") && msg.contains("; no prefix cache in worker a"));
}

#[test]
fn ready_workers_not_scraped_yet_are_named_but_judge_nothing() {
    let (state, msg) = judge(&all_levels(), &["a", "new"], &[("a", healthy())]);
    assert_eq!(state, "True:Ready");
    assert!(msg.starts_with("1 of 2 ready workers") && msg.ends_with("(new not scraped yet)"));
    let (state, msg) = judge(&all_levels(), &["new"], &[]);
    assert_eq!(state, "Unknown:NotScraped");
    assert_eq!(msg, "waiting for a scrape of the ready workers' /metrics (new)");
    // A worker that was scraped but is no longer ready does not count.
    let down = PodCache { redis_up: Some(false), ..healthy() };
    assert_eq!(judge(&all_levels(), &["a"], &[("a", healthy()), ("old", down)]).0, "True:Ready");
}

#[test]
fn the_gauges_are_read_from_the_worker_exposition() {
    let text = "# TYPE blaze_response_cache_redis_up gauge\n\
                blaze_response_cache_redis_up 0\n\
                blaze_prefix_cache_capacity_bytes 67108864\n\
                vllm:num_requests_running 1\n";
    let c = PodCache::from_samples(&prom::parse(text));
    assert_eq!(c, PodCache { redis_up: Some(false), prefix_capacity_bytes: Some(67108864.0) });
    let c = PodCache::from_samples(&prom::parse("blaze_response_cache_redis_up 1\n"));
    assert_eq!(c, PodCache { redis_up: Some(true), prefix_capacity_bytes: None });
}
