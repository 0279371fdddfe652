//! A strategic merge of JSON values, for the `spec.podTemplate` override. It follows the
//! Kubernetes strategic-merge-patch rules for the pod fields people override: lists of named
//! things merge item by item on their merge key (containers and volumes by `name`, mounts by
//! `mountPath`, ports by `containerPort`, env by `name`), volumes replace the whole item
//! (the API's `retainKeys`, so an override can swap an emptyDir for a claim), other lists are
//! replaced, maps merge recursively, and `null` deletes a key.

use serde_json::{Map, Value};

/// How a list field merges.
enum ListRule {
    /// Merge items with equal values of this key.
    Merge(&'static str),
    /// Items with equal values of this key are replaced whole.
    Replace(&'static str),
    /// The patch's list replaces the base's.
    Atomic,
}

fn rule(field: &str) -> ListRule {
    match field {
        "containers" | "initContainers" | "ephemeralContainers" | "env" | "imagePullSecrets" => {
            ListRule::Merge("name")
        }
        "volumes" => ListRule::Replace("name"),
        "volumeMounts" => ListRule::Merge("mountPath"),
        "ports" => ListRule::Merge("containerPort"),
        "hostAliases" => ListRule::Merge("ip"),
        _ => ListRule::Atomic,
    }
}

/// Merges `patch` into `base`.
pub fn strategic_merge(base: &mut Value, patch: &Value) {
    match (base, patch) {
        (Value::Object(b), Value::Object(p)) => merge_maps(b, p),
        (b, p) => *b = p.clone(),
    }
}

fn merge_maps(base: &mut Map<String, Value>, patch: &Map<String, Value>) {
    for (k, pv) in patch {
        if pv.is_null() {
            base.remove(k);
            continue;
        }
        match (base.get_mut(k), pv) {
            (Some(Value::Array(bl)), Value::Array(pl)) => merge_list(bl, pl, rule(k)),
            (Some(bv), pv) => strategic_merge(bv, pv),
            (None, pv) => {
                base.insert(k.clone(), pv.clone());
            }
        }
    }
}

fn merge_list(base: &mut Vec<Value>, patch: &[Value], rule: ListRule) {
    let (key, replace) = match rule {
        ListRule::Atomic => {
            *base = patch.to_vec();
            return;
        }
        ListRule::Merge(k) => (k, false),
        ListRule::Replace(k) => (k, true),
    };
    for item in patch {
        let Some(id) = item.get(key) else {
            base.push(item.clone());
            continue;
        };
        match base.iter_mut().find(|b| b.get(key) == Some(id)) {
            Some(existing) if replace => *existing = item.clone(),
            Some(existing) => strategic_merge(existing, item),
            None => base.push(item.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

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
        strategic_merge(&mut base, &patch);
        let cs = base["spec"]["containers"].as_array().unwrap();
        assert_eq!(cs.len(), 2);
        assert_eq!(cs[0]["image"], "a");
        assert_eq!(cs[0]["env"], json!([{"name": "X", "value": "2"}, {"name": "Y", "value": "3"}]));
        assert_eq!(cs[0]["volumeMounts"][0]["mountPath"], "/tmp");
        assert_eq!(cs[1]["name"], "sidecar");
    }

    #[test]
    fn volumes_are_replaced_whole_by_name() {
        let mut base = json!({"volumes": [{"name": "model-cache", "emptyDir": {}}, {"name": "tmp", "emptyDir": {}}]});
        let patch = json!({"volumes": [{"name": "model-cache", "persistentVolumeClaim": {"claimName": "hf"}}]});
        strategic_merge(&mut base, &patch);
        assert_eq!(
            base["volumes"],
            json!([{"name": "model-cache", "persistentVolumeClaim": {"claimName": "hf"}}, {"name": "tmp", "emptyDir": {}}])
        );
    }

    #[test]
    fn maps_merge_null_deletes_and_plain_lists_are_replaced() {
        let mut base = json!({"metadata": {"labels": {"a": "1", "b": "2"}}, "spec": {"tolerations": [{"key": "x"}]}});
        let patch = json!({"metadata": {"labels": {"b": null, "c": "3"}, "annotations": {"n": "v"}},
                           "spec": {"tolerations": [{"key": "y"}]}});
        strategic_merge(&mut base, &patch);
        assert_eq!(base["metadata"]["labels"], json!({"a": "1", "c": "3"}));
        assert_eq!(base["metadata"]["annotations"], json!({"n": "v"}));
        assert_eq!(base["spec"]["tolerations"], json!([{"key": "y"}]));
    }
}
