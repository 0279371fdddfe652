//! The ServiceAccount controller: every namespace that is not terminating has a `default`
//! ServiceAccount, made when the namespace appears and made again if deleted, as
//! kube-controller-manager's `serviceaccount` controller keeps it.

use std::sync::Arc;

use serde_json::json;
use tokio::sync::broadcast::error::RecvError;

use crate::server::State;
use crate::store::{EventType, Inner};

const NAMESPACES: &str = "/namespaces";
const SERVICE_ACCOUNTS: &str = "/serviceaccounts";
/// The account every namespace has.
pub const DEFAULT: &str = "default";

/// Creates the `default` ServiceAccount of every live namespace that lacks one.
pub fn ensure_all(st: &State) -> crate::Result<()> {
    st.store.write(|inner| {
        let missing: Vec<String> = inner
            .objects(NAMESPACES)
            .into_iter()
            .flat_map(|m| m.iter())
            .filter(|(_, ns)| !crate::meta::is_deleting(ns))
            .map(|((_, name), _)| name.clone())
            .filter(|name| inner.get(SERVICE_ACCOUNTS, name, DEFAULT).is_none())
            .collect();
        for ns in missing {
            create(inner, &ns);
        }
    })
}

fn create(inner: &mut Inner, ns: &str) {
    inner.put(
        SERVICE_ACCOUNTS,
        json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {
            "name": DEFAULT, "namespace": ns, "uid": crate::meta::uid(),
            "creationTimestamp": crate::meta::now()}}),
    );
}

/// Runs until shutdown: after every change to a namespace or the deletion of a `default`
/// account, makes sure each namespace has its account.
pub async fn run(st: Arc<State>) {
    let mut events = st.store.events();
    let mut shutdown = st.shutdown.clone();
    loop {
        let event = tokio::select! {
            _ = crate::server::stopped(&mut shutdown) => return,
            e = events.recv() => e,
        };
        let relevant = match &event {
            Ok(e) => {
                (e.key == NAMESPACES && e.kind != EventType::Deleted)
                    || (e.key == SERVICE_ACCOUNTS && e.kind == EventType::Deleted)
            }
            Err(RecvError::Lagged(_)) => true,
            Err(RecvError::Closed) => return,
        };
        if relevant && let Err(e) = ensure_all(&st) {
            tracing::error!(error = %e, "cannot create default service accounts");
        }
    }
}
