//! RBAC evaluation (rbac.authorization.k8s.io/v1) as kube-apiserver's RBAC authorizer does it:
//! the rules of every ClusterRoleBinding whose subjects include the user, then, for a request
//! in a namespace, of every RoleBinding there; the first rule that allows the request decides.
//! RBAC only ever allows: a request no rule allows is denied, with the bindings whose role is
//! missing named in the reason (`RBAC: clusterrole.rbac.authorization.k8s.io "x" not found`).
//!
//! Rules are read from the stored objects as they are (JSON), so nothing is compiled or cached
//! and a change to a role applies to the next request. ClusterRole aggregation
//! (`aggregationRule`) is not evaluated: an aggregated role has the rules it carries.

use serde_json::Value;

use super::User;
use super::attributes::Attributes;

/// The RBAC objects, as stored.
pub trait Policy {
    /// Every ClusterRoleBinding.
    fn cluster_role_bindings(&self) -> Vec<&Value>;
    /// The RoleBindings of `namespace`.
    fn role_bindings(&self, namespace: &str) -> Vec<&Value>;
    /// The ClusterRole `name`.
    fn cluster_role(&self, name: &str) -> Option<&Value>;
    /// The Role `name` in `namespace`.
    fn role(&self, namespace: &str, name: &str) -> Option<&Value>;
}

/// RBAC's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Allowed, with the binding that allowed it (`RBAC: allowed by ClusterRoleBinding ...`).
    Allow(String),
    /// No rule allows it; the reason names missing roles, or is empty.
    NoOpinion(String),
}

impl Decision {
    /// Whether the request is allowed.
    pub fn allowed(&self) -> bool {
        matches!(self, Self::Allow(_))
    }

    /// The reason, as a SubjectAccessReview reports it.
    pub fn reason(&self) -> &str {
        match self {
            Self::Allow(r) | Self::NoOpinion(r) => r,
        }
    }
}

/// Decides `attrs` for `user`.
pub fn authorize(policy: &impl Policy, user: &User, attrs: &Attributes) -> Decision {
    let mut allowed_by = None;
    let errors = visit_rules(policy, user, &attrs.namespace, &mut |source, rule| {
        if rule_allows(attrs, rule) {
            allowed_by = Some(format!("RBAC: allowed by {source}"));
            false
        } else {
            true
        }
    });
    match allowed_by {
        Some(reason) => Decision::Allow(reason),
        None if errors.is_empty() => Decision::NoOpinion(String::new()),
        None => Decision::NoOpinion(format!("RBAC: {}", aggregate(&errors))),
    }
}

/// Every rule that applies to `user` in `namespace` (cluster-wide ones for an empty
/// namespace), and the errors met resolving them (missing roles).
pub fn rules_for<'a>(
    policy: &'a impl Policy,
    user: &User,
    namespace: &str,
) -> (Vec<&'a Value>, Vec<String>) {
    let mut rules = Vec::new();
    let errors = visit_rules(policy, user, namespace, &mut |_, rule| {
        rules.push(rule);
        true
    });
    (rules, errors)
}

/// Errors joined as Kubernetes' `utilerrors.NewAggregate` prints them.
fn aggregate(errors: &[String]) -> String {
    match errors {
        [one] => one.clone(),
        many => format!("[{}]", many.join(", ")),
    }
}

/// Where a rule came from: a binding, the role it refers to and the subject that matched.
pub struct Source<'a> {
    binding: &'a Value,
    subject: &'a Value,
}

impl std::fmt::Display for Source<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let meta = &self.binding["metadata"];
        let name = str_of(&meta["name"]);
        let ns = str_of(&meta["namespace"]);
        let role = &self.binding["roleRef"];
        let (role_kind, role_name) = (str_of(&role["kind"]), str_of(&role["name"]));
        let subject_kind = str_of(&self.subject["kind"]);
        let subject_name = str_of(&self.subject["name"]);
        let subject = if subject_kind == "ServiceAccount" {
            let sa_ns = Some(str_of(&self.subject["namespace"])).filter(|n| !n.is_empty());
            format!("{subject_kind} \"{subject_name}/{}\"", sa_ns.unwrap_or(ns))
        } else {
            format!("{subject_kind} \"{subject_name}\"")
        };
        if ns.is_empty() {
            write!(f, "ClusterRoleBinding \"{name}\" of {role_kind} \"{role_name}\" to {subject}")
        } else {
            write!(f, "RoleBinding \"{name}/{ns}\" of {role_kind} \"{role_name}\" to {subject}")
        }
    }
}

/// Calls `visit` with each rule that applies to `user` in `namespace` until it returns
/// `false`; returns the errors met (roles that do not exist).
fn visit_rules<'a>(
    policy: &'a impl Policy,
    user: &User,
    namespace: &str,
    visit: &mut dyn FnMut(&Source<'a>, &'a Value) -> bool,
) -> Vec<String> {
    let mut errors = Vec::new();
    let mut bindings = policy.cluster_role_bindings();
    if !namespace.is_empty() {
        bindings.extend(policy.role_bindings(namespace));
    }
    for binding in bindings {
        let binding_ns = str_of(&binding["metadata"]["namespace"]);
        let Some(subject) = subjects(binding).find(|s| applies_to(user, s, binding_ns)) else {
            continue;
        };
        let role = match role_of(policy, binding) {
            Ok(role) => role,
            Err(e) => {
                errors.push(e);
                continue;
            }
        };
        let source = Source { binding, subject };
        for rule in role["rules"].as_array().into_iter().flatten() {
            if !visit(&source, rule) {
                return errors;
            }
        }
    }
    errors
}

fn subjects(binding: &Value) -> impl Iterator<Item = &Value> {
    binding["subjects"].as_array().into_iter().flatten()
}

/// The role a binding refers to, or the error the real server reports for a missing one.
fn role_of<'a>(policy: &'a impl Policy, binding: &Value) -> Result<&'a Value, String> {
    let ns = str_of(&binding["metadata"]["namespace"]);
    let name = str_of(&binding["roleRef"]["name"]);
    match str_of(&binding["roleRef"]["kind"]) {
        "ClusterRole" => policy
            .cluster_role(name)
            .ok_or_else(|| format!("clusterrole.rbac.authorization.k8s.io \"{name}\" not found")),
        "Role" if !ns.is_empty() => policy
            .role(ns, name)
            .ok_or_else(|| format!("role.rbac.authorization.k8s.io \"{name}\" not found")),
        other => Err(format!("unsupported role reference kind: \"{other}\"")),
    }
}

/// Whether a binding's subject names the user (a ServiceAccount subject without a namespace
/// takes the binding's).
pub fn applies_to(user: &User, subject: &Value, binding_namespace: &str) -> bool {
    let name = str_of(&subject["name"]);
    match str_of(&subject["kind"]) {
        "User" => user.name == name,
        "Group" => user.groups.iter().any(|g| g == name),
        "ServiceAccount" => {
            let ns = Some(str_of(&subject["namespace"])).filter(|n| !n.is_empty());
            let ns = ns.unwrap_or(binding_namespace);
            !ns.is_empty() && user.name == super::service_account_user(ns, name)
        }
        _ => false,
    }
}

/// Whether one PolicyRule allows the request.
pub fn rule_allows(attrs: &Attributes, rule: &Value) -> bool {
    if !verb_matches(rule, &attrs.verb) {
        return false;
    }
    if !attrs.resource_request {
        return non_resource_url_matches(rule, &attrs.path);
    }
    let combined = if attrs.subresource.is_empty() {
        std::borrow::Cow::Borrowed(attrs.resource.as_str())
    } else {
        std::borrow::Cow::Owned(format!("{}/{}", attrs.resource, attrs.subresource))
    };
    api_group_matches(rule, &attrs.group)
        && resource_matches(rule, &combined, &attrs.subresource)
        && resource_name_matches(rule, &attrs.name)
}

fn strings<'a>(rule: &'a Value, field: &str) -> impl Iterator<Item = &'a str> {
    rule[field].as_array().into_iter().flatten().filter_map(Value::as_str)
}

fn verb_matches(rule: &Value, verb: &str) -> bool {
    strings(rule, "verbs").any(|v| v == "*" || v == verb)
}

fn api_group_matches(rule: &Value, group: &str) -> bool {
    strings(rule, "apiGroups").any(|g| g == "*" || g == group)
}

/// `*` matches every resource and subresource, `pods/log` that subresource, `*/scale` the
/// `scale` subresource of every resource.
fn resource_matches(rule: &Value, combined: &str, subresource: &str) -> bool {
    strings(rule, "resources").any(|r| {
        r == "*"
            || r == combined
            || (!subresource.is_empty() && r.strip_prefix("*/") == Some(subresource))
    })
}

/// No `resourceNames` matches every name (and requests without one, as list and create);
/// otherwise only a request for one of those names.
fn resource_name_matches(rule: &Value, name: &str) -> bool {
    let mut names = strings(rule, "resourceNames").peekable();
    names.peek().is_none() || names.any(|n| n == name)
}

/// `*` matches every path, `/api/*` every path under `/api/`, else the exact path.
fn non_resource_url_matches(rule: &Value, path: &str) -> bool {
    strings(rule, "nonResourceURLs").any(|u| {
        u == "*" || u == path || u.strip_suffix('*').is_some_and(|prefix| path.starts_with(prefix))
    })
}

fn str_of(v: &Value) -> &str {
    v.as_str().unwrap_or_default()
}

#[cfg(test)]
mod tests;
