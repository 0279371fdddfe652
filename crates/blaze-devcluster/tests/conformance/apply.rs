//! Server-side apply with managedFields and conflicts; merge, JSON and strategic merge patch.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;

use super::common::{start, status_of};

fn deployment(replicas: i32) -> serde_json::Value {
    json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "labels": {"team": "a"}},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [
                {"name": "main", "image": "main:1", "env": [{"name": "A", "value": "1"}]},
                {"name": "side", "image": "side:1"}]}}}})
}

#[tokio::test]
async fn server_side_apply_owns_conflicts_and_removes() {
    let (server, client) = start().await;
    let api: Api<Deployment> = Api::namespaced(client, "default");
    let created =
        api.patch("web", &PatchParams::apply("alice"), &Patch::Apply(deployment(2))).await.unwrap();
    let managers: Vec<String> = created
        .metadata
        .managed_fields
        .unwrap()
        .iter()
        .map(|m| m.manager.clone().unwrap())
        .collect();
    assert_eq!(managers, ["alice"]);

    let bob = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"}, "spec": {"replicas": 5}});
    let e =
        status_of(api.patch("web", &PatchParams::apply("bob"), &Patch::Apply(bob.clone())).await);
    assert_eq!((e.code, e.reason.as_str()), (409, "Conflict"));
    assert!(e.message.contains("conflict with \"alice\""), "{}", e.message);
    assert!(e.message.contains(".spec.replicas"), "{}", e.message);
    let forced =
        api.patch("web", &PatchParams::apply("bob").force(), &Patch::Apply(bob)).await.unwrap();
    assert_eq!(forced.spec.replicas, Some(5));

    // Alice stops applying the sidecar and her label: both go; replicas stays bob's.
    let mut less = deployment(2);
    less["spec"].as_object_mut().unwrap().remove("replicas");
    less["metadata"].as_object_mut().unwrap().remove("labels");
    less["spec"]["template"]["spec"]["containers"].as_array_mut().unwrap().pop();
    let after = api.patch("web", &PatchParams::apply("alice"), &Patch::Apply(less)).await.unwrap();
    let spec = after.spec;
    assert_eq!(spec.replicas, Some(5));
    let names: Vec<String> =
        spec.template.spec.unwrap().containers.iter().map(|c| c.name.clone()).collect();
    assert_eq!(names, ["main"]);
    assert!(after.metadata.labels.unwrap_or_default().is_empty());
    server.shutdown().await;
}

/// An apply body without `metadata.name` names the object by the URL; a different name is a
/// 400, as on a real server.
#[tokio::test]
async fn apply_takes_the_name_from_the_url() {
    let (server, client) = start().await;
    let api: Api<ConfigMap> = Api::namespaced(client, "default");
    let nameless = json!({"apiVersion": "v1", "kind": "ConfigMap", "data": {"k": "v"}});
    let cm = api.patch("cfg", &PatchParams::apply("m"), &Patch::Apply(nameless)).await.unwrap();
    assert_eq!(cm.metadata.name.as_deref(), Some("cfg"));
    let other = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}});
    let e = status_of(api.patch("cfg", &PatchParams::apply("m"), &Patch::Apply(other)).await);
    assert_eq!(e.code, 400);
    assert!(e.message.contains("does not match the name on the URL"), "{}", e.message);
    server.shutdown().await;
}

#[tokio::test]
async fn merge_json_and_strategic_patches() {
    let (server, client) = start().await;
    let api: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let d: Deployment = serde_json::from_value(deployment(1)).unwrap();
    api.create(&PostParams::default(), &d).await.unwrap();
    let smp = json!({"spec": {"template": {"spec": {"containers": [{"name": "main", "env": [{"name": "B", "value": "2"}]}]}}}});
    let p = api.patch("web", &PatchParams::default(), &Patch::Strategic(smp)).await.unwrap();
    let containers = p.spec.template.spec.unwrap().containers;
    assert_eq!(containers.len(), 2, "containers merge by name");
    let env: Vec<String> =
        containers[0].env.clone().unwrap().iter().map(|e| e.name.clone()).collect();
    assert_eq!(env, ["A", "B"]);

    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let cm: ConfigMap =
        serde_json::from_value(json!({"metadata": {"name": "c"}, "data": {"a": "1", "b": "2"}}))
            .unwrap();
    cms.create(&PostParams::default(), &cm).await.unwrap();
    let merged = cms
        .patch("c", &PatchParams::default(), &Patch::Merge(json!({"data": {"a": null, "c": "3"}})))
        .await
        .unwrap();
    assert_eq!(merged.data.unwrap().keys().cloned().collect::<Vec<_>>(), ["b", "c"]);
    let json_patch = |ops: serde_json::Value| {
        http::Request::patch("/api/v1/namespaces/default/configmaps/c")
            .header("content-type", "application/json-patch+json")
            .body(serde_json::to_vec(&ops).unwrap())
            .unwrap()
    };
    let text = client
        .request_text(json_patch(json!([{"op": "replace", "path": "/data/b", "value": "x"}])))
        .await
        .unwrap();
    assert_eq!(serde_json::from_str::<serde_json::Value>(&text).unwrap()["data"]["b"], "x");
    let failing = client
        .request_text(json_patch(json!([{"op": "test", "path": "/data/b", "value": "nope"}])))
        .await;
    assert_eq!(status_of(failing).code, 422);
    server.shutdown().await;
}
