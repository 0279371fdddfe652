//! Events in both of their APIs. A real API server keeps one store of Events and serves it as
//! `core/v1` (what `kubectl describe` and `kubectl get events` read) and as
//! `events.k8s.io/v1` (what controllers publish through today's event recorders), converting
//! field names between the two. This server stores each API's objects apart, so every write
//! of an Event through one API is mirrored into the other, converted: an event a controller
//! records through `events.k8s.io/v1` shows in `kubectl describe`, and the other way round.
//! The copies share name, namespace and uid; each has its own resource version, and the
//! mirror carries no managed fields (they would name the other API's fields).

use serde_json::{Map, Value};

use crate::store::Inner;

/// Storage key of `core/v1` Events.
pub const CORE: &str = "/events";
/// Storage key of `events.k8s.io/v1` Events.
pub const EVENTS: &str = "events.k8s.io/events";

/// Field names that differ: (`core/v1`, `events.k8s.io/v1`).
const RENAMED: &[(&str, &str)] = &[
    ("involvedObject", "regarding"),
    ("message", "note"),
    ("reportingComponent", "reportingController"),
    ("source", "deprecatedSource"),
    ("firstTimestamp", "deprecatedFirstTimestamp"),
    ("lastTimestamp", "deprecatedLastTimestamp"),
    ("count", "deprecatedCount"),
];

/// Fields with the same name and meaning in both.
const SHARED: &[&str] = &[
    "metadata",
    "eventTime",
    "series",
    "action",
    "reason",
    "related",
    "type",
    "reportingInstance",
];

/// After `obj` was stored under `key`: stores its converted copy under the other Events key.
pub fn mirror_put(inner: &mut Inner, key: &str, obj: &Value) {
    let (other, converted) = match key {
        CORE => (EVENTS, to_events(obj)),
        EVENTS => (CORE, to_core(obj)),
        _ => return,
    };
    inner.put(other, converted);
}

/// After the Event `ns/name` was removed from `key`: removes its copy from the other key.
pub fn mirror_remove(inner: &mut Inner, key: &str, ns: &str, name: &str) {
    let other = match key {
        CORE => EVENTS,
        EVENTS => CORE,
        _ => return,
    };
    inner.remove(other, ns, name);
}

/// A `core/v1` Event as `events.k8s.io/v1` shows it.
pub fn to_events(core: &Value) -> Value {
    convert(core, "events.k8s.io/v1", |f| RENAMED.iter().find(|(c, _)| *c == f).map(|(_, e)| *e))
}

/// An `events.k8s.io/v1` Event as `core/v1` shows it.
pub fn to_core(events: &Value) -> Value {
    convert(events, "v1", |f| RENAMED.iter().find(|(_, e)| *e == f).map(|(c, _)| *c))
}

fn convert(
    from: &Value,
    api_version: &str,
    rename: impl Fn(&str) -> Option<&'static str>,
) -> Value {
    let mut out = Map::new();
    out.insert("apiVersion".into(), Value::String(api_version.into()));
    out.insert("kind".into(), Value::String("Event".into()));
    for (field, value) in from.as_object().into_iter().flatten() {
        if let Some(to) = rename(field) {
            out.insert(to.into(), value.clone());
        } else if SHARED.contains(&field.as_str()) {
            out.insert(field.clone(), value.clone());
        }
    }
    if let Some(m) = out.get_mut("metadata").and_then(Value::as_object_mut) {
        m.remove("managedFields");
        m.remove("resourceVersion");
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn fields_are_renamed_both_ways_and_nothing_else_is_lost() {
        let published = json!({
            "apiVersion": "events.k8s.io/v1", "kind": "Event",
            "metadata": {"name": "e1", "namespace": "ns", "uid": "u1", "resourceVersion": "7",
                "managedFields": [{"manager": "m"}]},
            "eventTime": "2026-11-27T10:00:00.000000Z",
            "series": {"count": 3, "lastObservedTime": "2026-11-27T10:05:00.000000Z"},
            "reportingController": "blaze-operator", "reportingInstance": "op-1",
            "action": "Reconcile", "reason": "Ready", "type": "Normal",
            "regarding": {"kind": "BlazeEngine", "name": "smollm2", "namespace": "ns"},
            "note": "all 1 workers ready", "deprecatedCount": 3
        });
        let core = to_core(&published);
        assert_eq!(core["apiVersion"], "v1");
        assert_eq!(core["involvedObject"]["name"], "smollm2");
        assert_eq!(core["message"], "all 1 workers ready");
        assert_eq!(core["reportingComponent"], "blaze-operator");
        assert_eq!(core["count"], 3);
        assert_eq!(core["series"]["count"], 3);
        assert_eq!(core["metadata"]["uid"], "u1");
        assert!(core["metadata"].get("managedFields").is_none());
        assert!(core.get("regarding").is_none() && core.get("note").is_none());
        let back = to_events(&core);
        let mut want = published.clone();
        want["metadata"].as_object_mut().unwrap().remove("managedFields");
        want["metadata"].as_object_mut().unwrap().remove("resourceVersion");
        assert_eq!(back, want);
    }
}
