//! The examples of the Kubernetes documentation's "Using RBAC Authorization" page, evaluated.

use serde_json::{Value, json};

use super::*;

/// RBAC objects in memory.
#[derive(Default)]
struct Objects(Vec<Value>);

impl Objects {
    fn of(&self, kind: &str) -> impl Iterator<Item = &Value> {
        self.0.iter().filter(move |o| o["kind"] == kind)
    }
}

impl Policy for Objects {
    fn cluster_role_bindings(&self) -> Vec<&Value> {
        self.of("ClusterRoleBinding").collect()
    }
    fn role_bindings(&self, namespace: &str) -> Vec<&Value> {
        self.of("RoleBinding").filter(|b| b["metadata"]["namespace"] == namespace).collect()
    }
    fn cluster_role(&self, name: &str) -> Option<&Value> {
        self.of("ClusterRole").find(|r| r["metadata"]["name"] == name)
    }
    fn role(&self, namespace: &str, name: &str) -> Option<&Value> {
        self.of("Role")
            .find(|r| r["metadata"]["name"] == name && r["metadata"]["namespace"] == namespace)
    }
}

fn user(name: &str, groups: &[&str]) -> User {
    User {
        name: name.into(),
        uid: String::new(),
        groups: groups.iter().map(|g| (*g).into()).collect(),
    }
}

/// A resource request: `verb group/resource[/sub] ns name`.
fn req(verb: &str, group: &str, resource: &str, ns: &str, name: &str) -> Attributes {
    let (resource, sub) = resource.split_once('/').unwrap_or((resource, ""));
    Attributes {
        verb: verb.into(),
        resource_request: true,
        namespace: ns.into(),
        group: group.into(),
        version: "v1".into(),
        resource: resource.into(),
        subresource: sub.into(),
        name: name.into(),
        path: String::new(),
    }
}

fn path(verb: &str, path: &str) -> Attributes {
    Attributes { verb: verb.into(), path: path.into(), ..Attributes::default() }
}

fn role(kind: &str, ns: &str, name: &str, rules: Value) -> Value {
    json!({"kind": kind, "metadata": {"name": name, "namespace": ns}, "rules": rules})
}

fn binding(kind: &str, ns: &str, name: &str, role: (&str, &str), subjects: Value) -> Value {
    json!({"kind": kind, "metadata": {"name": name, "namespace": ns},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": role.0, "name": role.1},
        "subjects": subjects})
}

fn allowed(p: &Objects, u: &User, a: &Attributes) -> bool {
    authorize(p, u, a).allowed()
}

/// "Role example" and "RoleBinding examples": `pod-reader` in `default`, bound to jane.
#[test]
fn pod_reader_lets_jane_read_pods_in_default_only() {
    let p = Objects(vec![
        role(
            "Role",
            "default",
            "pod-reader",
            json!([{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "watch", "list"]}]),
        ),
        binding(
            "RoleBinding",
            "default",
            "read-pods",
            ("Role", "pod-reader"),
            json!([{"kind": "User", "name": "jane", "apiGroup": "rbac.authorization.k8s.io"}]),
        ),
    ]);
    let jane = user("jane", &["system:authenticated"]);
    assert!(allowed(&p, &jane, &req("list", "", "pods", "default", "")));
    assert!(allowed(&p, &jane, &req("get", "", "pods", "default", "web-0")));
    assert!(allowed(&p, &jane, &req("watch", "", "pods", "default", "")));
    assert!(!allowed(&p, &jane, &req("delete", "", "pods", "default", "web-0")), "verb");
    assert!(!allowed(&p, &jane, &req("list", "", "pods", "kube-system", "")), "namespace");
    assert!(!allowed(&p, &jane, &req("list", "", "pods", "", "")), "all namespaces");
    assert!(!allowed(&p, &jane, &req("list", "apps", "deployments", "default", "")), "resource");
    assert!(!allowed(&p, &jane, &req("list", "extensions", "pods", "default", "")), "group");
    assert!(!allowed(&p, &jane, &req("get", "", "pods/log", "default", "web-0")), "subresource");
    assert!(!allowed(&p, &user("bob", &[]), &req("list", "", "pods", "default", "")), "subject");
}

/// "ClusterRole example" with its two bindings: `secret-reader` cluster-wide for the group
/// `manager`, and in `development` only for dave through a RoleBinding.
#[test]
fn secret_reader_cluster_wide_for_a_group_and_in_one_namespace_for_dave() {
    let p = Objects(vec![
        role(
            "ClusterRole",
            "",
            "secret-reader",
            json!([{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "watch", "list"]}]),
        ),
        binding(
            "ClusterRoleBinding",
            "",
            "read-secrets-global",
            ("ClusterRole", "secret-reader"),
            json!([{"kind": "Group", "name": "manager", "apiGroup": "rbac.authorization.k8s.io"}]),
        ),
        binding(
            "RoleBinding",
            "development",
            "read-secrets",
            ("ClusterRole", "secret-reader"),
            json!([{"kind": "User", "name": "dave", "apiGroup": "rbac.authorization.k8s.io"}]),
        ),
    ]);
    let manager = user("alice", &["manager"]);
    assert!(allowed(&p, &manager, &req("list", "", "secrets", "", "")));
    assert!(allowed(&p, &manager, &req("get", "", "secrets", "kube-system", "token")));
    let dave = user("dave", &[]);
    assert!(allowed(&p, &dave, &req("get", "", "secrets", "development", "db")));
    assert!(!allowed(&p, &dave, &req("get", "", "secrets", "production", "db")));
    assert!(!allowed(&p, &dave, &req("list", "", "secrets", "", "")));
    assert_eq!(
        authorize(&p, &dave, &req("get", "", "secrets", "development", "db")).reason(),
        "RBAC: allowed by RoleBinding \"read-secrets/development\" of ClusterRole \"secret-reader\" to User \"dave\""
    );
    assert_eq!(
        authorize(&p, &manager, &req("list", "", "secrets", "", "")).reason(),
        "RBAC: allowed by ClusterRoleBinding \"read-secrets-global\" of ClusterRole \"secret-reader\" to Group \"manager\""
    );
}

/// "Referring to resources": `resourceNames` limits a rule to named objects, which no list,
/// watch of all or create can satisfy.
#[test]
fn resource_names_allow_only_the_named_objects() {
    let p = Objects(vec![
        role(
            "Role",
            "default",
            "configmap-updater",
            json!([{"apiGroups": [""],
            "resources": ["configmaps"], "resourceNames": ["my-configmap"], "verbs": ["update", "get"]}]),
        ),
        binding(
            "RoleBinding",
            "default",
            "b",
            ("Role", "configmap-updater"),
            json!([{"kind": "User", "name": "jane"}]),
        ),
    ]);
    let jane = user("jane", &[]);
    assert!(allowed(&p, &jane, &req("get", "", "configmaps", "default", "my-configmap")));
    assert!(allowed(&p, &jane, &req("update", "", "configmaps", "default", "my-configmap")));
    assert!(!allowed(&p, &jane, &req("get", "", "configmaps", "default", "other")));
    assert!(!allowed(&p, &jane, &req("list", "", "configmaps", "default", "")));
}

/// "Referring to resources": a subresource is named `pods/log`; `*/status` names the status
/// of every resource; `*` every resource and subresource.
#[test]
fn subresources_are_granted_by_name_or_wildcard() {
    let p = Objects(vec![
        role(
            "Role",
            "default",
            "pod-and-pod-logs-reader",
            json!([{"apiGroups": [""], "resources": ["pods", "pods/log"], "verbs": ["get", "list"]}]),
        ),
        role(
            "ClusterRole",
            "",
            "status-writer",
            json!([{"apiGroups": ["*"], "resources": ["*/status"], "verbs": ["patch"]}]),
        ),
        role(
            "ClusterRole",
            "",
            "everything-in-apps",
            json!([{"apiGroups": ["apps"], "resources": ["*"], "verbs": ["*"]}]),
        ),
        binding(
            "RoleBinding",
            "default",
            "logs",
            ("Role", "pod-and-pod-logs-reader"),
            json!([{"kind": "User", "name": "jane"}]),
        ),
        binding(
            "ClusterRoleBinding",
            "",
            "status",
            ("ClusterRole", "status-writer"),
            json!([{"kind": "User", "name": "jane"}]),
        ),
        binding(
            "ClusterRoleBinding",
            "",
            "apps",
            ("ClusterRole", "everything-in-apps"),
            json!([{"kind": "User", "name": "jane"}]),
        ),
    ]);
    let jane = user("jane", &[]);
    assert!(allowed(&p, &jane, &req("get", "", "pods/log", "default", "web-0")));
    assert!(!allowed(&p, &jane, &req("get", "", "pods/exec", "default", "web-0")));
    assert!(allowed(&p, &jane, &req("patch", "blaze.ai", "blazeengines/status", "x", "e")));
    assert!(!allowed(&p, &jane, &req("patch", "blaze.ai", "blazeengines", "x", "e")));
    assert!(!allowed(&p, &jane, &req("patch", "blaze.ai", "blazeengines/scale", "x", "e")));
    assert!(allowed(&p, &jane, &req("deletecollection", "apps", "deployments", "x", "")));
    assert!(allowed(&p, &jane, &req("update", "apps", "deployments/scale", "x", "d")));
}

/// "ClusterRole example" for non-resource URLs: `/healthz` and everything under it, and a
/// trailing `*` as a prefix match.
#[test]
fn non_resource_urls_match_exactly_or_by_prefix() {
    let p = Objects(vec![
        role(
            "ClusterRole",
            "",
            "health",
            json!([{"nonResourceURLs": ["/healthz", "/healthz/*"], "verbs": ["get", "post"]}]),
        ),
        role(
            "ClusterRole",
            "",
            "api-reader",
            json!([{"nonResourceURLs": ["/api/*"], "verbs": ["get"]}]),
        ),
        binding(
            "ClusterRoleBinding",
            "",
            "b1",
            ("ClusterRole", "health"),
            json!([{"kind": "Group", "name": "system:authenticated"}]),
        ),
        binding(
            "ClusterRoleBinding",
            "",
            "b2",
            ("ClusterRole", "api-reader"),
            json!([{"kind": "Group", "name": "system:authenticated"}]),
        ),
    ]);
    let u = user("u", &["system:authenticated"]);
    assert!(allowed(&p, &u, &path("get", "/healthz")));
    assert!(allowed(&p, &u, &path("post", "/healthz/etcd")));
    assert!(!allowed(&p, &u, &path("get", "/healthzx")));
    assert!(!allowed(&p, &u, &path("get", "/metrics")));
    assert!(!allowed(&p, &u, &path("put", "/healthz")));
    assert!(allowed(&p, &u, &path("get", "/api/v1")));
    assert!(!allowed(&p, &u, &path("get", "/api")), "/api/* does not match /api itself");
    assert!(!allowed(&p, &user("anon", &["system:unauthenticated"]), &path("get", "/healthz")));
}

/// "Referring to subjects": a ServiceAccount subject; without a namespace in a RoleBinding
/// it is the binding's namespace; the group of all accounts of a namespace.
#[test]
fn service_account_subjects() {
    let p = Objects(vec![
        role(
            "Role",
            "demo",
            "reader",
            json!([{"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]}]),
        ),
        binding(
            "RoleBinding",
            "demo",
            "explicit",
            ("Role", "reader"),
            json!([{"kind": "ServiceAccount", "name": "web", "namespace": "demo"}]),
        ),
        binding(
            "RoleBinding",
            "demo",
            "implicit",
            ("Role", "reader"),
            json!([{"kind": "ServiceAccount", "name": "batch"}]),
        ),
        role(
            "ClusterRole",
            "",
            "lister",
            json!([{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["list"]}]),
        ),
        binding(
            "ClusterRoleBinding",
            "",
            "all-in-qa",
            ("ClusterRole", "lister"),
            json!([{"kind": "Group", "name": "system:serviceaccounts:qa"}]),
        ),
        binding(
            "ClusterRoleBinding",
            "",
            "no-namespace",
            ("ClusterRole", "lister"),
            json!([{"kind": "ServiceAccount", "name": "default"}]),
        ),
    ]);
    let sa = |ns: &str, name: &str| User::service_account(ns, name, "");
    let list_pods = req("list", "", "pods", "demo", "");
    assert!(allowed(&p, &sa("demo", "web"), &list_pods));
    assert!(allowed(&p, &sa("demo", "batch"), &list_pods));
    assert!(!allowed(&p, &sa("other", "web"), &list_pods));
    assert!(!allowed(&p, &sa("demo", "default"), &list_pods));
    let list_cms = req("list", "", "configmaps", "", "");
    assert!(allowed(&p, &sa("qa", "anything"), &list_cms));
    assert!(
        !allowed(&p, &sa("prod", "default"), &list_cms),
        "a cluster binding's SA needs a namespace"
    );
}

#[test]
fn a_binding_to_a_missing_role_is_named_in_the_reason() {
    let p = Objects(vec![
        binding(
            "RoleBinding",
            "demo",
            "b",
            ("Role", "gone"),
            json!([{"kind": "User", "name": "jane"}]),
        ),
        binding(
            "ClusterRoleBinding",
            "",
            "c",
            ("ClusterRole", "also-gone"),
            json!([{"kind": "User", "name": "jane"}]),
        ),
        binding(
            "ClusterRoleBinding",
            "",
            "d",
            ("ClusterRole", "not-for-jane"),
            json!([{"kind": "User", "name": "bob"}]),
        ),
    ]);
    let d = authorize(&p, &user("jane", &[]), &req("get", "", "pods", "demo", "x"));
    assert_eq!(
        d,
        Decision::NoOpinion(
            "RBAC: [clusterrole.rbac.authorization.k8s.io \"also-gone\" not found, role.rbac.authorization.k8s.io \"gone\" not found]".into()
        )
    );
    let d = authorize(&p, &user("jane", &[]), &req("get", "", "pods", "", "x"));
    assert_eq!(d.reason(), "RBAC: clusterrole.rbac.authorization.k8s.io \"also-gone\" not found");
}

#[test]
fn rules_for_collects_cluster_and_namespace_rules() {
    let p = Objects(vec![
        role(
            "Role",
            "demo",
            "reader",
            json!([{"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]}]),
        ),
        binding(
            "RoleBinding",
            "demo",
            "b",
            ("Role", "reader"),
            json!([{"kind": "User", "name": "jane"}]),
        ),
        role("ClusterRole", "", "disco", json!([{"nonResourceURLs": ["/api"], "verbs": ["get"]}])),
        binding(
            "ClusterRoleBinding",
            "",
            "c",
            ("ClusterRole", "disco"),
            json!([{"kind": "User", "name": "jane"}]),
        ),
    ]);
    let jane = user("jane", &[]);
    assert_eq!(rules_for(&p, &jane, "demo").0.len(), 2);
    assert_eq!(rules_for(&p, &jane, "other").0.len(), 1);
}
