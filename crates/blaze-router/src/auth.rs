//! Optional API keys. Keys are compared as SHA-256 digests in constant time, against every
//! configured key, so neither timing nor the answer says which part of a key was wrong or how
//! long the right one is. A refusal is a bare 401.

use std::collections::BTreeMap;

use blaze_api::routing::RoutingAuth;
use http::HeaderMap;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::metrics::{KeyLabels, Metrics};
use crate::{Error, Result};

/// The accepted keys.
#[derive(Debug, Clone)]
pub struct Auth {
    header: http::HeaderName,
    bearer: bool,
    keys: Vec<(String, [u8; 32])>,
}

impl Auth {
    /// Keys from the configuration: inline keys plus the `NAME: KEY` entries of `keysFile`.
    pub fn from_config(cfg: &RoutingAuth) -> Result<Self> {
        let mut keys: BTreeMap<String, String> = cfg.keys.clone();
        if let Some(path) = &cfg.keys_file {
            let text = std::fs::read_to_string(path)
                .map_err(|source| Error::ReadConfig { path: path.clone(), source })?;
            let file: BTreeMap<String, String> = serde_yaml::from_str(&text)
                .map_err(|source| Error::ParseConfig { path: path.clone(), source })?;
            keys.extend(file);
        }
        if keys.is_empty() {
            return Err(Error::InvalidConfig("auth is on but no API key is configured".into()));
        }
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

fn digest(b: &[u8]) -> [u8; 32] {
    Sha256::digest(b).into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::registry::Registry;

    fn auth(header: &str) -> Auth {
        let mut keys = BTreeMap::new();
        keys.insert("team-a".to_owned(), "sk-alpha".to_owned());
        keys.insert("team-b".to_owned(), "sk-beta".to_owned());
        Auth::from_config(&RoutingAuth { header: header.into(), keys_file: None, keys }).unwrap()
    }

    fn headers(k: &str, v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(http::HeaderName::from_bytes(k.as_bytes()).unwrap(), v.parse().unwrap());
        h
    }

    #[test]
    fn bearer_keys_are_accepted_and_counted_per_name() {
        let m = Metrics::new(&mut Registry::default());
        let a = auth("authorization");
        assert!(a.check(&headers("authorization", "Bearer sk-beta"), &m));
        assert!(!a.check(&headers("authorization", "Bearer sk-bet"), &m));
        assert!(!a.check(&headers("authorization", "sk-beta"), &m));
        assert!(!a.check(&HeaderMap::new(), &m));
        assert_eq!(m.key_requests.get_or_create(&KeyLabels { key: "team-b".into() }).get(), 1);
        assert_eq!(m.unauthorized.get(), 3);
    }

    #[test]
    fn other_headers_hold_the_bare_key_and_files_add_keys() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.yaml");
        std::fs::write(&path, "ops: sk-file\n").unwrap();
        let cfg = RoutingAuth {
            header: "X-Api-Key".into(),
            keys_file: Some(path.display().to_string()),
            keys: BTreeMap::new(),
        };
        let a = Auth::from_config(&cfg).unwrap();
        let m = Metrics::new(&mut Registry::default());
        assert!(a.check(&headers("x-api-key", "sk-file"), &m));
        assert!(!a.check(&headers("x-api-key", "Bearer sk-file"), &m));
    }
}
