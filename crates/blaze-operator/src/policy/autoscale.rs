//! The autoscaler, after Knative's KPA: load is averaged over a stable window for ordinary
//! decisions and over a short panic window that detects bursts. A burst (panic desire at
//! least [`PANIC_THRESHOLD`] times the ready workers) enters panic mode, in which the engine
//! only grows, until a whole stable window passes without another burst. Changes within the
//! tolerance are ignored, one decision may multiply workers by at most `maxScaleUpRate`, and
//! a lower recommendation must hold for `scaleDownDelaySeconds` before workers go (which also
//! delays scaling to zero).
//!
//! A fresh autoscaler (the operator restarted, or another replica took the lead) never
//! scales down before a whole stable window of its own samples: one sample is no average.
//! The scale-down delay counts from the first lower recommendation however seldom `decide`
//! runs: the recommendation in effect when the delay window began counts too.
//!
//! An engine at zero workers has nothing to measure: demand reaches it as a wake-up (requests
//! a router holds for it, [`Autoscaler::wake`]), which asks for one worker at once and keeps
//! at least one for a whole stable window from then, and the scale-down delay after that, so
//! the requests that woke it are served and a next burst finds it warm.
//!
//! Time is seconds on any monotonic clock, passed in, so tests run on simulated time.

use std::collections::VecDeque;

use blaze_api::engine::AutoscalingSpec;

/// Panic desire over ready workers that starts panic mode (Knative's default, 200%).
pub const PANIC_THRESHOLD: f64 = 2.0;

/// One measurement of an engine, summed over its workers.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sample {
    /// When (seconds).
    pub at: f64,
    /// Requests queued or running.
    pub in_flight: f64,
    /// p95 request latency in milliseconds over the scrape interval, if any request finished.
    pub p95_ms: Option<f64>,
}

/// What the autoscaler decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    /// Workers wanted.
    pub desired: i32,
    /// Whether panic mode is on.
    pub panicking: bool,
}

/// The state of one engine's autoscaler.
#[derive(Clone, Debug, Default)]
pub struct Autoscaler {
    samples: VecDeque<Sample>,
    first_sample_at: Option<f64>,
    panic_until: Option<f64>,
    panic_peak: i32,
    recent: VecDeque<(f64, i32)>,
    woken_at: Option<f64>,
    cold_since: Option<f64>,
}

impl Autoscaler {
    /// Records a measurement. Samples must come in time order.
    pub fn record(&mut self, s: Sample) {
        self.first_sample_at.get_or_insert(s.at);
        self.samples.push_back(s);
    }

    /// Records demand seen outside the workers (requests held for the engine) at `now`, when
    /// `idle` (no worker ready). Returns whether this starts a cold start: the engine is idle
    /// and no wake-up was in effect.
    pub fn wake(&mut self, spec: &AutoscalingSpec, now: f64, idle: bool) -> bool {
        let cold = idle && !self.woken(spec, now);
        self.woken_at = Some(now);
        if cold {
            self.cold_since.get_or_insert(now);
        }
        cold
    }

    /// Ends a cold start once a worker is ready: the seconds since its first wake-up, or
    /// `None` when no cold start was under way.
    pub fn cold_start_done(&mut self, now: f64) -> Option<f64> {
        self.cold_since.take().map(|t| now - t)
    }

    /// The latest measurement recorded, if any is kept.
    pub fn latest(&self) -> Option<Sample> {
        self.samples.back().copied()
    }

    /// Whether a wake-up keeps at least one worker at `now`.
    fn woken(&self, spec: &AutoscalingSpec, now: f64) -> bool {
        self.woken_at.is_some_and(|t| now - t < f64::from(spec.stable_window_seconds))
    }

    /// Decides the number of workers at `now`, with `current` workers asked for and `ready`
    /// of them serving. Without measurements the current size stays.
    pub fn decide(
        &mut self,
        spec: &AutoscalingSpec,
        current: i32,
        ready: i32,
        now: f64,
    ) -> Decision {
        let stable_w = f64::from(spec.stable_window_seconds);
        while self.samples.front().is_some_and(|s| s.at <= now - stable_w) {
            self.samples.pop_front();
        }
        let max = spec.max_replicas.unwrap_or(i32::MAX).max(spec.min_replicas);
        let clamp = |n: i32| n.clamp(spec.min_replicas, max);
        let woken = self.woken(spec, now);
        if self.samples.is_empty() {
            let desired = if woken { current.max(1) } else { current };
            return Decision { desired: clamp(desired), panicking: self.panic_until.is_some() };
        }
        let stable = self.want(spec, ready, now - stable_w);
        let panic = self.want(spec, ready, now - f64::from(spec.panic_window_seconds));
        let base = f64::from(ready.max(1));
        if f64::from(panic) / base >= PANIC_THRESHOLD && ready > 0 || ready == 0 && panic > 0 {
            self.panic_until = Some(now + stable_w);
        }
        if self.panic_until.is_some_and(|t| now >= t) {
            self.panic_until = None;
            self.panic_peak = 0;
        }
        let panicking = self.panic_until.is_some();
        let mut desired = if panicking {
            self.panic_peak = self.panic_peak.max(panic).max(stable).max(ready);
            self.panic_peak
        } else {
            stable
        };
        // The rate limit counts ready workers, so workers still loading do not compound it;
        // a size already asked for is not withdrawn just because its workers are slow.
        let cap = (base * spec.max_scale_up_rate).ceil() as i32;
        desired = desired.min(cap.max(current));
        if self.first_sample_at.is_none_or(|first| now - first < stable_w) {
            desired = desired.max(current);
        }
        if woken {
            desired = desired.max(1);
        }
        desired = self.delay_scale_down(spec, desired, now);
        Decision { desired: clamp(desired), panicking }
    }

    /// Workers wanted from the samples since `since`, before rate limits and delays: for more
    /// workers from the window's average; for fewer, only as few as every sample in the window
    /// allows (its peak), so workers go only after a whole window below their need.
    fn want(&self, spec: &AutoscalingSpec, ready: i32, since: f64) -> i32 {
        let window: Vec<&Sample> = self.samples.iter().filter(|s| s.at > since).collect();
        if window.is_empty() {
            return ready;
        }
        let up = want_for(spec, ready, &window, average);
        if up >= ready {
            return up;
        }
        want_for(spec, ready, &window, peak).clamp(up, ready)
    }

    fn delay_scale_down(&mut self, spec: &AutoscalingSpec, desired: i32, now: f64) -> i32 {
        let delay = f64::from(spec.scale_down_delay_seconds);
        self.recent.push_back((now, desired));
        // Keep the last decision made before the window: it was in effect when it began.
        while self.recent.get(1).is_some_and(|(t, _)| *t <= now - delay) {
            self.recent.pop_front();
        }
        self.recent.iter().map(|(_, d)| *d).max().unwrap_or(desired)
    }
}

/// Mean of a window's values.
fn average(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len() as f64
}

/// Largest of a window's values.
fn peak(v: &[f64]) -> f64 {
    v.iter().copied().fold(0.0, f64::max)
}

/// Workers wanted for the window's load and latency as `fold` sums them up.
fn want_for(
    spec: &AutoscalingSpec,
    ready: i32,
    window: &[&Sample],
    fold: fn(&[f64]) -> f64,
) -> i32 {
    let load = fold(&window.iter().map(|s| s.in_flight).collect::<Vec<_>>());
    let mut want = None;
    if let Some(target) = spec.target_in_flight_per_replica {
        let exact = load / f64::from(target);
        want = Some(within_tolerance(exact, ready, spec.tolerance));
    }
    if let Some(target) = spec.target_latency_p95_ms {
        let p95s: Vec<f64> = window.iter().filter_map(|s| s.p95_ms).collect();
        if !p95s.is_empty() && ready > 0 {
            let p95 = fold(&p95s);
            let exact = f64::from(ready) * p95 / f64::from(target);
            let by_latency = within_tolerance(exact, ready, spec.tolerance);
            want = Some(want.map_or(by_latency, |w: i32| w.max(by_latency)));
        }
    }
    match want {
        Some(w) => w,
        // Latency target only and nothing finished: idle engines may go to zero, others stay.
        None if load == 0.0 => 0,
        None => ready.max(1),
    }
}

/// `exact` workers rounded up, or `ready` when the change is within the tolerance.
fn within_tolerance(exact: f64, ready: i32, tolerance: f64) -> i32 {
    if ready > 0 && exact > 0.0 && (exact / f64::from(ready) - 1.0).abs() <= tolerance {
        return ready;
    }
    exact.ceil() as i32
}

#[cfg(test)]
mod tests;
