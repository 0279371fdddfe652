//! What a fresh cluster has: the `default`, `kube-system`, `kube-public` and `kube-node-lease`
//! namespaces.

use serde_json::json;

use crate::server::State;

/// Creates the standard namespaces that do not exist yet.
pub fn ensure_namespaces(st: &State) -> crate::Result<()> {
    st.store.write(|inner| {
        for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
            if inner.get("/namespaces", "", ns).is_none() {
                let obj = json!({
                    "apiVersion": "v1", "kind": "Namespace",
                    "metadata": {"name": ns, "uid": crate::meta::uid(), "creationTimestamp": crate::meta::now(),
                        "labels": {"kubernetes.io/metadata.name": ns}},
                    "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"},
                });
                inner.put("/namespaces", obj);
            }
        }
    })
}
