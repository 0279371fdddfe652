use serde_json::json;

use super::*;

fn pod() -> Node<'static> {
    Node::builtin("v1", "Pod")
}

fn deployment() -> Node<'static> {
    Node::builtin("apps/v1", "Deployment")
}

#[test]
fn containers_env_and_conditions_merge_by_key() {
    let mut d = json!({"spec": {"template": {"spec": {"containers": [
        {"name": "a", "image": "a:1", "env": [{"name": "X", "value": "1"}]},
        {"name": "b", "image": "b:1"}]}}}, "status": {"conditions": [{"type": "Ready", "status": "False"}]}});
    merge(
        &mut d,
        &json!({"spec": {"template": {"spec": {"containers": [
        {"name": "a", "env": [{"name": "Y", "value": "2"}]},
        {"name": "b", "$patch": "delete"}], "$setElementOrder/containers": [{"name": "a"}]}}},
        "status": {"conditions": [{"type": "Ready", "status": "True"}]}}),
        deployment(),
    );
    let c = &d["spec"]["template"]["spec"]["containers"];
    assert_eq!(c.as_array().map(Vec::len), Some(1));
    assert_eq!(c[0]["image"], "a:1");
    assert_eq!(c[0]["env"], json!([{"name": "X", "value": "1"}, {"name": "Y", "value": "2"}]));
    assert_eq!(d["status"]["conditions"], json!([{"type": "Ready", "status": "True"}]));
}

#[test]
fn containers_merge_by_name_and_keep_what_the_patch_does_not_name() {
    let mut base = json!({"spec": {"containers": [
        {"name": "w", "image": "a", "env": [{"name": "X", "value": "1"}],
         "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}]}
    ]}});
    let patch = json!({"spec": {"containers": [
        {"name": "w", "env": [{"name": "X", "value": "2"}, {"name": "Y", "value": "3"}]},
        {"name": "sidecar", "image": "s"}
    ]}});
    merge(&mut base, &patch, pod());
    let cs = &base["spec"]["containers"];
    assert_eq!(cs.as_array().map(Vec::len), Some(2));
    assert_eq!(cs[0]["image"], "a");
    assert_eq!(cs[0]["env"], json!([{"name": "X", "value": "2"}, {"name": "Y", "value": "3"}]));
    assert_eq!(cs[0]["volumeMounts"][0]["mountPath"], "/tmp");
    assert_eq!(cs[1]["name"], "sidecar");
}

#[test]
fn volumes_are_replaced_whole_by_name() {
    let mut base = json!({"volumes": [{"name": "model-cache", "emptyDir": {}}, {"name": "tmp", "emptyDir": {}}]});
    let patch =
        json!({"volumes": [{"name": "model-cache", "persistentVolumeClaim": {"claimName": "hf"}}]});
    merge(&mut base, &patch, Node::builtin("v1", "PodSpec"));
    assert_eq!(
        base["volumes"],
        json!([{"name": "model-cache", "persistentVolumeClaim": {"claimName": "hf"}}, {"name": "tmp", "emptyDir": {}}])
    );
}

#[test]
fn a_volume_source_the_patch_names_again_still_merges() {
    let mut base = json!({"volumes": [{"name": "shm", "emptyDir": {"medium": "Memory"}}]});
    merge(
        &mut base,
        &json!({"volumes": [{"name": "shm", "emptyDir": {"sizeLimit": "1Gi"}}]}),
        Node::builtin("v1", "PodSpec"),
    );
    assert_eq!(
        base["volumes"],
        json!([{"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": "1Gi"}}])
    );
}

#[test]
fn retain_keys_drops_the_keys_it_does_not_name() {
    let mut d =
        json!({"spec": {"strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}}}});
    merge(
        &mut d,
        &json!({"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate"}}}),
        deployment(),
    );
    assert_eq!(d, json!({"spec": {"strategy": {"type": "Recreate"}}}));
}

#[test]
fn maps_merge_null_deletes_and_plain_lists_are_replaced() {
    let mut base = json!({"metadata": {"labels": {"a": "1", "b": "2"}}, "spec": {"tolerations": [{"key": "x"}], "args": ["x", "y"]}});
    let patch = json!({"metadata": {"labels": {"b": null, "c": "3"}, "annotations": {"n": "v"}},
                       "spec": {"tolerations": [{"key": "y"}], "args": ["z"]}});
    merge(&mut base, &patch, pod());
    assert_eq!(base["metadata"]["labels"], json!({"a": "1", "c": "3"}));
    assert_eq!(base["metadata"]["annotations"], json!({"n": "v"}));
    assert_eq!(base["spec"]["tolerations"], json!([{"key": "y"}]));
    assert_eq!(base["spec"]["args"], json!(["z"]));
}

#[test]
fn replace_and_delete_directives() {
    let mut d = json!({"metadata": {"finalizers": ["a", "b"], "labels": {"x": "1"}},
        "spec": {"selector": {"app": "a"}, "containers": [{"name": "a"}, {"name": "b"}]}});
    merge(
        &mut d,
        &json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["a"], "labels": {"$patch": "replace", "y": "2"}},
            "spec": {"selector": {"$patch": "delete"}, "containers": [{"name": "c"}, {"$patch": "replace"}]}}),
        pod(),
    );
    assert_eq!(
        d,
        json!({"metadata": {"finalizers": ["b"], "labels": {"y": "2"}}, "spec": {"containers": [{"name": "c"}]}})
    );
}

#[test]
fn finalizers_form_a_set() {
    let mut d = json!({"metadata": {"finalizers": ["a"]}});
    merge(&mut d, &json!({"metadata": {"finalizers": ["a", "b"]}}), pod());
    assert_eq!(d["metadata"]["finalizers"], json!(["a", "b"]));
}
