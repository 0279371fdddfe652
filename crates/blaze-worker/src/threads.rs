//! How many threads candle computes with.
//!
//! candle sizes its pools from the environment when it first uses them:
//! `CANDLE_NUM_THREADS` for the spin-barrier pool its quantized kernels split work over
//! (and Blaze's quantized kernels for theirs, `blaze_kernels::pool`),
//! `RAYON_NUM_THREADS` for f32 GEMM; without `RAYON_NUM_THREADS` it also re-reads
//! `/proc/cpuinfo` on every f32 matmul (candle 0.11). A worker sets both once, at start.
//!
//! The barrier pool spins while it waits for its slowest thread. With more compute threads
//! than the CPUs that are free (a busy node, a CPU quota below the thread count) a thread
//! that is descheduled stalls every matmul: on the shared 2-core development machine at
//! load 5, SmolLM2 Q4 decoded 6 to 10 tokens/s with two threads and 41 with one.

/// Threads when `--threads` is not given: the CPUs this process may use (its affinity mask
/// and cgroup CPU quota).
pub fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Sets candle's thread counts: to `threads` when given, else to [`default_threads`] where
/// the environment does not set them already.
///
/// # Safety
///
/// Writes the process environment: call it before any other thread starts (first thing in
/// `main`, before the async runtime).
#[allow(unsafe_code)]
pub unsafe fn configure(threads: Option<usize>) {
    for var in ["CANDLE_NUM_THREADS", "RAYON_NUM_THREADS"] {
        let value = match threads {
            Some(n) => n.max(1),
            None if std::env::var_os(var).is_some() => continue,
            None => default_threads(),
        };
        // SAFETY: the caller guarantees no other thread reads the environment now.
        unsafe { std::env::set_var(var, value.to_string()) };
    }
}
