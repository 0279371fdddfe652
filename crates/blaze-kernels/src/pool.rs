//! The threads the kernels split a matmul over.
//!
//! The calling thread always works, and takes chunks of the matmul until none is left;
//! the pool's threads join while they are awake, each taking chunks from the same cursor.
//! The call then waits only for the chunks other threads took, never for a thread that
//! had not started: on a busy machine, where a pool thread may not run for milliseconds,
//! the caller finishes the work alone instead of stalling at a barrier. (candle's pool
//! waits for every thread at every call: beside one CPU-bound process on two cores, a
//! decode step stalled long enough that one sequence decoded 8 to 13 tokens/s instead of
//! 140 to 150.)
//!
//! An idle pool thread checks for work for a short while (a decode step's matmuls come
//! microseconds apart), then sleeps until the next call wakes it. A thread that sleeps
//! soon is also one the kernel's scheduler runs ahead of a CPU-bound neighbour when it
//! wakes.

use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::Thread;

/// How many times an idle thread checks for work before it sleeps.
const SPINS: usize = 2_000;

/// Chunks per thread a call's work is cut into: enough for a fast thread to take over a
/// slow one's share, few enough that taking one costs little.
const CHUNKS_PER_THREAD: usize = 8;

/// One call's work, on the caller's stack while the call runs.
struct Job<'a> {
    work: &'a (dyn Fn(std::ops::Range<usize>) + Sync),
    items: usize,
    chunk: usize,
    cursor: AtomicUsize,
}

impl Job<'_> {
    /// Takes and runs chunks until none is left.
    fn run(&self) {
        loop {
            let start = self.cursor.fetch_add(self.chunk, Ordering::Relaxed);
            if start >= self.items {
                return;
            }
            (self.work)(start..self.items.min(start + self.chunk));
        }
    }
}

struct Shared {
    /// The running call's job, or null. Type-erased: `Job<'a>` lives on the caller's stack.
    job: AtomicPtr<()>,
    /// Counts published jobs, so that a thread runs each job at most once.
    generation: AtomicUsize,
    /// Pool threads inside a job: the caller retracts the job, then waits for this to be 0.
    inside: AtomicUsize,
    /// Threads that went to sleep and need an unpark.
    sleeping: Vec<AtomicBool>,
    handles: OnceLock<Vec<Thread>>,
}

/// A pool of `threads - 1` threads plus the caller.
pub struct Pool {
    shared: Arc<Shared>,
    threads: usize,
    /// The call that holds the threads; a concurrent call runs on its caller alone.
    call: std::sync::Mutex<()>,
}

impl Pool {
    /// A pool computing with `threads` threads in all, the caller included.
    pub fn new(threads: usize) -> Self {
        let threads = threads.max(1);
        let shared = Arc::new(Shared {
            job: AtomicPtr::new(std::ptr::null_mut()),
            generation: AtomicUsize::new(0),
            inside: AtomicUsize::new(0),
            sleeping: (1..threads).map(|_| AtomicBool::new(false)).collect(),
            handles: OnceLock::new(),
        });
        let handles = (1..threads)
            .map(|i| {
                let shared = shared.clone();
                std::thread::Builder::new()
                    .name(format!("blaze-kernels-{i}"))
                    .spawn(move || worker(&shared, i - 1))
                    .expect("spawning a kernel thread")
                    .thread()
                    .clone()
            })
            .collect();
        let _ = shared.handles.set(handles);
        Self { shared, threads, call: std::sync::Mutex::new(()) }
    }

    /// Runs `work` over `0..items`, cut into ranges, on the caller and whichever pool
    /// threads are awake to help. Returns when every range has run.
    pub fn run(&self, items: usize, work: &(dyn Fn(std::ops::Range<usize>) + Sync)) {
        if items == 0 {
            return;
        }
        let chunk = items.div_ceil(self.threads * CHUNKS_PER_THREAD).max(1);
        let job = Job { work, items, chunk, cursor: AtomicUsize::new(0) };
        if self.threads == 1 || items <= chunk {
            job.run();
            return;
        }
        // Another call holds the threads (several engines in one process): this one runs
        // on its caller alone rather than wait.
        let Ok(_call) = self.call.try_lock() else {
            job.run();
            return;
        };
        let shared = &self.shared;
        shared.generation.fetch_add(1, Ordering::SeqCst);
        shared.job.store(std::ptr::from_ref(&job).cast_mut().cast(), Ordering::SeqCst);
        if let Some(handles) = shared.handles.get() {
            for (sleeping, thread) in shared.sleeping.iter().zip(handles) {
                if sleeping.swap(false, Ordering::SeqCst) {
                    thread.unpark();
                }
            }
        }
        job.run();
        // Retract the job, then wait for the threads inside it: a thread that enters after
        // this store sees null and leaves without touching `job`.
        shared.job.store(std::ptr::null_mut(), Ordering::SeqCst);
        while shared.inside.load(Ordering::SeqCst) != 0 {
            std::hint::spin_loop();
        }
    }
}

fn worker(shared: &Shared, index: usize) {
    let (mut idle, mut done) = (0, 0);
    loop {
        let waiting = shared.job.load(Ordering::Relaxed).is_null()
            || shared.generation.load(Ordering::Relaxed) == done;
        if waiting {
            idle += 1;
            if idle < SPINS {
                std::hint::spin_loop();
                continue;
            }
            // Sleep unless a job came meanwhile; the caller unparks sleeping threads after
            // it publishes a job, so a job published after this check is not missed.
            shared.sleeping[index].store(true, Ordering::SeqCst);
            let job = shared.job.load(Ordering::SeqCst);
            if job.is_null() || shared.generation.load(Ordering::SeqCst) == done {
                std::thread::park();
            }
            shared.sleeping[index].store(false, Ordering::SeqCst);
            idle = 0;
            continue;
        }
        let _inside = Inside::enter(&shared.inside);
        // Loaded after entering: the caller cannot retract this job and publish the next
        // while this thread is inside, so the pointer and the generation belong together.
        let job = shared.job.load(Ordering::SeqCst);
        let generation = shared.generation.load(Ordering::SeqCst);
        if !job.is_null() && generation != done {
            // SAFETY: `job` was published by `Pool::run`, which keeps it alive until it has
            // retracted it and seen `inside` at 0; this thread entered (`inside` counts it)
            // before loading the pointer, so the job lives until it leaves.
            #[allow(unsafe_code)]
            unsafe { &*job.cast::<Job<'_>>() }.run();
            done = generation;
        }
        idle = 0;
    }
}

/// Counts a thread inside a job until dropped, also when the job's work panics: the
/// caller then does not wait forever for a thread that died.
struct Inside<'a>(&'a AtomicUsize);

impl<'a> Inside<'a> {
    fn enter(count: &'a AtomicUsize) -> Self {
        count.fetch_add(1, Ordering::SeqCst);
        Self(count)
    }
}

impl Drop for Inside<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The kernels' pool: as many threads as candle computes with (`CANDLE_NUM_THREADS`, which
/// the worker sets from `--threads`).
pub fn pool() -> &'static Pool {
    static POOL: OnceLock<Pool> = OnceLock::new();
    POOL.get_or_init(|| {
        let threads = std::env::var("CANDLE_NUM_THREADS").ok().and_then(|n| n.parse().ok());
        Pool::new(threads.filter(|&n| n > 0).unwrap_or_else(candle_core::utils::get_num_threads))
    })
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicU64;

    use super::*;

    /// Every item runs exactly once, over many calls in a row.
    #[test]
    fn every_item_runs_once_per_call() {
        let pool = Pool::new(3);
        for items in [1, 2, 7, 100, 1000] {
            let counts: Vec<AtomicU64> = (0..items).map(|_| AtomicU64::new(0)).collect();
            for _ in 0..50 {
                pool.run(items, &|range| {
                    for i in range {
                        counts[i].fetch_add(1, Ordering::Relaxed);
                    }
                });
            }
            assert!(counts.iter().all(|c| c.load(Ordering::Relaxed) == 50), "{items} items");
        }
    }

    /// Calls from several threads at once each run all their items once: one holds the
    /// pool, the others run alone.
    #[test]
    fn concurrent_calls_each_run_their_items() {
        let pool = Pool::new(2);
        std::thread::scope(|scope| {
            for _ in 0..3 {
                scope.spawn(|| {
                    for _ in 0..200 {
                        let counts: Vec<AtomicU64> = (0..64).map(|_| AtomicU64::new(0)).collect();
                        pool.run(64, &|range| {
                            for i in range {
                                counts[i].fetch_add(1, Ordering::Relaxed);
                            }
                        });
                        assert!(counts.iter().all(|c| c.load(Ordering::Relaxed) == 1));
                    }
                });
            }
        });
    }

    /// Pool threads that went to sleep are woken by the next call and share its work.
    #[test]
    fn sleeping_threads_wake_for_work() {
        let pool = Pool::new(2);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        // Idle long enough for the pool thread to sleep, then give work slow enough that
        // a woken thread takes part of it.
        loop {
            std::thread::sleep(std::time::Duration::from_millis(20));
            let helpers = std::sync::Mutex::new(std::collections::HashSet::new());
            pool.run(64, &|_| {
                helpers.lock().unwrap().insert(std::thread::current().id());
                std::thread::sleep(std::time::Duration::from_millis(1));
            });
            if helpers.lock().unwrap().len() == 2 {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "the pool thread never joined a call");
        }
    }
}
