//! The `scale` subresource: an object seen as an `autoscaling/v1` Scale, and a Scale's
//! replicas written back into the object.

use serde_json::{Value, json};

use crate::error::{ApiError, ApiResult, Cause};
use crate::meta;
use crate::resources::ResourceInfo;

/// The `autoscaling/v1` Scale of an object.
pub(crate) fn to_scale(info: &ResourceInfo, obj: &Value) -> Value {
    let Some(paths) = &info.scale else { return Value::Null };
    let m = &obj["metadata"];
    let selector = match &paths.label_selector {
        Some(p) => meta::at_path(obj, p).cloned().unwrap_or(json!("")),
        None => {
            let labels =
                obj["spec"]["selector"]["matchLabels"].as_object().cloned().unwrap_or_default();
            let parts: Vec<String> = labels
                .iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                .collect();
            json!(parts.join(","))
        }
    };
    json!({"kind": "Scale", "apiVersion": "autoscaling/v1",
        "metadata": {"name": m["name"], "namespace": m["namespace"], "uid": m["uid"],
            "resourceVersion": m["resourceVersion"], "creationTimestamp": m["creationTimestamp"]},
        "spec": {"replicas": meta::at_path(obj, &paths.spec_replicas).cloned().unwrap_or(json!(0))},
        "status": {"replicas": meta::at_path(obj, &paths.status_replicas).cloned().unwrap_or(json!(0)), "selector": selector}})
}

/// The object with the replicas of a Scale written into it.
pub(crate) fn from_scale(info: &ResourceInfo, old: &Value, scale: &Value) -> ApiResult<Value> {
    let Some(paths) = &info.scale else { return Err(ApiError::no_route("scale")) };
    let replicas = scale["spec"]["replicas"].clone();
    if !(replicas.is_i64() || replicas.is_u64()) || replicas.as_i64().is_some_and(|r| r < 0) {
        return Err(ApiError::invalid(
            "autoscaling",
            "Scale",
            old["metadata"]["name"].as_str().unwrap_or_default(),
            vec![Cause {
                reason: "FieldValueInvalid".into(),
                message: format!("Invalid value: {replicas}: must be greater than or equal to 0"),
                field: "spec.replicas".into(),
            }],
        ));
    }
    let mut new = old.clone();
    meta::set_path(&mut new, &paths.spec_replicas, replicas);
    if let Some(rv) = scale["metadata"]["resourceVersion"].as_str() {
        new["metadata"]["resourceVersion"] = json!(rv);
    }
    new["metadata"].as_object_mut().map(|m| m.remove("managedFields"));
    Ok(new)
}
