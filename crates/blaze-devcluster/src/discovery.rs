//! Discovery (`/api`, `/apis`, group and version resource lists), `/version` and OpenAPI v3
//! documents for custom resources (what `kubectl explain` reads).

use std::sync::Arc;

use axum::response::Response;
use http::StatusCode;
use serde_json::{Value, json};

use crate::api::{Ctx, json_response};
use crate::error::{ApiError, ApiResult};
use crate::resources::{Registry, ResourceInfo};
use crate::server::State;

/// The Kubernetes version reported; kubectl picks its matching minor from it.
pub const KUBE_MINOR: &str = "33";

/// Serves a discovery path, or `None` when `segs` is a resource path.
pub fn serve(st: &State, reg: &Registry, segs: &[&str], ctx: &Ctx) -> Option<ApiResult<Response>> {
    let ok = |v: Value| Some(Ok(json_response(StatusCode::OK, &v)));
    if ctx.method != http::Method::GET && !matches!(segs, ["api", _, _, ..] | ["apis", _, _, _, ..])
    {
        return Some(Err(ApiError::method_not_allowed(ctx.method.as_str(), &ctx.path)));
    }
    match segs {
        ["version"] => ok(
            json!({"major": "1", "minor": KUBE_MINOR, "gitVersion": format!("v1.{KUBE_MINOR}.0"),
            "gitCommit": "blaze-devcluster", "gitTreeState": "clean", "buildDate": "2025-01-01T00:00:00Z",
            "goVersion": "go1.24.0", "compiler": "gc", "platform": "linux/amd64"}),
        ),
        ["api"] => ok(json!({"kind": "APIVersions", "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": st.addr.to_string()}]})),
        ["apis"] => {
            let groups: Vec<Value> = reg
                .groups()
                .into_iter()
                .filter(|(g, _)| !g.is_empty())
                .map(|(g, vs)| group(&g, &vs))
                .collect();
            ok(json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}))
        }
        ["apis", g] => {
            let groups = reg.groups();
            let vs = groups.get(*g).filter(|_| !g.is_empty())?;
            let mut v = group(g, vs);
            v["kind"] = json!("APIGroup");
            v["apiVersion"] = json!("v1");
            ok(v)
        }
        ["api", "v1"] => ok(resource_list(reg, "", "v1")),
        ["apis", g, v] => {
            if reg.all().any(|r| r.group == *g && r.version == *v) {
                ok(resource_list(reg, g, v))
            } else {
                Some(Err(ApiError::no_route(&ctx.path)))
            }
        }
        ["openapi", "v2"] => Some(Err(ApiError::no_route(&ctx.path))),
        ["openapi", "v3"] => ok(openapi_index(reg)),
        ["openapi", "v3", "api", "v1"] => ok(openapi_doc(reg, "", "v1")),
        ["openapi", "v3", "apis", g, v] => ok(openapi_doc(reg, g, v)),
        [] | [""] => ok(
            json!({"paths": ["/api", "/api/v1", "/apis", "/openapi/v3", "/version", "/healthz"]}),
        ),
        _ => None,
    }
}

fn group(name: &str, versions: &[String]) -> Value {
    let vs: Vec<Value> = versions
        .iter()
        .map(|v| json!({"groupVersion": format!("{name}/{v}"), "version": v}))
        .collect();
    json!({"name": name, "versions": vs, "preferredVersion": vs[0]})
}

const VERBS: &[&str] =
    &["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"];

fn resource_list(reg: &Registry, g: &str, v: &str) -> Value {
    let mut out = Vec::new();
    for r in reg.all().filter(|r| r.group == g && r.version == v) {
        out.push(entry(r));
        let sub = |name: &str, kind: &str, verbs: &[&str]| json!({"name": format!("{}/{name}", r.plural), "singularName": "", "namespaced": r.namespaced, "kind": kind, "verbs": verbs});
        if r.status {
            out.push(sub("status", &r.kind, &["get", "patch", "update"]));
        }
        if r.scale.is_some() {
            let mut s = sub("scale", "Scale", &["get", "patch", "update"]);
            s["group"] = json!("autoscaling");
            s["version"] = json!("v1");
            out.push(s);
        }
        if r.log {
            out.push(sub("log", "Pod", &["get"]));
            out.push(sub("binding", "Binding", &["create"]));
        }
        if r.group.is_empty() && r.plural == "serviceaccounts" {
            let mut s = sub("token", "TokenRequest", &["create"]);
            s["group"] = json!("authentication.k8s.io");
            s["version"] = json!("v1");
            out.push(s);
        }
    }
    let gv = if g.is_empty() { v.to_owned() } else { format!("{g}/{v}") };
    json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": out})
}

fn entry(r: &Arc<ResourceInfo>) -> Value {
    // Reviews are only ever created.
    let verbs: &[&str] = if r.group == crate::auth::review::GROUP { &["create"] } else { VERBS };
    let mut e = json!({"name": r.plural, "singularName": r.singular, "namespaced": r.namespaced, "kind": r.kind, "verbs": verbs});
    if !r.short_names.is_empty() {
        e["shortNames"] = json!(r.short_names);
    }
    if !r.categories.is_empty() {
        e["categories"] = json!(r.categories);
    }
    e
}

fn openapi_index(reg: &Registry) -> Value {
    let mut paths = serde_json::Map::new();
    for (g, vs) in reg.groups() {
        for v in vs {
            let p = if g.is_empty() { format!("api/{v}") } else { format!("apis/{g}/{v}") };
            paths.insert(p.clone(), json!({"serverRelativeURL": format!("/openapi/v3/{p}")}));
        }
    }
    json!({"paths": paths})
}

/// An OpenAPI v3 document with a schema per kind (the CRD's schema for custom resources, an
/// open object for built-ins) and the operations that advertise `fieldValidation`.
fn openapi_doc(reg: &Registry, g: &str, v: &str) -> Value {
    let mut schemas = serde_json::Map::new();
    let mut paths = serde_json::Map::new();
    for r in reg.all().filter(|r| r.group == g && r.version == v) {
        let mut schema = r.schema.as_deref().cloned().unwrap_or_else(
            || json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true}),
        );
        schema["x-kubernetes-group-version-kind"] =
            json!([{"group": r.group, "version": r.version, "kind": r.kind}]);
        if schema.get("description").is_none() {
            schema["description"] =
                json!(format!("{} is served by the Blaze development control plane.", r.kind));
        }
        let id = format!("{}.{}.{}", if g.is_empty() { "io.k8s.api.core" } else { g }, v, r.kind);
        schemas.insert(id, schema);
        let base = if g.is_empty() { format!("/api/{v}") } else { format!("/apis/{g}/{v}") };
        let path = if r.namespaced {
            format!("{base}/namespaces/{{namespace}}/{}/{{name}}", r.plural)
        } else {
            format!("{base}/{}/{{name}}", r.plural)
        };
        let field_validation = json!({"name": "fieldValidation", "in": "query", "schema": {"type": "string", "uniqueItems": true}});
        let op = json!({"parameters": [field_validation], "x-kubernetes-group-version-kind": {"group": r.group, "version": r.version, "kind": r.kind}});
        paths.insert(path, json!({"patch": op, "put": op}));
    }
    json!({"openapi": "3.0.0", "info": {"title": "Kubernetes", "version": format!("v1.{KUBE_MINOR}.0")}, "paths": paths, "components": {"schemas": schemas}})
}
