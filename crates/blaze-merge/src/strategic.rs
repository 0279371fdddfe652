//! Strategic merge patch, as the Kubernetes API server applies it to built-in kinds:
//! maps merge, `null` deletes a key, lists merge by their [`ListType`] under
//! [`Mode::Strategic`] (the built-in type's `patchMergeKey`): map lists item by item on their merge key, sets by union, other lists are replaced.
//!
//! Directives:
//! - `$patch: replace` on a map or a list item replaces it (a list with such an item is
//!   replaced by the patch's other items); `$patch: delete` deletes a list item or a map;
//! - `$deleteFromPrimitiveList/FIELD` removes values from a list of scalars;
//! - `$retainKeys` drops the keys it does not name before merging. Items of lists whose
//!   items keep only the keys a patch names ([`Node::retains_keys`], `volumes`) get a patch item's
//!   own keys when it has no `$retainKeys`, as `kubectl apply` would send them, so a patch
//!   that gives a volume another source replaces the old one instead of adding a second;
//! - `$setElementOrder/FIELD` is accepted; items keep their stored order, new ones go last.

use serde_json::{Map, Value};

use crate::lists::{ListType, Mode, Node, same_item};

/// Applies the strategic merge patch `patch` to `target`, a value of the built-in type `at`
/// (as `Node::builtin("v1", "Pod")`).
pub fn merge(target: &mut Value, patch: &Value, at: Node<'_>) {
    match (target.as_object_mut(), patch.as_object()) {
        (Some(t), Some(p)) => merge_map(t, p, at),
        _ => *target = strip(patch),
    }
}

fn directive<'a>(v: &'a Value, name: &str) -> Option<&'a str> {
    v.get(name).and_then(Value::as_str)
}

fn merge_map(t: &mut Map<String, Value>, p: &Map<String, Value>, at: Node<'_>) {
    if p.get("$patch").and_then(Value::as_str) == Some("replace") {
        *t = strip_map(p);
        return;
    }
    if let Some(keep) = p.get("$retainKeys").and_then(Value::as_array) {
        t.retain(|k, _| keep.iter().any(|r| r.as_str() == Some(k)));
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
            Value::Object(_) if directive(pv, "$patch") == Some("delete") => {
                t.remove(k);
            }
            Value::Object(po) => {
                let entry = t.entry(k.clone()).or_insert_with(|| Value::Object(Map::new()));
                match entry.as_object_mut() {
                    Some(to) => merge_map(to, po, at.field(k)),
                    None => *entry = strip(pv),
                }
            }
            Value::Array(pa) => {
                let current = match t.remove(k) {
                    Some(Value::Array(a)) => a,
                    _ => Vec::new(),
                };
                t.insert(k.clone(), Value::Array(merge_list(at.field(k), current, pa)));
            }
            other => {
                t.insert(k.clone(), other.clone());
            }
        }
    }
}

fn merge_list(at: Node<'_>, mut current: Vec<Value>, patch: &[Value]) -> Vec<Value> {
    if patch.iter().any(|i| directive(i, "$patch") == Some("replace")) {
        return patch.iter().filter(|i| i.get("$patch").is_none()).map(strip).collect();
    }
    match at.list_type(Mode::Strategic) {
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
            let retain = at.retains_keys();
            for item in patch {
                let pos = current.iter().position(|c| same_item(&keys, c, item));
                let delete = directive(item, "$patch") == Some("delete");
                match (pos, delete) {
                    (Some(i), true) => {
                        current.remove(i);
                    }
                    (Some(i), false) => {
                        if retain
                            && item.get("$retainKeys").is_none()
                            && let (Some(c), Some(named)) =
                                (current[i].as_object_mut(), item.as_object())
                        {
                            c.retain(|k, _| named.contains_key(k));
                        }
                        merge(&mut current[i], item, at.items());
                    }
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
        Value::Object(m) => Value::Object(strip_map(m)),
        Value::Array(a) => Value::Array(a.iter().map(strip).collect()),
        other => other.clone(),
    }
}

fn strip_map(m: &Map<String, Value>) -> Map<String, Value> {
    m.iter().filter(|(k, _)| !k.starts_with('$')).map(|(k, v)| (k.clone(), strip(v))).collect()
}

#[cfg(test)]
mod tests;
