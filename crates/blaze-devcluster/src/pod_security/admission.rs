//! Pod Security admission of a write: namespace labels, pods, and workloads with pod templates
//! (the real plugin's `ValidateNamespace`, `ValidatePod` and `ValidatePodController`).

use serde_json::Value;

use super::{Level, LevelVersion, Policy, evaluate, forbidden_detail, pod_template, policy_of};
use crate::error::{ApiError, ApiResult, Cause};
use crate::resources::ResourceInfo;
use crate::store::Inner;

/// Pod subresources the real plugin lets through unchecked.
const IGNORED_POD_SUBRESOURCES: &[&str] =
    &["exec", "attach", "binding", "eviction", "log", "portforward", "proxy", "status"];

/// Admits `obj` (replacing `old` on an update) written to `info`'s subresource `sub`: the
/// warnings to answer with, or the refusal.
pub(crate) fn admit(
    inner: &Inner,
    info: &ResourceInfo,
    sub: &str,
    obj: &Value,
    old: Option<&Value>,
    name: &str,
) -> ApiResult<Vec<String>> {
    match (info.group.as_str(), info.plural.as_str()) {
        ("", "namespaces") if sub.is_empty() => namespace(inner, obj, old, name),
        ("", "pods") if !IGNORED_POD_SUBRESOURCES.contains(&sub) => {
            if old.is_some_and(|old| !significant_pod_update(old, obj)) {
                return Ok(Vec::new());
            }
            let (policy, errors) = namespace_policy(inner, obj);
            let privileged = |lv: LevelVersion| lv.level == Level::Privileged;
            if errors == 0 && privileged(policy.enforce) && privileged(policy.warn) {
                return Ok(Vec::new());
            }
            let (meta, spec) = (&obj["metadata"], &obj["spec"]);
            let violations = evaluate(policy.enforce, meta, spec);
            if !violations.is_empty() {
                let why = format!(
                    "violates PodSecurity \"{}\": {}",
                    policy.enforce,
                    forbidden_detail(&violations)
                );
                return Err(ApiError::forbidden_resource("", "pods", name, why));
            }
            Ok(warning(policy.warn, meta, spec).into_iter().collect())
        }
        (group, plural) if sub.is_empty() => {
            let Some((meta, spec)) = pod_template(group, plural, obj) else {
                return Ok(Vec::new());
            };
            let (policy, _) = namespace_policy(inner, obj);
            Ok(warning(policy.warn, meta, spec).into_iter().collect())
        }
        _ => Ok(Vec::new()),
    }
}

/// The policy of the object's namespace, and how many of its labels are not valid.
fn namespace_policy(inner: &Inner, obj: &Value) -> (Policy, usize) {
    let ns = obj["metadata"]["namespace"].as_str().unwrap_or_default();
    let ns = inner.get("/namespaces", "", ns);
    let (policy, errors) = policy_of(ns.as_ref().and_then(|n| n["metadata"]["labels"].as_object()));
    (policy, errors.len())
}

fn warning(lv: LevelVersion, meta: &Value, spec: &Value) -> Option<String> {
    let violations = evaluate(lv, meta, spec);
    (!violations.is_empty())
        .then(|| format!("would violate PodSecurity \"{lv}\": {}", forbidden_detail(&violations)))
}

/// Whether a pod update is checked. The real plugin checks updates that change an image or
/// the containers (the rest of a pod's spec cannot change there); this server does not refuse
/// other spec changes, so it checks any change of the spec but the binding's `nodeName`.
fn significant_pod_update(old: &Value, new: &Value) -> bool {
    let spec = |v: &Value| {
        let mut s = v["spec"].clone();
        if let Some(o) = s.as_object_mut() {
            o.remove("nodeName");
        }
        s
    };
    spec(old) != spec(new)
}

/// Namespace labels: invalid ones refused (on create, or when an update changes what is
/// wrong), and a stricter `enforce` answered with warnings about the pods that break it.
fn namespace(
    inner: &Inner,
    obj: &Value,
    old: Option<&Value>,
    name: &str,
) -> ApiResult<Vec<String>> {
    let (policy, errors) = policy_of(obj["metadata"]["labels"].as_object());
    let (old_policy, old_errors) = match old {
        Some(o) => policy_of(o["metadata"]["labels"].as_object()),
        None => (policy, Vec::new()),
    };
    if !errors.is_empty() && (old.is_none() || old_errors != errors) {
        let causes = errors
            .iter()
            .map(|e| Cause {
                reason: "FieldValueInvalid".into(),
                message: format!("Invalid value: \"{}\": {}", e.value, e.message),
                field: e.field(),
            })
            .collect();
        return Err(ApiError::invalid("", "Namespace", name, causes));
    }
    let (new, was) = (policy.enforce, old_policy.enforce);
    if old.is_none()
        || new == was
        || new.level == Level::Privileged
        || (new.version == was.version && new.level <= was.level)
    {
        return Ok(Vec::new());
    }
    Ok(existing_pods(inner, name, new))
}

/// Warnings about the pods of `ns` that break `enforce`, one per distinct set of reasons,
/// named by the first such pod (`x (and 2 other pods): reasons`).
fn existing_pods(inner: &Inner, ns: &str, enforce: LevelVersion) -> Vec<String> {
    let mut seen: Vec<(String, String, usize)> = Vec::new(); // (reasons, first pod, count)
    let pods = inner.objects("/pods").into_iter().flatten().filter(|((n, _), _)| n == ns);
    for ((_, pod_name), pod) in pods {
        let violations = evaluate(enforce, &pod["metadata"], &pod["spec"]);
        if violations.is_empty() {
            continue;
        }
        let reasons: Vec<&str> = violations.iter().map(|v| v.reason.as_str()).collect();
        let reasons = reasons.join(", ");
        match seen.iter_mut().find(|(r, _, _)| *r == reasons) {
            Some((_, first, count)) => {
                *count += 1;
                if pod_name < first {
                    first.clone_from(pod_name);
                }
            }
            None => seen.push((reasons, pod_name.clone(), 1)),
        }
    }
    if seen.is_empty() {
        return Vec::new();
    }
    let mut per_pod: Vec<String> = seen
        .into_iter()
        .map(|(reasons, first, count)| match count {
            1 => format!("{first}: {reasons}"),
            2 => format!("{first} (and 1 other pod): {reasons}"),
            n => format!("{first} (and {} other pods): {reasons}", n - 1),
        })
        .collect();
    per_pod.sort();
    let mut out = vec![format!(
        "existing pods in namespace \"{ns}\" violate the new PodSecurity enforce level \"{enforce}\""
    )];
    out.extend(per_pod);
    out
}
