//! TLS for the API server: a certificate authority and a serving certificate made at start
//! (nothing secret is checked in), the CA handed to clients in the kubeconfig. kubectl sends
//! its bearer token only over TLS, so this is the default.

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::{Error, Result};

/// A server TLS configuration and the CA that signed it.
#[derive(Debug, Clone)]
pub struct Tls {
    /// PEM of the certificate authority clients must trust.
    pub ca_pem: String,
    /// The rustls server configuration.
    pub config: Arc<rustls::ServerConfig>,
}

fn tls_error(e: impl std::fmt::Display) -> Error {
    Error::Tls(e.to_string())
}

/// The TLS material kept in `dir` (so clients keep trusting the server across restarts),
/// made and saved there on first use; made afresh when there is no `dir`.
pub fn load_or_generate(dir: Option<&Path>, ip: IpAddr) -> Result<Tls> {
    let Some(dir) = dir else { return generate(ip).map(|(t, _)| t) };
    let dir = dir.join("tls");
    let read = |n: &str| std::fs::read(dir.join(n));
    if let (Ok(ca), Ok(leaf), Ok(ca_der), Ok(key)) =
        (read("ca.pem"), read("server.der"), read("ca.der"), read("server.key.der"))
    {
        let chain = vec![CertificateDer::from(leaf), CertificateDer::from(ca_der)];
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key));
        return Ok(Tls {
            ca_pem: String::from_utf8_lossy(&ca).into_owned(),
            config: server_config(chain, key)?,
        });
    }
    let (tls, parts) = generate(ip)?;
    for (name, bytes) in [
        ("server.der", parts.leaf),
        ("ca.der", parts.ca),
        ("server.key.der", parts.key),
        ("ca.pem", tls.ca_pem.clone().into_bytes()),
    ] {
        crate::persist::atomic_write(&dir.join(name), &bytes)?;
    }
    Ok(tls)
}

struct Parts {
    leaf: Vec<u8>,
    ca: Vec<u8>,
    key: Vec<u8>,
}

fn server_config(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<Arc<rustls::ServerConfig>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(tls_error)?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(tls_error)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Makes a CA and a serving certificate for `localhost`, `127.0.0.1`, `::1` and `ip`.
fn generate(ip: IpAddr) -> Result<(Tls, Parts)> {
    let ca_key = KeyPair::generate().map_err(tls_error)?;
    let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(tls_error)?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name.push(DnType::CommonName, "blaze-devcluster-ca");
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca.self_signed(&ca_key).map_err(tls_error)?;

    let mut names = vec!["localhost".to_owned(), "127.0.0.1".to_owned(), "::1".to_owned()];
    if !ip.is_unspecified() && !names.contains(&ip.to_string()) {
        names.push(ip.to_string());
    }
    let leaf_key = KeyPair::generate().map_err(tls_error)?;
    let mut leaf = CertificateParams::new(names).map_err(tls_error)?;
    leaf.distinguished_name.push(DnType::CommonName, "blaze-devcluster-apiserver");
    let leaf_cert = leaf.signed_by(&leaf_key, &ca_cert, &ca_key).map_err(tls_error)?;

    let parts = Parts {
        leaf: leaf_cert.der().to_vec(),
        ca: ca_cert.der().to_vec(),
        key: leaf_key.serialize_der(),
    };
    let chain: Vec<CertificateDer<'static>> = vec![leaf_cert.der().clone(), ca_cert.der().clone()];
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
    Ok((Tls { ca_pem: ca_cert.pem(), config: server_config(chain, key)? }, parts))
}
