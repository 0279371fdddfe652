//! The baseline checks: known privilege escalations.

use std::collections::BTreeSet;

use serde_json::Value;

use super::{
    bad_containers, containers, containers_phrase, go_quote, join_quote, name, plural, violation,
};
use crate::pod_security::Violation;

pub(super) fn app_armor_profile(meta: &Value, spec: &Value) -> Option<Violation> {
    let allowed = |p: &Value| matches!(p["type"].as_str(), Some("RuntimeDefault" | "Localhost"));
    let mut setters = Vec::new();
    let mut values = BTreeSet::new();
    let profile = &spec["securityContext"]["appArmorProfile"];
    if profile.is_object() && !allowed(profile) {
        setters.push("pod".to_owned());
        values.insert(profile["type"].as_str().unwrap_or_default().to_owned());
    }
    let bad = bad_containers(spec, |sc| {
        let p = &sc["appArmorProfile"];
        p.is_object() && !allowed(p)
    });
    for c in containers(spec).filter(|c| bad.contains(&name(c))) {
        let t = &c["securityContext"]["appArmorProfile"]["type"];
        values.insert(t.as_str().unwrap_or_default().to_owned());
    }
    if !bad.is_empty() {
        setters.push(containers_phrase(&bad));
    }
    let mut values: Vec<String> = values.into_iter().collect();
    let mut annotations: Vec<String> = meta["annotations"]
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(k, _)| k.starts_with("container.apparmor.security.beta.kubernetes.io/"))
        .filter_map(|(k, v)| {
            let v = v.as_str().unwrap_or_default();
            let ok = v.is_empty() || v == "runtime/default" || v.starts_with("localhost/");
            (!ok).then(|| format!("{k}={}", go_quote(v)))
        })
        .collect();
    if !annotations.is_empty() {
        annotations.sort();
        setters.push(plural("annotation", "annotations", annotations.len()).to_owned());
        values.extend(annotations);
    }
    if setters.is_empty() {
        return None;
    }
    violation(
        plural("forbidden AppArmor profile", "forbidden AppArmor profiles", values.len()),
        format!(
            "{} must not set AppArmor profile type to {}",
            setters.join(" and "),
            join_quote(&values)
        ),
    )
}

/// Capabilities a baseline container may add.
const BASELINE_CAPABILITIES: &[&str] = &[
    "AUDIT_WRITE",
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "MKNOD",
    "NET_BIND_SERVICE",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYS_CHROOT",
];

pub(super) fn added(sc: &Value) -> impl Iterator<Item = &str> {
    sc["capabilities"]["add"].as_array().into_iter().flatten().filter_map(Value::as_str)
}

pub(super) fn capabilities_baseline(spec: &Value) -> Option<Violation> {
    let forbidden = |c: &str| !BASELINE_CAPABILITIES.contains(&c);
    let bad = bad_containers(spec, |sc| added(sc).any(forbidden));
    if bad.is_empty() {
        return None;
    }
    let caps: BTreeSet<&str> = containers(spec)
        .flat_map(|c| added(&c["securityContext"]))
        .filter(|c| forbidden(c))
        .collect();
    violation(
        "non-default capabilities",
        format!(
            "{} must not include {} in securityContext.capabilities.add",
            containers_phrase(&bad),
            join_quote(caps)
        ),
    )
}

pub(super) fn host_namespaces(spec: &Value) -> Option<Violation> {
    let set: Vec<String> = ["hostNetwork", "hostPID", "hostIPC"]
        .into_iter()
        .filter(|k| spec[*k] == true)
        .map(|k| format!("{k}=true"))
        .collect();
    if set.is_empty() {
        return None;
    }
    violation("host namespaces", set.join(", "))
}

pub(super) fn volumes(spec: &Value) -> impl Iterator<Item = &Value> {
    spec["volumes"].as_array().into_iter().flatten()
}

pub(super) fn host_path_volumes(spec: &Value) -> Option<Violation> {
    let names: Vec<&str> = volumes(spec).filter(|v| v["hostPath"].is_object()).map(name).collect();
    if names.is_empty() {
        return None;
    }
    violation(
        "hostPath volumes",
        format!("{} {}", plural("volume", "volumes", names.len()), join_quote(&names)),
    )
}

pub(super) fn host_ports(spec: &Value) -> Option<Violation> {
    let host_ports = |c: &Value| -> Vec<String> {
        let ports = c["ports"].as_array().into_iter().flatten();
        ports
            .filter_map(|p| p["hostPort"].as_i64())
            .filter(|p| *p != 0)
            .map(|p| p.to_string())
            .collect()
    };
    let bad: Vec<&str> = containers(spec).filter(|c| !host_ports(c).is_empty()).map(name).collect();
    if bad.is_empty() {
        return None;
    }
    // A set of strings, listed in string order as Go's `sets.String` lists them.
    let ports: BTreeSet<String> = containers(spec).flat_map(host_ports).collect();
    violation(
        "hostPort",
        format!(
            "{} {} {} {}",
            containers_phrase(&bad),
            plural("uses", "use", bad.len()),
            plural("hostPort", "hostPorts", ports.len()),
            ports.into_iter().collect::<Vec<_>>().join(", ")
        ),
    )
}

pub(super) fn privileged(spec: &Value) -> Option<Violation> {
    let bad = bad_containers(spec, |sc| sc["privileged"] == true);
    if bad.is_empty() {
        return None;
    }
    let detail =
        format!("{} must not set securityContext.privileged=true", containers_phrase(&bad));
    violation("privileged", detail)
}

pub(super) fn proc_mount(spec: &Value) -> Option<Violation> {
    let mount =
        |sc: &Value| sc["procMount"].as_str().filter(|m| *m != "Default").map(str::to_owned);
    let bad = bad_containers(spec, |sc| mount(sc).is_some());
    if bad.is_empty() {
        return None;
    }
    let types: BTreeSet<String> =
        containers(spec).filter_map(|c| mount(&c["securityContext"])).collect();
    violation(
        "procMount",
        format!(
            "{} must not set securityContext.procMount to {}",
            containers_phrase(&bad),
            join_quote(types)
        ),
    )
}

pub(super) fn se_linux_options(spec: &Value, minor: u32) -> Option<Violation> {
    let mut allowed = vec!["", "container_t", "container_init_t", "container_kvm_t"];
    if minor >= 31 {
        allowed.push("container_engine_t");
    }
    let (mut bad_types, mut set_user, mut set_role) = (BTreeSet::new(), false, false);
    let mut valid = |o: &Value| {
        let t = o["type"].as_str().unwrap_or_default();
        let (type_ok, user, role) = (
            allowed.contains(&t),
            o["user"].as_str().is_some_and(|s| !s.is_empty()),
            o["role"].as_str().is_some_and(|s| !s.is_empty()),
        );
        if !type_ok {
            bad_types.insert(t.to_owned());
        }
        set_user |= user;
        set_role |= role;
        type_ok && !user && !role
    };
    let mut setters = Vec::new();
    let pod = &spec["securityContext"]["seLinuxOptions"];
    if pod.is_object() && !valid(pod) {
        setters.push("pod".to_owned());
    }
    let bad: Vec<&str> = containers(spec)
        .filter(|c| {
            let o = &c["securityContext"]["seLinuxOptions"];
            o.is_object() && !valid(o)
        })
        .map(name)
        .collect();
    if !bad.is_empty() {
        setters.push(containers_phrase(&bad));
    }
    if setters.is_empty() {
        return None;
    }
    let mut data = Vec::new();
    if !bad_types.is_empty() {
        data.push(format!(
            "{} {}",
            plural("type", "types", bad_types.len()),
            join_quote(&bad_types)
        ));
    }
    if set_user {
        data.push("user may not be set".to_owned());
    }
    if set_role {
        data.push("role may not be set".to_owned());
    }
    violation(
        "seLinuxOptions",
        format!(
            "{} set forbidden securityContext.seLinuxOptions: {}",
            setters.join(" and "),
            data.join("; ")
        ),
    )
}

pub(super) fn valid_seccomp(profile: &Value) -> bool {
    matches!(profile["type"].as_str(), Some("RuntimeDefault" | "Localhost"))
}

/// Pod and containers that set `seccompProfile.type` to something else than `RuntimeDefault`
/// or `Localhost`: the setters (`pod`, `containers "a"`) and the values, or `None`.
pub(super) fn bad_seccomp_setters(spec: &Value) -> Option<String> {
    let mut setters = Vec::new();
    let mut values = BTreeSet::new();
    let pod = &spec["securityContext"]["seccompProfile"];
    if pod.is_object() && !valid_seccomp(pod) {
        setters.push("pod".to_owned());
        values.insert(pod["type"].as_str().unwrap_or_default().to_owned());
    }
    let mut bad = Vec::new();
    for c in containers(spec) {
        let p = &c["securityContext"]["seccompProfile"];
        if p.is_object() && !valid_seccomp(p) {
            bad.push(name(c));
            values.insert(p["type"].as_str().unwrap_or_default().to_owned());
        }
    }
    if !bad.is_empty() {
        setters.push(containers_phrase(&bad));
    }
    (!setters.is_empty()).then(|| {
        format!(
            "{} must not set securityContext.seccompProfile.type to {}",
            setters.join(" and "),
            join_quote(values)
        )
    })
}

pub(super) fn seccomp_baseline(meta: &Value, spec: &Value, minor: u32) -> Option<Violation> {
    if minor >= 19 {
        return violation("seccompProfile", bad_seccomp_setters(spec)?);
    }
    // Before 1.19 the profile was chosen by annotations.
    let ok =
        |v: &str| v == "runtime/default" || v == "docker/default" || v.starts_with("localhost/");
    let annotation = |key: String| -> Option<String> {
        let v = meta["annotations"][&key].as_str()?;
        (!ok(v)).then(|| format!("{key}={}", go_quote(v)))
    };
    let pod = annotation("seccomp.security.alpha.kubernetes.io/pod".to_owned());
    let forbidden: BTreeSet<String> = pod
        .into_iter()
        .chain(containers(spec).filter_map(|c| {
            annotation(format!("container.seccomp.security.alpha.kubernetes.io/{}", name(c)))
        }))
        .collect();
    if forbidden.is_empty() {
        return None;
    }
    violation(
        "seccompProfile",
        format!(
            "forbidden {} {}",
            plural("annotation", "annotations", forbidden.len()),
            forbidden.into_iter().collect::<Vec<_>>().join(", ")
        ),
    )
}

/// Sysctls a baseline pod may set, with the version that allowed each.
const SAFE_SYSCTLS: &[(u32, &str)] = &[
    (0, "kernel.shm_rmid_forced"),
    (0, "net.ipv4.ip_local_port_range"),
    (0, "net.ipv4.tcp_syncookies"),
    (0, "net.ipv4.ping_group_range"),
    (0, "net.ipv4.ip_unprivileged_port_start"),
    (27, "net.ipv4.ip_local_reserved_ports"),
    (29, "net.ipv4.tcp_keepalive_time"),
    (29, "net.ipv4.tcp_fin_timeout"),
    (29, "net.ipv4.tcp_keepalive_intvl"),
    (29, "net.ipv4.tcp_keepalive_probes"),
    (32, "net.ipv4.tcp_rmem"),
    (32, "net.ipv4.tcp_wmem"),
];

pub(super) fn sysctls(spec: &Value, minor: u32) -> Option<Violation> {
    let safe = |n: &str| SAFE_SYSCTLS.iter().any(|(since, s)| *s == n && *since <= minor);
    let forbidden: Vec<&str> = spec["securityContext"]["sysctls"]
        .as_array()
        .into_iter()
        .flatten()
        .map(name)
        .filter(|n| !safe(n))
        .collect();
    if forbidden.is_empty() {
        return None;
    }
    violation("forbidden sysctls", forbidden.join(", "))
}

pub(super) fn windows_host_process(spec: &Value) -> Option<Violation> {
    let host_process = |sc: &Value| sc["windowsOptions"]["hostProcess"] == true;
    let mut setters = Vec::new();
    if host_process(&spec["securityContext"]) {
        setters.push("pod".to_owned());
    }
    let bad = bad_containers(spec, host_process);
    if !bad.is_empty() {
        setters.push(containers_phrase(&bad));
    }
    if setters.is_empty() {
        return None;
    }
    violation(
        "hostProcess",
        format!(
            "{} must not set securityContext.windowsOptions.hostProcess=true",
            setters.join(" and ")
        ),
    )
}
