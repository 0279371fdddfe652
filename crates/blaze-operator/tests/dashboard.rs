//! The dashboard in a real headless browser (Debian's `chromium`, which
//! `scripts/test-deps.sh` installs), against the operator binary on the development control
//! plane's API server: the overview lists the engine and the router, an engine page draws its
//! charts once data arrive, a missing engine's page says so. A screenshot of the engine page
//! is saved as `target/dashboard.png`.
//!
//! No node runs (no worker could serve in a test this cheap): the operator reconciles the
//! engine and router, writes their status, scrapes their (absent) workers, and that is the
//! history the charts show.

use crate::support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use blaze_devcluster::{ApiServer, Config};
use blaze_testing::{Proc, eventually, free_addr};
use serde_json::json;
use support::{apply, client, install_crds};

/// The page at `url` after its script ran (5 s of virtual time: a few polls), as the browser
/// holds it; with `screenshot`, also saved there as a PNG.
fn browse(url: &str, profile: &Path, screenshot: Option<&Path>) -> String {
    let mut cmd = Command::new("chromium");
    cmd.args(["--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=5000"])
        .arg(format!("--user-data-dir={}", profile.display()));
    match screenshot {
        Some(path) => {
            cmd.arg(format!("--screenshot={}", path.display())).arg("--window-size=1280,900")
        }
        None => cmd.arg("--dump-dom"),
    };
    let out = cmd.arg(url).output().unwrap_or_else(|e| {
        panic!("cannot run chromium ({e}): scripts/test-deps.sh installs Debian's chromium")
    });
    assert!(out.status.success(), "chromium {url}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// `GET url` over plain HTTP/1.1: the body.
async fn http_get(addr: &str, path: &str) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: dash\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).await.ok()?;
    out.starts_with("HTTP/1.1 200").then_some(out)
}

fn target_dir() -> PathBuf {
    let bin = blaze_testing::bin_dir();
    bin.parent().map(PathBuf::from).unwrap_or(bin)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_engines_routers_and_charts_in_a_real_browser() {
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    let config = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        kubeconfig: Some(kubeconfig.clone()),
        ..Default::default()
    };
    let server = ApiServer::start(config).await.unwrap();
    let client = client(&kubeconfig).await;
    install_crds(&client).await;
    let dashboard = free_addr();
    let _operator = Proc::spawn(
        Command::new(env!("CARGO_BIN_EXE_blaze-operator"))
            .args(["run", "--leader-elect", "false", "--metrics-listen", "127.0.0.1:0"])
            .args(["--dashboard-listen", &dashboard])
            .env("KUBECONFIG", &kubeconfig)
            .env_remove("BLAZE_NAMESPACE")
            .env_remove("KUBERNETES_SERVICE_HOST"),
        dashboard.clone(),
    );
    let engine =
        json!({"kind": "llm", "model": {"source": "file:///models/none.gguf"}, "replicas": 1});
    apply(&client, "BlazeEngine", "smollm2", engine).await;
    apply(&client, "BlazeRouter", "front", json!({"engines": {"names": ["smollm2"]}})).await;
    // Data have arrived once the engine's history holds samples and its status is written.
    eventually("the engine's history in the API", 60, async || {
        let body = http_get(&dashboard, "/api/engines/default/smollm2").await?;
        (body.contains("\"desired\":1") && body.contains("\"conditions\":[{")).then_some(())
    })
    .await;
    let base = format!("http://{dashboard}");
    let profile = dir.path().join("chromium");

    let overview = browse(&format!("{base}/"), &profile, None);
    assert!(overview.contains("<tr class=\"engine\">"), "{overview}");
    assert!(overview.contains(">default/smollm2</a>"), "{overview}");
    assert!(overview.contains(">default/front</a>"), "{overview}");
    assert!(overview.contains("Ready "), "conditions shown: {overview}");

    let page = browse(&format!("{base}/engines/default/smollm2"), &profile, None);
    assert!(page.contains("BlazeEngine default/smollm2"), "{page}");
    assert_eq!(page.matches("class=\"chart\"").count(), 6, "six charts: {page}");
    assert!(page.contains("<polyline") || page.contains("<circle"), "a drawn series: {page}");
    assert!(page.contains("data-series=\"desired\""), "{page}");

    let router = browse(&format!("{base}/routers/default/front"), &profile, None);
    assert!(router.contains("BlazeRouter default/front"), "{router}");

    let missing = browse(&format!("{base}/engines/default/nope"), &profile, None);
    assert!(missing.contains("BlazeEngine default/nope not found"), "{missing}");

    let shot = target_dir().join("dashboard.png");
    let _ = std::fs::remove_file(&shot);
    browse(&format!("{base}/engines/default/smollm2"), &profile, Some(&shot));
    let png = std::fs::read(&shot).unwrap();
    assert!(png.starts_with(b"\x89PNG") && png.len() > 10_000, "{} bytes", png.len());
    drop(_operator);
    tokio::time::sleep(Duration::from_millis(50)).await;
    server.shutdown().await;
}
