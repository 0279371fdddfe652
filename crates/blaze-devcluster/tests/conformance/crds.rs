//! CRDs: registration serves the resource at once, schema validation (types, required, enums,
//! bounds, patterns) with the real server's messages, defaulting, pruning, CEL rules including
//! transition rules, status and scale subresources, and removal with the CRD.

use std::path::{Path, PathBuf};

use blaze_api::{BlazeEngine, BlazeRouter};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Client;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, DynamicObject, GroupVersionKind};
use kube::runtime::wait::{await_condition, conditions};
use serde_json::{Value, json};

use super::common::{eventually, start, status_of};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn yaml_docs(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap();
    let docs: Vec<Value> = serde_saphyr::from_multiple(&text).unwrap();
    docs.into_iter().filter(|v| !v.is_null()).collect()
}

fn yaml_files(dir: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo().join(dir))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

/// Installs the Blaze CRDs and waits until they are established.
pub async fn install_crds(client: &Client) {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in blaze_api::crds::all() {
        crds.create(&PostParams::default(), &crd).await.unwrap();
        let name = crd.metadata.name.clone().unwrap();
        let established = await_condition(crds.clone(), &name, conditions::is_crd_established());
        tokio::time::timeout(std::time::Duration::from_secs(10), established)
            .await
            .unwrap()
            .unwrap();
    }
}

fn dynamic(client: &Client, doc: &Value) -> Api<DynamicObject> {
    let (group, version) =
        doc["apiVersion"].as_str().unwrap().split_once('/').unwrap_or(("", "v1"));
    let gvk = GroupVersionKind::gvk(group, version, doc["kind"].as_str().unwrap());
    let ar = ApiResource::from_gvk(&gvk);
    Api::namespaced_with(client.clone(), "default", &ar)
}

#[tokio::test]
async fn examples_are_accepted_defaulted_and_pruned() {
    let (server, client) = start().await;
    install_crds(&client).await;
    for file in yaml_files("manifests/examples") {
        for doc in yaml_docs(&file) {
            let obj: DynamicObject = serde_json::from_value(doc.clone()).unwrap();
            let api = if doc["kind"] == "ConfigMap" || doc["kind"] == "Secret" {
                let ar = ApiResource::from_gvk(&GroupVersionKind::gvk(
                    "",
                    "v1",
                    doc["kind"].as_str().unwrap(),
                ));
                Api::namespaced_with(client.clone(), "default", &ar)
            } else {
                dynamic(&client, &doc)
            };
            api.create(&PostParams::default(), &obj)
                .await
                .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        }
    }
    let routers: Api<BlazeRouter> = Api::namespaced(client.clone(), "default");
    let list = routers.list(&ListParams::default()).await.unwrap();
    assert!(!list.items.is_empty());

    let r: BlazeRouter =
        serde_json::from_value(json!({"apiVersion": "blaze.ai/v1alpha1", "kind": "BlazeRouter",
        "metadata": {"name": "defaults"}, "spec": {"engines": {"names": ["a"]}, "notAField": 1}}))
        .unwrap_or_else(|_| {
            serde_json::from_value(json!({"apiVersion": "blaze.ai/v1alpha1", "kind": "BlazeRouter",
            "metadata": {"name": "defaults"}, "spec": {"engines": {"names": ["a"]}}}))
            .unwrap()
        });
    let raw = dynamic(&client, &json!({"apiVersion": "blaze.ai/v1alpha1", "kind": "BlazeRouter"}));
    let mut with_junk: DynamicObject =
        serde_json::from_value(serde_json::to_value(&r).unwrap()).unwrap();
    with_junk.data["spec"]["notAField"] = json!(1);
    let stored = raw.create(&PostParams::default(), &with_junk).await.unwrap();
    assert!(stored.data["spec"].get("notAField").is_none(), "unknown fields are pruned");
    assert_eq!(stored.data["spec"]["strategy"], "adaptive", "defaults come from the schema");
    assert_eq!(stored.data["spec"]["circuitBreaker"]["openSeconds"], 30);
    server.shutdown().await;
}

#[tokio::test]
async fn invalid_manifests_get_the_servers_messages() {
    let (server, client) = start().await;
    install_crds(&client).await;
    for file in yaml_files("manifests/invalid") {
        let text = std::fs::read_to_string(&file).unwrap();
        let expect = text.lines().find_map(|l| l.strip_prefix("# expect: ")).unwrap().to_owned();
        let doc = yaml_docs(&file).remove(0);
        if expect.contains("unknown field") {
            // kubectl's default: strict field validation refuses what the schema lacks.
            let path = format!(
                "/apis/blaze.ai/v1alpha1/namespaces/default/{}?fieldValidation=Strict",
                if doc["kind"] == "BlazeEngine" { "blazeengines" } else { "blazerouters" }
            );
            let req = http::Request::post(path)
                .header("content-type", "application/json")
                .body(serde_json::to_vec(&doc).unwrap())
                .unwrap();
            let e = status_of(client.request_text(req).await);
            assert_eq!(e.code, 400, "{}", file.display());
            let field = expect.split(':').next().unwrap();
            assert!(
                e.message.contains(&format!("unknown field \"{field}\"")),
                "{}: {}",
                file.display(),
                e.message
            );
            continue;
        }
        let obj: DynamicObject = serde_json::from_value(doc.clone()).unwrap();
        let e = status_of(dynamic(&client, &doc).create(&PostParams::default(), &obj).await);
        assert_eq!((e.code, e.reason.as_str()), (422, "Invalid"), "{}", file.display());
        let causes = e.details.map(|d| d.causes).unwrap_or_default();
        match expect.strip_prefix('/') {
            // A schema error: the expectation names the field as a JSON pointer; the server
            // names it as a path, with the real server's wording.
            Some(pointer) => {
                let (ptr, _) = pointer.split_once(':').unwrap();
                // `a/0/b` is `a[0].b`.
                let mut field = String::new();
                for seg in ptr.split('/') {
                    if seg.parse::<usize>().is_ok() {
                        field.push_str(&format!("[{seg}]"));
                    } else {
                        if !field.is_empty() {
                            field.push('.');
                        }
                        field.push_str(seg);
                    }
                }
                if expect.contains("is a required property") {
                    let missing = expect.split('"').nth(1).unwrap();
                    field = format!("{field}.{missing}");
                }
                assert!(
                    causes.iter().any(|c| c.field == field),
                    "{}: no cause for {field} in {causes:?}",
                    file.display()
                );
            }
            None => assert!(
                e.message.contains(&expect),
                "{}: expected {expect:?} in {:?}",
                file.display(),
                e.message
            ),
        }
    }
    server.shutdown().await;
}

#[tokio::test]
async fn subresources_generation_transition_rules_and_crd_removal() {
    let (server, client) = start().await;
    install_crds(&client).await;
    let api: Api<BlazeEngine> = Api::namespaced(client.clone(), "default");
    let e: BlazeEngine =
        serde_json::from_value(json!({"apiVersion": "blaze.ai/v1alpha1", "kind": "BlazeEngine",
        "metadata": {"name": "e"}, "spec": {"kind": "llm", "model": {"source": "file:///m.gguf"}}}))
        .unwrap();
    let created = api.create(&PostParams::default(), &e).await.unwrap();
    assert_eq!(created.metadata.generation, Some(1));

    let status = json!({"status": {"readyReplicas": 1, "selector": "app=e", "replicas": 1}});
    let s = api.patch_status("e", &PatchParams::default(), &Patch::Merge(status)).await.unwrap();
    assert_eq!(s.metadata.generation, Some(1));
    let scale = api.get_scale("e").await.unwrap();
    assert_eq!(scale.status.unwrap().selector.as_deref(), Some("app=e"));
    api.patch_scale("e", &PatchParams::default(), &Patch::Merge(json!({"spec": {"replicas": 4}})))
        .await
        .unwrap();
    let got = api.get("e").await.unwrap();
    assert_eq!(got.spec.replicas, 4);
    assert_eq!(got.metadata.generation, Some(2));

    let changed = api
        .patch("e", &PatchParams::default(), &Patch::Merge(json!({"spec": {"kind": "embedding"}})))
        .await;
    let err = status_of(changed);
    assert_eq!(err.code, 422);
    assert!(err.message.contains("spec.kind is immutable"), "{}", err.message);

    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.delete("blazeengines.blaze.ai", &DeleteParams::default()).await.unwrap();
    eventually("the resource to go away", 5, async || {
        (status_of(api.list(&ListParams::default()).await).code == 404).then_some(())
    })
    .await;
    server.shutdown().await;
}
