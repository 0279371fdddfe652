//! Field sets (`managedFields[].fieldsV1`): which fields of an object each manager owns.
//! Paths use the FieldsV1 element names: `f:name` for a field, `k:{"name":"x"}` for an item of
//! a map list, `v:"x"` for an item of a set. Leaves are scalars, atomic lists and set items;
//! map-list items are recorded too so that a manager dropping an item removes all of it.

use std::collections::BTreeSet;

use serde_json::{Map, Value};

use blaze_merge::lists::{Key, ListType, Mode, Node, item_key, same_item};

/// One path.
pub type Path = Vec<String>;
/// A set of paths.
pub type FieldSet = BTreeSet<Path>;

/// Metadata fields a manager can own; the rest is the server's.
const OWNED_METADATA: &[&str] = &["labels", "annotations", "finalizers", "ownerReferences"];

/// The fields `obj` sets. `schema` guides list types of custom resources.
pub fn set_of(obj: &Value, schema: Option<&Value>, custom: bool) -> FieldSet {
    let mut out = FieldSet::new();
    let Some(map) = obj.as_object() else { return out };
    let root = Node::of(obj, schema, custom);
    for (k, v) in map {
        match k.as_str() {
            "apiVersion" | "kind" => {}
            "metadata" => {
                for mk in OWNED_METADATA {
                    if let Some(mv) = v.get(*mk) {
                        let at = root.field("metadata").field(mk);
                        walk(mk, mv, at, vec!["f:metadata".into()], &mut out);
                    }
                }
            }
            _ => walk(k, v, root.field(k), Vec::new(), &mut out),
        }
    }
    out
}

fn walk(name: &str, v: &Value, at: Node<'_>, mut path: Path, out: &mut FieldSet) {
    path.push(format!("f:{name}"));
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, c) in m {
                walk(k, c, at.field(k), path.clone(), out);
            }
        }
        Value::Array(items) => match at.list_type(Mode::Apply) {
            ListType::Map(keys) => {
                for item in items {
                    let mut ip = path.clone();
                    ip.push(format!("k:{}", Value::Object(item_key(&keys, item))));
                    out.insert(ip.clone());
                    if let Some(m) = item.as_object() {
                        for (k, c) in m {
                            walk(k, c, at.items().field(k), ip.clone(), out);
                        }
                    }
                }
            }
            ListType::Set => {
                for item in items {
                    let mut ip = path.clone();
                    ip.push(format!("v:{item}"));
                    out.insert(ip);
                }
            }
            ListType::Atomic => {
                out.insert(path);
            }
        },
        _ => {
            out.insert(path);
        }
    }
}

/// The value at `path`, if present.
pub fn get<'a>(obj: &'a Value, path: &[String]) -> Option<&'a Value> {
    let mut cur = obj;
    for el in path {
        cur = step(cur, el)?;
    }
    Some(cur)
}

fn step<'a>(cur: &'a Value, el: &str) -> Option<&'a Value> {
    if let Some(f) = el.strip_prefix("f:") {
        return cur.get(f);
    }
    let items = cur.as_array()?;
    if let Some(k) = el.strip_prefix("k:") {
        let key: Map<String, Value> = serde_json::from_str(k).ok()?;
        let keys: Vec<Key> = key.keys().map(Key::new).collect();
        let probe = Value::Object(key);
        return items.iter().find(|i| same_item(&keys, i, &probe));
    }
    let v: Value = serde_json::from_str(el.strip_prefix("v:")?).ok()?;
    items.iter().find(|i| **i == v)
}

/// Removes the value at `path`, if present.
pub fn remove(obj: &mut Value, path: &[String]) {
    let Some((last, parent_path)) = path.split_last() else { return };
    let mut cur = obj;
    for el in parent_path {
        let next = match el.strip_prefix("f:") {
            Some(f) => cur.get_mut(f),
            None => {
                let Some(found) = get(cur, std::slice::from_ref(el)).cloned() else { return };
                cur.as_array_mut().and_then(|a| a.iter_mut().find(|i| **i == found))
            }
        };
        let Some(n) = next else { return };
        cur = n;
    }
    match last.strip_prefix("f:") {
        Some(f) => {
            if let Some(m) = cur.as_object_mut() {
                m.remove(f);
            }
        }
        None => {
            if let Some(found) = get(cur, std::slice::from_ref(last)).cloned()
                && let Some(a) = cur.as_array_mut()
            {
                a.retain(|i| *i != found);
            }
        }
    }
}

/// The FieldsV1 tree of a set.
pub fn to_fields_v1(set: &FieldSet) -> Value {
    let mut root = Map::new();
    for path in set {
        let mut cur = &mut root;
        for el in path {
            let entry = cur.entry(el.clone()).or_insert_with(|| Value::Object(Map::new()));
            cur =
                entry.as_object_mut().unwrap_or_else(|| unreachable!("only objects are inserted"));
        }
        if path.last().is_some_and(|l| l.starts_with("k:")) {
            cur.insert(".".into(), Value::Object(Map::new()));
        }
    }
    Value::Object(root)
}

/// The set of a FieldsV1 tree.
pub fn from_fields_v1(v: &Value) -> FieldSet {
    fn go(v: &Value, path: &mut Path, out: &mut FieldSet) {
        let Some(m) = v.as_object() else { return };
        let children: Vec<(&String, &Value)> =
            m.iter().filter(|(k, _)| k.as_str() != ".").collect();
        if (children.is_empty() || m.contains_key(".")) && !path.is_empty() {
            out.insert(path.clone());
        }
        for (k, c) in children {
            path.push(k.clone());
            go(c, path, out);
            path.pop();
        }
    }
    let mut out = FieldSet::new();
    go(v, &mut Vec::new(), &mut out);
    out
}

/// `.spec.replicas` style, for conflict messages.
pub fn display(path: &[String]) -> String {
    path.iter()
        .map(|el| match el.strip_prefix("f:") {
            Some(f) => format!(".{f}"),
            None => format!("[{}]", el.trim_start_matches("k:").trim_start_matches("v:")),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn sets_round_trip_through_fields_v1() {
        let obj = json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "x", "labels": {"a": "1"}, "finalizers": ["f"]},
            "spec": {"replicas": 2, "template": {"spec": {"containers": [{"name": "c", "image": "i"}]}},
                "args": ["a", "b"]}});
        let set = set_of(&obj, None, false);
        assert!(set.contains(&vec!["f:spec".to_owned(), "f:replicas".to_owned()]));
        assert!(
            !set.iter().any(|p| p.len() == 2 && p[1] == "f:name"),
            "metadata.name is the server's"
        );
        assert_eq!(from_fields_v1(&to_fields_v1(&set)), set);
        let image: Path =
            ["f:spec", "f:template", "f:spec", "f:containers", "k:{\"name\":\"c\"}", "f:image"]
                .iter()
                .map(|s| (*s).to_owned())
                .collect();
        assert_eq!(get(&obj, &image), Some(&json!("i")));
        let mut o = obj.clone();
        remove(&mut o, &image[..5]);
        assert_eq!(o["spec"]["template"]["spec"]["containers"], json!([]));
        assert_eq!(display(&image[..2]), ".spec.template");
    }
}
