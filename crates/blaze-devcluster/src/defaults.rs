//! Server-side defaults of built-in kinds that clients rely on.

use serde_json::{Value, json};

use crate::error::ApiResult;
use crate::resources::ResourceInfo;

/// Fills in what the real server fills in on create.
pub fn on_create(info: &ResourceInfo, obj: &mut Value) -> ApiResult<()> {
    match (info.group.as_str(), info.plural.as_str()) {
        ("", "namespaces") => {
            obj["spec"] = json!({"finalizers": ["kubernetes"]});
            obj["status"] = json!({"phase": "Active"});
        }
        ("", "pods") => {
            obj["status"] = json!({"phase": "Pending", "qosClass": "BestEffort"});
        }
        ("apps", "deployments" | "replicasets" | "statefulsets")
            if obj["spec"]["replicas"].is_null() =>
        {
            obj["spec"]["replicas"] = json!(1);
        }
        ("", "secrets") if obj["type"].as_str().is_none_or(str::is_empty) => {
            obj["type"] = json!("Opaque");
        }
        ("", "services") => {
            if obj["spec"]["type"].is_null() {
                obj["spec"]["type"] = json!("ClusterIP");
            }
            if let Some(ports) = obj["spec"]["ports"].as_array_mut() {
                for p in ports.iter_mut().filter(|p| p.is_object()) {
                    if p["protocol"].is_null() {
                        p["protocol"] = json!("TCP");
                    }
                    if p["targetPort"].is_null() {
                        p["targetPort"] = p["port"].clone();
                    }
                }
            }
        }
        _ => {}
    }
    Ok(())
}
