//! Stalled endpoints: one with requests in flight from which nothing has arrived for a while
//! (no headers, no body frame) is suspected, and gets the health check's probe out of turn.
//! A frozen worker (stopped, wedged, its host gone) does not answer, and is taken out at once,
//! as if `unhealthyThreshold` checks had failed, which sends its waiting requests elsewhere
//! ([`crate::endpoint::Ejection`]). A busy worker answers (its HTTP server stays responsive
//! while the model computes), so a long generation that sends nothing until it is done is
//! left alone, and its answer counts as progress until the next suspicion.
//!
//! An endpoint is suspected after [`suspicion_after`] of silence: four times its time to
//! first byte (peak-EWMA), at least [`MIN_SUSPICION`], at most [`MAX_SUSPICION`] (and the
//! per-try timeout). The cap is what keeps detection within a few seconds where answers come
//! whole: there the time to first byte is the whole generation, tens of seconds on a busy
//! CPU, and a suspicion costs only a probe that a live worker answers. The detector also
//! drives the coarse clock of [`crate::progress`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use futures::stream::FuturesUnordered;
use tokio::time::MissedTickBehavior;

use crate::endpoint::Endpoint;
use crate::health::{self, Clients};
use crate::progress;
use crate::routes::{Routes, Table};

/// How often endpoints are looked at (and the coarse clock moves).
pub const TICK: Duration = Duration::from_millis(500);
/// Shortest silence that raises suspicion: below it, an endpoint's ordinary pauses between
/// tokens and a probe's round trip are of the same order, and probes would be wasted.
pub const MIN_SUSPICION: Duration = Duration::from_secs(1);
/// Silence, in times to first byte, that raises suspicion: a first token four times later
/// than usual is rare on a live endpoint, and a stream's later tokens come faster still.
pub const TTFT_FACTOR: f64 = 4.0;
/// Longest silence before a probe, however slow the endpoint's answers usually are.
pub const MAX_SUSPICION: Duration = Duration::from_secs(2);

/// The silence after which an endpoint whose time to first byte is `ttft_s` (seconds) is
/// suspected, for tries that may wait `per_try` for an answer.
pub fn suspicion_after(ttft_s: f64, per_try: Duration) -> Duration {
    let from_ttft = Duration::try_from_secs_f64(ttft_s * TTFT_FACTOR).unwrap_or(Duration::ZERO);
    from_ttft.clamp(MIN_SUSPICION, MAX_SUSPICION).min(per_try)
}

/// Whether an endpoint with `in_flight` requests, whose last progress was at `last_ms`, is
/// suspected at `now_ms` after a silence of `after`. Progress marked by the coarse clock may
/// be up to a tick late, so a tick more of silence is asked for.
pub fn suspected(in_flight: u64, last_ms: u64, now_ms: u64, after: Duration) -> bool {
    let after_ms = u64::try_from((after + TICK).as_millis()).unwrap_or(u64::MAX);
    in_flight > 0 && now_ms.saturating_sub(last_ms) > after_ms
}

/// Looks for stalled endpoints forever, over whatever endpoints the table holds. Probes run
/// while the ticks go on; an endpoint is probed once at a time.
pub async fn run(table: Arc<Table>) {
    let clients = Clients::new();
    let mut probes = FuturesUnordered::new();
    let mut probing: Vec<Arc<Endpoint>> = Vec::new();
    let mut ticks = tokio::time::interval(TICK);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => {
                let now = Instant::now();
                progress::tick(now);
                let routes = table.load();
                for i in suspects(&routes, progress::millis(now)) {
                    let ep = &routes.endpoints[i];
                    if !probing.iter().any(|p| Arc::ptr_eq(p, ep)) {
                        probing.push(ep.clone());
                        probes.push(check(&clients, routes.clone(), i));
                    }
                }
            }
            Some((routes, i, alive)) = probes.next(), if !probes.is_empty() => {
                probing.retain(|p| !Arc::ptr_eq(p, &routes.endpoints[i]));
                conclude(&routes, i, alive);
            }
        }
    }
}

/// The endpoints of `routes` suspected at `now_ms`; none when health checks are off (there is
/// no probe to send).
fn suspects(routes: &Routes, now_ms: u64) -> Vec<usize> {
    let cfg = &routes.config;
    if cfg.health_check.is_none() {
        return Vec::new();
    }
    let ms = cfg.retries.per_try_timeout_ms.unwrap_or(cfg.timeouts.headers_timeout_ms);
    let per_try = Duration::from_millis(u64::try_from(ms).unwrap_or(1).max(1));
    let is_suspect = |e: &Endpoint| {
        let in_flight = e.in_flight();
        in_flight > 0
            && suspected(in_flight, e.progress.get(), now_ms, suspicion_after(e.ttft(), per_try))
    };
    (0..routes.endpoints.len()).filter(|&i| is_suspect(&routes.endpoints[i])).collect()
}

/// Probes endpoint `i` of `routes` as the health checks do.
async fn check(clients: &Clients, routes: Arc<Routes>, i: usize) -> (Arc<Routes>, usize, bool) {
    let alive = match &routes.config.health_check {
        Some(hc) => {
            let timeout =
                Duration::from_secs(u64::try_from(hc.timeout_seconds).unwrap_or(1).max(1));
            health::probe(clients, &routes.endpoints[i], &hc.path, timeout).await
        }
        None => true,
    };
    (routes, i, alive)
}

/// Acts on a suspected endpoint's probe: an answer is progress; no answer takes it out.
fn conclude(routes: &Routes, i: usize, alive: bool) {
    let ep = &routes.endpoints[i];
    if alive {
        ep.progress.mark(progress::millis(Instant::now()));
        tracing::debug!(endpoint = %ep.address, "quiet endpoint answered its probe");
        return;
    }
    let unhealthy_after = routes
        .config
        .health_check
        .as_ref()
        .map_or(1, |hc| u32::try_from(hc.unhealthy_threshold).unwrap_or(1));
    if ep.force_unhealthy(unhealthy_after) {
        routes.endpoint_metrics[i].stalls.inc();
        let silent_ms = progress::millis(Instant::now()).saturating_sub(ep.progress.get());
        tracing::warn!(
            endpoint = %ep.address,
            in_flight = ep.in_flight(),
            silent_ms,
            "endpoint stalled: nothing from it with requests in flight, and no answer to its \
             health probe; taken out"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn suspicion_follows_the_time_to_first_byte_within_bounds() {
        let per_try = Duration::from_secs(120);
        // Fast endpoints: the floor.
        assert_eq!(suspicion_after(0.005, per_try), MIN_SUSPICION);
        // Four first-byte times.
        assert_eq!(suspicion_after(0.4, per_try), Duration::from_millis(1600));
        // Slow answers (whole generations before the first byte): the cap.
        assert_eq!(suspicion_after(2.0, per_try), MAX_SUSPICION);
        assert_eq!(suspicion_after(60.0, per_try), 2 * S);
        // Never longer than a try may wait anyway.
        assert_eq!(suspicion_after(0.5, Duration::from_millis(300)), Duration::from_millis(300));
        assert_eq!(suspicion_after(f64::NAN, per_try), MIN_SUSPICION);
    }

    #[test]
    fn only_a_silent_endpoint_with_requests_in_flight_is_suspected() {
        let after = 2 * S;
        // Silent for 3 s with one request: suspected (2 s plus a tick of clock slack).
        assert!(suspected(1, 10_000, 13_000, after));
        // Within the slack: not yet.
        assert!(!suspected(1, 10_000, 12_400, after));
        // Nothing in flight: silence is idleness.
        assert!(!suspected(0, 0, 13_000, after));
        // Progress from a clock ahead of the detector's: never suspected.
        assert!(!suspected(3, 14_000, 13_000, after));
    }
}
