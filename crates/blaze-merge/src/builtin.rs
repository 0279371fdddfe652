//! The list semantics the built-in types publish in their Go types, as a table generated from
//! them (`scripts/gen-merge-keys.py`, Kubernetes 1.33): for every struct on the way from a kind
//! to a list that merges, the fields that lead there. A field the table does not name holds
//! no list that merges.

mod table;

/// The fields of one struct that are, or lead to, lists that merge.
#[derive(Debug)]
pub struct Type {
    /// By JSON name; inline structs are flattened in.
    pub fields: &'static [Field],
}

/// One field of a [`Type`].
#[derive(Debug)]
pub struct Field {
    /// The JSON name.
    pub name: &'static str,
    /// The struct the field (or each item of the list) is, when it leads to lists that merge.
    pub ty: Option<&'static Type>,
    /// How the field merges, when it is a list that merges.
    pub list: Option<&'static List>,
}

/// How one list field merges.
#[derive(Debug)]
pub struct List {
    /// Under strategic merge patch (`patchStrategy`, `patchMergeKey`).
    pub strategic: Lt,
    /// Under server-side apply (`+listType`, `+listMapKey`; else as the patch strategy says).
    pub apply: Lt,
    /// `patchStrategy: retainKeys`: an item keeps only the keys a patch names.
    pub retain_keys: bool,
}

/// A list type in the table.
#[derive(Debug)]
pub enum Lt {
    /// Replaced whole.
    Atomic,
    /// A set of scalars.
    Set,
    /// Items identified by these keys.
    Map(&'static [Key]),
}

/// A key of a map list, with its default as JSON text (`+default`): an item that leaves the
/// key out has that value.
#[derive(Debug)]
pub struct Key {
    /// The key's JSON name.
    pub name: &'static str,
    /// Its default, JSON text.
    pub default: Option<&'static str>,
}

const fn fd(name: &'static str, ty: Option<&'static Type>, list: Option<&'static List>) -> Field {
    Field { name, ty, list }
}

const fn k(name: &'static str, default: Option<&'static str>) -> Key {
    Key { name, default }
}

/// The built-in type `name` (a kind, or a type within one, as `PodTemplateSpec`) of
/// `api_version`, if it holds lists that merge.
pub fn type_of(api_version: &str, name: &str) -> Option<&'static Type> {
    table::TYPES
        .binary_search_by(|(v, n, _)| (*v, *n).cmp(&(api_version, name)))
        .ok()
        .map(|i| table::TYPES[i].2)
}

impl Type {
    /// The field `name`, if it leads to lists that merge.
    pub fn field(&'static self, name: &str) -> Option<&'static Field> {
        self.fields.iter().find(|f| f.name == name)
    }
}

/// `metav1.ObjectMeta`, the metadata of every object, custom resources' too.
pub fn object_meta() -> &'static Type {
    &table::meta_v1::ObjectMeta
}
