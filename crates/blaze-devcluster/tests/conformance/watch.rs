//! Watch: events in order from a resourceVersion, selectors, bookmarks, and 410 Gone after
//! the history is compacted, which kube-runtime's watcher answers with a re-list.

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{
    Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::json;

use super::common::start;

fn cm(name: &str, app: &str) -> ConfigMap {
    serde_json::from_value(json!({"metadata": {"name": name, "labels": {"app": app}}})).unwrap()
}

#[tokio::test]
async fn watch_from_a_version_sees_changes_in_order() {
    let (server, client) = start().await;
    let api: Api<ConfigMap> = Api::namespaced(client, "default");
    let rv = api.list(&ListParams::default()).await.unwrap().metadata.resource_version.unwrap();
    api.create(&PostParams::default(), &cm("a", "web")).await.unwrap();
    api.create(&PostParams::default(), &cm("b", "db")).await.unwrap();
    // Relabelling moves an object out of and back into the selection.
    let relabel = |app: &str| Patch::Merge(json!({"metadata": {"labels": {"app": app}}}));
    api.patch("a", &PatchParams::default(), &relabel("db")).await.unwrap();
    api.patch("a", &PatchParams::default(), &relabel("web")).await.unwrap();
    api.delete("a", &DeleteParams::default()).await.unwrap();
    let wp = WatchParams::default().labels("app=web").timeout(5);
    let mut stream = api.watch(&wp, &rv).await.unwrap().boxed();
    let mut seen = Vec::new();
    while seen.len() < 4 {
        match stream.try_next().await.unwrap().unwrap() {
            WatchEvent::Added(c) => seen.push(format!("ADDED {}", c.metadata.name.unwrap())),
            WatchEvent::Deleted(c) => seen.push(format!("DELETED {}", c.metadata.name.unwrap())),
            WatchEvent::Bookmark(_) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(seen, ["ADDED a", "DELETED a", "ADDED a", "DELETED a"]);
    server.shutdown().await;
}

#[tokio::test]
async fn compacted_history_answers_410_and_the_watcher_relists() {
    let (server, client) = start().await;
    let api: Api<ConfigMap> = Api::namespaced(client, "default");
    let rv = api.list(&ListParams::default()).await.unwrap().metadata.resource_version.unwrap();
    api.create(&PostParams::default(), &cm("a", "web")).await.unwrap();
    server.compact().unwrap();
    let mut stream = api.watch(&WatchParams::default(), &rv).await.unwrap().boxed();
    match stream.try_next().await.unwrap().unwrap() {
        WatchEvent::Error(e) => assert_eq!((e.code, e.reason.as_str()), (410, "Expired")),
        other => panic!("expected 410, got {other:?}"),
    }

    // kube-runtime's watcher starts over with a list and then sees new objects.
    let mut objects = watcher(api.clone(), watcher::Config::default()).applied_objects().boxed();
    let first = objects.try_next().await.unwrap().unwrap();
    assert_eq!(first.metadata.name.as_deref(), Some("a"));
    server.compact().unwrap();
    api.create(&PostParams::default(), &cm("b", "web")).await.unwrap();
    let next = tokio::time::timeout(std::time::Duration::from_secs(20), objects.try_next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(next.metadata.name.as_deref(), Some("b"));
    server.shutdown().await;
}
