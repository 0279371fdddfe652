//! `authorization.k8s.io/v1`: `SelfSubjectAccessReview` (may I do this?) and
//! `SelfSubjectRulesReview` (what may I do in this namespace?), created and answered, never
//! stored; what `kubectl auth can-i` and `kubectl auth can-i --list` ask.

use http::{Method, StatusCode};
use serde_json::{Value, json};

use super::{Attributes, User};
use crate::api::{Ctx, json_response};
use crate::error::{ApiError, ApiResult, Cause};
use crate::server::State;

/// The group served here.
pub const GROUP: &str = "authorization.k8s.io";

/// Serves `/apis/authorization.k8s.io/v1/REST`.
pub fn serve(st: &State, ctx: &Ctx, rest: &[&str]) -> ApiResult<axum::response::Response> {
    let kind = match rest {
        ["selfsubjectaccessreviews"] => "SelfSubjectAccessReview",
        ["selfsubjectrulesreviews"] => "SelfSubjectRulesReview",
        _ => return Err(ApiError::no_route(&ctx.path)),
    };
    if ctx.method != Method::POST {
        return Err(ApiError::method_not_allowed(ctx.method.as_str(), &ctx.path));
    }
    let body = ctx.object()?;
    let spec = body.get("spec").cloned().unwrap_or_else(|| json!({}));
    let status = if kind == "SelfSubjectAccessReview" {
        access(st, &ctx.user, &spec)?
    } else {
        rules(st, &ctx.user, &spec)
    };
    let out = json!({
        "kind": kind, "apiVersion": format!("{GROUP}/v1"),
        "metadata": {"creationTimestamp": null}, "spec": spec, "status": status,
    });
    Ok(json_response(StatusCode::CREATED, &out))
}

/// The status of a SelfSubjectAccessReview of `spec` by `user`.
fn access(st: &State, user: &User, spec: &Value) -> ApiResult<Value> {
    let s = |v: &Value, k: &str| v[k].as_str().unwrap_or_default().to_owned();
    let attrs = match (spec.get("resourceAttributes"), spec.get("nonResourceAttributes")) {
        (Some(r), None) if r.is_object() => Attributes {
            verb: s(r, "verb"),
            resource_request: true,
            namespace: s(r, "namespace"),
            group: s(r, "group"),
            version: s(r, "version"),
            resource: s(r, "resource"),
            subresource: s(r, "subresource"),
            name: s(r, "name"),
            path: String::new(),
        },
        (None, Some(n)) if n.is_object() => {
            Attributes { verb: s(n, "verb"), path: s(n, "path"), ..Attributes::default() }
        }
        _ => {
            let cause = Cause {
                reason: "FieldValueInvalid".into(),
                message: "Invalid value: \"null\": exactly one of nonResourceAttributes or resourceAttributes must be specified".into(),
                field: "spec.resourceAttributes".into(),
            };
            return Err(ApiError::invalid(GROUP, "SelfSubjectAccessReview", "", vec![cause]));
        }
    };
    let decision = super::authorize(st, user, &attrs);
    let mut status = json!({"allowed": decision.allowed()});
    if !decision.reason().is_empty() {
        status["reason"] = json!(decision.reason());
    }
    Ok(status)
}

/// The status of a SelfSubjectRulesReview: the rules that apply to `user` in the namespace,
/// resource and non-resource rules apart; `incomplete` when a binding's role is missing.
fn rules(st: &State, user: &User, spec: &Value) -> Value {
    let ns = spec["namespace"].as_str().unwrap_or_default();
    let inner = st.store.read();
    let policy = super::StorePolicy(&inner);
    let (rules, errors) = super::rbac::rules_for(&policy, user, ns);
    let mut resource_rules = Vec::new();
    let mut non_resource_rules = Vec::new();
    for rule in rules {
        let list = |k: &str| rule.get(k).cloned().unwrap_or_else(|| json!([]));
        if rule["resources"].as_array().is_some_and(|r| !r.is_empty()) {
            let mut r = json!({"verbs": list("verbs"), "apiGroups": list("apiGroups"), "resources": list("resources")});
            if rule["resourceNames"].as_array().is_some_and(|n| !n.is_empty()) {
                r["resourceNames"] = list("resourceNames");
            }
            resource_rules.push(r);
        }
        if rule["nonResourceURLs"].as_array().is_some_and(|u| !u.is_empty()) {
            non_resource_rules
                .push(json!({"verbs": list("verbs"), "nonResourceURLs": list("nonResourceURLs")}));
        }
    }
    let mut status = json!({
        "resourceRules": resource_rules, "nonResourceRules": non_resource_rules,
        "incomplete": !errors.is_empty(),
    });
    if !errors.is_empty() {
        status["evaluationError"] = json!(errors.join(", "));
    }
    status
}
