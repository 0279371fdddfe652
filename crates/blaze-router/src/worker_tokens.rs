//! The tokens the router presents to workers (`--worker-token ENGINE=FILE`).
//!
//! Workers started with `--auth-token-dir` refuse inference requests without their engine's
//! bearer token, so that nothing but the engine's routers can call them past the routers' API
//! keys. The operator keeps each engine's token in a Secret and mounts the Secrets of the
//! engines a router serves into its pods, one file per engine, naming them with one
//! `--worker-token` flag each. Tokens are not part of the routing document: that is a
//! ConfigMap, readable by whoever may read ConfigMaps.
//!
//! Each try carries the token of its endpoint's engine as `Authorization: Bearer TOKEN`. With
//! any worker token configured, the client's own `Authorization` (its API key, meant for the
//! router) never reaches a worker: a try to an engine without a token carries none.
//!
//! The files are read again every [`RELOAD_INTERVAL`], so a rotated Secret is sent once the
//! kubelet has updated the volume, without a restart. A file that is missing or empty (the
//! operator mounts the Secrets as optional: a new engine's may come a moment after the router
//! pod) means no token yet; one that cannot be read keeps the token last read.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use http::HeaderValue;

/// How often the token files are read again (a few small files a second cost nothing).
pub const RELOAD_INTERVAL: Duration = Duration::from_secs(1);

/// `ENGINE=FILE`, as `--worker-token` takes it.
pub fn parse_flag(value: &str) -> Result<(String, PathBuf), String> {
    match value.split_once('=') {
        Some((engine, file)) if !engine.is_empty() && !file.is_empty() => {
            Ok((engine.to_owned(), PathBuf::from(file)))
        }
        _ => Err(format!("{value:?} is not ENGINE=FILE")),
    }
}

/// Per engine, the file and the `Authorization` value last read from it.
#[derive(Debug, Default)]
pub struct WorkerTokens {
    by_engine: HashMap<String, (PathBuf, ArcSwapOption<HeaderValue>)>,
}

impl WorkerTokens {
    /// Tokens from `files` (engine, file), read once now.
    pub fn new(files: impl IntoIterator<Item = (String, PathBuf)>) -> Self {
        let by_engine = files
            .into_iter()
            .map(|(engine, path)| (engine, (path, ArcSwapOption::empty())))
            .collect();
        let tokens = Self { by_engine };
        tokens.reload();
        tokens
    }

    /// Whether no engine has a token file: requests then go out as they came.
    pub fn is_empty(&self) -> bool {
        self.by_engine.is_empty()
    }

    /// The `Authorization` value for `engine`'s workers, if it has a token.
    pub fn authorization(&self, engine: &str) -> Option<Arc<HeaderValue>> {
        self.by_engine.get(engine)?.1.load_full()
    }

    /// Reads every file again.
    pub fn reload(&self) {
        for (engine, (path, current)) in &self.by_engine {
            let fresh = match std::fs::read(path) {
                Ok(text) => bearer(&text),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                Err(e) => {
                    tracing::warn!(engine, file = %path.display(), error = %e, "worker token not reloaded; keeping the last one");
                    continue;
                }
            };
            if current.load().as_deref() != fresh.as_ref() {
                tracing::info!(engine, present = fresh.is_some(), "worker token changed");
                current.store(fresh.map(Arc::new));
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

    /// Sets the `Authorization` header of a try to an endpoint of `engine`: its token, or
    /// none (the client's is never passed on).
    pub fn apply(&self, engine: &str, headers: &mut http::HeaderMap) {
        match self.authorization(engine) {
            Some(v) => {
                headers.insert(http::header::AUTHORIZATION, HeaderValue::clone(&v));
            }
            None => {
                headers.remove(http::header::AUTHORIZATION);
            }
        }
    }
}

/// `Bearer TOKEN` for a token file's content (surrounding whitespace dropped), or `None` for
/// an empty file or one that cannot be a header value.
fn bearer(text: &[u8]) -> Option<HeaderValue> {
    let token = text.trim_ascii();
    if token.is_empty() {
        return None;
    }
    let mut v = HeaderValue::from_bytes(&[b"Bearer ", token].concat()).ok()?;
    v.set_sensitive(true);
    Some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_name_an_engine_and_a_file() {
        assert_eq!(
            parse_flag("chat=/t/chat/token").unwrap(),
            ("chat".into(), "/t/chat/token".into())
        );
        for bad in ["chat", "=/t", "chat="] {
            assert!(parse_flag(bad).unwrap_err().contains("ENGINE=FILE"), "{bad}");
        }
    }

    #[test]
    fn each_engine_gets_its_token_and_the_client_header_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let chat = dir.path().join("chat");
        std::fs::write(&chat, "tok-1\n").unwrap();
        let tokens = WorkerTokens::new([
            ("chat".to_owned(), chat.clone()),
            ("late".to_owned(), dir.path().join("missing")),
        ]);
        let mut h = http::HeaderMap::new();
        h.insert(http::header::AUTHORIZATION, HeaderValue::from_static("Bearer sk-client"));
        tokens.apply("chat", &mut h);
        assert_eq!(h[http::header::AUTHORIZATION], "Bearer tok-1");
        tokens.apply("late", &mut h);
        assert!(h.get(http::header::AUTHORIZATION).is_none());
        tokens.apply("unknown", &mut h);
        assert!(h.get(http::header::AUTHORIZATION).is_none());
        std::fs::write(&chat, "tok-2").unwrap();
        std::fs::write(dir.path().join("missing"), "tok-late").unwrap();
        tokens.reload();
        assert_eq!(*tokens.authorization("chat").unwrap(), "Bearer tok-2");
        assert_eq!(*tokens.authorization("late").unwrap(), "Bearer tok-late");
    }
}
