//! Paged lists read at one version: every page of a list comes from the state at its first
//! page's resourceVersion however the collection changes meanwhile; an expired continue token
//! is `410 Expired` with a token that goes on from the newest state, as on a real cluster.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, DeleteParams, ListParams, PostParams, VersionMatch, WatchEvent, WatchParams};
use rand::{Rng, SeedableRng};
use serde_json::json;

use super::common::{eventually, start, status_of};

fn cm(name: &str, v: u64) -> ConfigMap {
    serde_json::from_value(json!({"metadata": {"name": name}, "data": {"v": v.to_string()}}))
        .unwrap()
}

/// What a test compares: name to (data, resourceVersion).
type State = BTreeMap<String, (String, String)>;

fn entry(c: &ConfigMap) -> (String, (String, String)) {
    let data = c.data.as_ref().and_then(|d| d.get("v")).cloned().unwrap_or_default();
    (c.metadata.name.clone().unwrap(), (data, c.metadata.resource_version.clone().unwrap()))
}

/// Pages through `api` `limit` at a time; every page must carry the first page's version.
/// Runs `between` after each page.
async fn paged(api: &Api<ConfigMap>, limit: u32, mut between: impl AsyncFnMut()) -> (u64, State) {
    let mut lp = ListParams::default().limit(limit);
    let (mut rv, mut out) = (None, State::new());
    loop {
        let page = api.list(&lp).await.unwrap();
        let page_rv = page.metadata.resource_version.clone().unwrap();
        assert_eq!(rv.get_or_insert_with(|| page_rv.clone()), &page_rv, "one version for all");
        out.extend(page.items.iter().map(entry));
        between().await;
        match page.metadata.continue_ {
            Some(c) if !c.is_empty() => lp = lp.continue_token(&c),
            _ => return (rv.unwrap().parse().unwrap(), out),
        }
    }
}

/// Changes the collection until stopped: updates, deletions and creations, counting them.
async fn churn(api: Api<ConfigMap>, stop: Arc<AtomicBool>, done: Arc<AtomicU64>) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(18);
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let name = format!("c{:02}", rng.random_range(0..30));
        let r = match rng.random_range(0..3) {
            0 => api.replace(&name, &PostParams::default(), &cm(&name, n)).await.map(drop),
            1 => api.delete(&name, &DeleteParams::default()).await.map(drop),
            _ => api.create(&PostParams::default(), &cm(&name, n)).await.map(drop),
        };
        // Updating or deleting what is not there and creating what is are fine: misses.
        if r.is_ok() {
            done.fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paged_list_racing_writes_equals_the_state_at_its_first_page() {
    let (server, client) = start().await;
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    for i in (0..30).step_by(2) {
        let name = format!("c{i:02}");
        api.create(&PostParams::default(), &cm(&name, 0)).await.unwrap();
    }
    // The reference: the state at the start plus every change a watch reports, up to a version.
    let start_list = api.list(&ListParams::default()).await.unwrap();
    let start_rv = start_list.metadata.resource_version.clone().unwrap();
    let initial: State = start_list.items.iter().map(entry).collect();
    let events = Arc::new(parking_lot::Mutex::new(Vec::<(u64, bool, ConfigMap)>::new()));
    let mut watch = api.watch(&WatchParams::default(), &start_rv).await.unwrap().boxed();
    let seen = events.clone();
    tokio::spawn(async move {
        while let Some(Ok(e)) = watch.next().await {
            let (gone, obj) = match e {
                WatchEvent::Added(o) | WatchEvent::Modified(o) => (false, o),
                WatchEvent::Deleted(o) => (true, o),
                _ => continue,
            };
            let rv = obj.metadata.resource_version.clone().unwrap().parse().unwrap();
            seen.lock().push((rv, gone, obj));
        }
    });

    let (stop, done) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicU64::new(0)));
    let writer = tokio::spawn(churn(api.clone(), stop.clone(), done.clone()));
    let mut lists = Vec::new();
    for _ in 0..3 {
        let before = done.load(Ordering::Relaxed);
        let listed = paged(&api, 2, async || {
            tokio::time::sleep(std::time::Duration::from_millis(15)).await;
        })
        .await;
        assert!(done.load(Ordering::Relaxed) > before + 3, "writes raced the pages");
        lists.push(listed);
    }
    stop.store(true, Ordering::Relaxed);
    writer.await.unwrap();
    let newest: u64 = api
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap()
        .parse()
        .unwrap();
    eventually("the watch reaches the newest version", 20, async || {
        events.lock().last().is_some_and(|(rv, _, _)| *rv >= newest).then_some(())
    })
    .await;

    let events = std::mem::take(&mut *events.lock());
    for (rv, listed) in lists {
        let mut want = initial.clone();
        for (_, gone, obj) in events.iter().take_while(|(erv, _, _)| *erv <= rv) {
            let (name, value) = entry(obj);
            if *gone {
                want.remove(&name);
            } else {
                want.insert(name, value);
            }
        }
        assert_eq!(listed, want, "the pages read at {rv} are the state at {rv}");
        assert!(newest > rv);
    }
    server.shutdown().await;
}

#[tokio::test]
async fn an_expired_continue_token_is_410_with_a_token_from_the_newest_state() {
    let (server, client) = start().await;
    let api: Api<ConfigMap> = Api::namespaced(client, "default");
    for name in ["a", "b", "c", "d"] {
        api.create(&PostParams::default(), &cm(name, 0)).await.unwrap();
    }
    let first = api.list(&ListParams::default().limit(2)).await.unwrap();
    assert_eq!(first.metadata.remaining_item_count, Some(2));
    let token = first.metadata.continue_.clone().unwrap();
    let selected =
        api.list(&ListParams::default().limit(1).labels("!missing")).await.unwrap().metadata;
    assert!(selected.continue_.is_some());
    assert_eq!(selected.remaining_item_count, None, "unknown with a selector, as on a real server");

    api.create(&PostParams::default(), &cm("e", 0)).await.unwrap();
    server.compact().unwrap();
    let gone = status_of(api.list(&ListParams::default().limit(2).continue_token(&token)).await);
    assert_eq!((gone.code, gone.reason.as_str()), (410, "Expired"));
    assert_eq!(
        gone.message,
        "The provided continue parameter is too old to display a consistent list result. You can \
         start a new list without the continue parameter, or use the continue token in this \
         response to retrieve the remainder of the results. Continuing with the provided token \
         results in an inconsistent list - objects that were created, modified, or deleted \
         between the time the first chunk was returned and now may show up in the list."
    );
    let fresh = gone.metadata.and_then(|m| m.continue_).expect("a token to go on with");
    let rest = api.list(&ListParams::default().limit(5).continue_token(&fresh)).await.unwrap();
    let names: Vec<String> = rest.items.iter().map(|c| c.metadata.name.clone().unwrap()).collect();
    assert_eq!(names, ["c", "d", "e"], "the remainder, from the newest state");

    let old = first.metadata.resource_version.unwrap();
    let exact = ListParams::default().at(&old).matching(VersionMatch::Exact);
    let e = status_of(api.list(&exact).await);
    assert_eq!(
        (e.code, e.message.as_str()),
        (410, "The resourceVersion for the provided list is too old.")
    );
    server.shutdown().await;
}
