//! One test per check, with the real plugin's wording; then the label parsing.

use serde_json::{Value, json};

use super::*;

fn restricted() -> LevelVersion {
    LevelVersion::latest(Level::Restricted)
}

fn baseline() -> LevelVersion {
    LevelVersion::latest(Level::Baseline)
}

/// A container that passes `restricted`, with `extra` merged into its securityContext.
fn good(name: &str, extra: Value) -> Value {
    let mut sc = json!({"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}});
    for (k, v) in extra.as_object().into_iter().flatten() {
        sc[k] = v.clone();
    }
    json!({"name": name, "image": "x", "securityContext": sc})
}

/// A pod spec that passes `restricted`, with `extra` merged into it.
fn spec(containers: Vec<Value>, extra: Value) -> Value {
    let mut s = json!({
        "containers": containers,
        "securityContext": {"runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}},
    });
    for (k, v) in extra.as_object().into_iter().flatten() {
        s[k] = v.clone();
    }
    s
}

fn detail(lv: LevelVersion, spec: &Value) -> String {
    forbidden_detail(&evaluate(lv, &json!({}), spec))
}

#[test]
fn a_hardened_pod_passes_restricted_and_anything_passes_privileged() {
    let s = spec(vec![good("a", json!({})), good("b", json!({"runAsUser": 1000}))], json!({}));
    assert_eq!(detail(restricted(), &s), "");
    let wild = json!({"hostNetwork": true, "containers": [{"name": "c", "securityContext": {"privileged": true}}]});
    assert!(evaluate(LevelVersion::latest(Level::Privileged), &json!({}), &wild).is_empty());
}

#[test]
fn a_bare_pod_breaks_restricted_in_the_real_order_and_words() {
    let pod = json!({"metadata": {"name": "x"}, "spec": {"containers": [{"name": "x", "image": "nginx"}]}});
    assert_eq!(
        evaluate_pod(restricted(), &pod).unwrap_err(),
        r#"violates PodSecurity "restricted:latest": allowPrivilegeEscalation != false (container "x" must set securityContext.allowPrivilegeEscalation=false), unrestricted capabilities (container "x" must set securityContext.capabilities.drop=["ALL"]), runAsNonRoot != true (pod or container "x" must set securityContext.runAsNonRoot=true), seccompProfile (pod or container "x" must set securityContext.seccompProfile.type to "RuntimeDefault" or "Localhost")"#
    );
    assert_eq!(evaluate_pod(baseline(), &pod), Ok(()));
}

#[test]
fn container_lists_are_pluralised_init_containers_first() {
    let s = json!({"initContainers": [{"name": "init"}], "containers": [{"name": "web"}, {"name": "log"}],
        "securityContext": {"runAsNonRoot": true, "seccompProfile": {"type": "Localhost"}}});
    assert_eq!(
        detail(restricted(), &s),
        r#"allowPrivilegeEscalation != false (containers "init", "web", "log" must set securityContext.allowPrivilegeEscalation=false), unrestricted capabilities (containers "init", "web", "log" must set securityContext.capabilities.drop=["ALL"])"#
    );
}

#[test]
fn privileged() {
    let s = spec(vec![good("a", json!({"privileged": true}))], json!({}));
    assert_eq!(
        detail(baseline(), &s),
        r#"privileged (container "a" must not set securityContext.privileged=true)"#
    );
}

#[test]
fn host_namespaces() {
    let s = spec(
        vec![good("a", json!({}))],
        json!({"hostNetwork": true, "hostPID": true, "hostIPC": false}),
    );
    assert_eq!(detail(baseline(), &s), "host namespaces (hostNetwork=true, hostPID=true)");
}

#[test]
fn host_path_volumes_in_baseline_restricted_volume_types_in_restricted() {
    let vols = json!({"volumes": [
        {"name": "h", "hostPath": {"path": "/"}},
        {"name": "n", "nfs": {"server": "s", "path": "/"}},
        {"name": "ok", "emptyDir": {}},
        {"name": "plain"},
    ]});
    let s = spec(vec![good("a", json!({}))], vols);
    assert_eq!(detail(baseline(), &s), r#"hostPath volumes (volume "h")"#);
    assert_eq!(
        detail(restricted(), &s),
        r#"restricted volume types (volumes "h", "n" use restricted volume types "hostPath", "nfs")"#
    );
}

#[test]
fn host_ports_are_listed_as_strings_in_string_order() {
    let mut a = good("a", json!({}));
    a["ports"] =
        json!([{"containerPort": 80, "hostPort": 8080}, {"containerPort": 9, "hostPort": 9}]);
    let s = spec(vec![a], json!({}));
    assert_eq!(detail(baseline(), &s), r#"hostPort (container "a" uses hostPorts 8080, 9)"#);
}

#[test]
fn capabilities_beyond_the_baseline_set() {
    let s = spec(
        vec![good("a", json!({"capabilities": {"add": ["NET_ADMIN", "CHOWN", "SYS_ADMIN"]}}))],
        json!({}),
    );
    assert_eq!(
        detail(baseline(), &s),
        r#"non-default capabilities (container "a" must not include "NET_ADMIN", "SYS_ADMIN" in securityContext.capabilities.add)"#
    );
    assert_eq!(
        detail(restricted(), &s),
        r#"unrestricted capabilities (container "a" must set securityContext.capabilities.drop=["ALL"]; container "a" must not include "CHOWN", "NET_ADMIN", "SYS_ADMIN" in securityContext.capabilities.add)"#
    );
    let bind = spec(
        vec![good("a", json!({"capabilities": {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]}}))],
        json!({}),
    );
    assert_eq!(detail(restricted(), &bind), "");
}

#[test]
fn app_armor_profiles_and_annotations() {
    let s = spec(
        vec![good("a", json!({"appArmorProfile": {"type": "Unconfined"}}))],
        json!({"securityContext": {"runAsNonRoot": true, "appArmorProfile": {"type": "Localhost", "localhostProfile": "p"}}}),
    );
    assert_eq!(
        detail(baseline(), &s),
        r#"forbidden AppArmor profile (container "a" must not set AppArmor profile type to "Unconfined")"#
    );
    let meta =
        json!({"annotations": {"container.apparmor.security.beta.kubernetes.io/a": "unconfined"}});
    let s = spec(
        vec![good("a", json!({}))],
        json!({"securityContext": {"appArmorProfile": {"type": "Unconfined"}}}),
    );
    assert_eq!(
        forbidden_detail(&evaluate(baseline(), &meta, &s)),
        r#"forbidden AppArmor profiles (pod and annotation must not set AppArmor profile type to "Unconfined", "container.apparmor.security.beta.kubernetes.io/a="unconfined"")"#
    );
}

#[test]
fn se_linux_options() {
    let s = spec(
        vec![good("a", json!({"seLinuxOptions": {"type": "spc_t", "user": "u"}}))],
        json!({"securityContext": {"seLinuxOptions": {"role": "r"}}}),
    );
    assert_eq!(
        detail(baseline(), &s),
        r#"seLinuxOptions (pod and container "a" set forbidden securityContext.seLinuxOptions: type "spc_t"; user may not be set; role may not be set)"#
    );
    let engine =
        spec(vec![good("a", json!({"seLinuxOptions": {"type": "container_engine_t"}}))], json!({}));
    assert_eq!(detail(baseline(), &engine), "");
    let v30 = LevelVersion { level: Level::Baseline, version: Version::Minor(30) };
    assert_eq!(
        detail(v30, &engine),
        r#"seLinuxOptions (container "a" set forbidden securityContext.seLinuxOptions: type "container_engine_t")"#
    );
}

#[test]
fn proc_mount() {
    let s = spec(vec![good("a", json!({"procMount": "Unmasked"}))], json!({}));
    assert_eq!(
        detail(baseline(), &s),
        r#"procMount (container "a" must not set securityContext.procMount to "Unmasked")"#
    );
}

#[test]
fn seccomp_unconfined_in_baseline_and_required_in_restricted() {
    let s = spec(
        vec![good("a", json!({"seccompProfile": {"type": "Unconfined"}})), good("b", json!({}))],
        json!({"securityContext": {"runAsNonRoot": true}}),
    );
    let want = r#"seccompProfile (container "a" must not set securityContext.seccompProfile.type to "Unconfined")"#;
    assert_eq!(detail(baseline(), &s), want);
    assert_eq!(detail(restricted(), &s), want);
    let s = spec(
        vec![
            good("a", json!({"seccompProfile": {"type": "RuntimeDefault"}})),
            good("b", json!({})),
        ],
        json!({"securityContext": {"runAsNonRoot": true}}),
    );
    assert_eq!(
        detail(restricted(), &s),
        r#"seccompProfile (pod or container "b" must set securityContext.seccompProfile.type to "RuntimeDefault" or "Localhost")"#
    );
    // Before 1.19 the annotations were checked instead.
    let meta = json!({"annotations": {"seccomp.security.alpha.kubernetes.io/pod": "unconfined"}});
    let v18 = LevelVersion { level: Level::Baseline, version: Version::Minor(18) };
    assert_eq!(
        forbidden_detail(&evaluate(v18, &meta, &s)),
        r#"seccompProfile (forbidden annotation seccomp.security.alpha.kubernetes.io/pod="unconfined")"#
    );
}

#[test]
fn sysctls_by_version() {
    let s = spec(
        vec![good("a", json!({}))],
        json!({"securityContext": {"runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"},
            "sysctls": [{"name": "net.ipv4.tcp_rmem", "value": "1"}, {"name": "kernel.msgmax", "value": "1"}]}}),
    );
    assert_eq!(detail(restricted(), &s), "forbidden sysctls (kernel.msgmax)");
    let v31 = LevelVersion { level: Level::Restricted, version: Version::Minor(31) };
    assert_eq!(detail(v31, &s), "forbidden sysctls (net.ipv4.tcp_rmem, kernel.msgmax)");
}

#[test]
fn windows_host_process() {
    let s = spec(vec![good("a", json!({"windowsOptions": {"hostProcess": true}}))], json!({}));
    assert_eq!(
        detail(baseline(), &s),
        r#"hostProcess (container "a" must not set securityContext.windowsOptions.hostProcess=true)"#
    );
}

#[test]
fn allow_privilege_escalation_true_is_as_bad_as_unset() {
    let s = spec(vec![good("a", json!({"allowPrivilegeEscalation": true}))], json!({}));
    assert_eq!(
        detail(restricted(), &s),
        r#"allowPrivilegeEscalation != false (container "a" must set securityContext.allowPrivilegeEscalation=false)"#
    );
    // Windows pods cannot set it and are exempt from 1.25.
    let windows = spec(vec![json!({"name": "w"})], json!({"os": {"name": "windows"}}));
    assert_eq!(detail(restricted(), &windows), "");
}

#[test]
fn run_as_non_root_false_and_run_as_user_zero() {
    let s = spec(
        vec![good("a", json!({"runAsNonRoot": false, "runAsUser": 0}))],
        json!({"securityContext": {"runAsNonRoot": false, "runAsUser": 0, "seccompProfile": {"type": "RuntimeDefault"}}}),
    );
    assert_eq!(
        detail(restricted(), &s),
        r#"runAsNonRoot != true (pod and container "a" must not set securityContext.runAsNonRoot=false), runAsUser=0 (pod and container "a" must not set runAsUser=0)"#
    );
    // runAsUser=0 joined the standard in 1.23.
    let v22 = LevelVersion { level: Level::Restricted, version: Version::Minor(22) };
    assert_eq!(
        detail(v22, &s),
        r#"runAsNonRoot != true (pod and container "a" must not set securityContext.runAsNonRoot=false)"#
    );
}

#[test]
fn baseline_violations_come_first_in_a_restricted_evaluation() {
    let s = json!({"hostPID": true, "containers": [{"name": "c", "securityContext": {"privileged": true}}]});
    let reasons: Vec<String> =
        evaluate(restricted(), &json!({}), &s).into_iter().map(|v| v.reason).collect();
    assert_eq!(
        reasons,
        [
            "host namespaces",
            "privileged",
            "allowPrivilegeEscalation != false",
            "unrestricted capabilities",
            "runAsNonRoot != true",
            "seccompProfile"
        ]
    );
}

fn labels(pairs: &[(&str, &str)]) -> serde_json::Map<String, Value> {
    pairs.iter().map(|(k, v)| (format!("{LABEL_PREFIX}{k}"), json!(v))).collect()
}

#[test]
fn warn_follows_a_stricter_enforce_unless_set() {
    let (p, errors) = policy_of(Some(&labels(&[("enforce", "restricted")])));
    assert!(errors.is_empty());
    assert_eq!(
        (p.enforce.to_string(), p.warn.to_string()),
        ("restricted:latest".into(), "restricted:latest".into())
    );
    assert_eq!(p.audit.to_string(), "privileged:latest");
    let (p, _) = policy_of(Some(&labels(&[
        ("enforce", "baseline"),
        ("enforce-version", "v1.25"),
        ("warn", "restricted"),
    ])));
    assert_eq!(
        (p.enforce.to_string(), p.warn.to_string()),
        ("baseline:v1.25".into(), "restricted:latest".into())
    );
    let (p, _) = policy_of(None);
    assert_eq!(p.enforce, LevelVersion::latest(Level::Privileged));
}

#[test]
fn invalid_labels_are_errors_and_fail_closed_for_enforce() {
    let (p, errors) = policy_of(Some(&labels(&[
        ("enforce", "strict"),
        ("warn-version", "1.25"),
        ("audit", "x"),
    ])));
    assert_eq!(p.enforce.level, Level::Restricted);
    assert_eq!(p.audit.level, Level::Privileged);
    let fields: Vec<String> =
        errors.iter().map(|e| format!("{}: {}", e.field(), e.message)).collect();
    assert_eq!(
        fields,
        [
            "metadata.labels[pod-security.kubernetes.io/enforce]: must be one of privileged, baseline, restricted",
            "metadata.labels[pod-security.kubernetes.io/audit]: must be one of privileged, baseline, restricted",
            r#"metadata.labels[pod-security.kubernetes.io/warn-version]: must be "latest" or "v1.x""#,
        ]
    );
    assert_eq!(Version::parse("v1.05"), None);
    assert_eq!(Version::parse("v1.0"), Some(Version::Minor(0)));
    assert_eq!(Version::parse("v1.99").map(Version::effective_minor), Some(SERVER_MINOR));
}

#[test]
fn pod_templates_of_workloads() {
    let cron = json!({"spec": {"jobTemplate": {"spec": {"template": {"metadata": {"labels": {"a": "b"}}, "spec": {"containers": []}}}}}});
    let (meta, spec) = pod_template("batch", "cronjobs", &cron).unwrap();
    assert_eq!((meta["labels"]["a"].as_str(), spec["containers"].is_array()), (Some("b"), true));
    assert!(pod_template("apps", "deployments", &json!({"spec": {}})).is_none());
    assert!(pod_template("", "configmaps", &json!({"spec": {"template": {}}})).is_none());
}
