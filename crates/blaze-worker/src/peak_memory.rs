//! Heap use, counted: a global allocator over the system's that keeps the bytes allocated
//! now and the most allocated since the last reset, for tests and benchmarks that measure
//! what a piece of work costs in memory (the worker itself runs on the plain system
//! allocator).
//!
//! ```ignore
//! #[global_allocator]
//! static HEAP: blaze_worker::peak_memory::Counting = blaze_worker::peak_memory::Counting::new();
//!
//! let (result, bytes) = HEAP.peak_during(|| work());
//! ```
//!
//! It counts what Rust code asks of the allocator (candle's tensors on the CPU, its file
//! buffers, its threads' scratch space), not memory mapped from files or held by the
//! allocator below it, so it measures what the code needs rather than what the process's
//! resident size happens to be. The counters are atomics updated with every allocation;
//! with several threads allocating, the peak is exact for the order in which their updates
//! land, which is as close as a running process has to a single peak.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

/// A counting allocator over [`System`].
#[derive(Debug, Default)]
pub struct Counting {
    current: AtomicUsize,
    peak: AtomicUsize,
}

impl Counting {
    /// A counter at zero, for a `static`.
    pub const fn new() -> Self {
        Self { current: AtomicUsize::new(0), peak: AtomicUsize::new(0) }
    }

    /// Bytes allocated and not yet freed.
    pub fn current(&self) -> usize {
        self.current.load(Ordering::Relaxed)
    }

    /// The most bytes allocated at once since the last [`reset_peak`](Self::reset_peak)
    /// (or since the start).
    pub fn peak(&self) -> usize {
        self.peak.load(Ordering::Relaxed)
    }

    /// Starts a new peak from what is allocated now, and returns that.
    pub fn reset_peak(&self) -> usize {
        let now = self.current();
        self.peak.store(now, Ordering::Relaxed);
        now
    }

    /// Runs `work` and returns its result with the most bytes it had allocated at once
    /// beyond what was allocated when it started (what it freed of older allocations is not
    /// credited to it, so this is never below zero).
    pub fn peak_during<T>(&self, work: impl FnOnce() -> T) -> (T, usize) {
        let start = self.reset_peak();
        let out = work();
        (out, self.peak().saturating_sub(start))
    }

    fn added(&self, bytes: usize) {
        let now = self.current.fetch_add(bytes, Ordering::Relaxed) + bytes;
        self.peak.fetch_max(now, Ordering::Relaxed);
    }

    fn removed(&self, bytes: usize) {
        self.current.fetch_sub(bytes, Ordering::Relaxed);
    }
}

// SAFETY: every method hands the caller's layout and pointer to `System` unchanged, so the
// memory it returns and the rules the caller must follow are exactly `System`'s; the only
// addition is arithmetic on two atomics, which neither allocates nor panics (the counter
// wraps rather than overflows, and a wrap would take more bytes than an address space holds).
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract for `alloc` is `System.alloc`'s.
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            self.added(layout.size());
        }
        ptr
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as for `alloc`.
        let ptr = unsafe { System.alloc_zeroed(layout) };
        if !ptr.is_null() {
            self.added(layout.size());
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from this allocator, that is from `System`, with `layout`.
        unsafe { System.dealloc(ptr, layout) };
        self.removed(layout.size());
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: `ptr` came from `System` with `layout`; the caller meets `realloc`'s rules.
        let moved = unsafe { System.realloc(ptr, layout, new_size) };
        if !moved.is_null() {
            // The change in size only: the system allocator grows large blocks in place or
            // by remapping pages, without a second copy.
            match new_size.checked_sub(layout.size()) {
                Some(grown) => self.added(grown),
                None => self.removed(layout.size() - new_size),
            }
        }
        moved
    }
}
