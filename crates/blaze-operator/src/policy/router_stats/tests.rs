use blaze_api::router::{WeightsMode, WeightsSpec};

use super::*;

/// Weights for a router balancing adaptively.
fn weights(endpoints: &[EndpointStats], spec: &WeightsSpec) -> Vec<i32> {
    crate::policy::weights::weights(endpoints, spec, blaze_api::router::Strategy::Adaptive)
}

/// One endpoint as a router replica counts it. Streaming answers: headers at once (every
/// time to headers is fast), first tokens fast or slow.
#[derive(Clone, Debug)]
struct Ep {
    requests: f64,
    errors: f64,
    fast: f64,
    slow: f64,
    in_flight: f64,
    breaker: u8,
    healthy: bool,
}

impl Default for Ep {
    fn default() -> Self {
        Self {
            requests: 0.0,
            errors: 0.0,
            fast: 0.0,
            slow: 0.0,
            in_flight: 0.0,
            breaker: 0,
            healthy: true,
        }
    }
}

impl Ep {
    fn serve(&mut self, fast: f64, slow: f64, errors: f64) {
        self.requests += fast + slow + errors;
        self.errors += errors;
        self.fast += fast;
        self.slow += slow;
    }
}

/// A router replica's `/metrics` for `eps` (address, counters), with or without the time to
/// first token histogram.
fn exposition(eps: &[(&str, &Ep)], ttft: bool) -> Vec<Sample> {
    let mut t = String::new();
    for (addr, e) in eps {
        let l = format!(r#"endpoint="{addr}",engine="chat""#);
        let total = e.fast + e.slow;
        t += &format!("{}{{{l}}} {}\n", series::REQUESTS, e.requests);
        t += &format!("{}{{{l}}} {}\n", series::ERRORS, e.errors);
        t += &format!("{}{{{l}}} {}\n", series::IN_FLIGHT, e.in_flight);
        t += &format!("{}{{{l}}} {}\n", series::BREAKER, e.breaker);
        t += &format!("{}{{{l}}} {}\n", series::HEALTHY, u8::from(e.healthy));
        let hist = |name: &str, fast: f64| {
            [("0.1", fast), ("1", total), ("+Inf", total)]
                .iter()
                .map(|(le, c)| format!("{name}_bucket{{{l},le=\"{le}\"}} {c}\n"))
                .collect::<String>()
        };
        t += &hist(series::TTFB, total);
        if ttft {
            t += &hist(series::TTFT, e.fast);
        }
    }
    prom::parse(&t)
}

/// A router replica: its pod name, its endpoints, and whether it exports time to first token.
type Replica<'a> = (&'a str, &'a [(&'a str, &'a Ep)], bool);

fn pods(list: &[Replica<'_>]) -> BTreeMap<String, PodScrape> {
    list.iter().map(|(pod, eps, ttft)| ((*pod).to_owned(), read(&exposition(eps, *ttft)))).collect()
}

fn endpoint(addr: &str) -> RoutingEndpoint {
    RoutingEndpoint {
        engine: "chat".into(),
        pod: format!("pod-{addr}"),
        address: addr.into(),
        weight: 0,
    }
}

fn auto(slow_start_seconds: i32) -> WeightsSpec {
    WeightsSpec { mode: WeightsMode::Auto, slow_start_seconds, ..Default::default() }
}

/// The weights the operator would publish for `eps` from these views.
fn weigh(
    views: &BTreeMap<String, EndpointView>,
    eps: &[RoutingEndpoint],
    spec: &WeightsSpec,
) -> Vec<i32> {
    let stats: Vec<EndpointStats> = eps.iter().map(|e| views[&e.address].stats.clone()).collect();
    weights(&stats, spec)
}

#[test]
fn latency_errors_and_breakers_sum_over_router_replicas() {
    let mut e0 = Ep::default();
    e0.serve(100.0, 0.0, 0.0);
    let mut h = History::default();
    let before = pods(&[("r-0", &[("a:1", &e0)], true), ("r-1", &[("a:1", &Ep::default())], true)]);
    h.push(0.0, before, WINDOW_S);
    e0.serve(10.0, 10.0, 5.0);
    let mut e1 = Ep { breaker: 1, ..Ep::default() };
    e1.serve(10.0, 0.0, 5.0);
    let now = pods(&[("r-0", &[("a:1", &e0)], true), ("r-1", &[("a:1", &e1)], true)]);
    let o = observe(&h, &now, 10.0);
    let v = &o["a:1"];
    assert_eq!(v.stats.engine, "chat");
    assert_eq!(v.stats.error_rate, Some(10.0 / 40.0));
    assert_eq!(v.breaker, BreakerState::Open, "the worst replica's view");
    assert_eq!(v.condition(), Condition::Down);
    // 20 fast and 10 slow first tokens in the window: p95 in the slow bucket.
    let p95 = v.stats.p95_ms.unwrap();
    assert!(p95 > 100.0 && p95 <= 1000.0, "{p95}");
}

/// Weights follow time to first token where the router exports it (time to headers is the
/// same for every streaming endpoint), and time to headers where it does not.
#[test]
fn latency_is_time_to_first_token_or_time_to_headers_from_an_older_router() {
    for ttft in [true, false] {
        let (mut fast, mut slow) = (Ep::default(), Ep::default());
        let mut h = History::default();
        h.push(0.0, pods(&[("r-0", &[("a:1", &fast), ("b:1", &slow)], ttft)]), WINDOW_S);
        fast.serve(100.0, 0.0, 0.0);
        slow.serve(0.0, 100.0, 0.0);
        let v = observe(&h, &pods(&[("r-0", &[("a:1", &fast), ("b:1", &slow)], ttft)]), 10.0);
        let w = weights(&[v["a:1"].stats.clone(), v["b:1"].stats.clone()], &auto(0));
        if ttft {
            assert!(w[1] <= 20, "slow first tokens cut the weight: {w:?}");
        } else {
            assert_eq!(w, vec![100, 100], "headers came at once for both: {w:?}");
        }
    }
}

#[test]
fn an_idle_window_has_no_latency_and_restarted_routers_count_from_zero() {
    let mut e = Ep::default();
    e.serve(50.0, 0.0, 1.0);
    let same = pods(&[("r-0", &[("a:1", &e)], true)]);
    let mut h = History::default();
    h.push(0.0, same.clone(), WINDOW_S);
    let o = observe(&h, &same, 10.0);
    assert_eq!((o["a:1"].stats.p95_ms, o["a:1"].stats.error_rate), (None, None));
    let mut fresh = Ep::default();
    fresh.serve(4.0, 0.0, 0.0);
    let o = observe(&h, &pods(&[("r-0", &[("a:1", &fresh)], true)]), 10.0);
    assert_eq!(o["a:1"].stats.error_rate, Some(0.0));
    assert!(o["a:1"].stats.p95_ms.unwrap() <= 100.0);
    let o = observe(&History::default(), &same, 10.0);
    assert_eq!(o["a:1"].stats.error_rate, None, "no baseline, no counters");
}

/// Reconciled at uneven times (events come whenever they come), the window stays the last
/// 6 s: errors before a reconcile that follows another by 1 s still show, and errors older
/// than the window no longer do.
#[test]
fn the_window_is_fixed_whatever_the_reconcile_rate() {
    let mut h = History::default();
    let mut e = Ep::default();
    let mut at = |t: f64, e: &Ep| {
        let now = pods(&[("r-0", &[("a:1", e)], true)]);
        let v = observe(&h, &now, t);
        h.push(t, now, WINDOW_S);
        v["a:1"].stats.error_rate
    };
    e.serve(100.0, 0.0, 0.0);
    assert_eq!(at(0.0, &e), None, "nothing to diff against yet");
    e.serve(100.0, 0.0, 0.0);
    assert_eq!(at(3.0, &e), Some(0.0));
    e.serve(50.0, 0.0, 50.0);
    assert_eq!(at(4.0, &e), Some(0.25), "diffed against 0 s, not the previous 3 s");
    e.serve(100.0, 0.0, 0.0);
    assert_eq!(at(5.0, &e), Some(50.0 / 300.0), "no new errors, still in the window");
    e.serve(100.0, 0.0, 0.0);
    assert_eq!(at(9.0, &e), Some(50.0 / 300.0), "diffed against 3 s");
    e.serve(100.0, 0.0, 0.0);
    assert_eq!(at(12.0, &e), Some(0.0), "the errors are older than the window");
}

/// Two equal workers, reconciled every 5 s; one turns slow at 30 s. Within 10 s it has lost at
/// least half its weight.
#[test]
fn a_worker_that_turns_slow_loses_half_its_weight_within_the_window() {
    let eps = [endpoint("a:1"), endpoint("b:1")];
    let mut mem = RouterMemory::default();
    let (mut a, mut b) = (Ep::default(), Ep::default());
    let mut before = None;
    for i in 0..=8 {
        let t = f64::from(i) * 5.0;
        if i > 0 {
            a.serve(50.0, 0.0, 0.0);
            if t > 30.0 {
                b.serve(10.0, 40.0, 0.0);
                b.in_flight = 8.0;
            } else {
                b.serve(50.0, 0.0, 0.0);
            }
        }
        let now = pods(&[("r-0", &[("a:1", &a), ("b:1", &b)], true)]);
        let w = weigh(&mem.observe(t, now, &eps), &eps, &auto(0));
        if t == 30.0 {
            assert_eq!(w, vec![100, 100], "equal before");
            before = Some(w[1]);
        }
        if t == 40.0 {
            assert!(w[1] * 2 <= before.unwrap(), "{w:?}");
            assert_eq!(w[0], 100);
        }
    }
}

/// A breaker open anywhere takes the endpoint out (weight 0); half-open it gets the floor so
/// probes reach it; closed again it ramps from the floor over slowStartSeconds.
#[test]
fn an_ejected_endpoint_gets_nothing_then_the_floor_then_a_ramp() {
    let eps = [endpoint("a:1"), endpoint("b:1")];
    let spec = auto(30);
    let mut mem = RouterMemory::default();
    let (a, mut b) = (Ep::default(), Ep::default());
    let mut step = |t: f64, b: &Ep| {
        let now = pods(&[
            ("r-0", &[("a:1", &a), ("b:1", &Ep::default())], true),
            ("r-1", &[("a:1", &a), ("b:1", b)], true),
        ]);
        weigh(&mem.observe(t, now, &eps), &eps, &spec)
    };
    assert_eq!(step(0.0, &b), vec![100, 100], "new endpoints: the routers ramp them");
    b.breaker = 1;
    assert_eq!(step(5.0, &b), vec![100, 0], "open in one replica of two");
    assert_eq!(step(10.0, &b), vec![100, 0]);
    b.breaker = 2;
    assert_eq!(step(35.0, &b), vec![100, 10], "half-open: the floor, for the probes");
    b.breaker = 0;
    assert_eq!(step(40.0, &b), vec![100, 10], "recovered: the ramp starts at the floor");
    assert_eq!(step(55.0, &b), vec![100, 55]);
    assert_eq!(step(70.0, &b), vec![100, 100]);
}

/// A failing health check takes the endpoint out until it passes again, then it ramps.
#[test]
fn a_failing_health_check_takes_the_endpoint_out_until_it_passes() {
    let eps = [endpoint("a:1"), endpoint("b:1")];
    let mut mem = RouterMemory::default();
    let a = Ep::default();
    let mut b = Ep { healthy: false, ..Ep::default() };
    let mut step = |t: f64, b: &Ep| {
        let now = pods(&[("r-0", &[("a:1", &a), ("b:1", b)], false)]);
        weigh(&mem.observe(t, now, &eps), &eps, &auto(30))
    };
    assert_eq!(step(0.0, &b), vec![100, 0]);
    b.healthy = true;
    assert_eq!(step(5.0, &b), vec![100, 10]);
    assert_eq!(step(20.0, &b), vec![100, 55]);
    // A scrape that misses the endpoint (a router not yet told of it) changes nothing.
    let gone = pods(&[("r-0", &[("a:1", &a)], false)]);
    let w = weigh(&mem.observe(35.0, gone, &eps), &eps, &auto(30));
    assert_eq!(w, vec![100, 100]);
}

/// New endpoints get their full weight from the operator (each router ramps the endpoints
/// new to it itself; a second ramp would multiply with it); only a recovery ramps here.
#[test]
fn new_endpoints_are_not_ramped_twice() {
    let a = Ep::default();
    let mut mem = RouterMemory::default();
    let spec = auto(30);
    let mut step = |t: f64, eps: &[RoutingEndpoint]| {
        let now = pods(&[("r-0", &[("a:1", &a), ("b:1", &a)], true)]);
        weigh(&mem.observe(t, now, eps), eps, &spec)
    };
    let (ea, eb) = (endpoint("a:1"), endpoint("b:1"));
    assert_eq!(step(0.0, &[ea.clone(), eb.clone()]), vec![100, 100]);
    assert_eq!(step(35.0, std::slice::from_ref(&ea)), vec![100]);
    assert_eq!(step(40.0, &[ea, eb]), vec![100, 100], "back: the routers ramp it");
}

/// A worker that turned slow gets little traffic, often none in a window: its last measured
/// time to first token stands in, so its weight stays low instead of springing back to the
/// typical one; after `REMEMBER_S` without a measurement it is typical again and is tried.
#[test]
fn a_slow_worker_left_without_traffic_keeps_its_low_weight_for_a_while() {
    let eps = [endpoint("a:1"), endpoint("b:1")];
    let mut mem = RouterMemory::default();
    let (mut a, mut b) = (Ep::default(), Ep::default());
    let spec = auto(0);
    let mut weights_at = Vec::new();
    for i in 0..=20 {
        let t = f64::from(i) * 3.0;
        a.serve(30.0, 0.0, 0.0);
        match i {
            0..=3 => b.serve(30.0, 0.0, 0.0),
            4 | 5 => b.serve(0.0, 20.0, 0.0),
            _ => {}
        }
        let now = pods(&[("r-0", &[("a:1", &a), ("b:1", &b)], true)]);
        weights_at.push((t, weigh(&mem.observe(t, now, &eps), &eps, &spec)[1]));
    }
    let at = |t: f64| weights_at.iter().find(|(s, _)| *s == t).unwrap().1;
    assert_eq!(at(9.0), 100, "alike");
    assert!(at(15.0) < 50, "slow: {weights_at:?}");
    // Its slow first tokens leave the window by 21 s (last measured at 18 s).
    for t in [21.0, 36.0, 48.0] {
        assert!(at(t) < 50, "no traffic since 15 s, still known slow at {t} s: {weights_at:?}");
    }
    assert_eq!(at(51.0), 100, "unmeasured for longer than REMEMBER_S: typical again");
}
