//! A kube-runtime `Controller` keeps reconciling through a forced `410 Gone` and a restart of
//! the server (state kept in `--data-dir`).

use std::sync::Arc;
use std::time::Duration;

use blaze_devcluster::{ApiServer, Config};
use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use serde_json::json;

use super::common::{client_for, eventually};

#[derive(Debug, thiserror::Error)]
#[error(transparent)]
struct Failed(#[from] kube::Error);

async fn reconcile(cm: Arc<ConfigMap>, api: Arc<Api<ConfigMap>>) -> Result<Action, Failed> {
    let name = cm.metadata.name.clone().unwrap_or_default();
    if name.ends_with("-child") {
        return Ok(Action::await_change());
    }
    let child = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": format!("{name}-child")},
        "data": {"parent": name}});
    api.patch(
        &format!("{name}-child"),
        &PatchParams::apply("test-controller"),
        &Patch::Apply(child),
    )
    .await?;
    Ok(Action::await_change())
}

fn cm(name: &str) -> ConfigMap {
    serde_json::from_value(json!({"metadata": {"name": name}})).unwrap()
}

async fn child_exists(api: &Api<ConfigMap>, parent: &str) {
    eventually(&format!("{parent}-child"), 30, async || {
        api.get_opt(&format!("{parent}-child")).await.ok().flatten().map(|_| ())
    })
    .await;
}

#[tokio::test]
async fn controller_survives_410_and_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config {
        data_dir: Some(dir.path().to_owned()),
        token: Some("t0ken".into()),
        ..Config::default()
    };
    let server = ApiServer::start(config.clone()).await.unwrap();
    let addr = server.addr();
    let client = client_for(&server.kubeconfig()).await;
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let ctx = Arc::new(api.clone());
    let controller = tokio::spawn(
        Controller::new(api.clone(), watcher::Config::default())
            .run(reconcile, |_, _, _| Action::requeue(Duration::from_millis(200)), ctx)
            .for_each(|_| async {}),
    );
    api.create(&PostParams::default(), &cm("one")).await.unwrap();
    child_exists(&api, "one").await;

    server.compact().unwrap();
    api.create(&PostParams::default(), &cm("two")).await.unwrap();
    child_exists(&api, "two").await;

    server.shutdown().await;
    let server = ApiServer::start(Config { listen: addr, ..config }).await.unwrap();
    // The first request may meet a pooled connection to the old process; retry until served.
    eventually("objects to survive the restart", 10, async || {
        api.get("one-child").await.ok().map(|_| ())
    })
    .await;
    api.create(&PostParams::default(), &cm("three")).await.unwrap();
    child_exists(&api, "three").await;
    controller.abort();
    server.shutdown().await;
}
