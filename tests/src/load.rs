//! Load as many clients make it: chat completions back to back, each on a connection of its
//! own, and what each client saw.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How long one client request may take before it counts as failed.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);

/// A short chat completion, answered whole.
pub const CHAT: &str = r#"{"model": "smollm2", "messages": [{"role": "user", "content": "Write one sentence about the sea."}], "max_tokens": 16}"#;
/// The same question with a four-token answer: a request whose own time is small next to
/// the seconds a scenario allows for something else (a frozen worker's detection).
pub const CHAT_SHORT: &str = r#"{"model": "smollm2", "messages": [{"role": "user", "content": "Write one sentence about the sea."}], "max_tokens": 4}"#;
/// The same, streamed.
pub const CHAT_STREAM: &str = r#"{"model": "smollm2", "messages": [{"role": "user", "content": "Write one sentence about the sea."}], "max_tokens": 16, "stream": true}"#;

/// One client request as the client saw it.
#[derive(Clone, Copy, Debug)]
pub struct Outcome {
    /// When it was sent, from the start of the load.
    pub sent: Duration,
    /// Until the whole answer arrived.
    pub latency: Duration,
    /// Until the first token (the first `data:` line of a stream; the whole answer otherwise).
    pub first_token: Duration,
    /// A 200 with a complete answer.
    pub ok: bool,
}

/// Sends `body` as a chat completion to the router at `url` over a connection of its own.
pub async fn chat(url: &str, body: &str) -> Outcome {
    let start = Instant::now();
    let (ok, first) = tokio::time::timeout(REQUEST_TIMEOUT, exchange(url, body))
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or((false, None));
    let latency = start.elapsed();
    Outcome { sent: Duration::ZERO, latency, first_token: first.map_or(latency, |f| f - start), ok }
}

/// One exchange: whether the answer was a complete 200, and when its first token came.
async fn exchange(url: &str, body: &str) -> std::io::Result<(bool, Option<Instant>)> {
    let addr = url.trim_start_matches("http://");
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    s.set_nodelay(true)?;
    let req = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await?;
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    let mut first = None;
    loop {
        let n = s.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
        if first.is_none() && has_token(&out) {
            first = Some(Instant::now());
        }
    }
    let text = String::from_utf8_lossy(&out);
    let ok = text.starts_with("HTTP/1.1 200")
        && if body.contains("\"stream\": true") {
            text.contains("data: [DONE]")
        } else {
            text.contains("\"choices\"")
        };
    Ok((ok, first))
}

/// Whether a stream so far carries a chunk with some content (not just the role).
fn has_token(out: &[u8]) -> bool {
    let text = String::from_utf8_lossy(out);
    text.match_indices("\"content\":\"").any(|(i, m)| !text[i + m.len()..].starts_with('"'))
}

/// Clients sending requests back to back until stopped.
pub struct Load {
    stop: Arc<AtomicBool>,
    started: Instant,
    tasks: Vec<tokio::task::JoinHandle<Vec<Outcome>>>,
}

impl Load {
    /// Starts `clients` clients sending `body` to the router at `url`.
    pub fn start(url: &str, clients: usize, body: &'static str) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let started = Instant::now();
        let tasks = (0..clients)
            .map(|_| {
                let (stop, url) = (stop.clone(), url.to_owned());
                tokio::spawn(async move {
                    let mut out = Vec::new();
                    while !stop.load(Ordering::Relaxed) {
                        let sent = started.elapsed();
                        let mut o = chat(&url, body).await;
                        o.sent = sent;
                        out.push(o);
                    }
                    out
                })
            })
            .collect();
        Self { stop, started, tasks }
    }

    /// Seconds since the load started.
    pub fn elapsed(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    /// Stops the clients and returns every request's outcome (requests in flight finish).
    pub async fn finish(self) -> Vec<Outcome> {
        self.stop.store(true, Ordering::Relaxed);
        let mut out = Vec::new();
        for t in self.tasks {
            out.extend(t.await.unwrap_or_default());
        }
        out.sort_by_key(|o| o.sent);
        out
    }
}

/// The `q` quantile of `v` (nearest rank), 0 when empty.
pub fn quantile(v: impl IntoIterator<Item = Duration>, q: f64) -> f64 {
    let mut v: Vec<f64> = v.into_iter().map(|d| d.as_secs_f64()).collect();
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let i = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1;
    v[i]
}

/// Requests that failed.
pub fn failures(out: &[Outcome]) -> usize {
    out.iter().filter(|o| !o.ok).count()
}

/// Tries the router has sent to `address`, from its metrics.
pub fn requests_to(metrics: &str, address: &str) -> f64 {
    let label = format!("endpoint=\"{address}\"");
    metrics
        .lines()
        .filter(|l| l.starts_with("blaze_router_endpoint_requests_total{") && l.contains(&label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The value of an unlabelled series in a metrics text, 0 when absent.
pub fn series(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}
