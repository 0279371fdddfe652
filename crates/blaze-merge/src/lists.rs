//! How a list merges: by which keys its items are identified (strategic merge patch
//! `patchMergeKey`, server-side apply `listType: map` / `listMapKeys`), as a set, or atomically.
//!
//! Built-in kinds carry this in their Go types, which a JSON document does not: [`Node`] walks
//! the table generated from them ([`crate::builtin`]) alongside a document, so that a field
//! merges as the type it belongs to says (a container's `ports` on `containerPort`, a
//! Service's on `port`). Custom resources say it in their schema (`x-kubernetes-list-type`).

use serde_json::Value;

use crate::builtin::{self, Field, Lt, Type};

/// The merge behaviour of one list.
#[derive(Debug, Clone, PartialEq)]
pub enum ListType {
    /// Items are identified by these keys.
    Map(Vec<Key>),
    /// Items are scalars and form a set.
    Set,
    /// The list is replaced whole.
    Atomic,
}

/// A key of a map list.
#[derive(Debug, Clone, PartialEq)]
pub struct Key {
    /// The key's field name.
    pub name: String,
    /// The value of an item that leaves the key out (`protocol` of ports: `TCP`).
    pub default: Option<Value>,
}

impl Key {
    /// A key without a default.
    pub fn new(name: impl Into<String>) -> Self {
        Self { name: name.into(), default: None }
    }

    /// The key's value in `item`, or its default.
    pub fn value_in<'v>(&'v self, item: &'v Value) -> Option<&'v Value> {
        item.get(&self.name).or(self.default.as_ref())
    }
}

/// Which merge a list type is for: they differ where a list's server-side apply keys
/// (`+listMapKey`) are more than its strategic merge key (container ports merge on
/// `containerPort` in a patch, on `containerPort` and `protocol` in an apply).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Strategic merge patch.
    Strategic,
    /// Server-side apply and its field sets.
    Apply,
}

/// Where a value sits in an object, as far as list semantics go; walk it down with
/// [`Node::field`] and [`Node::items`] beside the value.
#[derive(Debug, Clone, Copy, Default)]
pub enum Node<'a> {
    /// Nothing known: lists here are atomic.
    #[default]
    Unknown,
    /// A struct of a built-in type.
    Struct(&'static Type),
    /// A list field of a built-in type.
    List(&'static Field),
    /// The root of a custom resource with this structural schema.
    Custom(Option<&'a Value>),
    /// A node of a custom resource's schema.
    Schema(Option<&'a Value>),
}

impl<'a> Node<'a> {
    /// The built-in type `name` of `api_version` (a kind, or a type within one, as
    /// `PodTemplateSpec`); [`Node::Unknown`] when it holds no list that merges.
    pub fn builtin(api_version: &str, name: &str) -> Self {
        builtin::type_of(api_version, name).map_or(Node::Unknown, Node::Struct)
    }

    /// The root of `obj`: a custom resource with `schema` when `custom`, else the built-in
    /// kind its `apiVersion` and `kind` name.
    pub fn of(obj: &Value, schema: Option<&'a Value>, custom: bool) -> Self {
        if custom {
            return Node::Custom(schema);
        }
        let s = |k: &str| obj.get(k).and_then(Value::as_str).unwrap_or_default();
        Self::builtin(s("apiVersion"), s("kind"))
    }

    /// The node of field `name` of this (object) node.
    pub fn field(self, name: &str) -> Self {
        match self {
            Node::Struct(t) => match t.field(name) {
                Some(f) if f.list.is_some() => Node::List(f),
                Some(f) => f.ty.map_or(Node::Unknown, Node::Struct),
                None => Node::Unknown,
            },
            Node::Custom(_) if name == "metadata" => Node::Struct(builtin::object_meta()),
            Node::Custom(s) | Node::Schema(s) => Node::Schema(child_schema(s, name)),
            Node::Unknown | Node::List(_) => Node::Unknown,
        }
    }

    /// The node of the items of this (list) node.
    pub fn items(self) -> Self {
        match self {
            Node::List(f) => f.ty.map_or(Node::Unknown, Node::Struct),
            Node::Schema(s) => Node::Schema(s.and_then(|s| s.get("items"))),
            _ => Node::Unknown,
        }
    }

    /// The list type of this (list) node under `mode`.
    pub fn list_type(self, mode: Mode) -> ListType {
        match self {
            Node::List(Field { list: Some(l), .. }) => {
                from_table(if mode == Mode::Strategic { &l.strategic } else { &l.apply })
            }
            Node::Schema(Some(s)) => from_schema(s),
            _ => ListType::Atomic,
        }
    }

    /// Whether the items of this (list) node keep only the keys a patch names
    /// (`patchStrategy: merge,retainKeys`): a volume has one source, so a patch that names
    /// another source replaces it instead of adding a second.
    pub fn retains_keys(self) -> bool {
        matches!(self, Node::List(Field { list: Some(l), .. }) if l.retain_keys)
    }
}

fn from_table(lt: &Lt) -> ListType {
    match lt {
        Lt::Atomic => ListType::Atomic,
        Lt::Set => ListType::Set,
        Lt::Map(keys) => ListType::Map(
            keys.iter()
                .map(|k| Key {
                    name: k.name.to_owned(),
                    default: k.default.and_then(|d| serde_json::from_str(d).ok()),
                })
                .collect(),
        ),
    }
}

fn from_schema(s: &Value) -> ListType {
    match s.get("x-kubernetes-list-type").and_then(Value::as_str) {
        Some("map") => ListType::Map(
            s.get("x-kubernetes-list-map-keys")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Value::as_str).map(Key::new).collect())
                .unwrap_or_default(),
        ),
        Some("set") => ListType::Set,
        _ => ListType::Atomic,
    }
}

/// Whether `a` and `b` are the same item of a map list.
pub fn same_item(keys: &[Key], a: &Value, b: &Value) -> bool {
    keys.iter().all(|k| k.value_in(a) == k.value_in(b))
}

/// The keys of `item` that identify it in a map list, defaults filled in (the `k:` element
/// of a field set).
pub fn item_key(keys: &[Key], item: &Value) -> serde_json::Map<String, Value> {
    keys.iter()
        .map(|k| (k.name.clone(), k.value_in(item).cloned().unwrap_or(Value::Null)))
        .collect()
}

/// The schema node of property `name` under `schema`.
pub fn child_schema<'a>(schema: Option<&'a Value>, name: &str) -> Option<&'a Value> {
    let s = schema?;
    s.get("properties")
        .and_then(|p| p.get(name))
        .or_else(|| s.get("additionalProperties").filter(|a| a.is_object()))
}

#[cfg(test)]
mod tests;
