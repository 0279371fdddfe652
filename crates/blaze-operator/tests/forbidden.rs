//! The operator's RBAC, enforced: the operator binary runs as its ServiceAccount on the
//! development API server (which authorizes as a real one does) with the install manifest's
//! ClusterRole less one rule, and says what it lacks where a user looks: a Warning event
//! `ReconcileFailed` on the engine naming the resource and the account.

use crate::support;

use std::process::Command;

use blaze_devcluster::{ApiServer, Config};
use blaze_testing::{Proc, eventually, free_addr};
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use support::{MANAGER, apply, client, install_crds};

/// The install manifest's objects that give the operator its identity and rights.
fn operator_rbac() -> Vec<Value> {
    serde_saphyr::from_multiple::<Value>(include_str!("../../../manifests/install.yaml"))
        .unwrap()
        .into_iter()
        .filter(|d| {
            let kind = d["kind"].as_str().unwrap_or("");
            let name = d["metadata"]["name"].as_str().unwrap_or("");
            matches!(kind, "Namespace" | "ServiceAccount" | "ClusterRole" | "ClusterRoleBinding")
                && (name == "blaze-operator" || name == "blaze-system")
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_missing_a_permission_says_so_on_the_engine() {
    let dir = tempfile::tempdir().unwrap();
    let admin_config = dir.path().join("kubeconfig");
    let config = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        kubeconfig: Some(admin_config.clone()),
        ..Default::default()
    };
    let server = ApiServer::start(config).await.unwrap();
    let admin = client(&admin_config).await;
    install_crds(&admin).await;

    // The operator's RBAC from the install manifest, without the rule on Services.
    let mut objects = operator_rbac();
    assert_eq!(objects.len(), 4, "{objects:?}");
    let role = objects.iter_mut().find(|o| o["kind"] == "ClusterRole").unwrap();
    let rules = role["rules"].as_array_mut().unwrap();
    let before = rules.len();
    rules.retain(|r| !r["resources"].as_array().unwrap().iter().any(|x| x == "services"));
    assert_eq!(rules.len(), before - 1, "one rule names services");
    for o in &objects {
        let o: DynamicObject = serde_json::from_value(o.clone()).unwrap();
        let gvk = kube::core::GroupVersionKind::try_from(o.types.as_ref().unwrap()).unwrap();
        let (resource, caps) = kube::discovery::pinned_kind(&admin, &gvk).await.unwrap();
        let api: Api<DynamicObject> = match (caps.scope, o.metadata.namespace.as_deref()) {
            (kube::discovery::Scope::Namespaced, Some(ns)) => {
                Api::namespaced_with(admin.clone(), ns, &resource)
            }
            _ => Api::all_with(admin.clone(), &resource),
        };
        let name = o.metadata.name.clone().unwrap();
        eventually(&format!("{} applied", gvk.kind), 30, async || {
            api.patch(&name, &PatchParams::apply(MANAGER).force(), &Patch::Apply(&o)).await.ok()
        })
        .await;
    }

    // A kubeconfig of the operator's ServiceAccount.
    let accounts: Api<ServiceAccount> = Api::namespaced(admin.clone(), "blaze-system");
    let request = TokenRequest { spec: Some(TokenRequestSpec::default()), ..Default::default() };
    let token = accounts
        .create_token_request("blaze-operator", &PostParams::default(), &request)
        .await
        .unwrap()
        .status
        .unwrap()
        .token
        .unwrap();
    let operator_config = dir.path().join("operator-kubeconfig");
    let yaml = blaze_devcluster::kubeconfig_yaml(server.addr(), &token, server.ca_pem());
    std::fs::write(&operator_config, yaml).unwrap();

    let metrics = free_addr();
    let _operator = Proc::spawn(
        Command::new(env!("CARGO_BIN_EXE_blaze-operator"))
            .args(["run", "--leader-elect", "false", "--metrics-listen", &metrics])
            .env("KUBECONFIG", &operator_config)
            .env_remove("BLAZE_NAMESPACE")
            .env_remove("KUBERNETES_SERVICE_HOST"),
        metrics.clone(),
    );
    let engine = json!({"kind": "llm", "model": {"source": "file:///models/tiny.gguf"}});
    apply(&admin, "BlazeEngine", "tiny", engine).await;

    let events: Api<Event> = Api::namespaced(admin.clone(), "default");
    let note = eventually("a ReconcileFailed event on the engine", 60, async || {
        let list = events.list(&ListParams::default()).await.ok()?;
        list.items.into_iter().find_map(|e| {
            let about = e.regarding.as_ref()?;
            (e.reason.as_deref() == Some("ReconcileFailed")
                && about.kind.as_deref() == Some("BlazeEngine")
                && about.name.as_deref() == Some("tiny"))
            .then(|| e.note.unwrap_or_default())
        })
    })
    .await;
    let account = r#"User "system:serviceaccount:blaze-system:blaze-operator""#;
    assert!(note.contains("services") && note.contains("forbidden"), "{note}");
    assert!(note.contains(account), "{note}");
    assert_eq!(
        events
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .iter()
            .filter(|e| e.reason.as_deref() == Some("ReconcileFailed"))
            .count(),
        1,
        "one event for the first failure"
    );
}
