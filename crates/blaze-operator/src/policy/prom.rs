//! Reading Prometheus text exposition (version 0.0.4) from worker `/metrics`, for the few
//! series the autoscaler and weights need, and keeping a short [`History`] of scrapes so
//! counters can be diffed over a fixed window. The names follow vLLM's, as DESIGN.md says the
//! worker does; they live in [`series`] so they can be checked against the worker in one place.

use std::collections::{BTreeMap, VecDeque};

/// The series the operator reads.
pub mod series {
    /// Requests running (a gauge).
    pub const RUNNING: &str = "vllm:num_requests_running";
    /// Requests waiting (a gauge).
    pub const WAITING: &str = "vllm:num_requests_waiting";
    /// End-to-end request latency (a histogram in seconds).
    pub const E2E_LATENCY: &str = "vllm:e2e_request_latency_seconds";
    /// Time to first token (a histogram in seconds).
    pub const TTFT: &str = "vllm:time_to_first_token_seconds";
    /// Generated tokens (a counter).
    pub const GENERATION_TOKENS: &str = "vllm:generation_tokens_total";
    /// Requests that finished (a counter, by finish reason).
    pub const REQUESTS: &str = "vllm:request_success_total";
    /// The label of [`REQUESTS`] saying how a request finished.
    pub const FINISH_REASON: &str = "finished_reason";
    /// The finish reason of a request the engine failed (a forward pass that errored: the
    /// client gets a 5xx or a stream error event). The others are `stop`, `length`,
    /// `deadline` (answered, cut at the worker's request timeout) and `cancelled` (the client
    /// went away).
    pub const FAILED: &str = "error";
    /// Whether the response cache's Redis answers: 1 after a command it carried out, 0 after
    /// one that failed (a gauge, only with a Redis level).
    pub const REDIS_UP: &str = "blaze_response_cache_redis_up";
    /// Bytes the prefix cache may hold, 0 when it is off (a gauge).
    pub const PREFIX_CACHE_CAPACITY: &str = "blaze_prefix_cache_capacity_bytes";
}

/// One sample line.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    /// Metric name (with `_bucket`, `_sum`, `_count` suffixes as written).
    pub name: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Value.
    pub value: f64,
}

impl Sample {
    /// The upper bound of a histogram bucket sample (its `le` label).
    pub fn le(&self) -> Option<f64> {
        self.labels.get("le").and_then(|v| parse_value(v))
    }
}

/// Parses exposition text. Malformed lines are skipped: one bad line from a worker must not
/// blind the autoscaler to the rest.
pub fn parse(text: &str) -> Vec<Sample> {
    text.lines().filter_map(|l| parse_line(l.trim())).collect()
}

fn parse_line(line: &str) -> Option<Sample> {
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let (name, labels, rest) = match line.find(['{', ' ']) {
        Some(i) if line.as_bytes()[i] == b'{' => {
            let (labels, used) = parse_labels(&line[i + 1..])?;
            (&line[..i], labels, &line[i + 1 + used..])
        }
        Some(i) => (&line[..i], BTreeMap::new(), &line[i..]),
        None => return None,
    };
    let value = parse_value(rest.split_whitespace().next()?)?;
    Some(Sample { name: name.to_owned(), labels, value })
}

/// Parses `k="v",...}` and returns the labels and the bytes used (through the `}`).
fn parse_labels(s: &str) -> Option<(BTreeMap<String, String>, usize)> {
    let mut labels = BTreeMap::new();
    let mut chars = s.char_indices().peekable();
    loop {
        while chars.next_if(|(_, c)| *c == ',' || *c == ' ').is_some() {}
        let (start, c) = chars.next()?;
        if c == '}' {
            return Some((labels, start + 1));
        }
        let eq = s[start..].find('=')? + start;
        let key = s[start..eq].trim().to_owned();
        while chars.next_if(|(i, _)| *i <= eq).is_some() {}
        if chars.next()?.1 != '"' {
            return None;
        }
        let mut value = String::new();
        loop {
            match chars.next()?.1 {
                '\\' => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    c => value.push(c),
                },
                '"' => break,
                c => value.push(c),
            }
        }
        labels.insert(key, value);
    }
}

/// Parses a sample value (`+Inf`, `-Inf`, `NaN` and numbers).
pub fn parse_value(s: &str) -> Option<f64> {
    match s {
        "+Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        _ => s.parse().ok(),
    }
}

/// The sum of every sample of `name`.
pub fn sum(samples: &[Sample], name: &str) -> f64 {
    samples.iter().filter(|s| s.name == name).map(|s| s.value).sum()
}

/// The cumulative buckets `(le, count)` of histogram `name`, summed over other labels, sorted.
pub fn buckets(samples: &[Sample], name: &str) -> Vec<(f64, f64)> {
    let bucket = format!("{name}_bucket");
    let mut by_le: BTreeMap<u64, (f64, f64)> = BTreeMap::new();
    for s in samples.iter().filter(|s| s.name == bucket) {
        let Some(le) = s.le() else { continue };
        let e = by_le.entry(le.to_bits()).or_insert((le, 0.0));
        e.1 += s.value;
    }
    let mut v: Vec<(f64, f64)> = by_le.into_values().collect();
    v.sort_by(|a, b| a.0.total_cmp(&b.0));
    v
}

/// The sum of every sample of `name` whose label `label` is `value`.
pub fn sum_where(samples: &[Sample], name: &str, label: &str, value: &str) -> f64 {
    samples
        .iter()
        .filter(|s| s.name == name && s.labels.get(label).is_some_and(|v| v == value))
        .map(|s| s.value)
        .sum()
}

/// A counter's increase; a counter that went down was reset by a restart and counts from 0.
pub fn counter_delta(now: f64, before: f64) -> f64 {
    if now >= before { now - before } else { now }
}

/// Adds cumulative buckets `add` into `acc` (matching `le`), keeping `acc` sorted.
pub fn add_buckets(acc: &mut Vec<(f64, f64)>, add: &[(f64, f64)]) {
    for &(le, c) in add {
        match acc.iter_mut().find(|(l, _)| *l == le) {
            Some(e) => e.1 += c,
            None => acc.push((le, c)),
        }
    }
    acc.sort_by(|a, b| a.0.total_cmp(&b.0));
}

/// Bucket counts of `now` minus those of `before` (the observations between two scrapes); a
/// counter that went down (a restarted worker) counts from zero.
pub fn bucket_delta(now: &[(f64, f64)], before: &[(f64, f64)]) -> Vec<(f64, f64)> {
    let reset = now.iter().any(|(le, c)| before.iter().any(|(l, b)| l == le && b > c));
    now.iter()
        .map(|&(le, c)| {
            let b = if reset {
                0.0
            } else {
                before.iter().find(|(l, _)| *l == le).map_or(0.0, |x| x.1)
            };
            (le, c - b)
        })
        .collect()
}

/// The `q` quantile of cumulative buckets, interpolating linearly inside the bucket as
/// Prometheus's `histogram_quantile` does. `None` when there are no observations.
pub fn quantile(buckets: &[(f64, f64)], q: f64) -> Option<f64> {
    let total = buckets.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let mut prev = (0.0, 0.0);
    for &(le, count) in buckets {
        if count >= rank {
            if le.is_infinite() {
                return Some(prev.0);
            }
            let in_bucket = count - prev.1;
            let frac = if in_bucket > 0.0 { (rank - prev.1) / in_bucket } else { 1.0 };
            return Some(prev.0 + (le - prev.0) * frac);
        }
        prev = (le, count);
    }
    Some(prev.0)
}

/// Kept scrapes per window, at most (plus the newest): two kept scrapes are at least a
/// window over this apart, so a baseline is found within a sixteenth of a window of its
/// target (under 4 s of a 60 s window) and memory stays bounded however often a target is
/// scraped (a router reconciled on every EndpointSlice event).
pub const HISTORY_POINTS: f64 = 16.0;

/// Recent scrapes of a set of pods (by pod name), oldest first, with the time (seconds) each
/// was taken, so counters can be diffed against the scrape closest to a fixed window ago
/// rather than against whichever came last.
#[derive(Clone, Debug)]
pub struct History<T> {
    scrapes: VecDeque<(f64, BTreeMap<String, T>)>,
}

impl<T> Default for History<T> {
    fn default() -> Self {
        Self { scrapes: VecDeque::new() }
    }
}

impl<T> History<T> {
    /// Keeps the scrape `pods` taken at `at`, and only what later diffs over `window_s` need:
    /// the newest scrape at least `window_s` old and those since, thinned to
    /// [`HISTORY_POINTS`] per window. A clock that went back starts the history over.
    pub fn push(&mut self, at: f64, pods: BTreeMap<String, T>, window_s: f64) {
        if self.scrapes.back().is_some_and(|(t, _)| *t > at) {
            self.scrapes.clear();
        }
        let n = self.scrapes.len();
        // The newest scrape was kept for the next diff; it stays only if far enough from
        // the one before it.
        if n >= 2 && self.scrapes[n - 1].0 - self.scrapes[n - 2].0 < window_s / HISTORY_POINTS {
            self.scrapes.pop_back();
        }
        self.scrapes.push_back((at, pods));
        while self.scrapes.len() >= 2 && self.scrapes[1].0 <= at - window_s {
            self.scrapes.pop_front();
        }
    }

    /// The newest scrape.
    pub fn latest(&self) -> Option<(f64, &BTreeMap<String, T>)> {
        self.scrapes.back().map(|(t, p)| (*t, p))
    }

    /// For `pod`, its kept scrape taken before `at` closest to `window_s` before `at`, with
    /// the time it was taken: the baseline of a diff over the window. `None` when no kept
    /// scrape has the pod.
    pub fn baseline(&self, pod: &str, at: f64, window_s: f64) -> Option<(f64, &T)> {
        let target = at - window_s;
        self.scrapes
            .iter()
            .filter(|(t, _)| *t < at)
            .filter_map(|(t, pods)| Some((*t, pods.get(pod)?)))
            .min_by(|a, b| (a.0 - target).abs().total_cmp(&(b.0 - target).abs()))
    }

    /// When the oldest kept scrape was taken.
    pub fn oldest(&self) -> Option<f64> {
        self.scrapes.front().map(|(t, _)| *t)
    }

    /// Kept scrapes taken at or after `from`, oldest first.
    pub fn since(&self, from: f64) -> impl Iterator<Item = (f64, &BTreeMap<String, T>)> {
        self.scrapes.iter().filter(move |(t, _)| *t >= from).map(|(t, p)| (*t, p))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"# HELP vllm:num_requests_running Running.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{model_name="chat"} 3
vllm:num_requests_waiting{model_name="chat",note="a \"quoted\", b"} 2 1700000000000
vllm:e2e_request_latency_seconds_bucket{le="0.1",model_name="chat"} 10
vllm:e2e_request_latency_seconds_bucket{le="0.5",model_name="chat"} 60
vllm:e2e_request_latency_seconds_bucket{le="1.0",model_name="chat"} 100
vllm:e2e_request_latency_seconds_bucket{le="+Inf",model_name="chat"} 100
vllm:request_success_total{finished_reason="stop"} 100
this line is garbage
"#;

    #[test]
    fn parses_gauges_labels_with_escapes_and_skips_garbage() {
        let s = parse(TEXT);
        assert_eq!(sum(&s, series::RUNNING) + sum(&s, series::WAITING), 5.0);
        let w = s.iter().find(|x| x.name == series::WAITING).unwrap();
        assert_eq!(w.labels["note"], "a \"quoted\", b");
        assert_eq!(sum(&s, series::REQUESTS), 100.0);
        assert_eq!(s.len(), 7);
    }

    #[test]
    fn quantiles_interpolate_like_prometheus_and_deltas_survive_restarts() {
        let b = buckets(&parse(TEXT), series::E2E_LATENCY);
        assert_eq!(b.len(), 4);
        assert_eq!(quantile(&b, 0.5), Some(0.1 + 0.4 * (40.0 / 50.0)));
        assert!((quantile(&b, 0.95).unwrap() - (0.5 + 0.5 * 35.0 / 40.0)).abs() < 1e-9);
        let before = vec![(0.1, 5.0), (0.5, 10.0), (1.0, 10.0), (f64::INFINITY, 10.0)];
        let d = bucket_delta(&b, &before);
        assert_eq!(d[3].1, 90.0);
        let restarted = vec![(0.1, 500.0), (0.5, 500.0), (1.0, 500.0), (f64::INFINITY, 500.0)];
        assert_eq!(bucket_delta(&b, &restarted), b);
        assert_eq!(quantile(&[(1.0, 0.0), (f64::INFINITY, 0.0)], 0.95), None);
    }

    fn pods(names: &[&str]) -> BTreeMap<String, ()> {
        names.iter().map(|n| ((*n).to_owned(), ())).collect()
    }

    /// The diff's baseline is the scrape closest to a window ago, not the previous one, and a
    /// pod missing from it is diffed against the closest scrape that has it.
    #[test]
    fn the_baseline_is_the_kept_scrape_closest_to_a_window_ago() {
        let mut h = History::default();
        for t in [0.0, 4.0, 8.0, 13.0, 15.0] {
            h.push(t, pods(&["a"]), 10.0);
        }
        h.push(17.0, pods(&["a", "b"]), 10.0);
        // At 20 the target is 10: 8 (2 s off) beats 13 (3 s off) and 17 (the previous one).
        assert_eq!(h.baseline("a", 20.0, 10.0).map(|b| b.0), Some(8.0));
        // At 24 the target is 14: 13 and 15 are 1 s off; either is fair, the older wins.
        assert_eq!(h.baseline("a", 24.0, 10.0).map(|b| b.0), Some(13.0));
        assert_eq!(h.baseline("b", 20.0, 10.0).map(|b| b.0), Some(17.0), "only 17 has b");
        assert_eq!(h.baseline("c", 20.0, 10.0), None);
        assert_eq!(h.baseline("a", 8.0, 10.0).map(|b| b.0), Some(4.0), "never `at` itself");
        assert_eq!(h.latest().map(|l| l.0), Some(17.0));
    }

    /// Scraped every 0.1 s for a minute, a 10 s window keeps about 16 points + 1, not 600,
    /// and what it keeps still reaches a window back.
    #[test]
    fn history_stays_small_however_often_it_is_pushed() {
        let mut h = History::default();
        for i in 0..600 {
            h.push(f64::from(i) * 0.1, pods(&["a"]), 10.0);
        }
        assert!(h.scrapes.len() <= 19, "{}", h.scrapes.len());
        let base = h.baseline("a", 60.0, 10.0).unwrap().0;
        assert!((base - 50.0).abs() <= 10.0 / HISTORY_POINTS + 0.1, "{base}");
        h.push(30.0, pods(&["a"]), 10.0);
        assert_eq!(h.scrapes.len(), 1, "a clock that went back starts over");
    }
}
