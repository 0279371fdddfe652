//! RBAC's escalation prevention, as kube-apiserver's RBAC storage does it: a Role or
//! ClusterRole may be written only by someone who holds every permission it grants (in its
//! namespace; cluster-wide for a ClusterRole) or may `escalate` it; a RoleBinding or
//! ClusterRoleBinding only by someone who holds every permission of the role it refers to
//! (in the binding's namespace) or may `bind` that role. `system:masters` may do either.
//! A refusal is the real `403`:
//! `roles.rbac.authorization.k8s.io "x" is forbidden: user "U" (groups=["G"]) is attempting
//! to grant RBAC permissions not currently held:` and one line per missing permission.

use serde_json::Value;

use super::rbac::{self, Policy};
use super::{Attributes, MASTERS, StorePolicy, User};
use crate::error::{ApiError, ApiResult};
use crate::store::Inner;

const GROUP: &str = "rbac.authorization.k8s.io";

/// Refuses `obj` (a Role, ClusterRole or binding written by `user`) if it grants more than
/// `user` holds.
pub fn admit(inner: &Inner, user: &User, plural: &str, obj: &Value) -> ApiResult<()> {
    if user.groups.iter().any(|g| g == MASTERS) {
        return Ok(());
    }
    let policy = StorePolicy(inner);
    let ns = obj["metadata"]["namespace"].as_str().unwrap_or_default();
    let name = obj["metadata"]["name"].as_str().unwrap_or_default();
    let may = |verb: &str, resource: &str, name: &str| {
        let attrs = Attributes {
            verb: verb.into(),
            resource_request: true,
            namespace: ns.into(),
            group: GROUP.into(),
            resource: resource.into(),
            name: name.into(),
            ..Attributes::default()
        };
        rbac::authorize(&policy, user, &attrs).allowed()
    };
    let rules = match plural {
        "roles" | "clusterroles" => {
            if may("escalate", plural, name) {
                return Ok(());
            }
            obj["rules"].clone()
        }
        "rolebindings" | "clusterrolebindings" => {
            let role_name = obj["roleRef"]["name"].as_str().unwrap_or_default();
            let (role_plural, role) = match obj["roleRef"]["kind"].as_str() {
                Some("Role") => ("roles", policy.role(ns, role_name)),
                _ => ("clusterroles", policy.cluster_role(role_name)),
            };
            if may("bind", role_plural, role_name) {
                return Ok(());
            }
            let singular = role_plural.trim_end_matches('s');
            let role = role.ok_or_else(|| ApiError::not_found(GROUP, singular, role_name))?;
            role["rules"].clone()
        }
        _ => return Ok(()),
    };
    let (owned, _) = rbac::rules_for(&policy, user, ns);
    let missing = uncovered(&owned, rules.as_array().map(Vec::as_slice).unwrap_or_default());
    if missing.is_empty() {
        return Ok(());
    }
    let groups: Vec<String> = user.groups.iter().map(|g| format!("{g:?}")).collect();
    let why = format!(
        "user \"{}\" (groups=[{}]) is attempting to grant RBAC permissions not currently held:\n{}",
        user.name,
        groups.join(" "),
        missing.join("\n")
    );
    Err(ApiError::forbidden_resource(GROUP, plural, name, why))
}

/// One permission: a verb on one group's resource (and name), or on one non-resource URL.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Atom<'a> {
    group: Option<&'a str>,
    resource: Option<&'a str>,
    name: Option<&'a str>,
    url: Option<&'a str>,
    verb: &'a str,
}

fn strings<'a>(rule: &'a Value, field: &str) -> Vec<&'a str> {
    rule[field].as_array().into_iter().flatten().filter_map(Value::as_str).collect()
}

/// A rule broken into single permissions (`BreakdownRule`).
fn breakdown(rule: &Value) -> Vec<Atom<'_>> {
    let mut out = Vec::new();
    let names = strings(rule, "resourceNames");
    let verbs = strings(rule, "verbs");
    for group in strings(rule, "apiGroups") {
        for resource in strings(rule, "resources") {
            for &verb in &verbs {
                let names: Vec<Option<&str>> = if names.is_empty() {
                    vec![None]
                } else {
                    names.iter().map(|n| Some(*n)).collect()
                };
                for name in names {
                    out.push(Atom {
                        group: Some(group),
                        resource: Some(resource),
                        name,
                        url: None,
                        verb,
                    });
                }
            }
        }
    }
    for url in strings(rule, "nonResourceURLs") {
        for &verb in &verbs {
            out.push(Atom { group: None, resource: None, name: None, url: Some(url), verb });
        }
    }
    out
}

/// Whether an owner's rule covers one permission (`ruleCovers`).
fn covers(owner: &Value, atom: &Atom<'_>) -> bool {
    let has = |field: &str, v: &str| strings(owner, field).contains(&v);
    if !has("verbs", "*") && !has("verbs", atom.verb) {
        return false;
    }
    if let Some(url) = atom.url {
        return strings(owner, "nonResourceURLs").iter().any(|o| {
            *o == url
                || o.strip_suffix('*').is_some_and(|p| url.starts_with(p.trim_end_matches('*')))
        });
    }
    let (Some(group), Some(resource)) = (atom.group, atom.resource) else { return false };
    let group_ok = has("apiGroups", "*") || has("apiGroups", group);
    let resource_ok = has("resources", "*")
        || has("resources", resource)
        || resource.split_once('/').is_some_and(|(_, sub)| has("resources", &format!("*/{sub}")));
    let owner_names = strings(owner, "resourceNames");
    let name_ok = owner_names.is_empty() || atom.name.is_some_and(|n| owner_names.contains(&n));
    group_ok && resource_ok && name_ok
}

/// The permissions of `rules` no rule of `owned` covers, compacted (verbs of one resource
/// together) and described as `rbacv1helpers.CompactString` does, sorted.
fn uncovered(owned: &[&Value], rules: &[Value]) -> Vec<String> {
    let mut missing: Vec<(Atom<'_>, Vec<&str>)> = Vec::new();
    for atom in rules.iter().flat_map(breakdown) {
        if owned.iter().any(|o| covers(o, &atom)) {
            continue;
        }
        let same = |a: &Atom<'_>| {
            a.url.is_none()
                && (a.group, a.resource, a.name) == (atom.group, atom.resource, atom.name)
        };
        match missing.iter_mut().find(|(a, _)| same(a)) {
            Some((_, verbs)) if !verbs.contains(&atom.verb) => verbs.push(atom.verb),
            Some(_) => {}
            None => missing.push((atom.clone(), vec![atom.verb])),
        }
    }
    let q = |xs: &[&str]| {
        format!("[{}]", xs.iter().map(|x| format!("{x:?}")).collect::<Vec<_>>().join(" "))
    };
    let mut out: Vec<String> = missing
        .iter()
        .map(|(a, verbs)| {
            let mut parts = Vec::new();
            if let Some(g) = a.group {
                parts.push(format!("APIGroups:{}", q(&[g])));
            }
            if let Some(r) = a.resource {
                parts.push(format!("Resources:{}", q(&[r])));
            }
            if let Some(u) = a.url {
                parts.push(format!("NonResourceURLs:{}", q(&[u])));
            }
            if let Some(n) = a.name {
                parts.push(format!("ResourceNames:{}", q(&[n])));
            }
            parts.push(format!("Verbs:{}", q(verbs)));
            format!("{{{}}}", parts.join(", "))
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn owners_cover_what_they_hold_and_name_what_they_do_not() {
        let owned = [
            json!({"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list"]}),
            json!({"apiGroups": ["apps"], "resources": ["*"], "verbs": ["*"]}),
            json!({"apiGroups": ["*"], "resources": ["*/status"], "verbs": ["patch"]}),
            json!({"nonResourceURLs": ["/api/*"], "verbs": ["get"]}),
        ];
        let owned: Vec<&Value> = owned.iter().collect();
        let held = [
            json!({"apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["cfg"], "verbs": ["get"]}),
            json!({"apiGroups": ["apps"], "resources": ["deployments", "deployments/scale"], "verbs": ["create"]}),
            json!({"apiGroups": ["blaze.ai"], "resources": ["blazeengines/status"], "verbs": ["patch"]}),
            json!({"nonResourceURLs": ["/api/v1"], "verbs": ["get"]}),
        ];
        assert!(uncovered(&owned, &held).is_empty());
        let more = [
            json!({"apiGroups": [""], "resources": ["configmaps", "secrets"], "verbs": ["get", "watch"]}),
            json!({"nonResourceURLs": ["/metrics"], "verbs": ["get"]}),
        ];
        assert_eq!(
            uncovered(&owned, &more),
            [
                r#"{APIGroups:[""], Resources:["configmaps"], Verbs:["watch"]}"#,
                r#"{APIGroups:[""], Resources:["secrets"], Verbs:["get" "watch"]}"#,
                r#"{NonResourceURLs:["/metrics"], Verbs:["get"]}"#,
            ]
        );
        let named = [
            json!({"apiGroups": [""], "resources": ["pods"], "resourceNames": ["a"], "verbs": ["get"]}),
        ];
        let named: Vec<&Value> = named.iter().collect();
        let all = [json!({"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]})];
        assert_eq!(uncovered(&named, &all).len(), 1, "a named grant does not cover all names");
    }
}
