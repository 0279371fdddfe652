//! How a list merges: by which keys its items are identified (strategic merge patch
//! `patchMergeKey`, server-side apply `listType: map` / `listMapKeys`), as a set, or atomically.

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

/// The list type of field `name`, from the CRD schema node of the list if there is one,
/// otherwise from the built-in types' merge keys.
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
        // Custom resource lists are atomic unless the schema says otherwise.
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
        "conditions" => key("type"),
        "ownerReferences" => key("uid"),
        "finalizers" => ListType::Set,
        "ports" if items.iter().any(|i| i.get("containerPort").is_some()) => key("containerPort"),
        "ports" => key("port"),
        _ => ListType::Atomic,
    }
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
