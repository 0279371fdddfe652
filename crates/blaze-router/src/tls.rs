//! TLS on the proxy port: a certificate chain and key from PEM files (as a `kubernetes.io/tls`
//! Secret mounts them: `tls.crt`, `tls.key`), ALPN offering `h2` and `http/1.1`, and the files
//! read again when they change, so a renewed certificate is served without a restart.
//!
//! A Secret volume is updated by swapping a symbolic link, so the files are compared by the
//! modification time and length of what the paths resolve to. A renewal that cannot be used
//! (a key that does not match, a file half written) is refused with an error and the last
//! good certificate stays in service.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// How often the certificate files are checked for a change.
pub const RELOAD_EVERY: Duration = Duration::from_secs(2);
/// Time a client has to finish the TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a certificate could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read or holds no usable PEM block.
    #[error("{what} {path}: {message}")]
    File {
        /// `--tls-cert` or `--tls-key`.
        what: &'static str,
        /// The file.
        path: String,
        /// What is wrong with it.
        message: String,
    },
    /// rustls refused the pair (a key that does not match the certificate, an unsupported key
    /// type).
    #[error("certificate {cert} with key {key}: {source}")]
    Config {
        /// The certificate file.
        cert: String,
        /// The key file.
        key: String,
        /// What rustls said.
        #[source]
        source: rustls::Error,
    },
}

/// The certificate and key files.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// The serving configuration, replaced whole when the files change.
#[derive(Debug)]
pub struct Tls {
    files: TlsFiles,
    config: ArcSwap<ServerConfig>,
}

impl Tls {
    /// Loads the files; an error names the file and what is wrong with it.
    pub fn load(files: TlsFiles) -> Result<Arc<Self>, TlsError> {
        let config = server_config(&files)?;
        Ok(Arc::new(Self { files, config: ArcSwap::from_pointee(config) }))
    }

    /// An acceptor with the current certificate.
    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.config.load_full())
    }

    /// Checks the files every [`RELOAD_EVERY`] and serves a changed certificate from then on;
    /// `on_reload` hears of each attempt (the error, if it failed). Runs until aborted.
    pub async fn watch(self: Arc<Self>, on_reload: impl Fn(Option<&TlsError>) + Send) {
        let mut seen = stamp(&self.files);
        let mut tick = tokio::time::interval(RELOAD_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let now = stamp(&self.files);
            if now == seen {
                continue;
            }
            seen = now;
            match server_config(&self.files) {
                Ok(config) => {
                    self.config.store(Arc::new(config));
                    tracing::info!(cert = %self.files.cert.display(), "TLS certificate reloaded");
                    on_reload(None);
                }
                Err(e) => {
                    tracing::error!(error = %e, "TLS certificate not reloaded; keeping the last good one");
                    on_reload(Some(&e));
                }
            }
        }
    }
}

/// What identifies a version of the files: modification time and length of each target.
type Stamp = [Option<(SystemTime, u64)>; 2];

fn stamp(files: &TlsFiles) -> Stamp {
    let one =
        |p: &Path| std::fs::metadata(p).ok().and_then(|m| Some((m.modified().ok()?, m.len())));
    [one(&files.cert), one(&files.key)]
}

/// The rustls configuration for the files, with ALPN `h2` then `http/1.1`.
fn server_config(files: &TlsFiles) -> Result<ServerConfig, TlsError> {
    let file_error = |what, path: &Path, message: String| TlsError::File {
        what,
        path: path.display().to_string(),
        message,
    };
    let cert_text = std::fs::read(&files.cert)
        .map_err(|e| file_error("--tls-cert", &files.cert, e.to_string()))?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_text)
        .collect::<Result<_, _>>()
        .map_err(|e| file_error("--tls-cert", &files.cert, format!("bad PEM: {e}")))?;
    if chain.is_empty() {
        return Err(file_error("--tls-cert", &files.cert, "no CERTIFICATE block in it".into()));
    }
    let key_text = std::fs::read(&files.key)
        .map_err(|e| file_error("--tls-key", &files.key, e.to_string()))?;
    let key = PrivateKeyDer::from_pem_slice(&key_text).map_err(|e| {
        file_error("--tls-key", &files.key, format!("no usable private key in it: {e}"))
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config_error = |source| TlsError::Config {
        cert: files.cert.display().to_string(),
        key: files.key.display().to_string(),
        source,
    };
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(config_error)?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(config_error)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(dir: &Path, name: &str) -> (TlsFiles, rcgen::CertifiedKey) {
        let ck = rcgen::generate_simple_self_signed(vec![name.to_owned()]).unwrap();
        let files = TlsFiles { cert: dir.join("tls.crt"), key: dir.join("tls.key") };
        std::fs::write(&files.cert, ck.cert.pem()).unwrap();
        std::fs::write(&files.key, ck.key_pair.serialize_pem()).unwrap();
        (files, ck)
    }

    #[test]
    fn a_pair_loads_with_alpn_and_bad_files_say_what_is_wrong() {
        let dir = tempfile::tempdir().unwrap();
        let (files, _) = pair(dir.path(), "router.example");
        let tls = Tls::load(files.clone()).unwrap();
        assert_eq!(tls.config.load().alpn_protocols, [b"h2".to_vec(), b"http/1.1".to_vec()]);

        let missing = TlsFiles { cert: dir.path().join("nope.crt"), key: files.key.clone() };
        let e = Tls::load(missing).unwrap_err().to_string();
        assert!(e.starts_with("--tls-cert ") && e.contains("nope.crt"), "{e}");

        std::fs::write(dir.path().join("empty.crt"), "not a certificate\n").unwrap();
        let empty = TlsFiles { cert: dir.path().join("empty.crt"), key: files.key.clone() };
        let e = Tls::load(empty).unwrap_err().to_string();
        assert!(e.contains("no CERTIFICATE block"), "{e}");

        let nokey = TlsFiles { cert: files.cert.clone(), key: files.cert.clone() };
        let e = Tls::load(nokey).unwrap_err().to_string();
        assert!(e.starts_with("--tls-key ") && e.contains("no usable private key"), "{e}");

        // Another certificate's key does not match.
        let other = tempfile::tempdir().unwrap();
        let (theirs, _) = pair(other.path(), "other.example");
        let mismatched = TlsFiles { cert: files.cert.clone(), key: theirs.key };
        let e = Tls::load(mismatched).unwrap_err().to_string();
        assert!(e.starts_with("certificate ") && e.contains("with key"), "{e}");
    }
}
