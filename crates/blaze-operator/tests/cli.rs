//! The command line as a person uses it.

use std::process::{Command, Output};

fn op(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_blaze-operator"))
        .args(args)
        .env_remove("BLAZE_NAMESPACE")
        .env_remove("BLAZE_METRICS_LISTEN")
        .env("KUBECONFIG", "/nonexistent/blaze-operator-test-kubeconfig")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .output()
        .unwrap()
}

#[test]
fn crds_prints_the_checked_in_crds() {
    let out = op(&["crds"]);
    assert!(out.status.success());
    let stdout = String::from_utf8(out.stdout).unwrap();
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../../crds/");
    let engine = std::fs::read_to_string(format!("{root}blazeengines.yaml")).unwrap();
    let router = std::fs::read_to_string(format!("{root}blazerouters.yaml")).unwrap();
    assert_eq!(stdout, format!("{engine}---\n{router}"));
}

#[test]
fn bad_flags_are_refused_with_their_name() {
    let out = op(&["run", "--metrics-listen", "not-an-address"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--metrics-listen"));
    let out = op(&["run", "--dashboard-listen", "not-an-address"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--dashboard-listen"));
    let out = op(&["--log-format", "xml", "crds"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--log-format"));
}

#[test]
fn run_without_a_cluster_says_so() {
    let out = op(&["run", "--metrics-listen", "127.0.0.1:0"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot reach the Kubernetes API"), "{err}");
}
