//! Optional API keys. Keys are compared as SHA-256 digests in constant time, against every
//! configured key, so neither timing nor the answer says which part of a key was wrong or how
//! long the right one is. A refusal is a bare 401.
//!
//! Keys come inline, from a YAML file (`keysFile`), or from a directory with one file per key
//! (`keysDir`), which is how Kubernetes mounts a Secret. The files are polled and the keys
//! replaced when they change ([`watch`]), so adding or revoking a key in the Secret reaches the
//! router once the kubelet has updated the volume, without a restart.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use blaze_api::routing::RoutingAuth;
use http::HeaderMap;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::metrics::{KeyLabels, Metrics};
use crate::{Error, Result};

/// How often key files and directories are read again for changes.
pub const KEYS_POLL_INTERVAL: Duration = Duration::from_millis(500);

/// The accepted keys.
#[derive(Debug, Clone)]
pub struct Auth {
    header: http::HeaderName,
    bearer: bool,
    keys: Vec<(String, [u8; 32])>,
}

/// Every key the configuration names, by name: inline keys, then the `NAME: KEY` entries of
/// `keysFile`, then the files of `keysDir` (a later source wins for the same name).
pub fn load_keys(cfg: &RoutingAuth) -> Result<BTreeMap<String, String>> {
    let mut keys: BTreeMap<String, String> = cfg.keys.clone();
    if let Some(path) = &cfg.keys_file {
        let text = std::fs::read_to_string(path)
            .map_err(|source| Error::ReadConfig { path: path.clone(), source })?;
        let file: BTreeMap<String, String> = serde_saphyr::from_str(&text).map_err(|source| {
            Error::ParseConfig { path: path.clone(), source: Box::new(source) }
        })?;
        keys.extend(file);
    }
    if let Some(dir) = &cfg.keys_dir {
        keys.extend(keys_from_dir(Path::new(dir))?);
    }
    Ok(keys)
}

/// The keys of a mounted Secret: every regular file (symbolic links followed) whose name does
/// not start with a dot, named by its file name, the key being its content without surrounding
/// whitespace. The dot rule skips the kubelet's `..data` link and timestamped directories.
pub fn keys_from_dir(dir: &Path) -> Result<BTreeMap<String, String>> {
    let read_err = |source| Error::ReadConfig { path: dir.display().to_string(), source };
    let mut keys = BTreeMap::new();
    for entry in std::fs::read_dir(dir).map_err(read_err)? {
        let entry = entry.map_err(read_err)?;
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else { continue };
        if name.starts_with('.') {
            continue;
        }
        let path = entry.path();
        let file_err = |source| Error::ReadConfig { path: path.display().to_string(), source };
        // `metadata` follows links: a Secret's key files are links into `..data/`.
        if !std::fs::metadata(&path).map_err(file_err)?.is_file() {
            continue;
        }
        let key = std::fs::read_to_string(&path).map_err(file_err)?;
        keys.insert(name, key.trim().to_owned());
    }
    Ok(keys)
}

impl Auth {
    /// Keys from the configuration (see [`load_keys`]). Only a configuration with neither
    /// inline keys nor a key file or directory is an error: keys from files may come and go,
    /// and with none every request is refused.
    pub fn from_config(cfg: &RoutingAuth) -> Result<Self> {
        let keys = load_keys(cfg)?;
        if cfg.keys.is_empty() && cfg.keys_file.is_none() && cfg.keys_dir.is_none() {
            return Err(Error::InvalidConfig("auth is on but no API key is configured".into()));
        }
        if keys.is_empty() {
            tracing::warn!("auth is on and no API key is configured yet: every request is refused");
        }
        Self::new(cfg, keys)
    }

    /// Keys `keys` (name to key), carried in the header `cfg` names.
    pub fn new(cfg: &RoutingAuth, keys: BTreeMap<String, String>) -> Result<Self> {
        let header = http::HeaderName::from_bytes(cfg.header.to_ascii_lowercase().as_bytes())
            .map_err(|_| {
                Error::InvalidConfig(format!("auth.header {:?} is not a header name", cfg.header))
            })?;
        Ok(Self {
            bearer: header == http::header::AUTHORIZATION,
            header,
            keys: keys
                .into_iter()
                .map(|(name, key)| (name, digest(key.trim().as_bytes())))
                .collect(),
        })
    }

    /// The names of the keys accepted.
    pub fn key_names(&self) -> impl Iterator<Item = &str> {
        self.keys.iter().map(|(n, _)| n.as_str())
    }

    /// Whether the request carries a valid key; counts it per key name.
    pub fn check(&self, headers: &HeaderMap, metrics: &Metrics) -> bool {
        let presented = headers.get(&self.header).map(|v| v.as_bytes()).map(|v| {
            if self.bearer {
                v.strip_prefix(b"Bearer ").or_else(|| v.strip_prefix(b"bearer ")).unwrap_or(&[][..])
            } else {
                v
            }
        });
        let Some(presented) = presented.filter(|p| !p.is_empty()) else {
            metrics.unauthorized.inc();
            return false;
        };
        let d = digest(presented);
        let mut found: Option<&str> = None;
        // Every key is compared, whatever matched earlier.
        for (name, key) in &self.keys {
            if bool::from(key.ct_eq(&d)) {
                found = Some(name.as_str());
            }
        }
        match found {
            Some(name) => {
                metrics.key_requests.get_or_create(&KeyLabels { key: name.to_owned() }).inc();
                true
            }
            None => {
                metrics.unauthorized.inc();
                false
            }
        }
    }
}

/// Follows the key files of the current auth configuration: loads the keys at once and calls
/// `set` with them, then reads the files every [`KEYS_POLL_INTERVAL`] and calls `set` again
/// whenever the keys differ from the last ones, or `configs` brings a new auth configuration.
/// A read that fails (a file half written, a directory gone) is reported once through
/// `on_error`, and the keys in force stay.
pub async fn watch(
    mut configs: tokio::sync::watch::Receiver<Option<RoutingAuth>>,
    set: impl Fn(Option<Auth>) + Send,
    on_error: impl Fn(&Error) + Send,
) {
    let mut tick = tokio::time::interval(KEYS_POLL_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut cfg = None;
    let mut last = None;
    let mut reconfigured = true;
    loop {
        if reconfigured {
            cfg = configs.borrow_and_update().clone();
        }
        match &cfg {
            None if reconfigured => set(None),
            None => {}
            Some(c) => {
                let now = fingerprint(c);
                if reconfigured || last.as_ref() != Some(&now) {
                    match &now {
                        Ok(_) => match load_keys(c).and_then(|k| Auth::new(c, k)) {
                            Ok(a) => set(Some(a)),
                            Err(e) => on_error(&e),
                        },
                        Err(e) => on_error(&Error::InvalidConfig(format!("API keys: {e}"))),
                    }
                    last = Some(now);
                }
            }
        }
        reconfigured = tokio::select! {
            r = configs.changed() => {
                if r.is_err() {
                    return;
                }
                true
            }
            _ = tick.tick() => false,
        };
    }
}

/// A digest of every key the configuration names (or of why they cannot be read), to see a
/// change without keeping a second copy of the keys.
fn fingerprint(cfg: &RoutingAuth) -> Result<[u8; 32], String> {
    let keys = load_keys(cfg).map_err(|e| e.to_string())?;
    let mut h = Sha256::new();
    for (name, key) in &keys {
        h.update(name.as_bytes());
        h.update([0]);
        h.update(key.as_bytes());
        h.update([0]);
    }
    Ok(h.finalize().into())
}

fn digest(b: &[u8]) -> [u8; 32] {
    Sha256::digest(b).into()
}

#[cfg(test)]
mod tests;
