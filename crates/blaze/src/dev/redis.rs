//! `blaze dev up --redis`: a real `redis-server` on 127.0.0.1 for engines' `spec.cache.redis`
//! (the pods are local processes, so they reach it there), without persistence, started before
//! the control plane and stopped after it.
//!
//! It runs as the development node runs a container ([`ContainerProcess`]): in its own process
//! group, killed with `blaze dev up` even when that dies without stopping it, its output in
//! `DIR/redis/redis.log`.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use blaze_devnode::env::{CommandLine, Env};
use blaze_devnode::process::{ContainerProcess, ProcessSpec};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The program, looked for on `PATH`.
pub const PROGRAM: &str = "redis-server";
/// The Debian package that provides it.
pub const PACKAGE: &str = "redis-server";
/// How long a starting server may take to answer `PING` (it takes milliseconds).
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a stopping server may take after SIGTERM (nothing to save) before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// A running `redis-server`.
#[derive(Debug)]
pub struct Redis {
    process: ContainerProcess,
    addr: SocketAddr,
}

impl Redis {
    /// Starts `redis-server` on 127.0.0.1:`port` in `dir` (its log, and the folder it would
    /// save in were saving on), and waits until it answers.
    pub async fn start(port: u16, dir: &Path) -> anyhow::Result<Self> {
        Self::start_program(PROGRAM, port, dir).await
    }

    async fn start_program(program: &str, port: u16, dir: &Path) -> anyhow::Result<Self> {
        let Some(path) = find_on_path(program) else {
            bail!(
                "--redis: {program} is not on PATH: install the Debian package {PACKAGE} \
                 (apt-get install {PACKAGE})"
            );
        };
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        // A server already there would answer our PING while ours fails to bind.
        drop(
            std::net::TcpListener::bind(addr).with_context(|| {
                format!("--redis-port {port}: {addr} is taken (another Redis?)")
            })?,
        );
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let log = dir.join("redis.log");
        let spec = ProcessSpec {
            command: CommandLine { program: path.clone(), args: args(port, dir) },
            env: Env::default(),
            cwd: dir.to_owned(),
            log_path: log.clone(),
        };
        let mut process = ContainerProcess::spawn(&spec)
            .with_context(|| format!("--redis: starting {}", path.display()))?;
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if ping(addr).await {
                return Ok(Self { process, addr });
            }
            if let Ok(exit) = tokio::time::timeout(Duration::from_millis(50), process.wait()).await
            {
                bail!(
                    "--redis: {program} exited ({}) on {addr}; its log {}:\n{}",
                    exit.container_exit_code(),
                    log.display(),
                    tail(&log)
                );
            }
            if Instant::now() > deadline {
                process.terminate(STOP_GRACE).await;
                bail!(
                    "--redis: {program} did not answer on {addr} within {START_TIMEOUT:?}; its log {}:\n{}",
                    log.display(),
                    tail(&log)
                );
            }
        }
    }

    /// Where it listens (`spec.cache.redis.address`).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops it: SIGTERM, then SIGKILL after a few seconds.
    pub async fn stop(mut self) {
        self.process.terminate(STOP_GRACE).await;
    }
}

/// Loopback only, no RDB snapshots, no append-only file, log to standard output (the log
/// file), in the foreground.
fn args(port: u16, dir: &Path) -> Vec<String> {
    let port = port.to_string();
    let dir = dir.display().to_string();
    #[rustfmt::skip]
    let args = [
        "--bind", "127.0.0.1", "--port", &port, "--save", "", "--appendonly", "no",
        "--dir", &dir, "--logfile", "", "--daemonize", "no",
    ];
    args.iter().map(|a| (*a).to_owned()).collect()
}

/// `program` itself when it names a path, else the first file of that name in `PATH`.
fn find_on_path(program: &str) -> Option<PathBuf> {
    if program.contains('/') {
        return Some(PathBuf::from(program)).filter(|p| p.is_file());
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join(program)).find(|p| p.is_file())
}

/// Whether a Redis at `addr` answers `PING` within a second.
async fn ping(addr: SocketAddr) -> bool {
    let exchange = async {
        let mut s = tokio::net::TcpStream::connect(addr).await?;
        s.write_all(b"PING\r\n").await?;
        let mut reply = [0u8; 7];
        s.read_exact(&mut reply).await?;
        Ok::<_, std::io::Error>(&reply == b"+PONG\r\n")
    };
    matches!(tokio::time::timeout(Duration::from_secs(1), exchange).await, Ok(Ok(true)))
}

/// The last lines of a log, for an error message.
fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(10)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("blaze-dev-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    /// Needs Debian's redis-server (scripts/test-deps.sh installs it).
    #[tokio::test]
    async fn a_real_redis_server_answers_on_loopback_saves_nothing_and_stops() {
        let dir = temp_dir("redis");
        let port = blaze_testing::free_port();
        let redis = Redis::start(port, &dir).await.unwrap();
        assert_eq!(redis.addr().to_string(), format!("127.0.0.1:{port}"));
        assert!(ping(redis.addr()).await);
        // A second one on the same port is refused before it starts.
        let err = Redis::start(port, &dir).await.unwrap_err().to_string();
        assert!(
            err.starts_with(&format!("--redis-port {port}: 127.0.0.1:{port} is taken")),
            "{err}"
        );
        let addr = redis.addr();
        redis.stop().await;
        assert!(!ping(addr).await, "still answering after stop");
        let files: Vec<_> =
            std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(files, ["redis.log"], "no dump.rdb or appendonly file");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn a_missing_redis_server_names_the_package() {
        let err = Redis::start_program("blaze-no-such-redis-server", 1, &temp_dir("none"))
            .await
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "--redis: blaze-no-such-redis-server is not on PATH: install the Debian package \
             redis-server (apt-get install redis-server)"
        );
    }
}
