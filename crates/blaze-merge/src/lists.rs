//! How a list merges: by which keys its items are identified (strategic merge patch
//! `patchMergeKey`, server-side apply `listType: map` / `listMapKeys`), as a set, or atomically.
//!
//! Built-in kinds carry this in their Go types, which a JSON document does not; the table in
//! [`list_type`] holds it for the fields Blaze's objects and clients use, by field name.
//! Custom resources say it in their schema (`x-kubernetes-list-type`).

use serde_json::Value;

/// The merge behaviour of one list.
#[derive(Debug, Clone, PartialEq)]
pub enum ListType {
    /// Items are identified by these keys.
    Map(Vec<String>),
    /// Items are scalars and form a set.
    Set,
    /// The list is replaced whole.
    Atomic,
}

/// The list type of field `name` holding `items`, from the CRD schema node of the list if
/// there is one, otherwise from the built-in types' merge keys. `custom` says whether the
/// object is a custom resource, whose lists are atomic unless its schema says otherwise.
pub fn list_type(name: &str, items: &[Value], schema: Option<&Value>, custom: bool) -> ListType {
    if let Some(s) = schema {
        match s.get("x-kubernetes-list-type").and_then(Value::as_str) {
            Some("map") => {
                let keys = s
                    .get("x-kubernetes-list-map-keys")
                    .and_then(Value::as_array)
                    .map(|a| a.iter().filter_map(|k| k.as_str().map(str::to_owned)).collect())
                    .unwrap_or_default();
                return ListType::Map(keys);
            }
            Some("set") => return ListType::Set,
            Some(_) => return ListType::Atomic,
            None => {}
        }
    }
    if custom {
        // Only the metadata lists every object has.
        return match name {
            "finalizers" => ListType::Set,
            "ownerReferences" => ListType::Map(vec!["uid".into()]),
            _ => ListType::Atomic,
        };
    }
    let key = |k: &str| ListType::Map(vec![k.to_owned()]);
    match name {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "env"
        | "volumes"
        | "imagePullSecrets"
        | "volumeDevices" => key("name"),
        "volumeMounts" => key("mountPath"),
        "hostAliases" => key("ip"),
        "conditions" => key("type"),
        "ownerReferences" => key("uid"),
        "finalizers" => ListType::Set,
        // Container ports merge on `containerPort`, Service ports on `port`.
        "ports" if items.iter().any(|i| i.get("containerPort").is_some()) => key("containerPort"),
        "ports" => key("port"),
        _ => ListType::Atomic,
    }
}

/// Whether the items of built-in list `name` keep only the keys a patch names
/// (`patchStrategy: merge,retainKeys`): a volume has one source, so a patch that names
/// another source replaces it instead of adding a second.
pub fn retains_keys(name: &str) -> bool {
    name == "volumes"
}

/// Whether `a` and `b` are the same item of a map list.
pub fn same_item(keys: &[String], a: &Value, b: &Value) -> bool {
    keys.iter().all(|k| a.get(k) == b.get(k))
}

/// The schema node of property `name` under `schema`.
pub fn child_schema<'a>(schema: Option<&'a Value>, name: &str) -> Option<&'a Value> {
    let s = schema?;
    s.get("properties")
        .and_then(|p| p.get(name))
        .or_else(|| s.get("additionalProperties").filter(|a| a.is_object()))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn schema_list_types_win_over_the_builtin_table() {
        let map = json!({"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["id"]});
        assert_eq!(
            list_type("containers", &[], Some(&map), true),
            ListType::Map(vec!["id".into()])
        );
        let set = json!({"x-kubernetes-list-type": "set"});
        assert_eq!(list_type("containers", &[], Some(&set), false), ListType::Set);
        assert_eq!(list_type("containers", &[], None, true), ListType::Atomic);
        assert_eq!(list_type("finalizers", &[], None, true), ListType::Set);
    }

    #[test]
    fn ports_merge_on_the_key_their_items_carry() {
        let container = [json!({"containerPort": 80})];
        assert_eq!(
            list_type("ports", &container, None, false),
            ListType::Map(vec!["containerPort".into()])
        );
        let service = [json!({"port": 80, "targetPort": 8080})];
        assert_eq!(list_type("ports", &service, None, false), ListType::Map(vec!["port".into()]));
    }
}
