//! A model download's progress reaches the engine's `ModelLoaded` and `Ready` conditions: the
//! operator binary against the development control plane's API server, a worker pod whose
//! `model-download` init container runs, and that container's log as `pods/log` serves it (fed
//! here with the lines `blaze-worker download --log-format json` writes; the worker's own test
//! checks it writes them).
//!
//! No node runs: the test makes the worker pod and writes its status as a kubelet would.

use crate::support;

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use blaze_devcluster::{ApiServer, Config};
use blaze_testing::{Proc, eventually};
use blaze_worker_cli::DownloadProgress;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::GroupVersionKind;
use kube::discovery::ApiResource;
use serde_json::json;
use support::{apply, client, install_crds};

/// The JSON log line of one progress report, as tracing-subscriber writes it.
fn log_line(p: &DownloadProgress) -> String {
    let mut fields = serde_json::to_value(p).unwrap();
    fields["message"] = json!(format!("downloading {p}"));
    json!({"timestamp": "2026-01-01T00:00:00Z", "level": "INFO", "fields": fields,
           "target": "blaze_worker::source::hub"})
    .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_download_shows_its_progress_in_the_engine_conditions() {
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    let config = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        kubeconfig: Some(kubeconfig.clone()),
        ..Default::default()
    };
    let server = ApiServer::start(config).await.unwrap();
    let gib = 1u64 << 30;
    let at = |bytes| DownloadProgress {
        file: "model.safetensors".into(),
        bytes,
        total: Some(4 * gib),
        bytes_per_second: 50.0 * 1048576.0,
    };
    let log = [log_line(&at(gib / 2)), log_line(&at(gib))].join("\n");
    server.state().set_log_source(Arc::new(move |ns: &str, pod: &str, c: Option<&str>| {
        (ns == "default" && pod == "chat-worker-0" && c == Some("model-download"))
            .then(|| log.clone())
    }));
    let client = client(&kubeconfig).await;
    install_crds(&client).await;
    let _operator = Proc::spawn(
        Command::new(env!("CARGO_BIN_EXE_blaze-operator"))
            .args(["run", "--leader-elect", "false", "--metrics-listen", "127.0.0.1:0"])
            .env("KUBECONFIG", &kubeconfig)
            .env("RUST_LOG", "warn")
            .env_remove("BLAZE_NAMESPACE")
            .env_remove("KUBERNETES_SERVICE_HOST"),
        "",
    );

    let gvk = GroupVersionKind::gvk("blaze.ai", "v1alpha1", "BlazeEngine");
    let engines: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), "default", &ApiResource::from_gvk(&gvk));
    let spec = json!({"kind": "llm", "model": {"source": "hf://org/chat"}, "replicas": 1});
    apply(&client, "BlazeEngine", "chat", spec).await;

    // The worker pod as the Deployment would make it, its init container running.
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "chat-worker-0", "labels": {
            "app.kubernetes.io/name": "blaze-worker", "blaze.ai/engine": "chat"}},
        "spec": {
            "initContainers": [{"name": "model-download", "image": "w"}],
            "containers": [{"name": "blaze-worker", "image": "w"}],
        },
    }))
    .unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();
    let status = json!({"status": {"phase": "Pending", "initContainerStatuses": [{
        "name": "model-download", "image": "w", "imageID": "", "ready": false,
        "restartCount": 0, "state": {"running": {"startedAt": "2026-01-01T00:00:00Z"}},
    }]}});
    pods.patch_status("chat-worker-0", &PatchParams::default(), &Patch::Merge(&status))
        .await
        .unwrap();

    let want = "worker chat-worker-0 is downloading hf://org/chat \
                (model.safetensors: 1.0 GiB of 4.0 GiB (25%) at 50.0 MiB/s)";
    let conditions = eventually("ModelLoaded to say how far the download is", 60, async || {
        let e = engines.get("chat").await.ok()?;
        let conditions = e.data["status"]["conditions"].as_array()?.clone();
        let loaded = conditions.iter().find(|c| c["type"] == "ModelLoaded")?;
        (loaded["reason"] == "Downloading" && loaded["message"] == want).then_some(conditions)
    })
    .await;
    let ready = conditions.iter().find(|c| c["type"] == "Ready").unwrap();
    assert_eq!((&ready["reason"], &ready["message"]), (&json!("Downloading"), &json!(want)));
    drop(_operator);
    tokio::time::sleep(Duration::from_millis(50)).await;
    server.shutdown().await;
}
