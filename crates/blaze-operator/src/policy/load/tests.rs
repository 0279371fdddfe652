use super::*;

fn load(in_flight: f64, fast: f64, slow: f64, tokens: f64, failed: f64) -> PodLoad {
    let total = fast + slow;
    PodLoad {
        in_flight,
        e2e: vec![(0.1, fast), (1.0, total), (f64::INFINITY, total)],
        ttft: vec![(0.05, total), (f64::INFINITY, total)],
        tokens,
        finished: total,
        failed,
    }
}

fn one(pod: &str, l: PodLoad) -> BTreeMap<String, PodLoad> {
    BTreeMap::from([(pod.to_owned(), l)])
}

#[test]
fn the_autoscaler_sample_is_in_flight_now_and_latency_since_the_previous_scrape() {
    let text = "vllm:num_requests_running 2\nvllm:num_requests_waiting 1\nvllm:generation_tokens_total 40\n";
    assert_eq!(PodLoad::from_samples(&prom::parse(text)).in_flight, 3.0);
    let before = one("a", load(0.0, 10.0, 0.0, 100.0, 0.0));
    let mut now = one("a", load(3.0, 10.0, 10.0, 300.0, 0.0));
    now.insert("b".into(), load(2.0, 10.0, 0.0, 100.0, 0.0));
    let s = sample(&before, &now, 42.0);
    assert_eq!((s.at, s.in_flight), (42.0, 5.0));
    // 10 slow (100 ms..1 s) from a, 10 fast (<100 ms) from b (all new): the 19th of 20 is
    // nine tenths into the slow bucket.
    let p95 = s.p95_ms.unwrap();
    assert!((p95 - (100.0 + 900.0 * 0.9)).abs() < 1e-6, "{p95}");
    let idle = sample(&now, &now, 44.0);
    assert_eq!(idle.p95_ms, None, "nothing finished in between");
}

/// A worker's counters over time, scraped like the scrape loop does.
struct Worker {
    fast: f64,
    slow: f64,
    tokens: f64,
    failed: f64,
}

impl Worker {
    fn run(&mut self, fast: f64, slow: f64, tokens: f64) {
        self.fast += fast;
        self.slow += slow;
        self.tokens += tokens;
    }

    fn scrape(&self, in_flight: f64) -> BTreeMap<String, PodLoad> {
        one("w-0", load(in_flight, self.fast, self.slow, self.tokens, self.failed))
    }
}

/// Status metrics cover the stable window: a burst of slow requests 40 s ago still shows in
/// p95 (a last-interval figure would have forgotten it within 2 s) and leaves once it is older
/// than the window; tokens per second and in-flight are window averages.
#[test]
fn engine_metrics_cover_the_stable_window_not_the_last_scrape() {
    let window = 60.0;
    let mut h = History::default();
    let mut w = Worker { fast: 0.0, slow: 0.0, tokens: 0.0, failed: 0.0 };
    let mut at_70 = None;
    let mut last = None;
    for i in 0..=50 {
        let t = f64::from(i) * 2.0;
        // 10 requests and 100 tokens per 2 s; between 20 s and 30 s half of them are slow.
        let slow = if t > 20.0 && t <= 30.0 { 5.0 } else { 0.0 };
        if i > 0 {
            w.run(10.0 - slow, slow, 100.0);
        }
        let now = w.scrape(t / 10.0);
        let m = windowed(&h, &now, t, window);
        if i == 0 {
            assert_eq!(m, None, "no earlier scrape yet");
        }
        if t == 70.0 {
            at_70 = m.clone();
        }
        last = m;
        h.push(t, now, window);
    }
    let m = at_70.unwrap();
    // Over 10 s..70 s: 300 requests, 25 of them slow (8%): p95 in the slow bucket.
    assert!(m.p95_latency_ms.unwrap() > 100.0, "{m:?}");
    assert!(m.p50_latency_ms.unwrap() < 100.0, "{m:?}");
    let tps = m.tokens_per_second.unwrap();
    assert!((tps - 50.0).abs() < 1e-9, "{tps}");
    // In flight rose from 1 at 10 s to 7 at 70 s: the window's mean is about 4.
    let in_flight = m.in_flight.unwrap();
    assert!((in_flight - 4.0).abs() < 0.5, "the window's mean, not the last value: {in_flight}");
    let m = last.unwrap();
    // At 100 s the burst is older than the window.
    assert!(m.p95_latency_ms.unwrap() < 100.0, "{m:?}");
    assert_eq!(m.error_rate, Some(0.0));
}

/// The error rate is the engine's failures (requests that finished with `error`) over the
/// requests it finished: not the requests it refused with a full queue (429), not the ones
/// the client cancelled or cut at the deadline.
#[test]
fn error_rate_counts_only_the_engines_own_failures() {
    let scrape = |stop: u32, error: u32, cancelled: u32, rejected: u32| {
        prom::parse(&format!(
            "vllm:request_success_total{{finished_reason=\"stop\"}} {stop}\n\
             vllm:request_success_total{{finished_reason=\"length\"}} 0\n\
             vllm:request_success_total{{finished_reason=\"error\"}} {error}\n\
             vllm:request_success_total{{finished_reason=\"cancelled\"}} {cancelled}\n\
             blaze_requests_rejected_total {rejected}\n"
        ))
    };
    let before = one("a", PodLoad::from_samples(&scrape(100, 0, 0, 0)));
    let mut h = History::default();
    h.push(0.0, before, 60.0);
    let now = one("a", PodLoad::from_samples(&scrape(190, 5, 5, 500)));
    let m = windowed(&h, &now, 10.0, 60.0).unwrap();
    assert_eq!(m.error_rate, Some(5.0 / 100.0));
    // A restarted worker: both counters count from zero.
    let restarted = one("a", PodLoad::from_samples(&scrape(8, 2, 0, 0)));
    let m = windowed(&h, &restarted, 10.0, 60.0).unwrap();
    assert_eq!(m.error_rate, Some(0.2));
    // Nothing finished: no rate, and an idle engine reports no latency.
    let idle = windowed(&h, &h.latest().unwrap().1.clone(), 10.0, 60.0).unwrap();
    assert_eq!((idle.error_rate, idle.p95_latency_ms), (None, None));
}

/// A worker that became ready inside the window counts from zero over the time the history
/// covers, next to a worker diffed against its baseline.
#[test]
fn a_new_worker_counts_from_zero() {
    let mut h = History::default();
    h.push(0.0, one("a", load(0.0, 0.0, 0.0, 1000.0, 0.0)), 60.0);
    let mut now = one("a", load(0.0, 10.0, 0.0, 1200.0, 0.0));
    now.insert("b".into(), load(0.0, 10.0, 0.0, 100.0, 0.0));
    let m = windowed(&h, &now, 10.0, 60.0).unwrap();
    assert_eq!(m.tokens_per_second, Some(30.0), "(200 + 100) / 10 s");
}
