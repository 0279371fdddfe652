//! Strategic merge patch for built-in kinds: maps merge, `null` deletes, lists with a merge key
//! merge item by item, `$patch: delete|replace` and `$deleteFromPrimitiveList` are honoured,
//! `$setElementOrder` and `$retainKeys` are accepted (order is kept as stored).

use serde_json::{Map, Value};

use crate::lists::{ListType, list_type, same_item};

/// Applies `patch` to `target`.
pub fn merge(target: &mut Value, patch: &Value) {
    match (target.as_object_mut(), patch.as_object()) {
        (Some(t), Some(p)) => merge_map(t, p),
        _ => *target = strip(patch),
    }
}

fn merge_map(t: &mut Map<String, Value>, p: &Map<String, Value>) {
    if p.get("$patch").and_then(Value::as_str) == Some("replace") {
        *t = strip(&Value::Object(p.clone())).as_object().cloned().unwrap_or_default();
        return;
    }
    for (k, pv) in p {
        if let Some(field) = k.strip_prefix("$deleteFromPrimitiveList/") {
            if let (Some(Value::Array(list)), Some(gone)) = (t.get_mut(field), pv.as_array()) {
                list.retain(|v| !gone.contains(v));
            }
            continue;
        }
        if k.starts_with('$') {
            continue;
        }
        match pv {
            Value::Null => {
                t.remove(k);
            }
            Value::Object(po) => {
                let entry = t.entry(k.clone()).or_insert_with(|| Value::Object(Map::new()));
                match entry.as_object_mut() {
                    Some(to) => merge_map(to, po),
                    None => *entry = strip(pv),
                }
            }
            Value::Array(pa) => {
                let current = t.remove(k).and_then(|v| match v {
                    Value::Array(a) => Some(a),
                    _ => None,
                });
                t.insert(k.clone(), Value::Array(merge_list(k, current.unwrap_or_default(), pa)));
            }
            other => {
                t.insert(k.clone(), other.clone());
            }
        }
    }
}

fn merge_list(name: &str, mut current: Vec<Value>, patch: &[Value]) -> Vec<Value> {
    if patch.iter().any(|i| i.get("$patch").and_then(Value::as_str) == Some("replace")) {
        return patch.iter().filter(|i| i.get("$patch").is_none()).map(strip).collect();
    }
    let all: Vec<Value> = current.iter().chain(patch).cloned().collect();
    match list_type(name, &all, None, false) {
        ListType::Atomic => patch.iter().map(strip).collect(),
        ListType::Set => {
            for item in patch {
                if !current.contains(item) {
                    current.push(item.clone());
                }
            }
            current
        }
        ListType::Map(keys) => {
            for item in patch {
                let pos = current.iter().position(|c| same_item(&keys, c, item));
                let delete = item.get("$patch").and_then(Value::as_str) == Some("delete");
                match (pos, delete) {
                    (Some(i), true) => {
                        current.remove(i);
                    }
                    (Some(i), false) => merge(&mut current[i], item),
                    (None, false) => current.push(strip(item)),
                    (None, true) => {}
                }
            }
            current
        }
    }
}

/// A patch value with its directives removed.
fn strip(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, _)| !k.starts_with('$'))
                .map(|(k, v)| (k.clone(), strip(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(strip).collect()),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
        );
        let c = &d["spec"]["template"]["spec"]["containers"];
        assert_eq!(c.as_array().unwrap().len(), 1);
        assert_eq!(c[0]["image"], "a:1");
        assert_eq!(c[0]["env"], json!([{"name": "X", "value": "1"}, {"name": "Y", "value": "2"}]));
        assert_eq!(d["status"]["conditions"], json!([{"type": "Ready", "status": "True"}]));
    }

    #[test]
    fn null_deletes_and_other_lists_replace() {
        let mut d =
            json!({"metadata": {"labels": {"a": "1", "b": "2"}}, "spec": {"args": ["x", "y"]}});
        merge(&mut d, &json!({"metadata": {"labels": {"a": null}}, "spec": {"args": ["z"]}}));
        assert_eq!(d, json!({"metadata": {"labels": {"b": "2"}}, "spec": {"args": ["z"]}}));
    }
}
