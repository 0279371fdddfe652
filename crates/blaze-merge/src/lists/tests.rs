use serde_json::json;

use super::*;

/// The list type at a dotted path (`[]` steps into items) from a built-in type.
fn at(api_version: &str, ty: &str, path: &str, mode: Mode) -> ListType {
    walk(Node::builtin(api_version, ty), path).list_type(mode)
}

fn walk<'a>(mut node: Node<'a>, path: &str) -> Node<'a> {
    for step in path.split('.') {
        let (name, items) = match step.strip_suffix("[]") {
            Some(n) => (n, true),
            None => (step, false),
        };
        node = node.field(name);
        if items {
            node = node.items();
        }
    }
    node
}

fn map(keys: &[&str]) -> ListType {
    ListType::Map(keys.iter().map(|k| Key::new(*k)).collect())
}

fn both(api_version: &str, ty: &str, path: &str) -> (ListType, ListType) {
    (at(api_version, ty, path, Mode::Strategic), at(api_version, ty, path, Mode::Apply))
}

#[test]
fn containers_env_and_volumes_merge_on_name() {
    for path in ["spec.containers", "spec.initContainers", "spec.containers[].env", "spec.volumes"]
    {
        assert_eq!(both("v1", "Pod", path), (map(&["name"]), map(&["name"])), "{path}");
    }
    assert_eq!(
        at("v1", "Pod", "spec.containers[].volumeMounts", Mode::Strategic),
        map(&["mountPath"])
    );
}

#[test]
fn volumes_retain_keys_and_containers_do_not() {
    assert!(walk(Node::builtin("v1", "Pod"), "spec.volumes").retains_keys());
    assert!(!walk(Node::builtin("v1", "Pod"), "spec.containers").retains_keys());
}

#[test]
fn container_ports_apply_on_two_keys_and_patch_on_one() {
    assert_eq!(
        at("v1", "Pod", "spec.containers[].ports", Mode::Strategic),
        map(&["containerPort"])
    );
    let ListType::Map(keys) = at("v1", "Pod", "spec.containers[].ports", Mode::Apply) else {
        panic!("container ports are a map list");
    };
    assert_eq!(
        keys.iter().map(|k| k.name.as_str()).collect::<Vec<_>>(),
        ["containerPort", "protocol"]
    );
    // A port that leaves the protocol out is the TCP one.
    assert!(same_item(
        &keys,
        &json!({"containerPort": 80}),
        &json!({"containerPort": 80, "protocol": "TCP"})
    ));
    assert!(!same_item(
        &keys,
        &json!({"containerPort": 80}),
        &json!({"containerPort": 80, "protocol": "UDP"})
    ));
    assert_eq!(
        item_key(&keys, &json!({"containerPort": 80})),
        *json!({"containerPort": 80, "protocol": "TCP"}).as_object().unwrap()
    );
}

#[test]
fn service_ports_are_not_container_ports() {
    assert_eq!(at("v1", "Service", "spec.ports", Mode::Strategic), map(&["port"]));
    let ListType::Map(keys) = at("v1", "Service", "spec.ports", Mode::Apply) else {
        panic!("service ports are a map list");
    };
    assert_eq!(keys.iter().map(|k| k.name.as_str()).collect::<Vec<_>>(), ["port", "protocol"]);
}

#[test]
fn tolerations_are_atomic_and_image_pull_secrets_merge_on_name() {
    assert_eq!(both("v1", "Pod", "spec.tolerations"), (ListType::Atomic, ListType::Atomic));
    // `LocalObjectReference.name` defaults to "".
    let name = Key { name: "name".into(), default: Some(json!("")) };
    assert_eq!(
        at("v1", "Pod", "spec.imagePullSecrets", Mode::Strategic),
        ListType::Map(vec![name])
    );
    // A ServiceAccount's imagePullSecrets have no merge key.
    assert_eq!(at("v1", "ServiceAccount", "imagePullSecrets", Mode::Strategic), ListType::Atomic);
}

#[test]
fn topology_spread_constraints_apply_on_key_and_when_unsatisfiable() {
    assert_eq!(
        both("v1", "Pod", "spec.topologySpreadConstraints"),
        (map(&["topologyKey"]), map(&["topologyKey", "whenUnsatisfiable"]))
    );
}

#[test]
fn pod_templates_nest_in_workloads() {
    for (v, kind, path) in [
        ("apps/v1", "Deployment", "spec.template.spec.containers[].env"),
        ("apps/v1", "StatefulSet", "spec.template.spec.containers[].env"),
        ("batch/v1", "CronJob", "spec.jobTemplate.spec.template.spec.containers[].env"),
        ("v1", "PodTemplateSpec", "spec.containers[].env"),
    ] {
        assert_eq!(at(v, kind, path, Mode::Strategic), map(&["name"]), "{kind} {path}");
    }
    assert_eq!(at("apps/v1", "Deployment", "status.conditions", Mode::Apply), map(&["type"]));
    assert_eq!(at("v1", "Pod", "metadata.finalizers", Mode::Strategic), ListType::Set);
    assert_eq!(at("v1", "Pod", "metadata.ownerReferences", Mode::Apply), map(&["uid"]));
}

#[test]
fn unknown_fields_and_kinds_are_atomic() {
    assert_eq!(at("v1", "Pod", "spec.containers[].args", Mode::Apply), ListType::Atomic);
    assert_eq!(at("v1", "Pod", "spec.nonsense", Mode::Strategic), ListType::Atomic);
    assert_eq!(
        at("example.com/v1", "Widget", "spec.containers", Mode::Strategic),
        ListType::Atomic
    );
}

#[test]
fn custom_resources_follow_their_schema_and_metadata_its_type() {
    let schema = json!({"properties": {"spec": {"properties": {
        "hosts": {"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["id"]},
        "tags": {"x-kubernetes-list-type": "set"},
        "containers": {"type": "array"}}}}});
    let cr = Node::of(&json!({"apiVersion": "v1", "kind": "Pod"}), Some(&schema), true);
    assert_eq!(walk(cr, "spec.hosts").list_type(Mode::Apply), map(&["id"]));
    assert_eq!(walk(cr, "spec.tags").list_type(Mode::Apply), ListType::Set);
    assert_eq!(walk(cr, "spec.containers").list_type(Mode::Apply), ListType::Atomic);
    assert_eq!(walk(cr, "metadata.finalizers").list_type(Mode::Apply), ListType::Set);
    assert_eq!(
        walk(Node::Custom(None), "metadata.ownerReferences").list_type(Mode::Apply),
        map(&["uid"])
    );
    assert_eq!(walk(Node::Custom(None), "spec.hosts").list_type(Mode::Apply), ListType::Atomic);
}
