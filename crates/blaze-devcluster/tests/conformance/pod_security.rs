//! Pod Security admission through kube-rs and kubectl: namespaces labelled
//! `pod-security.kubernetes.io/enforce` refuse pods that break their profile with the real
//! server's message, workloads get `Warning` headers, invalid labels are `422`.

use std::path::Path;

use blaze_devcluster::{ApiServer, Config};
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

use super::common::{start, status_of};
use super::kubectl::{kubectl, ok};

const BARE_POD_VIOLATIONS: &str = r#"allowPrivilegeEscalation != false (container "web" must set securityContext.allowPrivilegeEscalation=false), unrestricted capabilities (container "web" must set securityContext.capabilities.drop=["ALL"]), runAsNonRoot != true (pod or container "web" must set securityContext.runAsNonRoot=true), seccompProfile (pod or container "web" must set securityContext.seccompProfile.type to "RuntimeDefault" or "Localhost")"#;

async fn namespace(client: &Client, name: &str, labels: Value) -> Result<Namespace, kube::Error> {
    let ns = json!({"metadata": {"name": name, "labels": labels}});
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &serde_json::from_value(ns).unwrap())
        .await
}

fn bare_pod(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
        "spec": {"containers": [{"name": "web", "image": "nginx"}]}})
}

fn hardened_pod(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
        "spec": {
            "securityContext": {"runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{"name": "web", "image": "nginx", "securityContext": {
                "allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}}}]}})
}

/// POSTs `body` to `path` and returns the status code and the `Warning` headers.
async fn post(client: &Client, path: &str, body: &Value) -> (u16, Vec<String>) {
    let req = http::Request::post(path)
        .header("content-type", "application/json")
        .body(serde_json::to_vec(body).unwrap())
        .unwrap();
    let resp = client.send(req.map(kube::client::Body::from)).await.unwrap();
    let warnings = resp.headers().get_all(http::header::WARNING);
    let warnings = warnings.iter().map(|v| v.to_str().unwrap().to_owned()).collect();
    (resp.status().as_u16(), warnings)
}

/// Merges `labels` into namespace `ns`: the status code and the `Warning` headers.
async fn label(client: &Client, ns: &str, labels: Value) -> (u16, Vec<String>) {
    let body = serde_json::to_vec(&json!({"metadata": {"labels": labels}})).unwrap();
    let req = http::Request::patch(format!("/api/v1/namespaces/{ns}"))
        .header("content-type", "application/merge-patch+json")
        .body(body)
        .unwrap();
    let resp = client.send(req.map(kube::client::Body::from)).await.unwrap();
    let warnings = resp.headers().get_all(http::header::WARNING);
    let warnings = warnings.iter().map(|v| v.to_str().unwrap().to_owned()).collect();
    (resp.status().as_u16(), warnings)
}

#[tokio::test]
async fn an_enforcing_namespace_refuses_a_pod_that_breaks_its_profile() {
    let (server, client) = start().await;
    namespace(&client, "demo", json!({"pod-security.kubernetes.io/enforce": "restricted"}))
        .await
        .unwrap();
    let pods = Api::<Pod>::namespaced(client.clone(), "demo");
    let bare = serde_json::from_value(bare_pod("x")).unwrap();
    let status = status_of(pods.create(&PostParams::default(), &bare).await);
    assert_eq!((status.code, status.reason.as_str()), (403, "Forbidden"));
    assert_eq!(
        status.message,
        format!(
            r#"pods "x" is forbidden: violates PodSecurity "restricted:latest": {BARE_POD_VIOLATIONS}"#
        )
    );
    assert!(pods.get_opt("x").await.unwrap().is_none(), "a refused pod is not stored");

    // A pod that meets the profile is created without warnings, and its status may change.
    let (code, warnings) = post(&client, "/api/v1/namespaces/demo/pods", &hardened_pod("ok")).await;
    assert_eq!((code, warnings), (201, vec![]));
    let status_patch = Patch::Merge(json!({"status": {"phase": "Running"}}));
    pods.patch_status("ok", &PatchParams::default(), &status_patch).await.unwrap();
    // Making it privileged is an update of its spec, checked like a create.
    let privileged = Patch::Merge(
        json!({"spec": {"containers": [{"name": "web", "image": "nginx", "securityContext": {"privileged": true}}]}}),
    );
    let status = status_of(pods.patch("ok", &PatchParams::default(), &privileged).await);
    assert_eq!(
        status.message,
        r#"pods "ok" is forbidden: violates PodSecurity "restricted:latest": privileged (container "web" must not set securityContext.privileged=true), allowPrivilegeEscalation != false (container "web" must set securityContext.allowPrivilegeEscalation=false), unrestricted capabilities (container "web" must set securityContext.capabilities.drop=["ALL"])"#
    );

    // A pinned version is named as such; baseline lets the bare pod in.
    namespace(
        &client,
        "pinned",
        json!({"pod-security.kubernetes.io/enforce": "baseline",
            "pod-security.kubernetes.io/enforce-version": "v1.30"}),
    )
    .await
    .unwrap();
    let mut host = bare_pod("host");
    host["spec"]["hostNetwork"] = json!(true);
    let pinned = Api::<Pod>::namespaced(client.clone(), "pinned");
    let status = status_of(
        pinned.create(&PostParams::default(), &serde_json::from_value(host).unwrap()).await,
    );
    assert_eq!(
        status.message,
        r#"pods "host" is forbidden: violates PodSecurity "baseline:v1.30": host namespaces (hostNetwork=true)"#
    );
    pinned
        .create(&PostParams::default(), &serde_json::from_value(bare_pod("bare")).unwrap())
        .await
        .unwrap();
    server.shutdown().await;
}

#[tokio::test]
async fn workloads_and_warned_pods_are_admitted_with_warnings() {
    let (server, client) = start().await;
    namespace(&client, "demo", json!({"pod-security.kubernetes.io/enforce": "restricted"}))
        .await
        .unwrap();
    let template = bare_pod("");
    let deployment = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
        "spec": {"selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": template["spec"]}}});
    let (code, warnings) =
        post(&client, "/apis/apps/v1/namespaces/demo/deployments", &deployment).await;
    assert_eq!(code, 201);
    assert_eq!(
        warnings,
        [format!(
            r#"299 - "would violate PodSecurity \"restricted:latest\": {}""#,
            BARE_POD_VIOLATIONS.replace('"', "\\\"")
        )]
    );
    let daemonset = json!({"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "d"},
        "spec": {"selector": {"matchLabels": {"app": "d"}}, "template": {
            "metadata": {"labels": {"app": "d"}},
            "spec": {"hostPID": true, "containers": [{"name": "c", "image": "x"}]}}}});
    let (code, warnings) =
        post(&client, "/apis/apps/v1/namespaces/demo/daemonsets", &daemonset).await;
    assert_eq!(code, 201);
    assert!(
        warnings[0].starts_with(
            r#"299 - "would violate PodSecurity \"restricted:latest\": host namespaces (hostPID=true), allowPrivilegeEscalation"#
        ),
        "{warnings:?}"
    );

    // `warn` alone admits the pod and says what it breaks.
    namespace(&client, "warned", json!({"pod-security.kubernetes.io/warn": "baseline"}))
        .await
        .unwrap();
    let mut privileged = hardened_pod("p");
    privileged["spec"]["containers"][0]["securityContext"]["privileged"] = json!(true);
    let (code, warnings) = post(&client, "/api/v1/namespaces/warned/pods", &privileged).await;
    assert_eq!(code, 201);
    assert_eq!(
        warnings,
        [
            r#"299 - "would violate PodSecurity \"baseline:latest\": privileged (container \"web\" must not set securityContext.privileged=true)""#
        ]
    );
    // Namespaces without labels are privileged: no warning.
    let (code, warnings) = post(&client, "/api/v1/namespaces/default/pods", &privileged).await;
    assert_eq!((code, warnings), (201, vec![]));
    server.shutdown().await;
}

#[tokio::test]
async fn invalid_labels_are_refused_and_a_stricter_enforce_warns_about_existing_pods() {
    let (server, client) = start().await;
    let status = status_of(
        namespace(&client, "bad", json!({"pod-security.kubernetes.io/enforce": "strict"})).await,
    );
    assert_eq!(status.code, 422);
    assert_eq!(
        status.message,
        r#"Namespace "bad" is invalid: metadata.labels[pod-security.kubernetes.io/enforce]: Invalid value: "strict": must be one of privileged, baseline, restricted"#
    );

    namespace(&client, "demo", json!({})).await.unwrap();
    for name in ["a", "b", "c"] {
        assert_eq!(post(&client, "/api/v1/namespaces/demo/pods", &bare_pod(name)).await.0, 201);
    }
    let mut host = bare_pod("h");
    host["spec"]["hostIPC"] = json!(true);
    assert_eq!(post(&client, "/api/v1/namespaces/demo/pods", &host).await.0, 201);
    let (code, warnings) =
        label(&client, "demo", json!({"pod-security.kubernetes.io/enforce": "baseline"})).await;
    assert_eq!(code, 200);
    assert_eq!(
        warnings,
        [
            r#"299 - "existing pods in namespace \"demo\" violate the new PodSecurity enforce level \"baseline:latest\"""#,
            r#"299 - "h: host namespaces""#,
        ]
    );
    let (_, warnings) =
        label(&client, "demo", json!({"pod-security.kubernetes.io/enforce": "restricted"})).await;
    let restricted = "allowPrivilegeEscalation != false, unrestricted capabilities, runAsNonRoot != true, seccompProfile";
    assert_eq!(warnings[1], format!(r#"299 - "a (and 2 other pods): {restricted}""#));
    assert_eq!(warnings[2], format!(r#"299 - "h: host namespaces, {restricted}""#));
    // Relaxing the level checks nothing.
    let (_, warnings) =
        label(&client, "demo", json!({"pod-security.kubernetes.io/enforce": "baseline"})).await;
    assert_eq!(warnings, Vec::<String>::new());
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_run_is_refused_and_create_deployment_warned() {
    let dir = tempfile::tempdir().unwrap();
    let kc = dir.path().join("kubeconfig");
    let server = ApiServer::start(Config { kubeconfig: Some(kc.clone()), ..Config::default() })
        .await
        .unwrap();
    tokio::task::spawn_blocking(move || kubectl_scenario(&kc)).await.unwrap();
    server.shutdown().await;
}

fn kubectl_scenario(kc: &Path) {
    ok(kc, &["create", "namespace", "demo"]);
    ok(kc, &["run", "early", "--image=nginx", "-n", "demo"]);
    let out = ok(kc, &["label", "ns", "demo", "pod-security.kubernetes.io/enforce=restricted"]);
    assert!(
        out.contains(r#"Warning: existing pods in namespace "demo" violate the new PodSecurity enforce level "restricted:latest""#),
        "{out}"
    );
    assert!(
        out.contains("Warning: early: allowPrivilegeEscalation != false, unrestricted capabilities, runAsNonRoot != true, seccompProfile"),
        "{out}"
    );
    assert!(out.contains("namespace/demo labeled"), "{out}");

    let (created, out) = kubectl(kc, &["run", "web", "--image=nginx", "-n", "demo"]);
    assert!(!created, "{out}");
    assert_eq!(
        out.trim(),
        format!(
            r#"Error from server (Forbidden): pods "web" is forbidden: violates PodSecurity "restricted:latest": {BARE_POD_VIOLATIONS}"#
        )
    );

    let out = ok(kc, &["create", "deployment", "web", "--image=nginx", "-n", "demo"]);
    assert!(out.contains("deployment.apps/web created"), "{out}");
    let warning = format!(
        "Warning: would violate PodSecurity \"restricted:latest\": {}",
        BARE_POD_VIOLATIONS.replace(r#"container "web""#, r#"container "nginx""#)
    );
    assert!(out.lines().any(|l| l == warning), "{out}");
}
