//! Authorization as a real API server enforces it, seen through kube-rs and kubectl: a
//! ServiceAccount token from the TokenRequest subresource, RBAC denials worded as
//! kube-apiserver words them, a RoleBinding that grants, `kubectl auth can-i` (with and
//! without `--as`) and impersonation refused to those without the `impersonate` verb.

use std::path::Path;

use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::authorization::v1::SelfSubjectAccessReview;
use k8s_openapi::api::core::v1::{Namespace, Pod, Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, Role, RoleBinding};
use kube::Client;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use serde_json::json;

use super::common::{client_for, eventually, start, status_of};
use super::kubectl::{dir_file, kubectl, ok};

const SA_USER: &str = "system:serviceaccount:demo:default";

/// Creates namespace `demo` and waits for its `default` ServiceAccount.
async fn demo_namespace(admin: &Client) {
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": "demo"}})).unwrap();
    Api::<Namespace>::all(admin.clone()).create(&PostParams::default(), &ns).await.unwrap();
    let sas: Api<ServiceAccount> = Api::namespaced(admin.clone(), "demo");
    eventually("the default ServiceAccount of demo", 10, async || {
        sas.get_opt("default").await.unwrap()
    })
    .await;
}

/// A token for `demo/default` from the TokenRequest subresource.
async fn token_for_default(admin: &Client) -> String {
    let sas: Api<ServiceAccount> = Api::namespaced(admin.clone(), "demo");
    let body = json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
        "spec": {"expirationSeconds": 3600}});
    let tr: TokenRequest =
        sas.create_subresource("token", "default", &PostParams::default(), &body).await.unwrap();
    tr.status.unwrap().token.unwrap()
}

/// `pod-reader` in `demo`, bound to `demo/default` (the documentation's example).
async fn grant_pod_reader(admin: &Client) {
    let role: Role = serde_json::from_value(json!({"metadata": {"name": "pod-reader"},
        "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "watch", "list"]}]}))
    .unwrap();
    let binding: RoleBinding = serde_json::from_value(json!({"metadata": {"name": "read-pods"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "pod-reader"},
        "subjects": [{"kind": "ServiceAccount", "name": "default", "namespace": "demo"}]}))
    .unwrap();
    let pp = PostParams::default();
    Api::<Role>::namespaced(admin.clone(), "demo").create(&pp, &role).await.unwrap();
    Api::<RoleBinding>::namespaced(admin.clone(), "demo").create(&pp, &binding).await.unwrap();
}

#[tokio::test]
async fn a_service_account_token_gets_what_rbac_grants_and_403_otherwise() {
    let (server, admin) = start().await;
    demo_namespace(&admin).await;
    let token = token_for_default(&admin).await;
    let sa = client_for(&server.kubeconfig().replace(server.token(), &token)).await;
    let pods: Api<Pod> = Api::namespaced(sa.clone(), "demo");

    let denied = status_of(pods.list(&ListParams::default()).await);
    assert_eq!((denied.code, denied.reason.as_str()), (403, "Forbidden"));
    assert_eq!(
        denied.message,
        format!(
            "pods is forbidden: User \"{SA_USER}\" cannot list resource \"pods\" in API group \"\" in the namespace \"demo\""
        )
    );
    let named = status_of(Api::<ClusterRole>::all(sa.clone()).get("cluster-admin").await);
    assert_eq!(
        named.message,
        format!(
            "clusterroles.rbac.authorization.k8s.io \"cluster-admin\" is forbidden: User \"{SA_USER}\" cannot get resource \"clusterroles\" in API group \"rbac.authorization.k8s.io\" at the cluster scope"
        )
    );
    let details = named.details.unwrap();
    assert_eq!((details.name.as_str(), details.kind.as_str()), ("cluster-admin", "clusterroles"));

    grant_pod_reader(&admin).await;
    assert!(pods.list(&ListParams::default()).await.is_ok(), "the RoleBinding grants list");
    let secrets =
        status_of(Api::<Secret>::namespaced(sa.clone(), "demo").list(&ListParams::default()).await);
    assert_eq!(secrets.code, 403, "but nothing else");
    let elsewhere =
        status_of(Api::<Pod>::namespaced(sa.clone(), "default").list(&ListParams::default()).await);
    assert_eq!(elsewhere.code, 403, "and only in its namespace");

    // Every authenticated user may read discovery and ask what it may do.
    assert!(sa.apiserver_version().await.is_ok());
    let review: SelfSubjectAccessReview = serde_json::from_value(json!({"spec": {
        "resourceAttributes": {"namespace": "demo", "verb": "list", "resource": "pods"}}}))
    .unwrap();
    let answered = Api::<SelfSubjectAccessReview>::all(sa.clone())
        .create(&PostParams::default(), &review)
        .await
        .unwrap();
    let status = answered.status.unwrap();
    assert!(status.allowed, "{status:?}");
    assert_eq!(
        status.reason.as_deref(),
        Some(
            "RBAC: allowed by RoleBinding \"read-pods/demo\" of Role \"pod-reader\" to ServiceAccount \"default/demo\""
        )
    );

    // Deleting the account revokes its tokens.
    Api::<ServiceAccount>::namespaced(admin.clone(), "demo")
        .delete("default", &DeleteParams::default())
        .await
        .unwrap();
    let revoked = status_of(pods.list(&ListParams::default()).await);
    assert_eq!((revoked.code, revoked.reason.as_str()), (401, "Unauthorized"));
    server.shutdown().await;
}

#[tokio::test]
async fn anonymous_requests_see_only_public_information() {
    let (server, _admin) = start().await;
    let kubeconfig = server.kubeconfig().replace(&format!("token: {}", server.token()), "{}");
    let kubeconfig = kubeconfig.replace("user:\n    {}", "user: {}");
    let anonymous = client_for(&kubeconfig).await;
    assert!(anonymous.apiserver_version().await.is_ok(), "/version is public");
    let denied = status_of(Api::<Namespace>::all(anonymous).list(&ListParams::default()).await);
    assert_eq!(
        denied.message,
        "namespaces is forbidden: User \"system:anonymous\" cannot list resource \"namespaces\" in API group \"\" at the cluster scope"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn a_token_request_needs_an_existing_account_and_pod() {
    let (server, admin) = start().await;
    let sas: Api<ServiceAccount> = Api::namespaced(admin.clone(), "default");
    let pp = PostParams::default();
    let ask = |spec: serde_json::Value| json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec});
    let r =
        sas.create_subresource::<_, TokenRequest>("token", "nobody", &pp, &ask(json!({}))).await;
    assert_eq!(status_of(r).message, "serviceaccounts \"nobody\" not found");
    let bound = ask(json!({"boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": "gone"}}));
    let r = sas.create_subresource::<_, TokenRequest>("token", "default", &pp, &bound).await;
    assert_eq!(status_of(r).message, "pods \"gone\" not found");
    let short = ask(json!({"expirationSeconds": 60}));
    let r = sas.create_subresource::<_, TokenRequest>("token", "default", &pp, &short).await;
    assert_eq!(status_of(r).code, 422);

    // A token bound to a pod dies with the pod.
    let pod: Pod = serde_json::from_value(
        json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "i"}]}}),
    )
    .unwrap();
    let pods: Api<Pod> = Api::namespaced(admin.clone(), "default");
    pods.create(&pp, &pod).await.unwrap();
    let bound = ask(json!({"expirationSeconds": 3607,
        "boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": "p"}}));
    let tr: TokenRequest = sas.create_subresource("token", "default", &pp, &bound).await.unwrap();
    let sa = client_for(
        &server.kubeconfig().replace(server.token(), &tr.status.unwrap().token.unwrap()),
    )
    .await;
    assert!(sa.apiserver_version().await.is_ok());
    pods.delete("p", &DeleteParams::default().grace_period(0)).await.unwrap();
    let r = Api::<Pod>::namespaced(sa, "default").list(&ListParams::default()).await;
    assert_eq!(status_of(r).code, 401);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_auth_can_i_and_impersonation() {
    let dir = tempfile::tempdir().unwrap();
    let kc = dir.path().join("kubeconfig");
    let config = blaze_devcluster::Config { kubeconfig: Some(kc.clone()), ..Default::default() };
    let (server, admin) = super::common::start_with(config).await;
    demo_namespace(&admin).await;
    let token = token_for_default(&admin).await;
    let sa_kc = dir.path().join("sa-kubeconfig");
    std::fs::write(&sa_kc, server.kubeconfig().replace(server.token(), &token)).unwrap();
    let (kc2, sa_kc2) = (kc.clone(), sa_kc.clone());
    tokio::task::spawn_blocking(move || can_i_before_and_after_a_binding(&kc2, &sa_kc2))
        .await
        .unwrap();
    server.shutdown().await;
}

fn can_i_before_and_after_a_binding(kc: &Path, sa_kc: &Path) {
    let as_sa = ["--as", SA_USER, "-n", "demo"];
    let (yes, out) = kubectl(kc, &[&["auth", "can-i", "list", "pods"][..], &as_sa].concat());
    assert!(!yes && out.trim().ends_with("no"), "{out}");
    let (yes, out) = kubectl(kc, &["auth", "can-i", "list", "pods", "-n", "demo"]);
    assert!(yes && out.trim() == "yes", "the admin may: {out}");

    let (found, out) = kubectl(kc, &[&["get", "pods"][..], &as_sa].concat());
    assert!(!found, "{out}");
    assert!(
        out.contains(&format!(
            "Error from server (Forbidden): pods is forbidden: User \"{SA_USER}\" cannot list resource \"pods\" in API group \"\" in the namespace \"demo\""
        )),
        "{out}"
    );

    let rbac = dir_file(
        kc,
        "pod-reader.yaml",
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata:\n  name: pod-reader\n  namespace: demo\n\
         rules:\n- apiGroups: [\"\"]\n  resources: [\"pods\"]\n  verbs: [\"get\", \"watch\", \"list\"]\n---\n\
         apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata:\n  name: read-pods\n  namespace: demo\n\
         subjects:\n- kind: ServiceAccount\n  name: default\n  namespace: demo\n\
         roleRef:\n  kind: Role\n  name: pod-reader\n  apiGroup: rbac.authorization.k8s.io\n",
    );
    ok(kc, &["apply", "-f", rbac.to_str().unwrap()]);
    let (yes, out) = kubectl(kc, &[&["auth", "can-i", "list", "pods"][..], &as_sa].concat());
    assert!(yes && out.trim() == "yes", "{out}");
    let (yes, out) = kubectl(kc, &[&["auth", "can-i", "delete", "pods"][..], &as_sa].concat());
    assert!(!yes && out.trim().ends_with("no"), "{out}");
    ok(kc, &[&["get", "pods"][..], &as_sa].concat());
    // The account itself, with its own token, asks the same.
    let (yes, out) = kubectl(sa_kc, &["auth", "can-i", "watch", "pods", "-n", "demo"]);
    assert!(yes && out.trim() == "yes", "{out}");
    let listed = ok(sa_kc, &["auth", "can-i", "--list", "-n", "demo"]);
    assert!(
        listed.lines().any(|l| l.starts_with("pods ") && l.contains("[get watch list]")),
        "{listed}"
    );

    // The account may not impersonate anyone.
    let (done, out) = kubectl(sa_kc, &["get", "pods", "-n", "demo", "--as", "jane"]);
    assert!(!done, "{out}");
    assert!(
        out.contains(&format!(
            "users \"jane\" is forbidden: User \"{SA_USER}\" cannot impersonate resource \"users\" in API group \"\" at the cluster scope"
        )),
        "{out}"
    );
}

/// A ServiceAccount that may write Roles and RoleBindings still cannot grant what it does
/// not hold, unless it may `bind` the role (the real server's escalation check).
#[tokio::test]
async fn roles_and_bindings_grant_only_what_their_writer_holds() {
    let (server, admin) = start().await;
    demo_namespace(&admin).await;
    let token = token_for_default(&admin).await;
    let sa = client_for(&server.kubeconfig().replace(server.token(), &token)).await;
    let writer: Role = serde_json::from_value(json!({"metadata": {"name": "rbac-writer"}, "rules": [
        {"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["roles", "rolebindings"], "verbs": ["create"]},
        {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]},
        {"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["clusterroles"], "resourceNames": ["view-ish"], "verbs": ["bind"]}]}))
    .unwrap();
    let binding: RoleBinding = serde_json::from_value(json!({"metadata": {"name": "rbac-writer"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "rbac-writer"},
        "subjects": [{"kind": "ServiceAccount", "name": "default", "namespace": "demo"}]}))
    .unwrap();
    let pp = PostParams::default();
    Api::<Role>::namespaced(admin.clone(), "demo").create(&pp, &writer).await.unwrap();
    Api::<RoleBinding>::namespaced(admin.clone(), "demo").create(&pp, &binding).await.unwrap();

    let roles: Api<Role> = Api::namespaced(sa.clone(), "demo");
    let role = |name: &str, resource: &str| -> Role {
        serde_json::from_value(json!({"metadata": {"name": name},
            "rules": [{"apiGroups": [""], "resources": [resource], "verbs": ["get"]}]}))
        .unwrap()
    };
    roles.create(&pp, &role("cm-reader", "configmaps")).await.unwrap();
    let refused = status_of(roles.create(&pp, &role("secret-reader", "secrets")).await);
    assert_eq!(refused.code, 403);
    assert_eq!(
        refused.message,
        format!(
            "roles.rbac.authorization.k8s.io \"secret-reader\" is forbidden: user \"{SA_USER}\" (groups=[\"system:serviceaccounts\" \"system:serviceaccounts:demo\" \"system:authenticated\"]) is attempting to grant RBAC permissions not currently held:\n{{APIGroups:[\"\"], Resources:[\"secrets\"], Verbs:[\"get\"]}}"
        )
    );

    let bindings: Api<RoleBinding> = Api::namespaced(sa, "demo");
    let bind = |name: &str, kind: &str, role: &str| -> RoleBinding {
        serde_json::from_value(json!({"metadata": {"name": name},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": kind, "name": role},
            "subjects": [{"kind": "User", "name": "jane"}]}))
        .unwrap()
    };
    bindings.create(&pp, &bind("cm", "Role", "cm-reader")).await.unwrap();
    let refused =
        status_of(bindings.create(&pp, &bind("admin", "ClusterRole", "cluster-admin")).await);
    assert_eq!(refused.code, 403, "{refused:?}");
    assert!(
        refused.message.contains("{APIGroups:[\"*\"], Resources:[\"*\"], Verbs:[\"*\"]}"),
        "{refused:?}"
    );
    // `bind` on a role lets one bind it without holding it (it need not even exist yet).
    bindings.create(&pp, &bind("view", "ClusterRole", "view-ish")).await.unwrap();
    server.shutdown().await;
}
