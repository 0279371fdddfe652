//! Loading, checking and reloading the routing document ([`RoutingConfig`]).
//!
//! Standalone mode reads a YAML file and polls it (size, modification time and content) every
//! [`POLL_INTERVAL`], so a change is live well within the two seconds allowed, including
//! atomic renames and edits that keep the modification time. A document that fails to parse
//! or check is logged and counted, and the router keeps the last good one.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use blaze_api::router::{SessionAffinityMode, Strategy};
use blaze_api::routing::RoutingConfig;

use crate::{Error, Result};

/// How often the configuration file is checked for changes: a quarter of a second keeps a
/// change's delay far under the two-second budget for a cost of one `stat` per poll.
pub const POLL_INTERVAL: Duration = Duration::from_millis(250);

/// Parses and checks a routing document.
pub fn parse(text: &str, origin: &str) -> Result<RoutingConfig> {
    let cfg: RoutingConfig = serde_saphyr::from_str(text).map_err(|source| Error::ParseConfig {
        path: origin.to_owned(),
        source: Box::new(source),
    })?;
    check(&cfg)?;
    Ok(cfg)
}

/// Reads, parses and checks a routing file.
pub fn load(path: &Path) -> Result<RoutingConfig> {
    let text = std::fs::read_to_string(path)
        .map_err(|source| Error::ReadConfig { path: path.display().to_string(), source })?;
    parse(&text, &path.display().to_string())
}

/// Checks what serde cannot: addresses, duplicates, ranges and combinations.
pub fn check(cfg: &RoutingConfig) -> Result<()> {
    let bad = |m: String| Err(Error::InvalidConfig(m));
    let mut seen = HashSet::new();
    for (i, ep) in cfg.endpoints.iter().enumerate() {
        match http::uri::Authority::from_str(&ep.address) {
            Ok(a) if a.port_u16().is_some() => {}
            _ => return bad(format!("endpoints[{i}].address {:?} is not HOST:PORT", ep.address)),
        }
        if !seen.insert(ep.address.as_str()) {
            return bad(format!("endpoints[{i}].address {} is listed twice", ep.address));
        }
    }
    if !(1.0..=100.0).contains(&cfg.hash_load_factor) {
        return bad(format!("hashLoadFactor {} must be between 1 and 100", cfg.hash_load_factor));
    }
    if cfg.strategy == Strategy::ConsistentHash
        && cfg.session_affinity.mode == SessionAffinityMode::None
    {
        return bad(
            "strategy consistentHash needs sessionAffinity.mode header, cookie or clientIP".into(),
        );
    }
    let needs_key = matches!(
        cfg.session_affinity.mode,
        SessionAffinityMode::Header | SessionAffinityMode::Cookie
    );
    if needs_key && cfg.session_affinity.key.is_none() {
        return bad("sessionAffinity.mode header and cookie need sessionAffinity.key".into());
    }
    if let Some(hc) = &cfg.health_check
        && (!hc.path.starts_with('/') || hc.interval_seconds < 1 || hc.timeout_seconds < 1)
    {
        return bad(
            "healthCheck needs a path starting with / and positive interval and timeout".into()
        );
    }
    if cfg.timeouts.headers_timeout_ms < 1 || cfg.timeouts.idle_timeout_ms < 1 {
        return bad("timeouts must be positive".into());
    }
    Ok(())
}

/// Watches a configuration file and hands each new good document to `apply`.
#[derive(Debug)]
pub struct FileWatch {
    path: PathBuf,
    last: Option<(std::time::SystemTime, u64)>,
    last_text: String,
}

impl FileWatch {
    /// Starts from the document already loaded from `path`.
    pub fn new(path: PathBuf) -> Self {
        let last_text = std::fs::read_to_string(&path).unwrap_or_default();
        let last = stamp(&path);
        Self { path, last, last_text }
    }

    /// Checks once: `Ok(Some(cfg))` when the file changed and is good, `Ok(None)` when it did
    /// not change, `Err` when it changed and is bad (the caller keeps the old one).
    pub fn poll(&mut self) -> Result<Option<RoutingConfig>> {
        let now = stamp(&self.path);
        if now.is_some() && now == self.last {
            return Ok(None);
        }
        self.last = now;
        let text = std::fs::read_to_string(&self.path).map_err(|source| Error::ReadConfig {
            path: self.path.display().to_string(),
            source,
        })?;
        if text == self.last_text {
            return Ok(None);
        }
        self.last_text = text;
        parse(&self.last_text, &self.path.display().to_string()).map(Some)
    }

    /// Polls forever, calling `apply` with every new good document.
    pub async fn run(
        mut self,
        apply: impl Fn(RoutingConfig) + Send,
        on_error: impl Fn(&Error) + Send,
    ) {
        let mut tick = tokio::time::interval(POLL_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            match self.poll() {
                Ok(Some(cfg)) => apply(cfg),
                Ok(None) => {}
                Err(e) => on_error(&e),
            }
        }
    }
}

fn stamp(path: &Path) -> Option<(std::time::SystemTime, u64)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_bad_addresses_and_duplicates() {
        let e = parse("endpoints:\n- address: nohost\n", "t").unwrap_err();
        assert!(e.to_string().contains("endpoints[0].address"), "{e}");
        let e = parse("endpoints:\n- address: a:1\n- address: a:1\n", "t").unwrap_err();
        assert!(e.to_string().contains("twice"), "{e}");
        assert!(parse("endpoints:\n- address: '[::1]:80'\n", "t").is_ok());
    }

    #[test]
    fn rejects_consistent_hash_without_a_key() {
        let e = parse("strategy: consistentHash\n", "t").unwrap_err();
        assert!(e.to_string().contains("sessionAffinity"), "{e}");
        let ok = "strategy: consistentHash\nsessionAffinity: {mode: header, key: x-user}\n";
        assert!(parse(ok, "t").is_ok());
    }

    #[test]
    fn the_watch_sees_changes_and_keeps_the_last_good_document() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("routing.yaml");
        std::fs::write(&path, "endpoints:\n- address: a:1\n").unwrap();
        let mut w = FileWatch::new(path.clone());
        assert!(w.poll().unwrap().is_none());
        std::fs::write(&path, "endpoints:\n- address: a:1\n- address: b:2\n  weight: 5\n").unwrap();
        let cfg = w.poll().unwrap().unwrap();
        assert_eq!(cfg.endpoints.len(), 2);
        assert_eq!(cfg.endpoints[1].weight, 5);
        std::fs::write(&path, "endpoints: [oops\n").unwrap();
        assert!(w.poll().is_err());
        assert!(w.poll().unwrap().is_none(), "a bad document is reported once");
    }
}
