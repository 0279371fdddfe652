//! Runs the real `blaze-worker` binary on a free loopback port for a test.
#![allow(dead_code)]

use std::net::TcpListener;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// A worker process, killed when dropped.
pub struct Worker {
    pub child: Child,
    pub base: String,
    pub port: u16,
}

/// A port nothing listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
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
        let child = Command::new(env!("CARGO_BIN_EXE_blaze-worker"))
            .args(args)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .env("RUST_LOG", "warn")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .spawn()
            .expect("starting blaze-worker");
        let mut worker = Worker { child, base: format!("http://127.0.0.1:{port}"), port };
        let deadline = Instant::now() + ready_within;
        let client = reqwest::Client::new();
        loop {
            if let Ok(r) = client.get(format!("{}/readyz", worker.base)).send().await
                && r.status() == 200
            {
                return worker;
            }
            if let Ok(Some(status)) = worker.child.try_wait() {
                panic!("blaze-worker exited before it was ready: {status}");
            }
            assert!(Instant::now() < deadline, "blaze-worker not ready within {ready_within:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// POSTs `body` as JSON to `path`: the status and the JSON answer (null when not JSON).
    pub async fn post_json(
        &self,
        path: &str,
        body: &serde_json::Value,
    ) -> (u16, serde_json::Value) {
        let r = reqwest::Client::new()
            .post(format!("{}{path}", self.base))
            .json(body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(serde_json::Value::Null))
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        let status =
            Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().unwrap();
        assert!(status.success());
    }

    /// Waits for the process to exit, up to `within`.
    pub async fn wait(&mut self, within: Duration) -> ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "blaze-worker did not exit within {within:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The workspace's `blaze-router` binary (built beside this package's binaries by `cargo
/// test --workspace`) in front of workers, killed when dropped.
pub struct Router {
    pub child: Child,
    pub addr: String,
    _config: tempfile::TempDir,
}

impl Router {
    /// Starts the router on a free port with `endpoints` and waits until `/livez` answers.
    pub async fn start(endpoints: &[&str]) -> Router {
        let exe =
            std::path::Path::new(env!("CARGO_BIN_EXE_blaze-worker")).with_file_name("blaze-router");
        assert!(exe.is_file(), "{} is missing: cargo build -p blaze-router", exe.display());
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("routing.yaml");
        let list: String =
            endpoints.iter().map(|a| format!("- address: {a}\n  weight: 1\n")).collect();
        std::fs::write(&config, format!("endpoints:\n{list}")).unwrap();
        let addr = format!("127.0.0.1:{}", free_port());
        let child = Command::new(exe)
            .args(["--listen", &addr, "--config"])
            .arg(&config)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .expect("starting blaze-router");
        let router = Router { child, addr, _config: dir };
        let deadline = Instant::now() + Duration::from_secs(20);
        let url = format!("http://{}/livez", router.addr);
        while !reqwest::get(&url).await.is_ok_and(|r| r.status() == 200) {
            assert!(Instant::now() < deadline, "blaze-router did not answer /livez");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        router
    }
}

impl Drop for Router {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
