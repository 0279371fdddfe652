//! A fault injected into the forward pass, for the watchdog's tests.
//!
//! Only debug builds have it (`cfg(debug_assertions)`: the test binaries cargo builds); in a
//! release build, which is what images ship, [`before_forward`] is empty, so no setting or
//! request can trigger it. In a debug build it does nothing either unless the environment
//! variable [`FAULT_FILE_VAR`] names a file; then each forward pass first reads that file:
//! `panic` panics the pass, `stall` holds the pass for as long as the file still says
//! `stall`, anything else (or no file) lets it run. A test starts the worker with the
//! variable set and writes the file once its requests are under way.

/// Names the file that selects a fault (debug builds only).
pub const FAULT_FILE_VAR: &str = "BLAZE_TEST_FAULT_FILE";

/// Called right before every forward pass.
pub(crate) fn before_forward() {
    #[cfg(debug_assertions)]
    debug::before_forward();
}

#[cfg(debug_assertions)]
mod debug {
    use std::path::PathBuf;
    use std::sync::OnceLock;
    use std::time::Duration;

    static FILE: OnceLock<Option<PathBuf>> = OnceLock::new();

    pub(super) fn before_forward() {
        let file = FILE.get_or_init(|| {
            let file = std::env::var_os(super::FAULT_FILE_VAR).map(PathBuf::from);
            if let Some(f) = &file {
                tracing::warn!(file = %f.display(), "fault injection is armed (debug build)");
            }
            file
        });
        let Some(file) = file else { return };
        loop {
            match std::fs::read_to_string(file).as_deref().map(str::trim) {
                Ok("panic") => panic!("fault injected into the forward pass ({})", file.display()),
                Ok("stall") => std::thread::sleep(Duration::from_millis(20)),
                _ => return,
            }
        }
    }
}
