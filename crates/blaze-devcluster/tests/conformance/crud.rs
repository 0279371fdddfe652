//! CRUD, optimistic concurrency, selectors, pagination, discovery, auth and Status errors.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Node, Pod, Secret};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, DynamicObject, GroupVersionKind};
use kube::discovery::Discovery;
use serde_json::json;

use super::common::{client_for, start, status_of};

fn cm(name: &str, labels: &[(&str, &str)]) -> ConfigMap {
    serde_json::from_value(json!({"metadata": {"name": name,
        "labels": labels.iter().map(|(k, v)| ((*k).to_owned(), json!(v))).collect::<serde_json::Map<_, _>>()},
        "data": {"k": "v"}}))
    .unwrap()
}

#[tokio::test]
async fn configmap_lifecycle_and_errors() {
    let (server, client) = start().await;
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let created = api.create(&PostParams::default(), &cm("a", &[("app", "web")])).await.unwrap();
    let meta = &created.metadata;
    assert!(meta.uid.is_some() && meta.creation_timestamp.is_some());
    assert_eq!(meta.namespace.as_deref(), Some("default"));

    let dup = status_of(api.create(&PostParams::default(), &cm("a", &[])).await);
    assert_eq!((dup.code, dup.reason.as_str()), (409, "AlreadyExists"));
    assert_eq!(dup.message, "configmaps \"a\" already exists");

    // A replace with a stale resourceVersion is a 409 Conflict.
    let mut changed = created.clone();
    changed.data = Some(BTreeMap::from([("k".into(), "v2".into())]));
    let updated = api.replace("a", &PostParams::default(), &changed).await.unwrap();
    let rv = |c: &ConfigMap| c.metadata.resource_version.clone().unwrap().parse::<u64>().unwrap();
    assert!(rv(&updated) > rv(&created));
    let stale = status_of(api.replace("a", &PostParams::default(), &changed).await);
    assert_eq!((stale.code, stale.reason.as_str()), (409, "Conflict"));

    // A no-op update keeps the version (no churn for watchers).
    let same = api.replace("a", &PostParams::default(), &updated).await.unwrap();
    assert_eq!(rv(&same), rv(&updated));

    let missing = status_of(api.get("nope").await);
    assert_eq!((missing.code, missing.reason.as_str()), (404, "NotFound"));
    let in_missing_ns: Api<ConfigMap> = Api::namespaced(client.clone(), "nowhere");
    let e = status_of(in_missing_ns.create(&PostParams::default(), &cm("x", &[])).await);
    assert_eq!((e.code, e.message.as_str()), (404, "namespaces \"nowhere\" not found"));

    api.delete("a", &DeleteParams::default()).await.unwrap();
    assert_eq!(status_of(api.get("a").await).code, 404);
    server.shutdown().await;
}

#[tokio::test]
async fn selectors_and_pagination() {
    let (server, client) = start().await;
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    for i in 0..7 {
        let tier = if i % 2 == 0 { "even" } else { "odd" };
        api.create(&PostParams::default(), &cm(&format!("c{i}"), &[("tier", tier)])).await.unwrap();
    }
    let even = api.list(&ListParams::default().labels("tier=even")).await.unwrap();
    assert_eq!(even.items.len(), 4);
    let notin = api.list(&ListParams::default().labels("tier notin (even)")).await.unwrap();
    assert_eq!(notin.items.len(), 3);
    let one = api.list(&ListParams::default().fields("metadata.name=c3")).await.unwrap();
    assert_eq!(one.items.len(), 1);
    let bad = status_of(api.list(&ListParams::default().labels("tier in (a")).await);
    assert_eq!((bad.code, bad.reason.as_str()), (400, "BadRequest"));

    let mut names = Vec::new();
    let mut lp = ListParams::default().limit(3);
    loop {
        let page = api.list(&lp).await.unwrap();
        assert!(page.items.len() <= 3);
        names.extend(page.items.iter().map(|c| c.metadata.name.clone().unwrap()));
        match page.metadata.continue_ {
            Some(c) if !c.is_empty() => lp = lp.continue_token(&c),
            _ => break,
        }
    }
    assert_eq!(names, ["c0", "c1", "c2", "c3", "c4", "c5", "c6"]);
    // An exact resourceVersion that is not the newest is read as it was.
    let old = api.list(&ListParams::default()).await.unwrap().metadata.resource_version.unwrap();
    api.create(&PostParams::default(), &cm("later", &[])).await.unwrap();
    let exact = ListParams::default().at(&old).matching(kube::api::VersionMatch::Exact);
    let then = api.list(&exact).await.unwrap();
    assert_eq!((then.items.len(), then.metadata.resource_version), (7, Some(old)));
    server.shutdown().await;
}

#[tokio::test]
async fn field_selectors_only_on_the_fields_a_kind_supports() {
    let (server, client) = start().await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let e = status_of(cms.list(&ListParams::default().fields("status.phase=x")).await);
    assert_eq!((e.code, e.reason.as_str()), (400, "BadRequest"));
    assert_eq!(
        e.message,
        r#""status.phase" is not a known field selector: only "metadata.name", "metadata.namespace""#
    );
    let all_cms: Api<ConfigMap> = Api::all(client.clone());
    let watched = all_cms.watch(&kube::api::WatchParams::default().fields("data.k=v"), "0").await;
    assert_eq!(status_of(watched.map(|_| ())).code, 400, "a watch is refused the same way");

    let pods: Api<Pod> = Api::all(client.clone());
    let on_node = ListParams::default().fields("spec.nodeName=n1,status.phase!=Failed");
    assert!(pods.list(&on_node).await.unwrap().items.is_empty());
    let e = status_of(pods.list(&ListParams::default().fields("status.hostIP=10.0.0.1")).await);
    assert_eq!((e.code, e.message.as_str()), (400, "field label not supported: status.hostIP"));
    let nodes: Api<Node> = Api::all(client.clone());
    let e = status_of(nodes.list(&ListParams::default().fields("metadata.namespace=x")).await);
    assert_eq!(
        e.message, "field label not supported: metadata.namespace",
        "nodes are not namespaced"
    );
    let schedulable = ListParams::default().fields("spec.unschedulable=false");
    assert!(nodes.list(&schedulable).await.is_ok());

    let secrets: Api<Secret> = Api::namespaced(client, "default");
    let s: Secret = serde_json::from_value(json!({"metadata": {"name": "s"}})).unwrap();
    secrets.create(&PostParams::default(), &s).await.unwrap();
    let opaque = secrets.list(&ListParams::default().fields("type=Opaque")).await.unwrap();
    assert_eq!(opaque.items.len(), 1, "an unset type reads as the default, Opaque");
    server.shutdown().await;
}

#[tokio::test]
async fn deployment_generation_status_and_scale() {
    let (server, client) = start().await;
    let api: Api<Deployment> = Api::namespaced(client, "default");
    let d: Deployment = serde_json::from_value(json!({"metadata": {"name": "web"}, "spec": {
        "selector": {"matchLabels": {"app": "web"}},
        "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "i:1"}]}}},
        "status": {"replicas": 9}})).unwrap();
    let d = api.create(&PostParams::default(), &d).await.unwrap();
    assert_eq!(d.metadata.generation, Some(1));
    assert_eq!(d.spec.replicas, Some(1), "replicas defaults to 1");
    assert!(d.status.is_none(), "status is not set through the main endpoint");

    let st = api
        .patch_status(
            "web",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"status": {"replicas": 1, "readyReplicas": 1}, "spec": {"replicas": 5}}),
            ),
        )
        .await
        .unwrap();
    assert_eq!(st.status.as_ref().unwrap().ready_replicas, Some(1));
    assert_eq!(st.spec.replicas, Some(1), "the status endpoint ignores spec");
    assert_eq!(st.metadata.generation, Some(1), "status writes do not bump generation");

    let scaled = api
        .patch_scale(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 3}})),
        )
        .await
        .unwrap();
    assert_eq!(scaled.spec.unwrap().replicas, Some(3));
    assert_eq!(scaled.status.unwrap().selector.as_deref(), Some("app=web"));
    let after = api.get("web").await.unwrap();
    assert_eq!(after.metadata.generation, Some(2), "a spec change bumps generation");
    assert_eq!(after.status.unwrap().ready_replicas, Some(1), "the main endpoint keeps status");
    server.shutdown().await;
}

#[tokio::test]
async fn discovery_dynamic_api_and_auth() {
    let (server, client) = start().await;
    let discovery = Discovery::new(client.clone()).run().await.unwrap();
    let (ar, caps) =
        discovery.resolve_gvk(&GroupVersionKind::gvk("apps", "v1", "Deployment")).unwrap();
    assert_eq!(ar.plural, "deployments");
    assert!(
        caps.subresources
            .iter()
            .any(|(s, _)| s.plural == "deployments/scale" || s.plural == "scale")
    );
    assert!(
        discovery
            .resolve_gvk(&GroupVersionKind::gvk("coordination.k8s.io", "v1", "Lease"))
            .is_some()
    );

    let lease = ApiResource::from_gvk(&GroupVersionKind::gvk("coordination.k8s.io", "v1", "Lease"));
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), "default", &lease);
    let obj: DynamicObject =
        serde_json::from_value(json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "leader"}, "spec": {"holderIdentity": "me"}}))
        .unwrap();
    api.create(&PostParams::default(), &obj).await.unwrap();
    let got = api.get("leader").await.unwrap();
    assert_eq!(got.data["spec"]["holderIdentity"], "me");

    let version = client.apiserver_version().await.unwrap();
    assert_eq!(version.major, "1");

    let bad = server.kubeconfig().replace(server.token(), "wrong-token");
    let intruder = client_for(&bad).await;
    let e = status_of(Api::<Namespace>::all(intruder).list(&ListParams::default()).await);
    assert_eq!((e.code, e.reason.as_str()), (401, "Unauthorized"));
    server.shutdown().await;
}

#[tokio::test]
async fn dry_run_stores_nothing_and_pod_logs_come_from_the_log_source() {
    use kube::api::LogParams;
    let (server, client) = start().await;
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let pp = PostParams { dry_run: true, ..Default::default() };
    let dry = api.create(&pp, &cm("dry", &[])).await.unwrap();
    assert_eq!(dry.metadata.name.as_deref(), Some("dry"));
    assert_eq!(status_of(api.get("dry").await).code, 404);

    server.state().set_log_source(std::sync::Arc::new(|ns: &str, pod: &str, c: Option<&str>| {
        Some(format!("{ns}/{pod}/{}: hello\n", c.unwrap_or("-")))
    }));
    let pods: Api<Pod> = Api::namespaced(client, "default");
    let pod: Pod = serde_json::from_value(
        json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "i"}]}}),
    )
    .unwrap();
    let created = pods.create(&PostParams::default(), &pod).await.unwrap();
    assert_eq!(created.status.unwrap().phase.as_deref(), Some("Pending"));
    let lp = LogParams { container: Some("c".into()), ..Default::default() };
    assert_eq!(pods.logs("p", &lp).await.unwrap(), "default/p/c: hello\n");
    server.shutdown().await;
}

/// `pods/NAME/binding` sets `spec.nodeName` once; a second binding, or one whose uid names
/// another pod, is a 409.
#[tokio::test]
async fn pods_are_bound_once_through_the_binding_subresource() {
    let (server, client) = start().await;
    let pods: Api<Pod> = Api::namespaced(client, "default");
    let pod: Pod = serde_json::from_value(json!({"metadata": {"name": "p"},
        "spec": {"containers": [{"name": "c", "image": "app:1"}]}}))
    .unwrap();
    let uid = pods.create(&PostParams::default(), &pod).await.unwrap().metadata.uid.unwrap();
    let binding = |node: &str, uid: &str| {
        json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": "p", "uid": uid},
            "target": {"apiVersion": "v1", "kind": "Node", "name": node}})
    };
    let pp = PostParams::default();
    let wrong = binding("n1", "nope");
    let e = status_of(
        pods.create_subresource::<_, serde_json::Value>("binding", "p", &pp, &wrong).await,
    );
    assert_eq!(e.code, 409);
    assert!(e.message.contains("Precondition failed: UID in precondition"), "{}", e.message);

    pods.create_subresource::<_, serde_json::Value>("binding", "p", &pp, &binding("n1", &uid))
        .await
        .unwrap();
    assert_eq!(pods.get("p").await.unwrap().spec.unwrap().node_name.as_deref(), Some("n1"));

    let again = binding("n2", &uid);
    let e = status_of(
        pods.create_subresource::<_, serde_json::Value>("binding", "p", &pp, &again).await,
    );
    assert_eq!(e.code, 409);
    assert!(e.message.contains("is already assigned to node \"n1\""), "{}", e.message);
    server.shutdown().await;
}
