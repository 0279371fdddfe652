//! `managedFields` bookkeeping and server-side apply ("Server-Side Apply" in the Kubernetes
//! reference docs): apply merges the applied configuration, fields another manager owns with
//! a different value conflict unless forced, and fields a manager stops applying are removed
//! unless someone else still owns them.

use serde_json::{Map, Value, json};

use crate::error::Cause;
use crate::fields::{self, FieldSet};
use blaze_merge::lists::{ListType, Mode, Node, same_item};

/// One `managedFields` entry.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Field manager.
    pub manager: String,
    /// `Apply` or `Update`.
    pub operation: String,
    /// `status`, `scale` or empty.
    pub subresource: String,
    /// apiVersion of the request.
    pub api_version: String,
    /// Time of the last change.
    pub time: String,
    /// Owned fields.
    pub set: FieldSet,
}

/// How a list or map is merged, and what it is.
#[derive(Debug, Clone, Copy)]
pub struct Shape<'a> {
    /// The structural schema of a custom resource.
    pub schema: Option<&'a Value>,
    /// Whether it is a custom resource.
    pub custom: bool,
}

/// Reads `metadata.managedFields`.
pub fn entries(obj: &Value) -> Vec<Entry> {
    let s = |v: &Value, k: &str| v[k].as_str().unwrap_or_default().to_owned();
    obj["metadata"]["managedFields"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|e| Entry {
                    manager: s(e, "manager"),
                    operation: s(e, "operation"),
                    subresource: s(e, "subresource"),
                    api_version: s(e, "apiVersion"),
                    time: s(e, "time"),
                    set: fields::from_fields_v1(&e["fieldsV1"]),
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Writes `metadata.managedFields`, dropping entries that own nothing.
pub fn set_entries(obj: &mut Value, entries: Vec<Entry>) {
    let list: Vec<Value> = entries
        .into_iter()
        .filter(|e| !e.set.is_empty())
        .map(|e| {
            let mut v = json!({"manager": e.manager, "operation": e.operation, "apiVersion": e.api_version,
                "time": e.time, "fieldsType": "FieldsV1", "fieldsV1": fields::to_fields_v1(&e.set)});
            if !e.subresource.is_empty() {
                v["subresource"] = json!(e.subresource);
            }
            v
        })
        .collect();
    let meta = crate::meta::metadata_mut(obj);
    if list.is_empty() {
        meta.remove("managedFields");
    } else {
        meta.insert("managedFields".into(), Value::Array(list));
    }
}

fn entry_mut<'a>(
    list: &'a mut Vec<Entry>,
    manager: &str,
    op: &str,
    sub: &str,
    api_version: &str,
) -> &'a mut Entry {
    let pos =
        list.iter().position(|e| e.manager == manager && e.operation == op && e.subresource == sub);
    let i = pos.unwrap_or_else(|| {
        list.push(Entry {
            manager: manager.to_owned(),
            operation: op.to_owned(),
            subresource: sub.to_owned(),
            api_version: api_version.to_owned(),
            time: String::new(),
            set: FieldSet::new(),
        });
        list.len() - 1
    });
    let e = &mut list[i];
    e.time = crate::meta::now();
    e.api_version = api_version.to_owned();
    e
}

/// Records a non-apply write: the manager takes the fields it changed; removed fields leave
/// every manager.
pub fn record_update(
    old: Option<&Value>,
    new: &mut Value,
    manager: &str,
    sub: &str,
    api_version: &str,
    shape: Shape<'_>,
) {
    let mut list = old.map(entries).unwrap_or_default();
    let new_set = fields::set_of(new, shape.schema, shape.custom);
    let old_set = old.map(|o| fields::set_of(o, shape.schema, shape.custom)).unwrap_or_default();
    let changed: FieldSet = new_set
        .iter()
        .filter(|p| old.is_none_or(|o| fields::get(o, p) != fields::get(new, p)))
        .cloned()
        .collect();
    let removed: FieldSet = old_set.difference(&new_set).cloned().collect();
    if !changed.is_empty() {
        for e in list.iter_mut() {
            e.set.retain(|p| !changed.contains(p) && !removed.contains(p));
        }
        entry_mut(&mut list, manager, "Update", sub, api_version).set.extend(changed);
    } else {
        for e in list.iter_mut() {
            e.set.retain(|p| !removed.contains(p));
        }
    }
    set_entries(new, list);
}

/// Server-side apply of `applied` onto `live` (`None` creates). Returns the merged object with
/// `managedFields` updated, or the conflicts.
pub fn apply(
    live: Option<&Value>,
    applied: &Value,
    manager: &str,
    force: bool,
    sub: &str,
    api_version: &str,
    shape: Shape<'_>,
) -> Result<Value, Vec<Cause>> {
    let mut list = live.map(entries).unwrap_or_default();
    let new_set = fields::set_of(applied, shape.schema, shape.custom);
    let empty = Value::Object(Map::new());
    let base = live.unwrap_or(&empty);
    let mut conflicts = Vec::new();
    for e in list.iter_mut().filter(|e| !(e.manager == manager && e.operation == "Apply")) {
        let clashing: Vec<_> = e
            .set
            .intersection(&new_set)
            .filter(|p| {
                fields::get(base, p).is_some() && fields::get(base, p) != fields::get(applied, p)
            })
            .cloned()
            .collect();
        for p in clashing {
            if force {
                e.set.remove(&p);
            } else {
                let using = if e.operation == "Update" {
                    format!(" using {}", e.api_version)
                } else {
                    String::new()
                };
                conflicts.push(Cause {
                    reason: "FieldManagerConflict".into(),
                    message: format!("conflict with \"{}\"{using}", e.manager),
                    field: fields::display(&p),
                });
            }
        }
    }
    if !conflicts.is_empty() {
        return Err(conflicts);
    }
    let mut merged = base.clone();
    merge_applied(&mut merged, applied, Node::of(applied, shape.schema, shape.custom));
    let previous = list
        .iter()
        .find(|e| e.manager == manager && e.operation == "Apply" && e.subresource == sub)
        .map(|e| e.set.clone())
        .unwrap_or_default();
    let others: FieldSet = list
        .iter()
        .filter(|e| !(e.manager == manager && e.operation == "Apply" && e.subresource == sub))
        .flat_map(|e| e.set.iter().cloned())
        .collect();
    for p in previous.difference(&new_set) {
        let still_owned =
            others.iter().any(|o| o.starts_with(p)) || new_set.iter().any(|n| n.starts_with(p));
        if !still_owned {
            fields::remove(&mut merged, p);
        }
    }
    entry_mut(&mut list, manager, "Apply", sub, api_version).set = new_set;
    set_entries(&mut merged, list);
    Ok(merged)
}

/// Merges an applied configuration into `live`: maps merge, map lists merge by key, sets
/// union, everything else is replaced.
fn merge_applied(live: &mut Value, applied: &Value, at: Node<'_>) {
    match (live, applied) {
        (Value::Object(l), Value::Object(a)) => {
            for (k, av) in a {
                match l.get_mut(k) {
                    Some(lv) => merge_applied(lv, av, at.field(k)),
                    None => {
                        l.insert(k.clone(), av.clone());
                    }
                }
            }
        }
        (Value::Array(l), Value::Array(a)) => match at.list_type(Mode::Apply) {
            ListType::Map(keys) => {
                for item in a {
                    match l.iter_mut().find(|i| same_item(&keys, i, item)) {
                        Some(li) => merge_applied(li, item, at.items()),
                        None => l.push(item.clone()),
                    }
                }
            }
            ListType::Set => {
                for item in a {
                    if !l.contains(item) {
                        l.push(item.clone());
                    }
                }
            }
            ListType::Atomic => *l = a.clone(),
        },
        (l, a) => *l = a.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHAPE: Shape<'static> = Shape { schema: None, custom: false };

    #[test]
    fn conflicts_force_and_removal() {
        let a =
            json!({"metadata": {"labels": {"x": "1"}}, "spec": {"replicas": 2, "paused": false}});
        let live = apply(None, &a, "alice", false, "", "apps/v1", SHAPE).unwrap();
        let b = json!({"spec": {"replicas": 3}});
        let errs = apply(Some(&live), &b, "bob", false, "", "apps/v1", SHAPE).unwrap_err();
        assert_eq!(errs[0].field, ".spec.replicas");
        assert_eq!(errs[0].message, "conflict with \"alice\"");
        let forced = apply(Some(&live), &b, "bob", true, "", "apps/v1", SHAPE).unwrap();
        assert_eq!(forced["spec"]["replicas"], 3);
        // Alice stops applying `paused`: it goes; `replicas` is bob's now and stays.
        let a2 = json!({"metadata": {"labels": {"x": "1"}}});
        let after = apply(Some(&forced), &a2, "alice", false, "", "apps/v1", SHAPE).unwrap();
        assert_eq!(after["spec"], json!({"replicas": 3}));
        // The same value is shared ownership, not a conflict.
        assert!(
            apply(
                Some(&after),
                &json!({"spec": {"replicas": 3}}),
                "carol",
                false,
                "",
                "apps/v1",
                SHAPE
            )
            .is_ok()
        );
    }
}
