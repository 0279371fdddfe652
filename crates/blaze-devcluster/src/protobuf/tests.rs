use serde_json::Value;

use super::*;

#[test]
fn reads_what_kubectl_auth_can_i_sends() {
    // `kubectl auth can-i list pods -n demo`, as kubectl 1.33 encodes it.
    let body = b"k8s\x00\n2\n\x17authorization.k8s.io/v1\x12\x17SelfSubjectAccessReview\x12:\n\x10\n\x00\x12\x00\x1a\x00\"\x00*\x002\x008\x00B\x00\x12\x1c\n\x1a\n\x04demo\x12\x04list\x1a\x00\"\x00*\x04pods2\x00:\x00\x1a\x08\x08\x00\x12\x00\x1a\x00 \x00\x1a\x00\"\x00";
    let review = decode(body).unwrap();
    assert_eq!(review["kind"], "SelfSubjectAccessReview");
    let attrs = &review["spec"]["resourceAttributes"];
    assert_eq!((attrs["namespace"].as_str(), attrs["verb"].as_str()), (Some("demo"), Some("list")));
    assert_eq!(attrs["resource"], "pods");
    assert!(attrs.get("group").is_none(), "empty omitempty strings are left out");
    assert!(review["spec"].get("nonResourceAttributes").is_none());
    assert!(decode(&body[..40]).is_err(), "a truncated body is refused");
}

/// Bodies kubectl 1.32 sent (`kubectl -n demo COMMAND`), each with what `kubectl -n demo COMMAND
/// --dry-run=client -o json` prints for the same object: Go's own JSON encoding of it.
const CAPTURED: &[(&str, &[u8], &str)] = &[
    (
        "create namespace demo",
        b"k8s\x00\n\x0f\n\x02v1\x12\tNamespace\x12\x1c\n\x14\n\x04demo\x12\x00\x1a\x00\"\x00*\x002\x008\x00B\x00\x12\x00\x1a\x02\n\x00\x1a\x00\"\x00",
        r#"{"kind":"Namespace","apiVersion":"v1","metadata":{"name":"demo","creationTimestamp":null},"spec":{},"status":{}}"#,
    ),
    (
        "create configmap x --from-literal=a=b --from-literal=empty=",
        b"k8s\x00\n\x0f\n\x02v1\x12\tConfigMap\x12*\n\x15\n\x01x\x12\x00\x1a\x04demo\"\x00*\x002\x008\x00B\x00\x12\x06\n\x01a\x12\x01b\x12\t\n\x05empty\x12\x00\x1a\x00\"\x00",
        r#"{"kind":"ConfigMap","apiVersion":"v1","metadata":{"name":"x","namespace":"demo","creationTimestamp":null},"data":{"a":"b","empty":""}}"#,
    ),
    (
        "create deployment web --image=nginx --replicas=2 --port=80",
        b"k8s\x00\n\x15\n\x07apps/v1\x12\nDeployment\x12\xbc\x01\n#\n\x03web\x12\x00\x1a\x04demo\"\x00*\x002\x008\x00B\x00Z\n\n\x03app\x12\x03web\x12\x86\x01\x08\x02\x12\x0c\n\n\n\x03app\x12\x03web\x1al\n\x1c\n\x00\x12\x00\x1a\x00\"\x00*\x002\x008\x00B\x00Z\n\n\x03app\x12\x03web\x12L\x12.\n\x05nginx\x12\x05nginx*\x002\n\n\x00\x10\x00\x18P\"\x00*\x00B\x00j\x00r\x00\x80\x01\x00\x88\x01\x00\x90\x01\x00\xa2\x01\x00\x1a\x002\x00B\x00J\x00R\x00X\x00`\x00h\x00\x82\x01\x00\x8a\x01\x00\x9a\x01\x00\xc2\x01\x00\"\x02\n\x00(\x008\x00\x1a\x0c\x08\x00\x10\x00\x18\x00 \x00(\x008\x00\x1a\x00\"\x00",
        r#"{"kind":"Deployment","apiVersion":"apps/v1","metadata":{"name":"web","namespace":"demo","creationTimestamp":null,"labels":{"app":"web"}},"spec":{"replicas":2,"selector":{"matchLabels":{"app":"web"}},"template":{"metadata":{"creationTimestamp":null,"labels":{"app":"web"}},"spec":{"containers":[{"name":"nginx","image":"nginx","ports":[{"containerPort":80}],"resources":{}}]}},"strategy":{}},"status":{}}"#,
    ),
    (
        "create secret generic s --from-literal=k=v",
        b"k8s\x00\n\x0c\n\x02v1\x12\x06Secret\x12!\n\x15\n\x01s\x12\x00\x1a\x04demo\"\x00*\x002\x008\x00B\x00\x12\x06\n\x01k\x12\x01v\x1a\x00\x1a\x00\"\x00",
        r#"{"kind":"Secret","apiVersion":"v1","metadata":{"name":"s","namespace":"demo","creationTimestamp":null},"data":{"k":"dg=="}}"#,
    ),
    (
        "create serviceaccount sa",
        b"k8s\x00\n\x14\n\x02v1\x12\x0eServiceAccount\x12\x18\n\x16\n\x02sa\x12\x00\x1a\x04demo\"\x00*\x002\x008\x00B\x00\x1a\x00\"\x00",
        r#"{"kind":"ServiceAccount","apiVersion":"v1","metadata":{"name":"sa","namespace":"demo","creationTimestamp":null}}"#,
    ),
    (
        "create rolebinding rb --role=r --serviceaccount=demo:sa",
        b"k8s\x00\n+\n\x1crbac.authorization.k8s.io/v1\x12\x0bRoleBinding\x12\\\n\x16\n\x02rb\x12\x00\x1a\x04demo\"\x00*\x002\x008\x00B\x00\x12\x1c\n\x0eServiceAccount\x12\x00\x1a\x02sa\"\x04demo\x1a$\n\x19rbac.authorization.k8s.io\x12\x04Role\x1a\x01r\x1a\x00\"\x00",
        r#"{"kind":"RoleBinding","apiVersion":"rbac.authorization.k8s.io/v1","metadata":{"name":"rb","namespace":"demo","creationTimestamp":null},"subjects":[{"kind":"ServiceAccount","name":"sa","namespace":"demo"}],"roleRef":{"apiGroup":"rbac.authorization.k8s.io","kind":"Role","name":"r"}}"#,
    ),
    (
        "create service clusterip svc --tcp=80:8080",
        b"k8s\x00\n\x0d\n\x02v1\x12\x07Service\x12m\n#\n\x03svc\x12\x00\x1a\x04demo\"\x00*\x002\x008\x00B\x00Z\n\n\x03app\x12\x03svc\x12B\n\x1b\n\x0780-8080\x12\x03TCP\x18P\"\x07\x08\x00\x10\x90?\x1a\x00(\x00\x12\n\n\x03app\x12\x03svc\x1a\x00\"\tClusterIP:\x00B\x00R\x00Z\x00`\x00h\x00\x1a\x02\n\x00\x1a\x00\"\x00",
        r#"{"kind":"Service","apiVersion":"v1","metadata":{"name":"svc","namespace":"demo","creationTimestamp":null,"labels":{"app":"svc"}},"spec":{"ports":[{"name":"80-8080","protocol":"TCP","port":80,"targetPort":8080}],"selector":{"app":"svc"},"type":"ClusterIP"},"status":{"loadBalancer":{}}}"#,
    ),
    (
        "create clusterrolebinding crb --clusterrole=cr --user=alice",
        b"k8s\x00\n2\n\x1crbac.authorization.k8s.io/v1\x12\x12ClusterRoleBinding\x12o\n\x13\n\x03crb\x12\x00\x1a\x00\"\x00*\x002\x008\x00B\x00\x12*\n\x04User\x12\x19rbac.authorization.k8s.io\x1a\x05alice\"\x00\x1a,\n\x19rbac.authorization.k8s.io\x12\x0bClusterRole\x1a\x02cr\x1a\x00\"\x00",
        r#"{"kind":"ClusterRoleBinding","apiVersion":"rbac.authorization.k8s.io/v1","metadata":{"name":"crb","creationTimestamp":null},"subjects":[{"kind":"User","apiGroup":"rbac.authorization.k8s.io","name":"alice"}],"roleRef":{"apiGroup":"rbac.authorization.k8s.io","kind":"ClusterRole","name":"cr"}}"#,
    ),
];

#[test]
fn kubectl_create_bodies_decode_to_what_go_encodes_as_json() {
    for (command, body, json) in CAPTURED {
        let expected: Value = serde_json::from_str(json).unwrap();
        let got = decode(body).unwrap_or_else(|e| panic!("kubectl {command}: {}", e.message));
        assert_eq!(got, expected, "kubectl {command}");
    }
}

#[test]
fn unknown_kinds_and_fields_are_refused_by_name() {
    let body = b"k8s\x00\n\x14\n\x07demo/v1\x12\tWhatsThis\x12\x00";
    let e = decode(body).unwrap_err();
    assert_eq!((e.code, e.reason), (415, "UnsupportedMediaType"));
    assert!(e.message.contains("WhatsThis (demo/v1)"), "{}", e.message);
    // A Namespace whose spec carries a field number this server does not know.
    let body = b"k8s\x00\n\x0f\n\x02v1\x12\tNamespace\x12\x04\x12\x02\x78\x01";
    let e = decode(body).unwrap_err();
    assert_eq!(e.code, 415);
    assert!(e.message.contains("NamespaceSpec with field 15"), "{}", e.message);
}
