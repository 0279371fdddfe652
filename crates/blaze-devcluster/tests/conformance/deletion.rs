//! Finalizers, owner-reference garbage collection (background, foreground, orphan) and
//! namespace deletion.

use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, PropagationPolicy};
use serde_json::json;

use super::common::{eventually, start, status_of};

async fn owner_and_dependent(api: &Api<ConfigMap>, owner: &str) -> String {
    let o: ConfigMap = serde_json::from_value(json!({"metadata": {"name": owner}})).unwrap();
    let o = api.create(&PostParams::default(), &o).await.unwrap();
    let uid = o.metadata.uid.unwrap();
    let dep = format!("{owner}-child");
    let d: ConfigMap = serde_json::from_value(json!({"metadata": {"name": dep, "ownerReferences": [
        {"apiVersion": "v1", "kind": "ConfigMap", "name": owner, "uid": uid, "blockOwnerDeletion": true}]}})).unwrap();
    api.create(&PostParams::default(), &d).await.unwrap();
    dep
}

async fn gone(api: &Api<ConfigMap>, name: &str) {
    eventually(&format!("{name} to be deleted"), 10, async || {
        matches!(api.get_opt(name).await, Ok(None)).then_some(())
    })
    .await;
}

#[tokio::test]
async fn finalizers_block_removal_until_cleared() {
    let (server, client) = start().await;
    let api: Api<ConfigMap> = Api::namespaced(client, "default");
    let c: ConfigMap = serde_json::from_value(
        json!({"metadata": {"name": "f", "finalizers": ["blaze.ai/cleanup"]}}),
    )
    .unwrap();
    api.create(&PostParams::default(), &c).await.unwrap();
    api.delete("f", &DeleteParams::default()).await.unwrap();
    let marked = api.get("f").await.unwrap();
    assert!(marked.metadata.deletion_timestamp.is_some());
    api.patch(
        "f",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
    gone(&api, "f").await;
    server.shutdown().await;
}

#[tokio::test]
async fn owner_references_drive_garbage_collection() {
    let (server, client) = start().await;
    let api: Api<ConfigMap> = Api::namespaced(client, "default");

    let dep = owner_and_dependent(&api, "bg").await;
    api.delete("bg", &DeleteParams::background()).await.unwrap();
    gone(&api, &dep).await;

    let dep = owner_and_dependent(&api, "orph").await;
    api.delete("orph", &DeleteParams::orphan()).await.unwrap();
    gone(&api, "orph").await;
    let kept = api.get(&dep).await.unwrap();
    assert!(
        kept.metadata.owner_references.unwrap_or_default().is_empty(),
        "orphans lose the reference"
    );

    let dep = owner_and_dependent(&api, "fg").await;
    let blocker = json!({"metadata": {"finalizers": ["test/hold"]}});
    api.patch(&dep, &PatchParams::default(), &Patch::Merge(blocker)).await.unwrap();
    let dp = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Foreground),
        ..Default::default()
    };
    api.delete("fg", &dp).await.unwrap();
    eventually("the dependent to be marked", 10, async || {
        api.get(&dep).await.unwrap().metadata.deletion_timestamp.map(|_| ())
    })
    .await;
    let owner = api.get("fg").await.unwrap();
    assert!(owner.metadata.deletion_timestamp.is_some(), "the owner waits for its dependents");
    assert!(owner.metadata.finalizers.unwrap().contains(&"foregroundDeletion".to_owned()));
    api.patch(
        &dep,
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
    gone(&api, "fg").await;
    server.shutdown().await;
}

#[tokio::test]
async fn deleting_a_namespace_removes_its_contents() {
    let (server, client) = start().await;
    let nss: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": "scratch"}})).unwrap();
    nss.create(&PostParams::default(), &ns).await.unwrap();
    let api: Api<ConfigMap> = Api::namespaced(client, "scratch");
    let c: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "x"}})).unwrap();
    api.create(&PostParams::default(), &c).await.unwrap();
    nss.delete("scratch", &DeleteParams::default()).await.unwrap();
    eventually("the namespace to go", 10, async || {
        matches!(nss.get_opt("scratch").await, Ok(None)).then_some(())
    })
    .await;
    assert_eq!(status_of(api.get("x").await).code, 404);
    server.shutdown().await;
}
