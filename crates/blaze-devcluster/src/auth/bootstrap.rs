//! The RBAC objects a fresh kube-apiserver makes (its `rbac/bootstrap-roles` post-start
//! hook), those that matter here: `cluster-admin` bound to `system:masters`;
//! `system:discovery` and `system:basic-user` (discovery paths, self reviews) bound to every
//! authenticated user; `system:public-info-viewer` (`/version`, health) bound to everyone.
//! Objects that exist are left as they are. The aggregated `admin`, `edit` and `view` roles
//! and the controllers' `system:controller:*` roles are not made: nothing here binds them.

use serde_json::{Value, json};

use super::{AUTHENTICATED, MASTERS, UNAUTHENTICATED};
use crate::server::State;

const CLUSTER_ROLES: &str = "rbac.authorization.k8s.io/clusterroles";
const CLUSTER_ROLE_BINDINGS: &str = "rbac.authorization.k8s.io/clusterrolebindings";

/// `(name, rules, groups bound)` of each bootstrap ClusterRole.
fn roles() -> Vec<(&'static str, Value, &'static [&'static str])> {
    let get = json!(["get"]);
    vec![
        (
            "cluster-admin",
            json!([{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]},
                   {"nonResourceURLs": ["*"], "verbs": ["*"]}]),
            &[MASTERS],
        ),
        (
            "system:discovery",
            json!([{"nonResourceURLs": ["/api", "/api/*", "/apis", "/apis/*", "/healthz", "/livez",
                     "/openapi", "/openapi/*", "/readyz", "/version", "/version/"], "verbs": get}]),
            &[AUTHENTICATED],
        ),
        (
            "system:basic-user",
            json!([{"apiGroups": ["authorization.k8s.io"],
                     "resources": ["selfsubjectaccessreviews", "selfsubjectrulesreviews"], "verbs": ["create"]},
                   {"apiGroups": ["authentication.k8s.io"], "resources": ["selfsubjectreviews"], "verbs": ["create"]}]),
            &[AUTHENTICATED],
        ),
        (
            "system:public-info-viewer",
            json!([{"nonResourceURLs": ["/healthz", "/livez", "/readyz", "/version", "/version/"], "verbs": get}]),
            &[AUTHENTICATED, UNAUTHENTICATED],
        ),
    ]
}

fn metadata(name: &str) -> Value {
    json!({
        "name": name, "uid": crate::meta::uid(), "creationTimestamp": crate::meta::now(),
        "labels": {"kubernetes.io/bootstrapping": "rbac-defaults"},
        "annotations": {"rbac.authorization.kubernetes.io/autoupdate": "true"},
    })
}

/// Creates the bootstrap ClusterRoles and ClusterRoleBindings that do not exist yet.
pub fn ensure_roles(st: &State) -> crate::Result<()> {
    st.store.write(|inner| {
        for (name, rules, groups) in roles() {
            if inner.get(CLUSTER_ROLES, "", name).is_none() {
                let role = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
                    "metadata": metadata(name), "rules": rules});
                inner.put(CLUSTER_ROLES, role);
            }
            if inner.get(CLUSTER_ROLE_BINDINGS, "", name).is_none() {
                let subjects: Vec<Value> = groups
                    .iter()
                    .map(|g| json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": g}))
                    .collect();
                let binding = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
                    "metadata": metadata(name), "subjects": subjects,
                    "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name}});
                inner.put(CLUSTER_ROLE_BINDINGS, binding);
            }
        }
    })
}
