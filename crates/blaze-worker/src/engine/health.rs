//! An engine's health as the handlers, the scheduler thread and its watchdog share it, and
//! the watchdog itself; both engines (text generation and embeddings) use them.
//!
//! A worker whose scheduler died (a panic in the forward pass) or stalled (a step that never
//! returns: a hung kernel, a deadlock) must not look alive: `/livez` fails so the kubelet
//! restarts the container, and no request waits on it. A trip is final: it marks the engine
//! [`Health::Failed`], ends every request in flight with [`EngineError::Failed`] (a
//! retriable error) and refuses new ones. Requests are ended through weak references to
//! their event senders kept here, because a stalled scheduler thread holds the senders and
//! never lets go of them (weak, so that a request's channel still closes when the scheduler
//! is done with it).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::sync::{mpsc, watch};

use crate::engine::{EngineError, Event, Health};
use crate::metrics::{Metrics, WatchdogCause};

/// What a request's channel carries, and how it carries an error that ends the request.
pub(crate) trait Ending: Send + 'static {
    /// The message that ends a request with `error`.
    fn failed(error: EngineError) -> Self;
}

impl Ending for Event {
    fn failed(error: EngineError) -> Self {
        Event::Error(error)
    }
}

/// State shared by the engine handle, its scheduler thread and its watchdog; `T` is what
/// the engine sends its requests.
pub(crate) struct Shared<T> {
    health: watch::Sender<Health>,
    /// Requests queued or running.
    pub(crate) in_flight: AtomicUsize,
    epoch: Instant,
    /// Nanoseconds from `epoch` to the scheduler's last sign of progress.
    progress: AtomicU64,
    open: Mutex<Open<T>>,
    metrics: Metrics,
}

/// The requests a trip must end, and the trip's reason once there was one.
struct Open<T> {
    sinks: Vec<mpsc::WeakUnboundedSender<T>>,
    failure: Option<String>,
}

impl<T: Ending> Shared<T> {
    pub(crate) fn new(metrics: Metrics) -> Self {
        Self {
            health: watch::Sender::new(Health::Ready),
            in_flight: AtomicUsize::new(0),
            epoch: Instant::now(),
            progress: AtomicU64::new(0),
            open: Mutex::new(Open { sinks: Vec::new(), failure: None }),
            metrics,
        }
    }

    pub(crate) fn health(&self) -> Health {
        *self.health.borrow()
    }

    pub(crate) fn watch_health(&self) -> watch::Receiver<Health> {
        self.health.subscribe()
    }

    /// Moves to `health`, unless the engine has failed already (failing is final).
    pub(crate) fn set(&self, health: Health) {
        self.health.send_if_modified(|h| {
            let change = *h != Health::Failed && *h != health;
            if change {
                *h = health;
            }
            change
        });
    }

    pub(crate) fn failure(&self) -> Option<String> {
        self.open.lock().failure.clone()
    }

    /// Keeps a weak reference to a new request's event sender, so that a trip can end the
    /// request; refused once the engine has failed.
    pub(crate) fn register(&self, sink: &mpsc::UnboundedSender<T>) -> Result<(), Health> {
        let mut open = self.open.lock();
        if open.failure.is_some() {
            return Err(Health::Failed);
        }
        // Requests the scheduler is done with, or whose handler has gone, need no ending.
        open.sinks.retain(|s| s.upgrade().is_some_and(|s| !s.is_closed()));
        open.sinks.push(sink.downgrade());
        Ok(())
    }

    /// The scheduler is not stuck: called between forward passes and while idle.
    pub(crate) fn mark_progress(&self) {
        self.progress.store(self.epoch.elapsed().as_nanos() as u64, Ordering::Relaxed);
    }

    /// How long the scheduler has shown no progress while work waited on it.
    fn stalled_for(&self) -> Option<Duration> {
        if self.in_flight.load(Ordering::SeqCst) == 0 {
            return None;
        }
        let now = self.epoch.elapsed().as_nanos() as u64;
        Some(Duration::from_nanos(now.saturating_sub(self.progress.load(Ordering::Relaxed))))
    }

    /// Fails the engine for `reason`: health [`Health::Failed`], every open request ended
    /// with a retriable error, new ones refused. Only the first trip counts.
    pub(crate) fn trip(&self, cause: WatchdogCause, reason: String) {
        let mut open = self.open.lock();
        if open.failure.is_some() {
            return;
        }
        tracing::error!(?cause, %reason, in_flight = open.sinks.len(), "the scheduler failed; /livez now fails and requests in flight are ended");
        self.metrics.watchdog_trip(cause);
        for sink in open.sinks.drain(..).filter_map(|s| s.upgrade()) {
            let _ = sink.send(T::failed(EngineError::Failed(reason.clone())));
        }
        open.failure = Some(reason);
        // Last, so that whoever sees the health change finds the requests ended.
        self.health.send_replace(Health::Failed);
    }
}

/// How often the watchdog looks: a quarter of the stall timeout, so that a stall is noticed
/// within 1.25 timeouts, but at least every second and at most every 10 ms.
fn tick(stall_timeout: Duration) -> Duration {
    (stall_timeout / 4).clamp(Duration::from_millis(10), Duration::from_secs(1))
}

/// Watches `shared` until the scheduler thread ends or a stall trips it: a stall is no
/// progress for `stall_timeout` while requests are queued or running. (A panic on the
/// scheduler thread trips it there and then.)
pub(crate) fn spawn_watchdog<T: Ending>(
    shared: std::sync::Arc<Shared<T>>,
    scheduler: JoinHandle<()>,
    stall_timeout: Duration,
) {
    let every = tick(stall_timeout);
    let watchdog = move || {
        loop {
            std::thread::sleep(every);
            if scheduler.is_finished() || shared.health() == Health::Failed {
                return;
            }
            if let Some(idle) = shared.stalled_for().filter(|idle| *idle >= stall_timeout) {
                let n = shared.in_flight.load(Ordering::SeqCst);
                let reason = format!(
                    "the scheduler made no progress for {:.1} s with {n} requests in flight \
                     (--stall-timeout-seconds {})",
                    idle.as_secs_f64(),
                    stall_timeout.as_secs_f64()
                );
                shared.trip(WatchdogCause::Stalled, reason);
                return;
            }
        }
    };
    std::thread::Builder::new()
        .name("blaze-watchdog".into())
        .spawn(watchdog)
        .expect("spawning the watchdog thread");
}

/// What every engine's start makes: the queue its requests wait in (`max_queue` at most),
/// the state its handle shares with its thread, and the thread `name` running `run` over the
/// state that `make` builds from the queue's receiving end and the shared state, supervised
/// as [`spawn_supervised`] says. Returns the queue's sending end and the shared state.
pub(crate) fn start_engine_thread<T: Ending, A, S: Send + 'static>(
    name: &str,
    metrics: &Metrics,
    max_queue: usize,
    stall_timeout: Duration,
    make: impl FnOnce(std::sync::mpsc::Receiver<A>, std::sync::Arc<Shared<T>>) -> S,
    run: fn(&mut S),
) -> (std::sync::mpsc::SyncSender<A>, std::sync::Arc<Shared<T>>) {
    let (queue, receiver) = std::sync::mpsc::sync_channel(max_queue);
    let shared = std::sync::Arc::new(Shared::new(metrics.clone()));
    let state = make(receiver, shared.clone());
    spawn_supervised(name, shared.clone(), stall_timeout, state, run);
    (queue, shared)
}

/// Starts the engine's thread `name` running `run(state)`, and the watchdog beside it.
///
/// A panic must not leave an engine that looks alive but never answers: it trips the
/// watchdog there and then (failing /livez and ending every request in flight, with the
/// panic's message), while `state`, which holds the requests' senders, is still alive:
/// dropping it first would end the requests with no word of why. A `run` that returns (the
/// engine was dropped) leaves the engine failed.
pub(crate) fn spawn_supervised<T: Ending, S: Send + 'static>(
    name: &str,
    shared: std::sync::Arc<Shared<T>>,
    stall_timeout: Duration,
    state: S,
    run: fn(&mut S),
) {
    let on_exit = shared.clone();
    let what = name.trim_start_matches("blaze-").to_owned();
    let thread = std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || {
            let mut state = state;
            match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(&mut state))) {
                Ok(()) => on_exit.set(Health::Failed),
                Err(payload) => {
                    let message = panic_message(payload.as_ref());
                    let reason = format!("the {what} thread panicked: {message}");
                    on_exit.trip(WatchdogCause::Panicked, reason);
                }
            }
            drop(state);
        })
        .unwrap_or_else(|e| panic!("spawning the {name} thread: {e}"));
    spawn_watchdog(shared, thread, stall_timeout);
}

/// Queues `admission` for the engine's thread, counted in flight and waiting until the
/// thread takes it. A full queue refuses it at once (`max_queue`, counted as rejected); a
/// thread that is gone makes the engine unavailable.
pub(crate) fn enqueue<T: Ending, A>(
    shared: &Shared<T>,
    metrics: &Metrics,
    queue: &std::sync::mpsc::SyncSender<A>,
    admission: A,
    max_queue: usize,
) -> Result<(), crate::engine::SubmitError> {
    use crate::engine::SubmitError;
    use std::sync::mpsc::TrySendError;
    shared.in_flight.fetch_add(1, Ordering::SeqCst);
    metrics.waiting.inc();
    let Err(e) = queue.try_send(admission) else { return Ok(()) };
    shared.in_flight.fetch_sub(1, Ordering::SeqCst);
    metrics.waiting.dec();
    match e {
        TrySendError::Full(_) => {
            metrics.rejected.inc();
            Err(SubmitError::QueueFull(max_queue))
        }
        TrySendError::Disconnected(_) => Err(SubmitError::Unavailable(Health::Failed)),
    }
}

/// The handle methods of an engine struct whose [`Shared`] state is its `shared` field:
/// health, its changes, the failure, draining and the requests in flight (what `/readyz`,
/// `/livez` and a drain ask of every engine). `lifecycle_methods!(pub)` in an inherent impl,
/// `lifecycle_methods!()` in an implementation of [`super::Engine`].
macro_rules! lifecycle_methods {
    ($($vis:tt)*) => {
        /// Current health.
        $($vis)* fn health(&self) -> $crate::engine::Health {
            self.shared.health()
        }

        /// Health as it changes.
        $($vis)* fn watch_health(&self) -> tokio::sync::watch::Receiver<$crate::engine::Health> {
            self.shared.watch_health()
        }

        /// What failed, once the health is `Failed`.
        $($vis)* fn failure(&self) -> Option<String> {
            self.shared.failure()
        }

        /// Stops admitting requests; those in flight run to completion.
        $($vis)* fn drain(&self) {
            self.shared.set($crate::engine::Health::Draining);
        }

        /// Requests queued or running.
        $($vis)* fn in_flight(&self) -> usize {
            self.shared.in_flight.load(std::sync::atomic::Ordering::SeqCst)
        }
    };
}
pub(crate) use lifecycle_methods;

/// The text of a panic's payload.
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shared() -> (Shared<Event>, prometheus_client::registry::Registry) {
        let mut registry = prometheus_client::registry::Registry::default();
        (Shared::new(Metrics::register(&mut registry)), registry)
    }

    #[test]
    fn a_trip_ends_open_requests_refuses_new_ones_and_counts_once() {
        let (shared, registry) = shared();
        let (sink, mut events) = mpsc::unbounded_channel();
        shared.register(&sink).unwrap();
        let (gone, gone_events) = mpsc::unbounded_channel();
        shared.register(&gone).unwrap();
        drop(gone_events);
        // The scheduler is done with a request: its channel closes although it is registered.
        let (done, mut done_events) = mpsc::unbounded_channel::<Event>();
        shared.register(&done).unwrap();
        drop(done);
        assert_eq!(done_events.try_recv(), Err(mpsc::error::TryRecvError::Disconnected));
        let mut changes = shared.watch_health();
        shared.trip(WatchdogCause::Panicked, "boom".into());
        shared.trip(WatchdogCause::Stalled, "again".into());
        assert_eq!(events.try_recv().unwrap(), Event::Error(EngineError::Failed("boom".into())));
        assert!(events.try_recv().is_err(), "one error, then nothing");
        assert!(changes.has_changed().unwrap());
        assert_eq!(*changes.borrow_and_update(), Health::Failed);
        assert_eq!(shared.failure().as_deref(), Some("boom"));
        assert_eq!(shared.register(&sink), Err(Health::Failed));
        shared.set(Health::Draining);
        assert_eq!(shared.health(), Health::Failed, "failing is final");
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(text.contains("blaze_watchdog_trips_total{cause=\"panicked\"} 1"), "{text}");
        assert!(!text.contains("cause=\"stalled\""), "{text}");
    }

    #[test]
    fn a_stall_counts_only_while_work_waits() {
        let (shared, _registry) = shared();
        shared.mark_progress();
        assert_eq!(shared.stalled_for(), None, "idle: nothing waits on the scheduler");
        shared.in_flight.store(2, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(30));
        assert!(shared.stalled_for().unwrap() >= Duration::from_millis(30));
        shared.mark_progress();
        assert!(shared.stalled_for().unwrap() < Duration::from_millis(30));
    }

    #[test]
    fn the_watchdog_trips_a_stalled_scheduler_within_its_timeout_and_a_tick() {
        let (shared, _registry) = shared();
        let shared = std::sync::Arc::new(shared);
        let (sink, mut events) = mpsc::unbounded_channel();
        shared.register(&sink).unwrap();
        shared.in_flight.store(1, Ordering::SeqCst);
        let started = Instant::now();
        shared.mark_progress();
        // A scheduler thread stuck in a step: it never marks progress again.
        let (release, stuck) = std::sync::mpsc::channel::<()>();
        let scheduler = std::thread::spawn(move || {
            let _ = stuck.recv();
        });
        let timeout = Duration::from_millis(200);
        spawn_watchdog(shared.clone(), scheduler, timeout);
        let mut changes = shared.watch_health();
        let failed = changes.wait_for(|h| *h == Health::Failed);
        futures::executor::block_on(failed).unwrap();
        let took = started.elapsed();
        assert!(took >= timeout, "tripped after {took:?}, before the timeout");
        assert!(took < Duration::from_secs(10), "tripped only after {took:?}");
        let Ok(Event::Error(e)) = events.try_recv() else { panic!("the request was not ended") };
        assert!(e.is_retriable() && e.to_string().contains("no progress"), "{e}");
        let _ = release.send(());
    }
}
