//! Reading Prometheus text exposition (version 0.0.4) from worker `/metrics`, for the few
//! series the autoscaler and weights need. The names follow vLLM's, as DESIGN.md says the
//! worker does; they live in [`series`] so they can be checked against the worker in one place.

use std::collections::BTreeMap;

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
    /// Requests refused because the queue was full (a counter).
    pub const REJECTED: &str = "blaze_requests_rejected_total";
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
        let Some(le) = s.labels.get("le").and_then(|v| parse_value(v)) else { continue };
        let e = by_le.entry(le.to_bits()).or_insert((le, 0.0));
        e.1 += s.value;
    }
    let mut v: Vec<(f64, f64)> = by_le.into_values().collect();
    v.sort_by(|a, b| a.0.total_cmp(&b.0));
    v
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
}
