//! HTTP as a client sends it: one request per connection over HTTP/1.1, or over TLS with
//! HTTP/2 when the server picks it.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result};
use http_body_util::BodyExt as _;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Sends `method path` with a JSON `body` to `url` (`http://HOST:PORT`) over a connection of
/// its own and returns the whole response, head and body, within 120 s.
pub async fn request(url: &str, method: &str, path: &str, body: &str) -> Result<String> {
    let addr = url.trim_start_matches("http://");
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await?;
    let mut out = String::new();
    tokio::time::timeout(Duration::from_secs(120), s.read_to_string(&mut out))
        .await
        .context("no complete answer in 120 s")??;
    Ok(out)
}

/// The body of a GET of `path` from `addr` (`HOST:PORT`).
pub async fn get(addr: &str, path: &str) -> Result<String> {
    let out = request(&format!("http://{addr}"), "GET", path, "").await?;
    Ok(out.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default())
}

/// A TLS server's credentials: a CA, and a certificate for `localhost` it signed.
pub struct Certificate {
    /// The CA a client trusts.
    pub ca: CertificateDer<'static>,
    /// The server's certificate, PEM.
    pub cert_pem: String,
    /// The server's key, PEM.
    pub key_pem: String,
}

impl Certificate {
    /// A new CA and a `localhost` certificate.
    pub fn localhost() -> Result<Self> {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
        let ca_key = KeyPair::generate()?;
        let mut ca = CertificateParams::new(Vec::<String>::new())?;
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = ca.self_signed(&ca_key)?;
        let key = KeyPair::generate()?;
        let leaf = CertificateParams::new(vec!["localhost".to_owned()])?;
        let leaf = leaf.signed_by(&key, &ca, &ca_key)?;
        Ok(Self { ca: ca.der().clone(), cert_pem: leaf.pem(), key_pem: key.serialize_pem() })
    }
}

/// GET `path` over TLS from `addr`, trusting `ca`, as `localhost`, offering HTTP/2 and
/// HTTP/1.1: the version the server picked, the status and the body.
pub async fn get_tls(
    addr: &str,
    ca: &CertificateDer<'static>,
    path: &str,
) -> Result<(http::Version, u16, String)> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.clone())?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let name = ServerName::try_from("localhost")?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp).await?;
    let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
    let io = hyper_util::rt::TokioIo::new(tls);
    let empty = http_body_util::Empty::<bytes::Bytes>::new();
    let resp = if h2 {
        let exec = hyper_util::rt::TokioExecutor::new();
        let (mut tx, conn) = hyper::client::conn::http2::handshake(exec, io).await?;
        tokio::spawn(conn);
        tx.send_request(http::Request::get(format!("https://localhost{path}")).body(empty)?).await?
    } else {
        let (mut tx, conn) = hyper::client::conn::http1::handshake(io).await?;
        tokio::spawn(conn);
        tx.send_request(http::Request::get(path).header("host", "localhost").body(empty)?).await?
    };
    let (version, status) = (resp.version(), resp.status().as_u16());
    let body = resp.into_body().collect().await?.to_bytes();
    Ok((version, status, String::from_utf8_lossy(&body).into_owned()))
}
