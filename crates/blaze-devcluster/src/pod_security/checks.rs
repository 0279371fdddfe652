//! The checks of the Pod Security Standards, worded as `k8s.io/pod-security-admission`'s
//! `policy/check_*.go` word them, each at the versions it has had up to 1.33.

use serde_json::Value;

mod baseline;
mod restricted;

use self::baseline::{
    app_armor_profile, capabilities_baseline, host_namespaces, host_path_volumes, host_ports,
    privileged, proc_mount, se_linux_options, seccomp_baseline, sysctls, windows_host_process,
};
use self::restricted::{
    allow_privilege_escalation, capabilities_restricted, restricted_volumes, run_as_non_root,
    run_as_user, seccomp_restricted,
};
use super::{Level, Violation};

/// Runs the checks of `level` as of Kubernetes 1.`minor`, in the real registry's order:
/// baseline checks sorted by check name, then restricted ones; a restricted check that
/// replaces a baseline one (`capabilities_restricted`, `restrictedVolumes`,
/// `seccompProfile_restricted`) drops it from the restricted profile from the version it
/// appeared in.
pub(super) fn run(level: Level, minor: u32, meta: &Value, spec: &Value) -> Vec<Violation> {
    let restricted = level == Level::Restricted;
    let mut out = Vec::new();
    let mut push = |v: Option<Violation>| out.extend(v);
    push(app_armor_profile(meta, spec));
    if !(restricted && minor >= 22) {
        push(capabilities_baseline(spec));
    }
    push(host_namespaces(spec));
    if !restricted {
        push(host_path_volumes(spec));
    }
    push(host_ports(spec));
    push(privileged(spec));
    push(proc_mount(spec));
    push(se_linux_options(spec, minor));
    if !(restricted && minor >= 19) {
        push(seccomp_baseline(meta, spec, minor));
    }
    push(sysctls(spec, minor));
    push(windows_host_process(spec));
    if restricted {
        // Windows pods are exempt from these three from 1.25 (the fields cannot be set there).
        let windows = minor >= 25 && spec["os"]["name"] == "windows";
        if minor >= 8 && !windows {
            push(allow_privilege_escalation(spec));
        }
        if minor >= 22 && !windows {
            push(capabilities_restricted(spec));
        }
        push(restricted_volumes(spec));
        push(run_as_non_root(spec));
        if minor >= 23 {
            push(run_as_user(spec));
        }
        if minor >= 19 && !windows {
            push(seccomp_restricted(spec));
        }
    }
    out
}

pub(super) fn violation(reason: impl Into<String>, detail: impl Into<String>) -> Option<Violation> {
    Some(Violation { reason: reason.into(), detail: detail.into() })
}

/// Init containers, containers and ephemeral containers, in that order.
pub(super) fn containers(spec: &Value) -> impl Iterator<Item = &Value> {
    ["initContainers", "containers", "ephemeralContainers"]
        .into_iter()
        .flat_map(|k| spec[k].as_array().into_iter().flatten())
}

pub(super) fn name(c: &Value) -> &str {
    c["name"].as_str().unwrap_or_default()
}

/// The names of the containers for which `bad` holds.
pub(super) fn bad_containers(spec: &Value, bad: impl Fn(&Value) -> bool) -> Vec<&str> {
    containers(spec).filter(|c| bad(&c["securityContext"])).map(name).collect()
}

/// `"a", "b"`.
pub(super) fn join_quote<S: AsRef<str>>(items: impl IntoIterator<Item = S>) -> String {
    let quoted: Vec<String> = items.into_iter().map(|s| format!("\"{}\"", s.as_ref())).collect();
    quoted.join(", ")
}

pub(super) fn plural(one: &'static str, many: &'static str, n: usize) -> &'static str {
    if n == 1 { one } else { many }
}

/// `container "a"` or `containers "a", "b"`.
pub(super) fn containers_phrase(names: &[&str]) -> String {
    format!("{} {}", plural("container", "containers", names.len()), join_quote(names))
}

/// Go's `%q` for the ASCII text these messages quote.
pub(super) fn go_quote(s: &str) -> String {
    format!("{s:?}")
}
