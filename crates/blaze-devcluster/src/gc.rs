//! The garbage collector and the namespace controller ("Garbage Collection" in the Kubernetes
//! docs): dependents whose owners are all gone are deleted; `orphan` and `foregroundDeletion`
//! finalizers are honoured; a terminating namespace is emptied, then removed.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use crate::meta::{finalizers, is_deleting, owner_uids, uid_of};
use crate::resources::ResourceInfo;
use crate::server::State;
use crate::store::Inner;
use crate::writes::{DeleteOpts, Managed, Propagation, Writer};

/// Runs until shutdown, collecting whenever woken (and every few seconds as a safety net).
pub async fn run(st: Arc<State>) {
    let mut shutdown = st.shutdown.clone();
    loop {
        tokio::select! {
            _ = crate::server::stopped(&mut shutdown) => return,
            _ = st.gc.notified() => {}
            _ = tokio::time::sleep(Duration::from_secs(5)) => {}
        }
        // Let a burst of deletions land before scanning.
        tokio::time::sleep(Duration::from_millis(20)).await;
        for _ in 0..16 {
            match st.store.write(|inner| collect_once(&st, inner)) {
                Ok(true) => continue,
                Ok(false) => break,
                Err(e) => {
                    tracing::error!(error = %e, "garbage collection failed");
                    break;
                }
            }
        }
    }
}

struct Node {
    key: String,
    ns: String,
    name: String,
    obj: Arc<Value>,
}

fn writer<'a>(st: &'a State, info: &'a ResourceInfo, manager: &str) -> Writer<'a> {
    Writer {
        st,
        info,
        manager: manager.to_owned(),
        dry_run: false,
        strict: false,
        user: None,
        warnings: Default::default(),
    }
}

/// One pass; `true` when it changed something (another pass may find more to do).
fn collect_once(st: &State, inner: &mut Inner) -> bool {
    let reg = st.registry();
    let infos: HashMap<String, Arc<ResourceInfo>> =
        reg.all().map(|r| (r.storage_key(), r.clone())).collect();
    let mut by_uid: HashMap<String, Arc<Value>> = HashMap::new();
    let mut nodes = Vec::new();
    for (key, objs) in inner.all_objects() {
        for ((ns, name), o) in objs {
            by_uid.insert(uid_of(o).to_owned(), o.clone());
            nodes.push(Node {
                key: key.clone(),
                ns: ns.clone(),
                name: name.clone(),
                obj: o.clone(),
            });
        }
    }
    let mut referenced: HashMap<String, usize> = HashMap::new();
    let mut changed = false;
    for n in &nodes {
        let Some(info) = infos.get(&n.key) else { continue };
        let owners = owner_uids(&n.obj);
        if owners.is_empty() {
            continue;
        }
        let w = writer(st, info, "generic-garbage-collector");
        let alive: Vec<&String> = owners.iter().filter(|u| by_uid.contains_key(*u)).collect();
        let orphaning: Vec<&String> =
            alive.iter().copied().filter(|u| by_uid[*u].pipe_fin("orphan")).collect();
        let foreground = alive.iter().any(|u| by_uid[*u].pipe_fin("foregroundDeletion"));
        for u in &alive {
            *referenced.entry((*u).clone()).or_default() += 1;
        }
        if alive.is_empty() || (foreground && !is_deleting(&n.obj)) {
            if !is_deleting(&n.obj) {
                let opts = DeleteOpts {
                    propagation: Propagation::Background,
                    uid: None,
                    resource_version: None,
                };
                changed |= w.delete(inner, &n.ns, &n.name, &opts).is_ok();
            }
        } else if alive.len() < owners.len() || !orphaning.is_empty() {
            let mut new = (*n.obj).clone();
            if let Some(refs) = new["metadata"]["ownerReferences"].as_array_mut() {
                refs.retain(|r| {
                    r["uid"].as_str().is_some_and(|u| {
                        by_uid.contains_key(u) && !orphaning.iter().any(|o| *o == u)
                    })
                });
            }
            changed |= w.update(inner, &n.ns, &n.name, new, "", Managed::Record).is_ok();
        }
    }
    for n in &nodes {
        let Some(info) = infos.get(&n.key) else { continue };
        if !is_deleting(&n.obj) || referenced.contains_key(uid_of(&n.obj)) {
            continue;
        }
        let fins = finalizers(&n.obj);
        if fins.iter().any(|f| f == "orphan" || f == "foregroundDeletion") {
            let kept: Vec<&String> =
                fins.iter().filter(|f| *f != "orphan" && *f != "foregroundDeletion").collect();
            let mut new = (*n.obj).clone();
            new["metadata"]["finalizers"] = json!(kept);
            changed |= writer(st, info, "generic-garbage-collector")
                .update(inner, &n.ns, &n.name, new, "", Managed::Record)
                .is_ok();
        }
    }
    changed | namespaces(st, inner, &infos, &nodes)
}

fn namespaces(
    st: &State,
    inner: &mut Inner,
    infos: &HashMap<String, Arc<ResourceInfo>>,
    nodes: &[Node],
) -> bool {
    let mut changed = false;
    let Some(ns_info) = infos.get("/namespaces") else { return false };
    for n in nodes.iter().filter(|n| n.key == "/namespaces" && is_deleting(&n.obj)) {
        let mut left = 0;
        for d in nodes.iter().filter(|d| !d.ns.is_empty() && d.ns == n.name) {
            left += 1;
            let Some(info) = infos.get(&d.key) else { continue };
            if !is_deleting(&d.obj) {
                let opts = DeleteOpts {
                    propagation: Propagation::Background,
                    uid: None,
                    resource_version: None,
                };
                changed |= writer(st, info, "namespace-controller")
                    .delete(inner, &d.ns, &d.name, &opts)
                    .is_ok();
            }
        }
        if left == 0 {
            let w = writer(st, ns_info, "namespace-controller");
            if finalizers(&n.obj).is_empty() {
                changed |= w.finish_delete(inner, "", &n.name).is_some();
            }
        }
    }
    changed
}

trait HasFinalizer {
    fn pipe_fin(&self, f: &str) -> bool;
}

impl HasFinalizer for Arc<Value> {
    fn pipe_fin(&self, f: &str) -> bool {
        is_deleting(self) && finalizers(self).iter().any(|x| x == f)
    }
}
