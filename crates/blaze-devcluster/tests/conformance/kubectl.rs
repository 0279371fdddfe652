//! kubectl against the server: server-side and client-side apply, get with printer columns,
//! paged get, field selectors, describe, explain, scale, delete and get -w.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use blaze_devcluster::{ApiServer, Config};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

pub fn kubectl(kubeconfig: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .current_dir(repo())
        .output()
        .expect("kubectl is on the PATH (the machine image carries it)");
    let text =
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

pub fn ok(kubeconfig: &Path, args: &[&str]) -> String {
    let (success, text) = kubectl(kubeconfig, args);
    assert!(success, "kubectl {}: {text}", args.join(" "));
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_works_against_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let kc = dir.path().join("kubeconfig");
    let server = ApiServer::start(Config { kubeconfig: Some(kc.clone()), ..Config::default() })
        .await
        .unwrap();
    let kc2 = kc.clone();
    tokio::task::spawn_blocking(move || scenario(&kc2)).await.unwrap();
    server.shutdown().await;
}

fn scenario(kc: &Path) {
    let out = ok(kc, &["version", "-o", "json"]);
    assert!(out.contains("\"minor\": \"33\""), "{out}");
    // The CRDs as the API crate makes them (crds/*.yaml is rendered from these), as JSON,
    // beside the kubeconfig in the test's own folder.
    let crd_dir = kc.with_file_name("crds");
    std::fs::create_dir_all(&crd_dir).unwrap();
    for crd in blaze_api::crds::all() {
        let path = crd_dir.join(format!("{}.json", crd.spec.names.plural));
        std::fs::write(&path, serde_json::to_vec(&crd).unwrap()).unwrap();
    }
    ok(kc, &["apply", "--server-side", "-f", crd_dir.to_str().unwrap()]);
    ok(kc, &["wait", "--for=condition=Established", "crd/blazeengines.blaze.ai", "--timeout=20s"]);
    let applied = ok(kc, &["apply", "--server-side", "-f", "manifests/examples/"]);
    assert!(applied.contains("serverside-applied"), "{applied}");
    // A second apply is a no-op, not a conflict.
    ok(kc, &["apply", "--server-side", "-f", "manifests/examples/"]);

    let table = ok(kc, &["get", "blazeengines"]);
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["NAME", "KIND", "MODEL", "READY", "DESIRED", "P95", "AGE"], "{table}");
    let name = table.lines().nth(1).unwrap().split_whitespace().next().unwrap().to_owned();
    let listed = ok(kc, &["get", "blaze"]);
    assert!(listed.contains("blazerouter.blaze.ai/"), "the category lists both kinds: {listed}");

    let described = ok(kc, &["describe", "be", &name]);
    assert!(
        described.contains("Kind:         BlazeEngine") || described.contains("BlazeEngine"),
        "{described}"
    );
    let explained = ok(kc, &["explain", "blazeengine.spec.autoscaling"]);
    assert!(explained.contains("minReplicas"), "{explained}");

    events_published_through_either_api_show_in_describe(kc, &name);

    ok(kc, &["scale", "be", &name, "--replicas=3"]);
    let replicas = ok(kc, &["get", "be", &name, "-o", "jsonpath={.spec.replicas}"]);
    assert_eq!(replicas.trim(), "3");

    let cm = dir_file(
        kc,
        "cm.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: plain\ndata:\n  a: \"1\"\n",
    );
    ok(kc, &["apply", "-f", cm.to_str().unwrap()]);
    let cm2 = dir_file(
        kc,
        "cm2.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: plain\ndata:\n  a: \"2\"\n",
    );
    ok(kc, &["apply", "-f", cm2.to_str().unwrap()]);
    assert_eq!(ok(kc, &["get", "cm", "plain", "-o", "jsonpath={.data.a}"]).trim(), "2");
    // kubectl pages through a list one object at a time.
    let chunked = ok(kc, &["get", "cm", "-A", "--chunk-size=1"]);
    assert!(chunked.contains("plain"), "{chunked}");
    let (found, text) =
        kubectl(kc, &["get", "pods", "-A", "--field-selector=status.hostIP=1.2.3.4"]);
    assert!(!found && text.contains("field label not supported: status.hostIP"), "{text}");

    watch_sees_a_new_object(kc);
    ok(kc, &["delete", "be", &name]);
    let (found, text) = kubectl(kc, &["get", "be", &name]);
    assert!(!found && text.contains("NotFound"), "{text}");
}

/// A controller records events through `events.k8s.io/v1`; `kubectl describe` reads them
/// through `core/v1`, as from one store on a real API server.
fn events_published_through_either_api_show_in_describe(kc: &Path, engine: &str) {
    let uid = ok(kc, &["get", "be", engine, "-o", "jsonpath={.metadata.uid}"]);
    let event = serde_json::json!({
        "apiVersion": "events.k8s.io/v1", "kind": "Event",
        "metadata": {"name": format!("{engine}.ready"), "namespace": "default"},
        "eventTime": "2026-11-27T10:00:00.000000Z",
        "reportingController": "blaze-operator", "reportingInstance": "blaze-operator-0",
        "action": "Reconcile", "reason": "WorkersReady", "type": "Normal",
        "regarding": {"apiVersion": "blaze.ai/v1alpha1", "kind": "BlazeEngine",
            "name": engine, "namespace": "default", "uid": uid.trim()},
        "note": "all 2 workers are ready"
    });
    let file = dir_file(kc, "event.json", &event.to_string());
    ok(kc, &["apply", "--server-side", "-f", file.to_str().unwrap()]);
    let described = ok(kc, &["describe", "be", engine]);
    let line = described.lines().find(|l| l.contains("WorkersReady")).unwrap_or_default();
    assert!(
        line.contains("Normal")
            && line.contains("blaze-operator")
            && line.contains("all 2 workers"),
        "kubectl describe lists the event with its type, source and note: {described}"
    );
    let core = ok(kc, &["get", "events.v1.", "-o", "jsonpath={.items[*].message}"]);
    assert!(core.contains("all 2 workers are ready"), "core/v1 events: {core}");
    ok(kc, &["delete", "events.v1.events.k8s.io", &format!("{engine}.ready")]);
    let core = ok(kc, &["get", "events.v1.", "-o", "name"]);
    assert!(!core.contains(&format!("{engine}.ready")), "deleted from both APIs: {core}");
}

/// Writes `text` to the file `name` beside the kubeconfig `kc`, in the test's own folder.
pub fn dir_file(kc: &Path, name: &str, text: &str) -> PathBuf {
    let path = kc.with_file_name(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn watch_sees_a_new_object(kc: &Path) {
    let mut child = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(kc)
        .args(["get", "cm", "-w", "--request-timeout=20s"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    // Wait for the initial listing before creating.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut lines = Vec::new();
    while !lines.iter().any(|l: &String| l.starts_with("plain")) {
        assert!(Instant::now() < deadline, "no listing: {lines:?}");
        if let Ok(l) = rx.recv_timeout(Duration::from_millis(200)) {
            lines.push(l);
        }
    }
    // `kubectl create` encodes built-ins as protobuf, which the server does not speak; apply
    // sends JSON.
    let watched = dir_file(
        kc,
        "watched.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: watched\n",
    );
    ok(kc, &["apply", "-f", watched.to_str().unwrap()]);
    while !lines.iter().any(|l: &String| l.starts_with("watched")) {
        assert!(Instant::now() < deadline, "kubectl get -w did not show the new object: {lines:?}");
        if let Ok(l) = rx.recv_timeout(Duration::from_millis(200)) {
            lines.push(l);
        }
    }
    let _ = child.kill();
    let _ = child.wait();
}
