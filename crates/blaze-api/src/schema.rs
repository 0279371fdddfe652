//! Schema fragments that derive macros cannot express.

use schemars::{Schema, SchemaGenerator, json_schema};

/// A free-form object kept as written (`x-kubernetes-preserve-unknown-fields`), for overrides
/// whose full schema (a whole pod template) would make the CRD larger than it is worth.
pub(crate) fn free_form_object(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true,
    })
}
