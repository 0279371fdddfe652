//! Pod Security admission, as kube-apiserver's built-in `PodSecurity` plugin does it: the
//! namespace labels `pod-security.kubernetes.io/{enforce,audit,warn}[-version]` choose a
//! profile of the Pod Security Standards (`privileged`, `baseline`, `restricted`) per mode.
//!
//! - A pod that breaks the `enforce` profile is refused: `pods "x" is forbidden: violates
//!   PodSecurity "restricted:latest": REASON (DETAIL), ...`.
//! - A pod allowed in, and every workload with a pod template (Deployment, ReplicaSet,
//!   StatefulSet, DaemonSet, Job, CronJob, ReplicationController, PodTemplate), is never refused
//!   but gets a `Warning` response header `would violate PodSecurity "LEVEL:VERSION": ...` when
//!   it breaks the `warn` profile (which follows `enforce` when only `enforce` is set and is
//!   stricter than the default).
//! - Labels that are not a level or a version make a namespace create (or an update that changes
//!   them) `422 Invalid`; raising `enforce` warns about the existing pods that break it.
//!
//! The checks and their wording are those of `k8s.io/pod-security-admission` (module
//! [`checks`]), at the version this server reports (1.33): `latest` and any newer version are
//! evaluated as 1.33, older versions get the checks as they were then.
//!
//! As on a default kube-apiserver, no namespace, user or runtime class is exempt (`kube-system`
//! included: exemptions are set in the plugin's configuration file, which this server has not),
//! and namespaces without labels are `privileged`. There is no audit log here, so the `audit`
//! label is validated but has no other effect.
//!
//! The policy functions work on JSON objects and are public so that other crates can check what
//! they render ([`evaluate_pod`]).

use std::fmt;

use serde_json::{Map, Value};

pub(crate) mod admission;
mod checks;
#[cfg(test)]
mod tests;

/// The minor version of the Kubernetes release this server speaks for: `latest` means it.
const SERVER_MINOR: u32 = 33;

/// Prefix of the namespace labels.
pub const LABEL_PREFIX: &str = "pod-security.kubernetes.io/";

/// A profile of the Pod Security Standards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    /// Unrestricted.
    Privileged,
    /// Known privilege escalations prevented.
    Baseline,
    /// Hardened pods.
    Restricted,
}

impl Level {
    /// Parses a label value.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "privileged" => Some(Self::Privileged),
            "baseline" => Some(Self::Baseline),
            "restricted" => Some(Self::Restricted),
            _ => None,
        }
    }

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Privileged => "privileged",
            Self::Baseline => "baseline",
            Self::Restricted => "restricted",
        }
    }
}

/// The version of the standards a profile is taken from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Version {
    /// The server's own version.
    Latest,
    /// `v1.MINOR`.
    Minor(u32),
}

impl Version {
    /// Parses a label value: `latest` or `v1.x`.
    pub fn parse(s: &str) -> Option<Self> {
        if s == "latest" {
            return Some(Self::Latest);
        }
        let minor = s.strip_prefix("v1.")?;
        let canonical = minor == "0" || !minor.starts_with('0');
        let digits = !minor.is_empty() && minor.bytes().all(|b| b.is_ascii_digit());
        (canonical && digits).then(|| minor.parse().ok().map(Self::Minor)).flatten()
    }

    /// The minor version whose checks apply (newer than the server counts as the server's).
    fn effective_minor(self) -> u32 {
        match self {
            Self::Latest => SERVER_MINOR,
            Self::Minor(m) => m.min(SERVER_MINOR),
        }
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Latest => f.write_str("latest"),
            Self::Minor(m) => write!(f, "v1.{m}"),
        }
    }
}

/// A level at a version, written `restricted:latest`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LevelVersion {
    /// The profile.
    pub level: Level,
    /// The version of the standards.
    pub version: Version,
}

impl LevelVersion {
    /// `LEVEL:latest`.
    pub fn latest(level: Level) -> Self {
        Self { level, version: Version::Latest }
    }
}

impl fmt::Display for LevelVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.level.as_str(), self.version)
    }
}

/// What a namespace's labels ask for, per mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Pods that break it are refused.
    pub enforce: LevelVersion,
    /// Violations would be written to the audit log.
    pub audit: LevelVersion,
    /// Violations are answered with a `Warning` header.
    pub warn: LevelVersion,
}

/// A label whose value is neither a level nor a version, as a field error of the namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelError {
    /// The label key.
    pub label: String,
    /// Its value.
    pub value: String,
    /// What it must be.
    pub message: &'static str,
}

impl LabelError {
    /// The field path of the error: `metadata.labels[KEY]`.
    pub fn field(&self) -> String {
        format!("metadata.labels[{}]", self.label)
    }
}

/// The policy of a namespace with these labels, and the labels that are not valid (an invalid
/// `enforce` level counts as `restricted`, invalid `warn` and `audit` levels as `privileged`,
/// an invalid version as `latest`, as the real plugin reads them).
pub fn policy_of(labels: Option<&Map<String, Value>>) -> (Policy, Vec<LabelError>) {
    let default = LevelVersion::latest(Level::Privileged);
    let mut p = Policy { enforce: default, audit: default, warn: default };
    let mut errors = Vec::new();
    let Some(labels) = labels else { return (p, errors) };
    let mut get = |mode: &str, level_on_error: Level, lv: &mut LevelVersion| {
        let mut has_level = false;
        let key = format!("{LABEL_PREFIX}{mode}");
        if let Some(v) = labels.get(&key).and_then(Value::as_str) {
            match Level::parse(v) {
                Some(l) => (lv.level, has_level) = (l, true),
                None => {
                    lv.level = level_on_error;
                    let message = "must be one of privileged, baseline, restricted";
                    errors.push(LabelError { label: key, value: v.to_owned(), message });
                }
            }
        }
        let key = format!("{LABEL_PREFIX}{mode}-version");
        let has_version = labels.get(&key).and_then(Value::as_str).map(|v| {
            lv.version = Version::parse(v).unwrap_or_else(|| {
                let message = r#"must be "latest" or "v1.x""#;
                errors.push(LabelError { label: key, value: v.to_owned(), message });
                Version::Latest
            });
        });
        (has_level, has_version.is_some())
    };
    let (has_enforce, _) = get("enforce", Level::Restricted, &mut p.enforce);
    get("audit", Level::Privileged, &mut p.audit);
    let (has_warn, has_warn_version) = get("warn", Level::Privileged, &mut p.warn);
    // The real plugin warns at the enforce level when only a stricter enforce is set.
    if !has_warn && has_enforce && p.enforce.level > p.warn.level {
        p.warn.level = p.enforce.level;
        if !has_warn_version {
            p.warn.version = p.enforce.version;
        }
    }
    (p, errors)
}

/// One broken rule: `reason (detail)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// What is broken, e.g. `allowPrivilegeEscalation != false`.
    pub reason: String,
    /// Who breaks it and how to mend it, e.g.
    /// `container "c" must set securityContext.allowPrivilegeEscalation=false`.
    pub detail: String,
}

/// The violations joined as the real plugin joins them: `reason (detail), reason (detail)`.
pub fn forbidden_detail(violations: &[Violation]) -> String {
    let parts: Vec<String> = violations
        .iter()
        .map(|v| {
            if v.detail.is_empty() {
                v.reason.clone()
            } else {
                format!("{} ({})", v.reason, v.detail)
            }
        })
        .collect();
    parts.join(", ")
}

/// The rules of `lv` that a pod with this `metadata` and `spec` breaks, in the real plugin's
/// order (baseline checks, then restricted ones, each group by check name).
pub fn evaluate(lv: LevelVersion, metadata: &Value, spec: &Value) -> Vec<Violation> {
    if lv.level == Level::Privileged {
        return Vec::new();
    }
    checks::run(lv.level, lv.version.effective_minor(), metadata, spec)
}

/// Checks a whole pod object against `lv`: `Err` carries the message a refused pod gets after
/// `is forbidden: ` (`violates PodSecurity "restricted:latest": ...`).
pub fn evaluate_pod(lv: LevelVersion, pod: &Value) -> Result<(), String> {
    let violations = evaluate(lv, &pod["metadata"], &pod["spec"]);
    if violations.is_empty() {
        return Ok(());
    }
    Err(format!("violates PodSecurity \"{lv}\": {}", forbidden_detail(&violations)))
}

/// The pod template's metadata and spec of a workload object, for the resources the real
/// plugin inspects; `None` for other resources or an object without a template.
pub fn pod_template<'a>(
    group: &str,
    plural: &str,
    obj: &'a Value,
) -> Option<(&'a Value, &'a Value)> {
    let template = match (group, plural) {
        ("", "podtemplates") => &obj["template"],
        ("", "replicationcontrollers")
        | ("apps", "deployments" | "replicasets" | "statefulsets" | "daemonsets")
        | ("batch", "jobs") => &obj["spec"]["template"],
        ("batch", "cronjobs") => &obj["spec"]["jobTemplate"]["spec"]["template"],
        _ => return None,
    };
    template.is_object().then(|| (&template["metadata"], &template["spec"]))
}
