//! `meta.k8s.io/v1` Table output, which `kubectl get` asks for: printer columns of CRDs,
//! and a few useful columns of built-in kinds.

use std::sync::Arc;

use serde_json::{Value, json};

use crate::meta::{at_path, human_age};
use crate::resources::{PrinterColumn, ResourceInfo};

fn col(name: &str, type_: &str, path: &str) -> PrinterColumn {
    PrinterColumn {
        name: name.into(),
        type_: type_.into(),
        json_path: path.into(),
        description: String::new(),
        priority: 0,
    }
}

fn columns(info: &ResourceInfo) -> Vec<PrinterColumn> {
    if info.custom {
        let mut c = info.columns.clone();
        if c.is_empty() {
            c.push(col("Age", "date", ".metadata.creationTimestamp"));
        }
        return c;
    }
    let age = col("Age", "date", ".metadata.creationTimestamp");
    match info.plural.as_str() {
        "pods" => vec![
            col("Ready", "string", "$podready"),
            col("Status", "string", "$podstatus"),
            col("Restarts", "integer", "$restarts"),
            age,
            PrinterColumn { priority: 1, ..col("IP", "string", ".status.podIP") },
            PrinterColumn { priority: 1, ..col("Node", "string", ".spec.nodeName") },
        ],
        "namespaces" => vec![col("Status", "string", ".status.phase"), age],
        "deployments" | "replicasets" | "statefulsets" => {
            vec![
                col("Ready", "string", "$ready"),
                col("Available", "integer", ".status.availableReplicas"),
                age,
            ]
        }
        "services" => vec![
            col("Type", "string", ".spec.type"),
            col("Cluster-IP", "string", ".spec.clusterIP"),
            age,
        ],
        "customresourcedefinitions" => {
            vec![col("Created At", "date", ".metadata.creationTimestamp")]
        }
        _ => vec![age],
    }
}

/// What `kubectl get pods` shows as a pod's status: a waiting or terminated container's
/// reason (`CrashLoopBackOff`, `ContainerCreating`, `Error`), `Terminating` while it is being
/// deleted, else the phase.
fn pod_status(obj: &Value) -> Value {
    if at_path(obj, ".metadata.deletionTimestamp").is_some() {
        return json!("Terminating");
    }
    if let Some(init) = init_status(obj) {
        return json!(init);
    }
    let statuses = at_path(obj, ".status.containerStatuses").and_then(Value::as_array);
    for s in statuses.into_iter().flatten() {
        for state in ["waiting", "terminated"] {
            if let Some(reason) = s["state"][state]["reason"].as_str() {
                return json!(reason);
            }
        }
    }
    at_path(obj, ".status.phase").cloned().unwrap_or(json!("Pending"))
}

/// While init containers run: `Init:N/M` (N done of M), or `Init:` and the reason the
/// current one waits or failed (`Init:CrashLoopBackOff`, `Init:Error`, `Init:ExitCode:3`).
fn init_status(obj: &Value) -> Option<String> {
    let statuses = at_path(obj, ".status.initContainerStatuses")?.as_array()?;
    let total = at_path(obj, ".spec.initContainers").and_then(Value::as_array).map_or(0, Vec::len);
    for (i, s) in statuses.iter().enumerate() {
        let terminated = &s["state"]["terminated"];
        if terminated.is_object() {
            if terminated["exitCode"].as_i64() == Some(0) {
                continue;
            }
            return Some(match terminated["reason"].as_str().filter(|r| !r.is_empty()) {
                Some(r) => format!("Init:{r}"),
                None => format!("Init:ExitCode:{}", terminated["exitCode"].as_i64().unwrap_or(0)),
            });
        }
        let waiting = s["state"]["waiting"]["reason"].as_str().unwrap_or_default();
        if !waiting.is_empty() && waiting != "PodInitializing" {
            return Some(format!("Init:{waiting}"));
        }
        return Some(format!("Init:{i}/{total}"));
    }
    None
}

fn pod_cell(path: &str, obj: &Value) -> Option<Value> {
    let statuses: Vec<Value> = at_path(obj, ".status.containerStatuses")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    match path {
        "$podready" => {
            let total =
                at_path(obj, ".spec.containers").and_then(Value::as_array).map_or(0, Vec::len);
            let ready = statuses.iter().filter(|s| s["ready"] == true).count();
            Some(json!(format!("{ready}/{total}")))
        }
        "$restarts" => {
            let init = at_path(obj, ".status.initContainerStatuses")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            let count = |s: &Value| s["restartCount"].as_i64().unwrap_or(0);
            Some(json!(statuses.iter().chain(init.iter()).map(count).sum::<i64>()))
        }
        "$podstatus" => Some(pod_status(obj)),
        _ => None,
    }
}

fn cell(c: &PrinterColumn, obj: &Value) -> Value {
    if let Some(v) = pod_cell(&c.json_path, obj) {
        return v;
    }
    if c.json_path == "$ready" {
        let r = |p: &str| at_path(obj, p).and_then(Value::as_i64).unwrap_or(0);
        return json!(format!("{}/{}", r(".status.readyReplicas"), r(".spec.replicas")));
    }
    let v = at_path(obj, &c.json_path).cloned().unwrap_or(Value::Null);
    match (c.type_.as_str(), &v) {
        (_, Value::Null) => Value::Null,
        ("date", Value::String(s)) => json!(human_age(s)),
        ("integer" | "number" | "boolean", _) => v,
        (_, Value::String(_)) => v,
        _ => json!(v.to_string()),
    }
}

/// A Table of `objs`. `include` is the `includeObject` parameter (`None`, `Metadata` by default,
/// or `Object`).
pub fn table(info: &ResourceInfo, objs: &[Arc<Value>], rv: &str, include: Option<&str>) -> Value {
    let cols = columns(info);
    let mut defs = vec![
        json!({"name": "Name", "type": "string", "format": "name", "description": "Name must be unique within a namespace.", "priority": 0}),
    ];
    defs.extend(cols.iter().map(|c| json!({"name": c.name, "type": c.type_, "format": "", "description": c.description, "priority": c.priority})));
    let rows: Vec<Value> = objs
        .iter()
        .map(|o| {
            let mut cells = vec![o["metadata"]["name"].clone()];
            cells.extend(cols.iter().map(|c| cell(c, o)));
            let object = match include {
                Some("None") => Value::Null,
                Some("Object") => crate::handlers::versioned(info, o),
                _ => json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": o["metadata"]}),
            };
            json!({"cells": cells, "object": object})
        })
        .collect();
    json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": {"resourceVersion": rv}, "columnDefinitions": defs, "rows": rows})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(init: Value) -> Value {
        json!({"spec": {"initContainers": [{"name": "a"}, {"name": "b"}], "containers": [{"name": "app"}]},
            "status": {"phase": "Pending", "initContainerStatuses": init,
                "containerStatuses": [{"name": "app", "restartCount": 0,
                    "state": {"waiting": {"reason": "PodInitializing"}}}]}})
    }

    #[test]
    fn pods_with_init_containers_show_their_progress_as_kubectl_does() {
        let done = json!({"restartCount": 0, "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}});
        let running = json!({"restartCount": 0, "state": {"running": {}}});
        let waiting =
            json!({"restartCount": 0, "state": {"waiting": {"reason": "PodInitializing"}}});
        let backoff =
            json!({"restartCount": 4, "state": {"waiting": {"reason": "CrashLoopBackOff"}}});
        let failed = json!({"restartCount": 0, "state": {"terminated": {"exitCode": 3}}});
        assert_eq!(pod_status(&pod(json!([running, waiting]))), "Init:0/2");
        assert_eq!(pod_status(&pod(json!([done, running]))), "Init:1/2");
        assert_eq!(pod_status(&pod(json!([done, backoff]))), "Init:CrashLoopBackOff");
        assert_eq!(pod_status(&pod(json!([failed, waiting]))), "Init:ExitCode:3");
        assert_eq!(pod_cell("$restarts", &pod(json!([done, backoff]))), Some(json!(4)));
        // Once every init container is done the app's state shows.
        assert_eq!(pod_status(&pod(json!([done, done]))), "PodInitializing");
    }
}
