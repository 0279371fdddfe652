//! The API calls the operator makes, as (group, resource, verbs). `rbac.yaml` must grant
//! exactly these; a test holds the two together.

/// Calls of the cluster-wide controllers.
pub const CLUSTER: &[(&str, &str, &[&str])] = &[
    ("blaze.ai", "blazeengines", &["list", "watch"]),
    ("blaze.ai", "blazerouters", &["list", "watch"]),
    ("blaze.ai", "blazeengines/status", &["patch"]),
    ("blaze.ai", "blazerouters/status", &["patch"]),
    ("apps", "deployments", &["get", "list", "watch", "create", "patch"]),
    ("", "services", &["list", "watch", "create", "patch"]),
    // `get` too: granting the router pods `get` on their ConfigMap needs it (RBAC lets no one
    // grant what they do not hold).
    ("", "configmaps", &["get", "list", "watch", "create", "patch"]),
    ("", "serviceaccounts", &["list", "watch", "create", "patch"]),
    ("rbac.authorization.k8s.io", "roles", &["list", "watch", "create", "patch"]),
    ("rbac.authorization.k8s.io", "rolebindings", &["list", "watch", "create", "patch"]),
    ("policy", "poddisruptionbudgets", &["list", "watch", "create", "patch"]),
    ("networking.k8s.io", "networkpolicies", &["list", "watch", "create", "patch"]),
    // Only `create`: the engine's worker token Secret is made when absent (`409` when it is
    // there). The operator never reads a Secret.
    ("", "secrets", &["create"]),
    ("", "pods", &["list", "delete"]),
    // The model download's progress, from the tail of its init container's log.
    ("", "pods/log", &["get"]),
    ("discovery.k8s.io", "endpointslices", &["list", "watch"]),
    ("events.k8s.io", "events", &["create", "patch"]),
];

/// Calls of leader election, in the operator's namespace.
pub const LEADER: &[(&str, &str, &[&str])] =
    &[("coordination.k8s.io", "leases", &["get", "create", "patch"])];
