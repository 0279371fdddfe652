//! CustomResourceDefinitions: accepting one (names, status conditions) and turning it into the
//! resources it serves.

use std::sync::Arc;

use serde_json::{Value, json};

use crate::error::Cause;
use crate::resources::{PrinterColumn, ResourceInfo, ScalePaths};
use crate::store::Inner;

/// Storage key of CRDs.
pub const CRD_KEY: &str = "apiextensions.k8s.io/customresourcedefinitions";

fn cause(field: &str, message: String) -> Cause {
    Cause { reason: "FieldValueInvalid".into(), message, field: field.into() }
}

/// Validates a CRD and sets its status as an established CRD has it.
pub fn accept(obj: &mut Value) -> Result<(), Vec<Cause>> {
    let spec = &obj["spec"];
    let group = spec["group"].as_str().unwrap_or_default();
    let plural = spec["names"]["plural"].as_str().unwrap_or_default();
    let mut causes = Vec::new();
    if group.is_empty() {
        causes.push(Cause {
            reason: "FieldValueRequired".into(),
            message: "Required value".into(),
            field: "spec.group".into(),
        });
    }
    if plural.is_empty() || spec["names"]["kind"].as_str().is_none_or(str::is_empty) {
        causes.push(Cause {
            reason: "FieldValueRequired".into(),
            message: "Required value".into(),
            field: "spec.names".into(),
        });
    }
    let name = obj["metadata"]["name"].as_str().unwrap_or_default();
    if name != format!("{plural}.{group}") {
        causes.push(cause(
            "metadata.name",
            format!("Invalid value: \"{name}\": must be spec.names.plural+\".\"+spec.group"),
        ));
    }
    let versions = spec["versions"].as_array().cloned().unwrap_or_default();
    for (i, v) in versions.iter().enumerate() {
        let schema = &v["schema"]["openAPIV3Schema"];
        check_defaults(
            schema,
            &format!("spec.versions[{i}].schema.openAPIV3Schema"),
            "",
            &mut causes,
        );
    }
    let storage: Vec<&str> = versions
        .iter()
        .filter(|v| v["storage"] == json!(true))
        .filter_map(|v| v["name"].as_str())
        .collect();
    if storage.len() != 1 {
        causes.push(cause(
            "spec.versions",
            format!(
                "Invalid value: {}: must have exactly one version marked as storage version",
                versions.len()
            ),
        ));
    }
    if !causes.is_empty() {
        return Err(causes);
    }
    let now = crate::meta::now();
    let cond = |t: &str, reason: &str, msg: &str| json!({"type": t, "status": "True", "reason": reason, "message": msg, "lastTransitionTime": now});
    let mut stored: Vec<Value> =
        obj["status"]["storedVersions"].as_array().cloned().unwrap_or_default();
    if !stored.contains(&json!(storage[0])) {
        stored.push(json!(storage[0]));
    }
    obj["status"] = json!({
        "acceptedNames": obj["spec"]["names"].clone(),
        "conditions": [
            cond("NamesAccepted", "NoConflicts", "no conflicts found"),
            cond("Established", "InitialNamesAccepted", "the initial names have been accepted"),
        ],
        "storedVersions": stored,
    });
    Ok(())
}

/// Every `default` must itself be valid against its schema (a real server refuses the CRD
/// otherwise: "Defaulting" in the CRD docs).
fn check_defaults(schema: &Value, at: &str, data_path: &str, out: &mut Vec<Cause>) {
    if let Some(d) = schema.get("default") {
        let mut found = Vec::new();
        crate::schema::check(schema, d, data_path, &mut found);
        for c in found {
            out.push(cause(&format!("{at}.default"), c.message));
        }
    }
    if let Some(props) = schema.get("properties").and_then(Value::as_object) {
        for (k, p) in props {
            let dp = if data_path.is_empty() { k.clone() } else { format!("{data_path}.{k}") };
            check_defaults(p, &format!("{at}.properties[{k}]"), &dp, out);
        }
    }
    if let Some(items) = schema.get("items") {
        check_defaults(items, &format!("{at}.items"), &format!("{data_path}[0]"), out);
    }
    if let Some(add) = schema.get("additionalProperties").filter(|a| a.is_object()) {
        check_defaults(add, &format!("{at}.additionalProperties"), data_path, out);
    }
}

/// The resources a CRD serves, one per served version.
pub fn infos(crd: &Value) -> Vec<ResourceInfo> {
    let spec = &crd["spec"];
    let names = &spec["names"];
    let s = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    let list = |v: &Value| -> Vec<String> {
        v.as_array()
            .map(|a| a.iter().filter_map(|x| x.as_str().map(str::to_owned)).collect())
            .unwrap_or_default()
    };
    let versions = spec["versions"].as_array().cloned().unwrap_or_default();
    versions
        .iter()
        .filter(|v| v["served"] != json!(false))
        .map(|v| {
            let sub = &v["subresources"];
            let scale = sub.get("scale").filter(|s| s.is_object()).map(|sc| ScalePaths {
                spec_replicas: s(&sc["specReplicasPath"]),
                status_replicas: s(&sc["statusReplicasPath"]),
                label_selector: sc["labelSelectorPath"].as_str().map(str::to_owned),
            });
            let columns = v["additionalPrinterColumns"]
                .as_array()
                .map(|cols| {
                    cols.iter()
                        .map(|c| PrinterColumn {
                            name: s(&c["name"]),
                            type_: s(&c["type"]),
                            json_path: s(&c["jsonPath"]),
                            description: s(&c["description"]),
                            priority: c["priority"].as_i64().unwrap_or(0),
                        })
                        .collect()
                })
                .unwrap_or_default();
            let schema = v["schema"]["openAPIV3Schema"].clone();
            let selectable_fields = v["selectableFields"]
                .as_array()
                .map(|fs| {
                    fs.iter()
                        .map(|f| s(&f["jsonPath"]).trim_start_matches('.').to_owned())
                        .collect()
                })
                .unwrap_or_default();
            ResourceInfo {
                group: s(&spec["group"]),
                version: s(&v["name"]),
                plural: s(&names["plural"]),
                singular: names["singular"]
                    .as_str()
                    .map(str::to_owned)
                    .unwrap_or_else(|| s(&names["kind"]).to_lowercase()),
                kind: s(&names["kind"]),
                namespaced: spec["scope"] != json!("Cluster"),
                short_names: list(&names["shortNames"]),
                categories: list(&names["categories"]),
                status: sub.get("status").is_some_and(Value::is_object),
                scale,
                log: false,
                custom: true,
                schema: (!schema.is_null()).then(|| Arc::new(schema)),
                columns,
                selectable_fields,
            }
        })
        .collect()
}

/// Removes every object a deleted CRD served.
pub fn remove_served(inner: &mut Inner, crd: &Value) {
    let group = crd["spec"]["group"].as_str().unwrap_or_default();
    let plural = crd["spec"]["names"]["plural"].as_str().unwrap_or_default();
    let key = format!("{group}/{plural}");
    let names: Vec<(String, String)> =
        inner.objects(&key).map(|m| m.keys().cloned().collect()).unwrap_or_default();
    for (ns, name) in names {
        inner.remove(&key, &ns, &name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn crd(default: Value) -> Value {
        json!({"metadata": {"name": "things.example.com"}, "spec": {"group": "example.com",
            "names": {"plural": "things", "kind": "Thing"}, "scope": "Namespaced",
            "versions": [{"name": "v1", "served": true, "storage": true, "schema": {"openAPIV3Schema": {
                "type": "object", "properties": {"spec": {"type": "object", "properties": {
                    "mode": {"type": "string", "default": default}}}}}}}]}})
    }

    #[test]
    fn a_default_of_the_wrong_type_is_refused() {
        // What YAML 1.1 readers (kubectl) make of an unquoted `default: off`.
        let causes = accept(&mut crd(json!(false))).unwrap_err();
        assert_eq!(
            causes[0].field,
            "spec.versions[0].schema.openAPIV3Schema.properties[spec].properties[mode].default"
        );
        assert!(causes[0].message.contains("must be of type string"), "{}", causes[0].message);
        let mut ok = crd(json!("off"));
        accept(&mut ok).unwrap();
        assert_eq!(ok["status"]["conditions"][1]["type"], "Established");
    }
}
