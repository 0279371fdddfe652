//! The fields each resource can be selected by (`fieldSelector`), and how each is read from a
//! stored object, as kube-apiserver has them: its field label conversions say which labels a
//! kind accepts (anything else is a `400`), its `ToSelectableFields` functions say what each
//! label's value is.
//!
//! - Kinds with their own conversion (pods, nodes, namespaces, secrets, services, both Event
//!   APIs) accept `metadata.name`, `metadata.namespace` where namespaced, and their own list;
//!   others get `field label not supported: LABEL`.
//! - Every other built-in kind has the default conversion: `metadata.name` and
//!   `metadata.namespace` only, and its own message for the rest.
//! - Custom resources accept `metadata.name`, `metadata.namespace` where namespaced, and the
//!   CRD version's `selectableFields`.

use serde_json::Value;

use crate::error::{ApiError, ApiResult};
use crate::meta::at_path;
use crate::resources::ResourceInfo;

/// How a selectable field is read from an object.
#[derive(Debug, Clone, PartialEq)]
pub enum Field {
    /// The scalar at a dotted path (`spec.nodeName`), or `missing` when it is not set.
    At {
        /// Dotted path; a numeric part indexes a list.
        path: String,
        /// The value of an unset field (the type's zero value as the real server prints it).
        missing: &'static str,
    },
    /// The first of these paths that is set, else empty.
    FirstOf(&'static [&'static str]),
}

impl Field {
    fn at(path: &str) -> Self {
        Self::At { path: path.to_owned(), missing: "" }
    }

    /// The field's value in `obj`, as a string.
    pub fn value(&self, obj: &Value) -> String {
        match self {
            Self::At { path, missing } => scalar(at_path(obj, path)).unwrap_or((*missing).into()),
            Self::FirstOf(paths) => {
                paths.iter().find_map(|p| scalar(at_path(obj, p))).unwrap_or_default()
            }
        }
    }
}

fn scalar(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

/// What `label` reads in objects of `info`, or the real server's `400` for a label the
/// resource cannot be selected by.
pub fn field(info: &ResourceInfo, label: &str) -> ApiResult<Field> {
    if label == "metadata.name" {
        return Ok(Field::at(label));
    }
    let not_supported = || ApiError::bad_request(format!("field label not supported: {label}"));
    if info.custom {
        let namespace = label == "metadata.namespace" && info.namespaced;
        if namespace || info.selectable_fields.iter().any(|f| f == label) {
            return Ok(Field::at(label));
        }
        return Err(not_supported());
    }
    match kind_specific(&info.storage_key(), label) {
        Some(Some(f)) => Ok(f),
        Some(None) => Err(not_supported()),
        None if label == "metadata.namespace" => Ok(Field::at(label)),
        None => Err(ApiError::bad_request(format!(
            "{label:?} is not a known field selector: only \"metadata.name\", \"metadata.namespace\""
        ))),
    }
}

/// The field conversions of kinds that have their own (`pkg/apis/core/v1/conversion.go`,
/// `pkg/apis/events/v1/conversion.go`): `None` when `key` has the default one, `Some(None)`
/// when it does not accept `label`.
fn kind_specific(key: &str, label: &str) -> Option<Option<Field>> {
    let f = match (key, label) {
        ("/pods", "metadata.namespace") => Field::at(label),
        ("/pods", "spec.nodeName" | "spec.host") => Field::at("spec.nodeName"),
        (
            "/pods",
            "spec.restartPolicy"
            | "spec.schedulerName"
            | "spec.serviceAccountName"
            | "status.phase"
            | "status.nominatedNodeName",
        ) => Field::at(label),
        ("/pods", "spec.hostNetwork") => Field::At { path: label.into(), missing: "false" },
        ("/pods", "status.podIP") => Field::FirstOf(&["status.podIPs.0.ip", "status.podIP"]),
        // Accepted by the conversion, absent from the selectable set: always empty.
        ("/pods", "status.podIPs") => Field::FirstOf(&[]),
        ("/nodes", "spec.unschedulable") => Field::At { path: label.into(), missing: "false" },
        ("/namespaces", "status.phase") => Field::at(label),
        ("/secrets", "metadata.namespace") => Field::at(label),
        ("/secrets", "type") => Field::At { path: label.into(), missing: "Opaque" },
        ("/services", "metadata.namespace" | "spec.clusterIP" | "spec.type") => Field::at(label),
        (
            "/events",
            "metadata.namespace"
            | "involvedObject.kind"
            | "involvedObject.namespace"
            | "involvedObject.name"
            | "involvedObject.uid"
            | "involvedObject.apiVersion"
            | "involvedObject.resourceVersion"
            | "involvedObject.fieldPath"
            | "reason"
            | "reportingComponent"
            | "type",
        ) => Field::at(label),
        ("/events", "source") => Field::FirstOf(&["source.component", "reportingComponent"]),
        // events.k8s.io/v1 objects are stored in their own shape: `regarding` where core/v1
        // has `involvedObject`, `reportingController` for `reportingComponent`.
        (
            "events.k8s.io/events",
            "metadata.namespace"
            | "regarding.kind"
            | "regarding.namespace"
            | "regarding.name"
            | "regarding.uid"
            | "regarding.apiVersion"
            | "regarding.resourceVersion"
            | "regarding.fieldPath"
            | "reportingController"
            | "reason"
            | "type",
        ) => Field::at(label),
        ("events.k8s.io/events", "source") => {
            Field::FirstOf(&["deprecatedSource.component", "reportingController"])
        }
        (
            "/pods"
            | "/nodes"
            | "/namespaces"
            | "/secrets"
            | "/services"
            | "/events"
            | "events.k8s.io/events",
            _,
        ) => return Some(None),
        _ => return None,
    };
    Some(Some(f))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn info(plural: &str, group: &str) -> ResourceInfo {
        let mut all = crate::resources::builtin();
        let i = all.iter().position(|r| r.plural == plural && r.group == group).unwrap();
        all.swap_remove(i)
    }

    fn message(info: &ResourceInfo, label: &str) -> String {
        let e = field(info, label).unwrap_err();
        assert_eq!(e.code, 400);
        e.message
    }

    #[test]
    fn each_kind_accepts_what_the_real_server_accepts() {
        let pods = info("pods", "");
        for l in ["metadata.name", "metadata.namespace", "spec.nodeName", "status.phase"] {
            assert!(field(&pods, l).is_ok(), "{l}");
        }
        assert_eq!(message(&pods, "status.hostIP"), "field label not supported: status.hostIP");
        let nodes = info("nodes", "");
        assert!(field(&nodes, "spec.unschedulable").is_ok());
        assert_eq!(
            message(&nodes, "metadata.namespace"),
            "field label not supported: metadata.namespace"
        );
        let cms = info("configmaps", "");
        assert!(field(&cms, "metadata.namespace").is_ok());
        assert_eq!(
            message(&cms, "data.x"),
            r#""data.x" is not a known field selector: only "metadata.name", "metadata.namespace""#
        );
        let rs = info("replicasets", "apps");
        assert!(field(&rs, "status.replicas").is_err(), "apps/v1 has the default conversion");
        let events = info("events", "events.k8s.io");
        assert!(field(&events, "regarding.name").is_ok());
        assert!(field(&events, "involvedObject.name").is_err());
    }

    #[test]
    fn custom_resources_accept_their_selectable_fields() {
        let mut crd = info("configmaps", "");
        crd.custom = true;
        crd.selectable_fields = vec!["spec.color".into()];
        assert!(field(&crd, "spec.color").is_ok() && field(&crd, "metadata.namespace").is_ok());
        assert_eq!(message(&crd, "spec.size"), "field label not supported: spec.size");
        crd.namespaced = false;
        assert!(field(&crd, "metadata.namespace").is_err());
    }

    #[test]
    fn values_are_read_as_the_real_server_reads_them() {
        let pod = json!({"spec": {"nodeName": "n1"}, "status": {"podIPs": [{"ip": "10.0.0.7"}]}});
        let pods = info("pods", "");
        let v = |l: &str| field(&pods, l).unwrap().value(&pod);
        assert_eq!(v("spec.host"), "n1");
        assert_eq!(v("spec.hostNetwork"), "false");
        assert_eq!(v("status.podIP"), "10.0.0.7");
        assert_eq!(v("status.phase"), "");
        let node = json!({"spec": {"unschedulable": true}});
        assert_eq!(field(&info("nodes", ""), "spec.unschedulable").unwrap().value(&node), "true");
        let ev = json!({"reportingController": "blaze-operator"});
        let events = info("events", "events.k8s.io");
        assert_eq!(field(&events, "source").unwrap().value(&ev), "blaze-operator");
    }
}
