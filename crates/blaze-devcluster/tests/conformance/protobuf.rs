//! kubectl's protobuf bodies: `kubectl create` sends `application/vnd.kubernetes.protobuf` for
//! built-in kinds; each object is read back with `kubectl get -o json` and checked field by
//! field.

use std::path::Path;

use blaze_devcluster::{ApiServer, Config};
use serde_json::Value;

use super::kubectl::{kubectl, ok};

fn get(kc: &Path, what: &[&str]) -> Value {
    let mut args = vec!["get", "-o", "json"];
    args.extend_from_slice(what);
    serde_json::from_str(&ok(kc, &args)).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_create_sends_protobuf_that_the_server_reads() {
    let dir = tempfile::tempdir().unwrap();
    let kc = dir.path().join("kubeconfig");
    let server = ApiServer::start(Config { kubeconfig: Some(kc.clone()), ..Config::default() })
        .await
        .unwrap();
    tokio::task::spawn_blocking(move || scenario(&kc)).await.unwrap();
    server.shutdown().await;
}

fn scenario(kc: &Path) {
    let out = ok(kc, &["create", "namespace", "demo"]);
    assert!(out.contains("namespace/demo created"), "{out}");
    let ns = get(kc, &["namespace", "demo"]);
    assert_eq!(ns["metadata"]["name"], "demo");
    assert!(ns["metadata"]["uid"].as_str().is_some_and(|u| !u.is_empty()), "{ns}");
    assert!(ns["metadata"]["creationTimestamp"].as_str().is_some_and(|t| t.ends_with('Z')));

    let n = ["-n", "demo"];
    let create = |args: &[&str]| ok(kc, &[&["create"], args, &n].concat());
    create(&["configmap", "x", "--from-literal=a=b", "--from-literal=empty="]);
    let cm = get(kc, &["-n", "demo", "configmap", "x"]);
    assert_eq!(cm["data"], serde_json::json!({"a": "b", "empty": ""}));
    assert_eq!(cm["metadata"]["namespace"], "demo");

    create(&["secret", "generic", "s", "--from-literal=k=v"]);
    let secret = get(kc, &["-n", "demo", "secret", "s"]);
    assert_eq!(secret["data"]["k"], "dg==", "bytes come back base64");
    assert_eq!(secret["type"], "Opaque");

    create(&["serviceaccount", "sa"]);
    let sa = get(kc, &["-n", "demo", "serviceaccount", "sa"]);
    assert_eq!(
        (sa["kind"].as_str(), sa["metadata"]["name"].as_str()),
        (Some("ServiceAccount"), Some("sa"))
    );

    create(&["deployment", "web", "--image=nginx", "--replicas=2", "--port=80"]);
    let deploy = get(kc, &["-n", "demo", "deployment", "web"]);
    let spec = &deploy["spec"];
    assert_eq!(spec["replicas"], 2);
    assert_eq!(spec["selector"]["matchLabels"]["app"], "web");
    assert_eq!(spec["template"]["metadata"]["labels"]["app"], "web");
    let container = &spec["template"]["spec"]["containers"][0];
    assert_eq!(
        (container["name"].as_str(), container["image"].as_str()),
        (Some("nginx"), Some("nginx"))
    );
    assert_eq!(container["ports"][0]["containerPort"], 80);
    assert_eq!(deploy["metadata"]["labels"]["app"], "web");

    create(&["deployment", "idle", "--image=nginx", "--replicas=0"]);
    let idle = get(kc, &["-n", "demo", "deployment", "idle"]);
    assert_eq!(idle["spec"]["replicas"], 0, "a zero pointer field is kept: {idle}");

    create(&["service", "clusterip", "svc", "--tcp=80:8080"]);
    let svc = get(kc, &["-n", "demo", "service", "svc"]);
    let port = &svc["spec"]["ports"][0];
    assert_eq!((port["port"].as_i64(), port["targetPort"].as_i64()), (Some(80), Some(8080)));
    assert_eq!((port["name"].as_str(), port["protocol"].as_str()), (Some("80-8080"), Some("TCP")));
    assert_eq!(svc["spec"]["type"], "ClusterIP");

    create(&["role", "r", "--verb=get", "--verb=list", "--resource=pods"]);
    let role = get(kc, &["-n", "demo", "role", "r"]);
    assert_eq!(role["rules"][0]["verbs"], serde_json::json!(["get", "list"]));
    assert_eq!(role["rules"][0]["resources"], serde_json::json!(["pods"]));
    assert_eq!(role["rules"][0]["apiGroups"], serde_json::json!([""]));

    create(&["rolebinding", "rb", "--role=r", "--serviceaccount=demo:sa"]);
    let rb = get(kc, &["-n", "demo", "rolebinding", "rb"]);
    assert_eq!(
        rb["roleRef"],
        serde_json::json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "r"})
    );
    assert_eq!(
        rb["subjects"],
        serde_json::json!([{"kind": "ServiceAccount", "name": "sa", "namespace": "demo"}])
    );
    // The binding is enforced: the account may now list pods in demo, and only there.
    let can = |ns: &str| {
        kubectl(
            kc,
            &["auth", "can-i", "list", "pods", "-n", ns, "--as=system:serviceaccount:demo:sa"],
        )
        .1
    };
    assert_eq!((can("demo").trim(), can("default").trim()), ("yes", "no"));

    ok(kc, &["create", "clusterrole", "cr", "--verb=list", "--resource=nodes"]);
    ok(kc, &["create", "clusterrolebinding", "crb", "--clusterrole=cr", "--user=alice"]);
    let crb = get(kc, &["clusterrolebinding", "crb"]);
    assert_eq!(crb["subjects"][0]["name"], "alice");
    assert_eq!(get(kc, &["clusterrole", "cr"])["rules"][0]["resources"][0], "nodes");

    ok(
        kc,
        &[
            "run",
            "p",
            "-n",
            "demo",
            "--image=busybox",
            "--restart=Never",
            "--labels=x=y",
            "--",
            "sleep",
            "1",
        ],
    );
    let pod = get(kc, &["-n", "demo", "pod", "p"]);
    assert_eq!(pod["spec"]["containers"][0]["args"], serde_json::json!(["sleep", "1"]));
    assert_eq!(pod["spec"]["restartPolicy"], "Never");
    assert_eq!(pod["metadata"]["labels"]["x"], "y");

    // The same object through JSON and through protobuf is stored alike.
    let out =
        ok(kc, &["create", "-n", "demo", "configmap", "y", "--from-literal=a=b", "-o", "json"]);
    let created: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(created["data"]["a"], "b");
}
