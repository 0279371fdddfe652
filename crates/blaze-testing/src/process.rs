//! Processes a test starts: killed and reaped when dropped, so a failing test leaves nothing
//! running; free loopback ports for them; the workspace's binaries.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// A process serving at an address, killed and reaped when dropped.
pub struct Proc {
    /// The process.
    pub child: Child,
    /// Where it serves (`HOST:PORT`), or empty.
    pub addr: String,
}

impl Proc {
    /// Spawns `cmd`, serving at `addr`; panics (the test cannot go on) if it cannot start.
    pub fn spawn(cmd: &mut Command, addr: impl Into<String>) -> Self {
        let child = cmd.spawn().unwrap_or_else(|e| panic!("starting {cmd:?}: {e}"));
        Self { child, addr: addr.into() }
    }

    /// Its process id.
    pub fn pid(&self) -> i32 {
        i32::try_from(self.child.id()).unwrap_or(i32::MAX)
    }

    /// Sends `signal` (SIGSTOP freezes it: its sockets stay open, nothing answers).
    pub fn signal(&self, signal: Signal) {
        kill(Pid::from_raw(self.pid()), signal)
            .unwrap_or_else(|e| panic!("{signal} to {}: {e}", self.pid()));
    }

    /// Whether it has exited, and how.
    pub fn try_exit(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Waits up to `within` for it to exit; panics if it does not.
    pub async fn exit_within(&mut self, within: Duration) -> ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.try_exit() {
                return status;
            }
            assert!(Instant::now() < deadline, "{} did not exit within {within:?}", self.pid());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Kills it and reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A loopback port nothing listens on now (bound and released: use it right away).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("no free loopback port: {e}"))
}

/// `127.0.0.1:PORT` with a [`free_port`].
pub fn free_addr() -> String {
    format!("127.0.0.1:{}", free_port())
}

/// The target folder (`target/debug`, say) the running test or program was built into: its
/// own folder, or the parent of `deps/` for a test.
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_else(|e| panic!("the running program: {e}"));
    let dir = exe.parent().map(PathBuf::from).unwrap_or_default();
    match dir.file_name() {
        Some(name) if name == "deps" => dir.parent().map(PathBuf::from).unwrap_or(dir),
        _ => dir,
    }
}

/// The workspace binary `name` of this build, which `cargo test --workspace` builds beside
/// the tests; panics with how to build it if it is missing.
pub fn bin(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    assert!(
        path.is_file(),
        "{} is missing: build it first (cargo build -p {name}; cargo test --workspace builds it)",
        path.display()
    );
    path
}
