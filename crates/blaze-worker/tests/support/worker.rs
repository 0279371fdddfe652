//! Runs the real `blaze-worker` binary (and the router in front of it) on free loopback
//! ports for a test.
#![allow(dead_code)]

use std::process::{Command, ExitStatus, Stdio};
use std::time::Duration;

pub use blaze_testing::free_port;
use blaze_testing::{Proc, bin, until};
use nix::sys::signal::Signal;

/// A worker process, killed when dropped.
pub struct Worker {
    pub proc: Proc,
    pub base: String,
    pub port: u16,
}

impl Worker {
    /// Starts the worker with `args` (plus `--listen`) and waits until `/readyz` says 200.
    pub async fn start(args: &[&str], ready_within: Duration) -> Worker {
        Self::start_on(free_port(), args, ready_within).await
    }

    /// [`Worker::start`] with `--listen 127.0.0.1:PORT`.
    pub async fn start_on(port: u16, args: &[&str], ready_within: Duration) -> Worker {
        Self::start_with_env(port, args, &[], ready_within).await
    }

    /// [`Worker::start_on`] with environment variables `env` added.
    pub async fn start_with_env(
        port: u16,
        args: &[&str],
        env: &[(&str, &str)],
        ready_within: Duration,
    ) -> Worker {
        let addr = format!("127.0.0.1:{port}");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_blaze-worker"));
        cmd.args(args)
            .args(["--listen", &addr])
            .env("RUST_LOG", "warn")
            .envs(env.iter().copied())
            .stdout(Stdio::null());
        let mut worker = Worker {
            proc: Proc::spawn(&mut cmd, addr),
            base: format!("http://127.0.0.1:{port}"),
            port,
        };
        let client = reqwest::Client::new();
        let url = format!("{}/readyz", worker.base);
        let secs = ready_within.as_secs().max(1);
        let ready = until("blaze-worker ready", secs, async || {
            if let Some(status) = worker.proc.try_exit() {
                panic!("blaze-worker exited before it was ready: {status}");
            }
            let r = client.get(&url).send().await.ok()?;
            (r.status() == 200).then_some(())
        })
        .await;
        ready.unwrap_or_else(|e| panic!("{e}"));
        worker
    }

    /// POSTs `body` as JSON to `path`: the status and the JSON answer (null when not JSON).
    pub async fn post_json(
        &self,
        path: &str,
        body: &serde_json::Value,
    ) -> (u16, serde_json::Value) {
        let (status, bytes) = self.post_raw(path, body).await;
        (status, serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null))
    }

    /// POSTs `body` as JSON to `path`: the status and the answer's bytes as they came.
    pub async fn post_raw(&self, path: &str, body: &serde_json::Value) -> (u16, Vec<u8>) {
        let r = reqwest::Client::new()
            .post(format!("{}{path}", self.base))
            .json(body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.bytes().await.unwrap().to_vec())
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        self.proc.signal(Signal::SIGTERM);
    }

    /// Waits for the process to exit, up to `within`.
    pub async fn wait(&mut self, within: Duration) -> ExitStatus {
        self.proc.exit_within(within).await
    }
}

/// The workspace's `blaze-router` binary (built beside this package's binaries by `cargo
/// test --workspace`) in front of workers, killed when dropped.
pub struct Router {
    pub proc: Proc,
    pub addr: String,
    _config: tempfile::TempDir,
}

impl Router {
    /// Starts the router on a free port with `endpoints` and waits until `/livez` answers.
    pub async fn start(endpoints: &[&str]) -> Router {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("routing.yaml");
        let list: String =
            endpoints.iter().map(|a| format!("- address: {a}\n  weight: 1\n")).collect();
        std::fs::write(&config, format!("endpoints:\n{list}")).unwrap();
        let addr = blaze_testing::free_addr();
        let mut cmd = Command::new(bin("blaze-router"));
        cmd.args(["--listen", &addr, "--config"])
            .arg(&config)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null());
        let router = Router { proc: Proc::spawn(&mut cmd, addr.clone()), addr, _config: dir };
        let url = format!("http://{}/livez", router.addr);
        let live = until("blaze-router to answer /livez", 20, async || {
            reqwest::get(&url).await.ok().filter(|r| r.status() == 200).map(|_| ())
        })
        .await;
        live.unwrap_or_else(|e| panic!("{e}"));
        router
    }
}
