//! Bearer tokens on the inference routes (`--auth-token-dir`).
//!
//! Workers listen on the pod network; without a token anything that reaches a worker pod
//! could call the model past the router's API keys. The operator generates one token per
//! engine in a Secret, mounts it into the engine's worker pods and hands it to the routers
//! that serve the engine; the router sends it as `Authorization: Bearer TOKEN`.
//!
//! - Every route needs the token except the health and metrics routes ([`is_open`]): the
//!   kubelet probes `/livez` and `/readyz` without credentials, and the operator and
//!   Prometheus scrape `/metrics`. Who may reach those at all is the engine's NetworkPolicy's
//!   business (the engine's routers and the operator).
//! - Tokens are compared as SHA-256 digests in constant time, against every accepted token,
//!   so neither timing nor the answer says which part was wrong or how long a token is.
//! - The folder is a mounted Secret: each file (names starting with a dot skipped, links
//!   followed) holds one accepted token. It is read again every [`RELOAD_INTERVAL`], so a
//!   rotated Secret is accepted once the kubelet has updated the volume, without a restart.
//!   A folder that cannot be read keeps the tokens last read; a folder that holds no token
//!   refuses everything (it fails closed).
//! - A refusal is a 401 with `WWW-Authenticate: Bearer` and an OpenAI-style error naming what
//!   is missing or wrong; on gRPC (`content-type: application/grpc...`) it is the status
//!   UNAUTHENTICATED.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use parking_lot::RwLock;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::server::error::ApiError;

/// How often the token folder is read again. The kubelet updates a mounted Secret within
/// about a minute of a change; a second more is noise, and reading a few small files a
/// second costs nothing.
pub const RELOAD_INTERVAL: Duration = Duration::from_secs(1);

/// The tokens a worker accepts, kept current with their folder.
#[derive(Debug)]
pub struct Tokens {
    dir: PathBuf,
    accepted: RwLock<Arc<Vec<[u8; 32]>>>,
}

impl Tokens {
    /// Reads the tokens in `dir`; an error (naming the flag) when it cannot be read or holds
    /// none, so that a worker never starts open by mistake.
    pub fn open(dir: &Path) -> Result<Arc<Self>, String> {
        let tokens =
            read_dir(dir).map_err(|e| format!("--auth-token-dir {}: {e}", dir.display()))?;
        if tokens.is_empty() {
            return Err(format!("--auth-token-dir {}: holds no token", dir.display()));
        }
        Ok(Arc::new(Self { dir: dir.to_owned(), accepted: RwLock::new(Arc::new(tokens)) }))
    }

    /// Whether `presented` is one of the accepted tokens. Every accepted token is compared,
    /// in constant time, whatever the outcome of the others.
    pub fn accepts(&self, presented: &[u8]) -> bool {
        let presented = digest(presented);
        let accepted = self.accepted.read().clone();
        accepted.iter().fold(subtle::Choice::from(0), |ok, t| ok | t.ct_eq(&presented)).into()
    }

    /// Reads the folder again; keeps the last tokens when it cannot be read.
    pub fn reload(&self) {
        match read_dir(&self.dir) {
            Ok(tokens) => {
                let changed = **self.accepted.read() != tokens;
                if changed {
                    if tokens.is_empty() {
                        tracing::warn!(dir = %self.dir.display(), "the token folder holds no token: every inference request is refused");
                    } else {
                        tracing::info!(dir = %self.dir.display(), tokens = tokens.len(), "worker tokens reloaded");
                    }
                    *self.accepted.write() = Arc::new(tokens);
                }
            }
            Err(e) => {
                tracing::warn!(dir = %self.dir.display(), error = %e, "worker tokens not reloaded; keeping the last ones");
            }
        }
    }

    /// Reloads every [`RELOAD_INTERVAL`], forever.
    pub async fn watch(self: Arc<Self>) {
        let mut tick = tokio::time::interval(RELOAD_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            self.reload();
        }
    }
}

fn digest(token: &[u8]) -> [u8; 32] {
    Sha256::digest(token).into()
}

/// The digests of the tokens in `dir`: one per regular file (links followed) whose name does
/// not start with a dot, its content without surrounding whitespace; empty files are skipped.
/// Sorted, so that a reload of the same tokens compares equal.
fn read_dir(dir: &Path) -> std::io::Result<Vec<[u8; 32]>> {
    let mut tokens = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        let path = entry.path();
        // `metadata` follows links: a mounted Secret's files are links into `..data/`.
        if !std::fs::metadata(&path)?.is_file() {
            continue;
        }
        let text = std::fs::read(&path)?;
        let token = text.trim_ascii();
        if !token.is_empty() {
            tokens.push(digest(token));
        }
    }
    tokens.sort_unstable();
    Ok(tokens)
}

/// Routes that need no token: the kubelet's probes, the metrics scrape and gRPC health.
pub fn is_open(path: &str) -> bool {
    matches!(path, "/livez" | "/readyz" | "/metrics") || path.starts_with("/grpc.health.v1.Health/")
}

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    Missing,
    Wrong,
}

impl Refusal {
    fn message(self) -> &'static str {
        match self {
            Refusal::Missing => {
                "this worker needs `Authorization: Bearer TOKEN` with its engine's worker token; \
                 clients call the engine through its router"
            }
            Refusal::Wrong => "the bearer token is not a token of this worker",
        }
    }
}

/// The middleware: lets open routes and requests with an accepted token through.
pub async fn require(State(tokens): State<Arc<Tokens>>, req: Request, next: Next) -> Response {
    if is_open(req.uri().path()) {
        return next.run(req).await;
    }
    let presented = req.headers().get(header::AUTHORIZATION).and_then(|v| bearer(v.as_bytes()));
    let refusal = match presented {
        None => Refusal::Missing,
        Some(t) if tokens.accepts(t) => return next.run(req).await,
        Some(_) => Refusal::Wrong,
    };
    let grpc = req
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|c| c.as_bytes().starts_with(b"application/grpc"));
    refuse(refusal, grpc)
}

/// The token of an `Authorization: Bearer TOKEN` value (the scheme in any case).
fn bearer(value: &[u8]) -> Option<&[u8]> {
    let (scheme, token) = value.split_at_checked(7)?;
    let token = token.trim_ascii();
    (scheme.eq_ignore_ascii_case(b"bearer ") && !token.is_empty()).then_some(token)
}

fn refuse(refusal: Refusal, grpc: bool) -> Response {
    let challenge = match refusal {
        Refusal::Missing => HeaderValue::from_static("Bearer"),
        Refusal::Wrong => HeaderValue::from_static("Bearer error=\"invalid_token\""),
    };
    let mut resp = if grpc {
        tonic::Status::unauthenticated(refusal.message()).into_http::<axum::body::Body>()
    } else {
        ApiError::new(StatusCode::UNAUTHORIZED, refusal.message()).into_response()
    };
    resp.headers_mut().insert(header::WWW_AUTHENTICATE, challenge);
    resp
}

/// `router` with every route but the [open](is_open) ones behind `tokens`.
pub fn protect(router: axum::Router, tokens: Arc<Tokens>) -> axum::Router {
    router.layer(axum::middleware::from_fn_with_state(tokens, require))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_come_from_the_files_of_the_folder_and_follow_changes() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, text: &str| std::fs::write(dir.path().join(name), text).unwrap();
        assert!(Tokens::open(dir.path()).unwrap_err().contains("holds no token"));
        write("token", "first\n");
        write("..data", "hidden");
        let tokens = Tokens::open(dir.path()).unwrap();
        assert!(tokens.accepts(b"first"));
        assert!(!tokens.accepts(b"firs") && !tokens.accepts(b"hidden") && !tokens.accepts(b""));
        write("previous", "second");
        tokens.reload();
        assert!(tokens.accepts(b"first") && tokens.accepts(b"second"));
        std::fs::remove_file(dir.path().join("previous")).unwrap();
        write("token", "third");
        tokens.reload();
        assert!(
            tokens.accepts(b"third") && !tokens.accepts(b"first") && !tokens.accepts(b"second")
        );
    }

    #[test]
    fn only_health_and_metrics_are_open() {
        for open in ["/livez", "/readyz", "/metrics", "/grpc.health.v1.Health/Check"] {
            assert!(is_open(open), "{open}");
        }
        for closed in [
            "/v1/models",
            "/v2/models/m/infer",
            "/v2/health/ready",
            "/blaze.generate.Generate/GenerateStream",
            "/metrics/x",
        ] {
            assert!(!is_open(closed), "{closed}");
        }
    }
}
