//! TLS on the proxy port: ALPN picks HTTP/2 or HTTP/1.1, the request reaches the endpoint
//! with `x-forwarded-proto: https`, a renewed certificate is served without a restart, and a
//! broken renewal leaves the last good one in service.

use crate::support::process as support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::Version;
use http_body_util::{BodyExt as _, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, ServerName};
use support::*;

/// A CA, and a certificate for `localhost` it signed; `serial` tells renewals apart.
struct Issued {
    ca: CertificateDer<'static>,
    leaf: CertificateDer<'static>,
}

fn issue(dir: &Path, serial: u64) -> Issued {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let mut leaf = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    leaf.serial_number = Some(serial.into());
    let leaf_cert = leaf.signed_by(&key, &ca_cert, &ca_key).unwrap();
    // Written aside and renamed in, as a Secret volume swaps its files.
    for (name, text) in [("tls.crt", leaf_cert.pem()), ("tls.key", key.serialize_pem())] {
        std::fs::write(dir.join(format!("{name}.new")), text).unwrap();
        std::fs::rename(dir.join(format!("{name}.new")), dir.join(name)).unwrap();
    }
    Issued { ca: ca_cert.der().clone(), leaf: leaf_cert.der().clone() }
}

/// What one request over TLS saw.
#[derive(Debug)]
struct Seen {
    alpn: Option<Vec<u8>>,
    version: Version,
    status: u16,
    body: String,
    leaf: CertificateDer<'static>,
}

/// GET `path` from the router at `addr` over TLS, trusting `ca`, offering `alpn`; an error
/// if the handshake fails (a certificate `ca` did not sign).
async fn try_get_tls(
    addr: &str,
    ca: &CertificateDer<'static>,
    alpn: &[&[u8]],
    path: &str,
) -> std::io::Result<Seen> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp).await?;
    let (_, session) = tls.get_ref();
    let alpn = session.alpn_protocol().map(<[u8]>::to_vec);
    let leaf = session.peer_certificates().unwrap()[0].clone();
    let req =
        http::Request::get(format!("https://localhost{path}")).body(Empty::<Bytes>::new()).unwrap();
    let resp = if alpn.as_deref() == Some(b"h2") {
        let (mut tx, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
                .await
                .unwrap();
        tokio::spawn(conn);
        tx.send_request(req).await.unwrap()
    } else {
        let (mut tx, conn) =
            hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.unwrap();
        tokio::spawn(conn);
        let (mut parts, body) = req.into_parts();
        parts.uri = path.parse().unwrap();
        parts.headers.insert("host", "localhost".parse().unwrap());
        tx.send_request(http::Request::from_parts(parts, body)).await.unwrap()
    };
    let (version, status) = (resp.version(), resp.status().as_u16());
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    Ok(Seen { alpn, version, status, body: String::from_utf8_lossy(&body).into_owned(), leaf })
}

async fn get_tls(addr: &str, ca: &CertificateDer<'static>, alpn: &[&[u8]], path: &str) -> Seen {
    try_get_tls(addr, ca, alpn, path).await.unwrap()
}

#[tokio::test]
async fn tls_serves_both_protocols_by_alpn_and_renewals_without_a_restart() {
    let up = upstream("u0", "127.0.0.1:0");
    let dir = tempfile::tempdir().unwrap();
    let first = issue(dir.path(), 1);
    let cfg = dir.path().join("routing.yaml");
    write_config(&cfg, &format!("strategy: roundRobin\n{}", endpoints_yaml(&[&up.addr])));
    let (addr, admin) = (free_addr(), free_addr());
    let child = Command::new(env!("CARGO_BIN_EXE_blaze-router"))
        .args(["--listen", &addr, "--admin-listen", &admin, "--config"])
        .arg(&cfg)
        .arg("--tls-cert")
        .arg(dir.path().join("tls.crt"))
        .arg("--tls-key")
        .arg(dir.path().join("tls.key"))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let _router = Proc { child, addr: addr.clone() };
    let c = client();
    poll(Duration::from_secs(20), || async {
        get(&c, &format!("http://{admin}/livez")).await.is_ok_and(|(s, _)| s == 200)
    })
    .await;

    let h2 = get_tls(&addr, &first.ca, &[b"h2", b"http/1.1"], "/headers").await;
    assert_eq!(
        (h2.alpn.as_deref(), h2.version, h2.status),
        (Some(&b"h2"[..]), Version::HTTP_2, 200)
    );
    assert!(h2.body.contains("x-forwarded-proto: https\n"), "{}", h2.body);
    assert_eq!(h2.leaf, first.leaf);
    let h1 = get_tls(&addr, &first.ca, &[b"http/1.1"], "/").await;
    assert_eq!(h1.alpn.as_deref(), Some(&b"http/1.1"[..]));
    assert_eq!(
        (h1.version, h1.status, h1.body.as_str()),
        (Version::HTTP_11, 200, "hello from u0\n")
    );
    let plain = get_tls(&addr, &first.ca, &[], "/headers").await;
    assert_eq!((plain.alpn, plain.version, plain.status), (None, Version::HTTP_11, 200));
    assert!(plain.body.contains("x-forwarded-proto: https\n"), "{}", plain.body);
    // Cleartext on the TLS port gets no answer.
    assert!(get(&c, &format!("http://{addr}/")).await.is_err());

    // A renewed certificate is served from the next connection on.
    let second = issue(dir.path(), 2);
    poll(Duration::from_secs(10), || async {
        let seen = try_get_tls(&addr, &second.ca, &[b"h2"], "/").await;
        seen.is_ok_and(|s| s.leaf == second.leaf)
    })
    .await;
    let reloads = "blaze_router_tls_reloads_total{result=\"Ok\"}";
    assert!(metric(&c, &admin, reloads).await >= Some(1.0));

    // A key that does not match its certificate is refused; the last good pair stays. (The
    // renewal above may have been seen half done, certificate before key, and refused once.)
    let failed = "blaze_router_tls_reloads_total{result=\"Error\"}";
    let before = metric(&c, &admin, failed).await.unwrap_or(0.0);
    std::fs::write(dir.path().join("tls.key"), KeyPair::generate().unwrap().serialize_pem())
        .unwrap();
    poll(Duration::from_secs(10), || async {
        metric(&c, &admin, failed).await.is_some_and(|n| n > before)
    })
    .await;
    let still = get_tls(&addr, &second.ca, &[b"h2"], "/").await;
    assert_eq!((still.leaf, still.status), (second.leaf, 200));
}

#[test]
fn a_bad_certificate_stops_the_router_with_a_message_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("routing.yaml");
    write_config(&cfg, &format!("strategy: roundRobin\n{}", endpoints_yaml(&["127.0.0.1:9"])));
    std::fs::write(dir.path().join("tls.crt"), "not a certificate\n").unwrap();
    std::fs::write(dir.path().join("tls.key"), "not a key\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_blaze-router"))
        .args(["--listen", &free_addr(), "--config"])
        .arg(&cfg)
        .arg("--tls-cert")
        .arg(dir.path().join("tls.crt"))
        .arg("--tls-key")
        .arg(dir.path().join("tls.key"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--tls-cert") && err.contains("tls.crt"), "{err}");
    assert!(err.contains("no CERTIFICATE block"), "{err}");

    // One without the other is refused by the command line.
    let out = Command::new(env!("CARGO_BIN_EXE_blaze-router"))
        .args(["--config", "x.yaml", "--tls-cert", "tls.crt"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--tls-key"));
}
