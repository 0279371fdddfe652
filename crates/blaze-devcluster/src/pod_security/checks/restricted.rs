//! The restricted checks: hardened pods.

use std::collections::BTreeSet;

use serde_json::Value;

use super::baseline::{added, bad_seccomp_setters, valid_seccomp, volumes};
use super::{bad_containers, containers, containers_phrase, join_quote, name, plural, violation};
use crate::pod_security::Violation;

pub(super) fn capabilities_restricted(spec: &Value) -> Option<Violation> {
    let no_drop_all = bad_containers(spec, |sc| {
        !sc["capabilities"]["drop"].as_array().into_iter().flatten().any(|c| c == "ALL")
    });
    let forbidden = |c: &str| c != "NET_BIND_SERVICE";
    let adding = bad_containers(spec, |sc| added(sc).any(forbidden));
    let caps: BTreeSet<&str> = containers(spec)
        .flat_map(|c| added(&c["securityContext"]))
        .filter(|c| forbidden(c))
        .collect();
    let mut details = Vec::new();
    if !no_drop_all.is_empty() {
        details.push(format!(
            r#"{} must set securityContext.capabilities.drop=["ALL"]"#,
            containers_phrase(&no_drop_all)
        ));
    }
    if !adding.is_empty() {
        details.push(format!(
            "{} must not include {} in securityContext.capabilities.add",
            containers_phrase(&adding),
            join_quote(caps)
        ));
    }
    if details.is_empty() {
        return None;
    }
    violation("unrestricted capabilities", details.join("; "))
}

pub(super) fn seccomp_restricted(spec: &Value) -> Option<Violation> {
    if let Some(detail) = bad_seccomp_setters(spec) {
        return violation("seccompProfile", detail);
    }
    let pod_set = valid_seccomp(&spec["securityContext"]["seccompProfile"]);
    let unset = bad_containers(spec, |sc| !sc["seccompProfile"].is_object() && !pod_set);
    if unset.is_empty() {
        return None;
    }
    violation(
        "seccompProfile",
        format!(
            r#"pod or {} must set securityContext.seccompProfile.type to "RuntimeDefault" or "Localhost""#,
            containers_phrase(&unset)
        ),
    )
}

pub(super) fn allow_privilege_escalation(spec: &Value) -> Option<Violation> {
    let bad = bad_containers(spec, |sc| sc["allowPrivilegeEscalation"] != false);
    if bad.is_empty() {
        return None;
    }
    violation(
        "allowPrivilegeEscalation != false",
        format!(
            "{} must set securityContext.allowPrivilegeEscalation=false",
            containers_phrase(&bad)
        ),
    )
}

/// Volume sources a restricted pod may use.
const RESTRICTED_ALLOWED_VOLUMES: &[&str] = &[
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "image",
    "persistentVolumeClaim",
    "projected",
    "secret",
];

/// The other volume sources, in the order the real check names them.
const RESTRICTED_VOLUMES: &[&str] = &[
    "hostPath",
    "gcePersistentDisk",
    "awsElasticBlockStore",
    "gitRepo",
    "nfs",
    "iscsi",
    "glusterfs",
    "rbd",
    "flexVolume",
    "cinder",
    "cephfs",
    "flocker",
    "fc",
    "azureFile",
    "vsphereVolume",
    "quobyte",
    "azureDisk",
    "photonPersistentDisk",
    "portworxVolume",
    "scaleIO",
    "storageos",
];

pub(super) fn restricted_volumes(spec: &Value) -> Option<Violation> {
    let set = |v: &Value, k: &str| v[k].is_object();
    let mut bad = Vec::new();
    let mut types = BTreeSet::new();
    for v in volumes(spec) {
        if RESTRICTED_ALLOWED_VOLUMES.iter().any(|k| set(v, k)) {
            continue;
        }
        // A volume without a known source is defaulted to an emptyDir by the real server.
        if let Some(t) = RESTRICTED_VOLUMES.iter().find(|k| set(v, k)) {
            bad.push(name(v));
            types.insert(*t);
        }
    }
    if bad.is_empty() {
        return None;
    }
    violation(
        "restricted volume types",
        format!(
            "{} {} {} {} {}",
            plural("volume", "volumes", bad.len()),
            join_quote(&bad),
            plural("uses", "use", bad.len()),
            plural("restricted volume type", "restricted volume types", types.len()),
            join_quote(types)
        ),
    )
}

pub(super) fn run_as_non_root(spec: &Value) -> Option<Violation> {
    let pod = &spec["securityContext"]["runAsNonRoot"];
    let mut setters = Vec::new();
    if *pod == false {
        setters.push("pod".to_owned());
    }
    let pod_true = *pod == true;
    let explicit = bad_containers(spec, |sc| sc["runAsNonRoot"] == false);
    let implicit = bad_containers(spec, |sc| !sc["runAsNonRoot"].is_boolean() && !pod_true);
    if !explicit.is_empty() {
        setters.push(containers_phrase(&explicit));
    }
    if !setters.is_empty() {
        let detail =
            format!("{} must not set securityContext.runAsNonRoot=false", setters.join(" and "));
        return violation("runAsNonRoot != true", detail);
    }
    if implicit.is_empty() {
        return None;
    }
    violation(
        "runAsNonRoot != true",
        format!(
            "pod or {} must set securityContext.runAsNonRoot=true",
            containers_phrase(&implicit)
        ),
    )
}

pub(super) fn run_as_user(spec: &Value) -> Option<Violation> {
    let root = |sc: &Value| sc["runAsUser"].as_i64() == Some(0);
    let mut setters = Vec::new();
    if root(&spec["securityContext"]) {
        setters.push("pod".to_owned());
    }
    let bad = bad_containers(spec, root);
    if !bad.is_empty() {
        setters.push(containers_phrase(&bad));
    }
    if setters.is_empty() {
        return None;
    }
    violation("runAsUser=0", format!("{} must not set runAsUser=0", setters.join(" and ")))
}
