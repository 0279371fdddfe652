//! The response cache through the worker binary with a tiny random-weight llama: answers to
//! deterministic requests come back byte for byte (streamed and not) from memory, and from
//! disk after a restart; sampled requests are never answered from it.

use crate::support::worker as support;

use std::io::{Read as _, Write as _};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use blaze_testing::{Proc, free_port};
use serde_json::{Value, json};
use support::Worker;

/// The value of the sample line that starts with `series` in `/metrics` (0 when absent).
async fn metric(worker: &Worker, series: &str) -> f64 {
    let text =
        reqwest::get(format!("{}/metrics", worker.base)).await.unwrap().text().await.unwrap();
    text.lines()
        .find(|l| l.starts_with(series))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

fn hits(level: &str) -> String {
    format!("blaze_response_cache_lookups_total{{level=\"{level}\",outcome=\"hit\"}}")
}

/// A real `redis-server` on a free port with `password`, and a way to ask it one command.
struct RedisServer {
    proc: Proc,
    port: u16,
    password: String,
}

impl RedisServer {
    async fn start(password: &str) -> RedisServer {
        let port = free_port();
        let mut cmd = Command::new("redis-server");
        cmd.args(["--port", &port.to_string(), "--save", "", "--appendonly", "no"])
            .args(["--requirepass", password])
            .stdout(Stdio::null());
        // Not found: scripts/test-deps.sh installs Debian's redis-server.
        let proc = Proc::spawn(&mut cmd, format!("127.0.0.1:{port}"));
        let server = RedisServer { proc, port, password: password.to_owned() };
        blaze_testing::eventually("redis-server answering", 20, async || {
            server.command(&["PING"]).filter(|r| r == "+PONG")
        })
        .await;
        server
    }

    /// Sends one command (after AUTH) and returns the first line of its reply.
    fn command(&self, args: &[&str]) -> Option<String> {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        let resp = |args: &[&str]| {
            let mut out = format!("*{}\r\n", args.len());
            for a in args {
                out += &format!("${}\r\n{a}\r\n", a.len());
            }
            out
        };
        let mut wire = resp(&["AUTH", &self.password]);
        wire += &resp(args);
        s.write_all(wire.as_bytes()).ok()?;
        let mut reply = Vec::new();
        let mut chunk = [0u8; 512];
        // Two replies: AUTH's and the command's, each at least one line.
        while reply.iter().filter(|b| **b == b'\n').count() < 2 {
            let n = s.read(&mut chunk).ok()?;
            if n == 0 {
                return None;
            }
            reply.extend_from_slice(&chunk[..n]);
        }
        let text = String::from_utf8_lossy(&reply).into_owned();
        text.lines().nth(1).map(str::to_owned)
    }
}

async fn start(model: &str, cache: &str) -> Worker {
    let args = [
        "--model",
        model,
        "--served-model-name",
        "tiny",
        "--response-cache-memory-bytes",
        "1048576",
        "--response-cache-disk-bytes",
        "1048576",
        "--response-cache-dir",
        cache,
    ];
    Worker::start(&args, Duration::from_secs(60)).await
}

#[tokio::test]
async fn deterministic_answers_come_back_byte_for_byte_and_sampled_ones_never_do() {
    let dir = tempfile::tempdir().unwrap();
    blaze_worker::testing::write_tiny_llama(dir.path(), 4096).unwrap();
    let model = dir.path().to_str().unwrap().to_owned();
    let cache_dir = tempfile::tempdir().unwrap();
    let cache = cache_dir.path().to_str().unwrap().to_owned();
    let mut worker = start(&model, &cache).await;

    let chat = |extra: Value| {
        let mut body =
            json!({"messages": [{"role": "user", "content": "hello there"}], "max_tokens": 6});
        body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        body
    };
    let greedy = chat(json!({"temperature": 0}));
    let (status, first) = worker.post_raw("/v1/chat/completions", &greedy).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&first));
    let (_, again) = worker.post_raw("/v1/chat/completions", &greedy).await;
    assert_eq!(again, first, "a hit is the same bytes, id and created included");
    assert_eq!(metric(&worker, &hits("l1")).await, 1.0);

    // The same request written differently (key order, defaults spelled out) is the same
    // request.
    let respelled = json!({"temperature": 0.0, "max_tokens": 6, "top_p": 1,
        "messages": [{"content": "hello there", "role": "user"}]});
    let (_, third) = worker.post_raw("/v1/chat/completions", &respelled).await;
    assert_eq!(third, first);

    // Streamed: the cached stream is the same events.
    let streamed = chat(json!({"temperature": 0, "stream": true}));
    let (status, s1) = worker.post_raw("/v1/chat/completions", &streamed).await;
    assert_eq!(status, 200);
    let s1_text = String::from_utf8(s1.clone()).unwrap();
    assert!(s1_text.contains("data: [DONE]"), "{s1_text}");
    let (_, s2) = worker.post_raw("/v1/chat/completions", &streamed).await;
    assert_eq!(s2, s1);

    // A seed makes sampling repeatable: cached too.
    let seeded = chat(json!({"temperature": 0.9, "seed": 7}));
    let (_, a) = worker.post_raw("/v1/chat/completions", &seeded).await;
    let (_, b) = worker.post_raw("/v1/chat/completions", &seeded).await;
    assert_eq!(a, b);
    let l1_hits = metric(&worker, &hits("l1")).await;
    assert_eq!(l1_hits, 4.0);

    // Sampled without a seed: never looked up, never kept.
    let sampled = chat(json!({"temperature": 0.9}));
    let (_, x) = worker.post_raw("/v1/chat/completions", &sampled).await;
    let (_, y) = worker.post_raw("/v1/chat/completions", &sampled).await;
    assert_ne!(x, y, "two sampled answers have different ids at least");
    assert_eq!(metric(&worker, &hits("l1")).await, l1_hits);
    let misses = "blaze_response_cache_lookups_total{level=\"l1\",outcome=\"miss\"}";
    assert_eq!(metric(&worker, misses).await, 3.0, "greedy, streamed and seeded once each");

    // The answers are on disk (written in the background) ...
    blaze_testing::eventually("three answers on disk", 10, async || {
        (metric(&worker, "blaze_response_cache_entries{level=\"l2\"}").await == 3.0).then_some(())
    })
    .await;
    worker.terminate();
    worker.wait(Duration::from_secs(30)).await;

    // ... and outlive the worker.
    let worker = start(&model, &cache).await;
    let (_, after) = worker.post_raw("/v1/chat/completions", &greedy).await;
    assert_eq!(after, first);
    assert_eq!(metric(&worker, &hits("l2")).await, 1.0);
    let (_, after) = worker.post_raw("/v1/chat/completions", &greedy).await;
    assert_eq!(after, first);
    assert_eq!(metric(&worker, &hits("l1")).await, 1.0, "the disk hit filled memory");
}

#[tokio::test]
async fn workers_share_answers_through_redis_and_a_stopped_redis_costs_only_misses() {
    let dir = tempfile::tempdir().unwrap();
    blaze_worker::testing::write_tiny_llama(dir.path(), 4096).unwrap();
    let model = dir.path().to_str().unwrap().to_owned();
    let mut redis = RedisServer::start("s3cret").await;
    let password = dir.path().join("redis-password");
    std::fs::write(&password, "s3cret\n").unwrap();
    let address = format!("127.0.0.1:{}", redis.port);
    let args = [
        "--model",
        model.as_str(),
        "--served-model-name",
        "tiny",
        "--response-cache-memory-bytes",
        "1048576",
        "--response-cache-redis",
        address.as_str(),
        "--response-cache-redis-password-file",
        password.to_str().unwrap(),
    ];
    let a = Worker::start(&args, Duration::from_secs(60)).await;
    let b = Worker::start(&args, Duration::from_secs(60)).await;

    let greedy = json!({"prompt": "shared answers", "max_tokens": 6, "temperature": 0});
    let (status, first) = a.post_raw("/v1/completions", &greedy).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&first));
    // Stored in the background.
    blaze_testing::eventually("the answer in Redis", 10, async || {
        redis.command(&["DBSIZE"]).filter(|r| r == ":1")
    })
    .await;
    let (_, from_b) = b.post_raw("/v1/completions", &greedy).await;
    assert_eq!(from_b, first, "the second worker answers with the first one's bytes");
    assert_eq!(metric(&b, &hits("l3")).await, 1.0);
    let up = "blaze_response_cache_redis_up";
    assert_eq!(metric(&b, up).await, 1.0, "Redis answers");

    // Redis stops: requests are answered by the model, each lookup costing at most the
    // timeout, and the failures are counted.
    redis.proc.kill();
    let started = Instant::now();
    for i in 0..3 {
        let body =
            json!({"prompt": format!("redis is gone {i}"), "max_tokens": 2, "temperature": 0});
        let (status, answer) = a.post_raw("/v1/completions", &body).await;
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&answer));
    }
    assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());
    let errors = "blaze_response_cache_lookups_total{level=\"l3\",outcome=\"error\"}";
    assert_eq!(metric(&a, errors).await, 3.0);
    assert_eq!(metric(&a, up).await, 0.0, "the failures show");
    // Memory still serves what it holds.
    let (_, again) = a.post_raw("/v1/completions", &greedy).await;
    assert_eq!(again, first);
}
