//! One container process: spawn, wait, graceful termination, and no orphans.
//!
//! Each process leads its own process group, so termination reaches everything it started.
//! The kernel is asked (`PR_SET_PDEATHSIG`) to SIGKILL it when the thread that spawned it
//! dies; the kubelet spawns from its runtime's worker threads, which live as long as the
//! control plane, so a crash of the control plane takes its pods with it. Dropping a
//! [`ContainerProcess`] SIGKILLs the whole group.

use std::fs::OpenOptions;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::process::{Child, Command};

use crate::env::{CommandLine, Env};
use crate::error::{Result, io};

/// What to run.
#[derive(Debug, Clone)]
pub struct ProcessSpec {
    /// Program and arguments.
    pub command: CommandLine,
    /// The complete environment (nothing else is inherited).
    pub env: Env,
    /// Working directory.
    pub cwd: PathBuf,
    /// stdout and stderr are appended here.
    pub log_path: PathBuf,
}

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exit {
    /// The exit code, when it exited.
    pub code: Option<i32>,
    /// The signal, when one killed it.
    pub signal: Option<i32>,
}

impl Exit {
    fn from_status(status: ExitStatus) -> Self {
        Self { code: status.code(), signal: status.signal() }
    }

    /// The exit code a container runtime reports: the code, or 128 + the signal.
    pub fn container_exit_code(&self) -> i32 {
        self.code.unwrap_or_else(|| 128 + self.signal.unwrap_or(0))
    }
}

/// A running container process.
#[derive(Debug)]
pub struct ContainerProcess {
    child: Child,
    pid: u32,
    started: Instant,
    exit: Option<Exit>,
}

impl ContainerProcess {
    /// Starts the process.
    pub fn spawn(spec: &ProcessSpec) -> Result<Self> {
        if let Some(parent) = spec.log_path.parent() {
            std::fs::create_dir_all(parent)
                .map_err(io(format!("creating {}", parent.display())))?;
        }
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&spec.log_path)
            .map_err(io(format!("opening {}", spec.log_path.display())))?;
        let log_err = log.try_clone().map_err(io("duplicating the log file"))?;
        let mut cmd = Command::new(&spec.command.program);
        cmd.args(&spec.command.args)
            .env_clear()
            .envs(spec.env.iter())
            .current_dir(&spec.cwd)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log_err))
            .process_group(0)
            .kill_on_drop(true);
        die_with_parent(&mut cmd);
        let child =
            cmd.spawn().map_err(io(format!("starting {}", spec.command.program.display())))?;
        let pid = child.id().unwrap_or_default();
        Ok(Self { child, pid, started: Instant::now(), exit: None })
    }

    /// The process id (also its process group id).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// How long it has been running.
    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// Waits for the process to exit, then kills whatever it left in its group.
    /// Cancel-safe.
    pub async fn wait(&mut self) -> Exit {
        if let Some(exit) = self.exit {
            return exit;
        }
        let exit = match self.child.wait().await {
            Ok(status) => Exit::from_status(status),
            Err(_) => Exit { code: None, signal: Some(Signal::SIGKILL as i32) },
        };
        self.kill_group();
        self.exit = Some(exit);
        exit
    }

    /// SIGTERM to the group, then SIGKILL after `grace` if it has not exited.
    pub async fn terminate(&mut self, grace: Duration) -> Exit {
        if self.exit.is_none() {
            self.signal_group(Signal::SIGTERM);
        }
        match tokio::time::timeout(grace, self.wait()).await {
            Ok(exit) => exit,
            Err(_) => {
                self.kill_group();
                self.wait().await
            }
        }
    }

    fn signal_group(&self, signal: Signal) {
        if self.pid > 0 {
            // ESRCH only means the group is gone already.
            let _ = killpg(Pid::from_raw(self.pid as i32), signal);
        }
    }

    fn kill_group(&self) {
        self.signal_group(Signal::SIGKILL);
    }
}

impl Drop for ContainerProcess {
    fn drop(&mut self) {
        self.kill_group();
    }
}

/// Asks the kernel to SIGKILL the child when the spawning thread dies.
#[allow(unsafe_code)]
fn die_with_parent(cmd: &mut Command) {
    // SAFETY: the hook runs in the forked child before exec and only makes the prctl system
    // call, which is async-signal-safe; it touches no memory shared with the parent.
    unsafe {
        cmd.pre_exec(|| {
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(std::io::Error::from)
        });
    }
}

#[cfg(test)]
pub(crate) mod tests;
