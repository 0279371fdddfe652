//! Per-verb handlers: get, list, create, update, delete, delete collection, scale and log.

use std::sync::Arc;

use axum::response::{IntoResponse, Response};
use http::{Method, StatusCode};
use serde_json::{Value, json};

use crate::api::{Ctx, Target, json_response};
use crate::meta;
use crate::resources::ResourceInfo;
use crate::selectors::{FieldSelector, LabelSelector};
use crate::server::State;
use crate::status::{ApiError, ApiResult};
use crate::writes::{DeleteOpts, Managed, Propagation};

/// Routes a resource request by method and subresource.
pub async fn dispatch(st: &Arc<State>, ctx: &Ctx, t: Target) -> ApiResult<Response> {
    let ns = t.ns.clone().unwrap_or_default();
    let info = t.info.clone();
    let (name, sub, path_ns) = (t.name.clone(), t.sub.clone(), t.ns.clone());
    match (&ctx.method, name.as_deref(), sub.as_deref()) {
        (&Method::GET, None, _) if ctx.query.flag("watch") => {
            crate::watch::watch(st.clone(), ctx, t).await
        }
        (&Method::GET, None, _) => list(st, ctx, &info, path_ns.as_deref()),
        (&Method::GET, Some(name), None | Some("status")) => {
            let obj = st.store.read().get(&info.storage_key(), &ns, name);
            let obj = obj.ok_or_else(|| ApiError::not_found(&info.group, &info.plural, name))?;
            Ok(respond(ctx, &info, StatusCode::OK, &obj))
        }
        (&Method::GET, Some(name), Some("scale")) => {
            let obj = st.store.read().get(&info.storage_key(), &ns, name);
            let obj = obj.ok_or_else(|| ApiError::not_found(&info.group, &info.plural, name))?;
            Ok(json_response(StatusCode::OK, &to_scale(&info, &obj)))
        }
        (&Method::GET, Some(name), Some("log")) => {
            let obj = st.store.read().get(&info.storage_key(), &ns, name);
            obj.ok_or_else(|| ApiError::not_found(&info.group, &info.plural, name))?;
            let text = st.logs(&ns, name, ctx.query.get("container")).unwrap_or_default();
            Ok((StatusCode::OK, [(http::header::CONTENT_TYPE, "text/plain")], text).into_response())
        }
        (&Method::POST, None, None) => {
            if !info.namespaced || path_ns.is_some() {
                create(st, ctx, &info, &ns)
            } else {
                Err(ApiError::method_not_allowed("POST", &ctx.path))
            }
        }
        (&Method::POST, Some(name), Some("binding")) => {
            crate::binding::bind(st, ctx, &info, &ns, name)
        }
        (&Method::PUT, Some(name), sub) if sub != Some("binding") => {
            update(st, ctx, &info, &ns, name, sub.unwrap_or_default())
        }
        (&Method::PATCH, Some(name), sub) if !matches!(sub, Some("log" | "binding")) => {
            let (code, obj) =
                crate::patch::patch(st, ctx, &info, &ns, name, sub.unwrap_or_default())?;
            if sub == Some("scale") {
                return Ok(json_response(code, &to_scale(&info, &obj)));
            }
            Ok(respond(ctx, &info, code, &obj))
        }
        (&Method::DELETE, Some(name), None) => {
            let opts = delete_opts(ctx)?;
            let w = ctx.writer(st, &info);
            let obj =
                st.store.write(|inner| w.delete(inner, &ns, name, &opts)).map_err(internal)??;
            refresh_if_crd(st, &info);
            Ok(respond(ctx, &info, StatusCode::OK, &obj))
        }
        (&Method::DELETE, None, None) => delete_collection(st, ctx, &info, path_ns.as_deref()),
        (m, _, _) => Err(ApiError::method_not_allowed(m.as_str(), &ctx.path)),
    }
}

/// Maps a storage failure to a 500.
pub fn internal(e: crate::Error) -> ApiError {
    ApiError::internal(e.to_string())
}

/// Rebuilds the registry after a CRD changed.
pub fn refresh_if_crd(st: &State, info: &ResourceInfo) {
    if info.group == "apiextensions.k8s.io" {
        st.refresh_registry();
    }
}

/// The object as the client asked for it (with this version's apiVersion, or as a Table).
pub fn respond(ctx: &Ctx, info: &ResourceInfo, code: StatusCode, obj: &Value) -> Response {
    if ctx.wants_table() {
        let rv = obj["metadata"]["resourceVersion"].as_str().unwrap_or_default().to_owned();
        let objs = [Arc::new(obj.clone())];
        return json_response(
            code,
            &crate::table::table(info, &objs, &rv, ctx.query.get("includeObject")),
        );
    }
    if info.custom && obj["apiVersion"].as_str() != Some(info.api_version().as_str()) {
        return json_response(code, &versioned(info, obj));
    }
    json_response(code, obj)
}

/// `obj` with the apiVersion of the version served.
pub fn versioned(info: &ResourceInfo, obj: &Value) -> Value {
    let mut v = obj.clone();
    if info.custom && v["apiVersion"].as_str() != Some(info.api_version().as_str()) {
        v["apiVersion"] = json!(info.api_version());
    }
    v
}

fn create(st: &State, ctx: &Ctx, info: &ResourceInfo, ns: &str) -> ApiResult<Response> {
    let body = ctx.object()?;
    let w = ctx.writer(st, info);
    let obj =
        st.store.write(|inner| w.create(inner, ns, body, Managed::Record)).map_err(internal)??;
    refresh_if_crd(st, info);
    Ok(respond(ctx, info, StatusCode::CREATED, &obj))
}

fn update(
    st: &State,
    ctx: &Ctx,
    info: &ResourceInfo,
    ns: &str,
    name: &str,
    sub: &str,
) -> ApiResult<Response> {
    let body = ctx.object()?;
    let w = ctx.writer(st, info);
    let obj = st
        .store
        .write(|inner| {
            let new = if sub == "scale" {
                let old = inner.get(&info.storage_key(), ns, name);
                let old =
                    old.ok_or_else(|| ApiError::not_found(&info.group, &info.plural, name))?;
                from_scale(info, &old, &body)?
            } else {
                body
            };
            w.update(inner, ns, name, new, sub, Managed::Record)
        })
        .map_err(internal)??;
    refresh_if_crd(st, info);
    if sub == "scale" {
        return Ok(json_response(StatusCode::OK, &to_scale(info, &obj)));
    }
    Ok(respond(ctx, info, StatusCode::OK, &obj))
}

fn delete_opts(ctx: &Ctx) -> ApiResult<DeleteOpts> {
    let body = if ctx.body.is_empty() { Value::Null } else { crate::api::parse_json(&ctx.body)? };
    let policy = ctx
        .query
        .get("propagationPolicy")
        .map(str::to_owned)
        .or_else(|| body["propagationPolicy"].as_str().map(str::to_owned));
    let orphan = ctx.query.flag("orphanDependents") || body["orphanDependents"] == json!(true);
    let propagation = match policy.as_deref() {
        Some("Foreground") => Propagation::Foreground,
        Some("Orphan") => Propagation::Orphan,
        Some("Background") => Propagation::Background,
        None if orphan => Propagation::Orphan,
        None => Propagation::Background,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "propagationPolicy: Unsupported value: \"{other}\": supported values: \"Foreground\", \"Background\", \"Orphan\""
            )));
        }
    };
    let s = |v: &Value| v.as_str().map(str::to_owned);
    Ok(DeleteOpts {
        propagation,
        uid: s(&body["preconditions"]["uid"]),
        resource_version: s(&body["preconditions"]["resourceVersion"]),
    })
}

fn delete_collection(
    st: &State,
    ctx: &Ctx,
    info: &ResourceInfo,
    ns: Option<&str>,
) -> ApiResult<Response> {
    let (labels, fields) = selectors(ctx)?;
    let opts = delete_opts(ctx)?;
    let w = ctx.writer(st, info);
    let deleted = st
        .store
        .write(|inner| {
            let names: Vec<(String, String)> = inner
                .objects(&info.storage_key())
                .map(|m| {
                    m.iter()
                        .filter(|((n, _), o)| {
                            ns.is_none_or(|x| x == n) && matches(o, &labels, &fields)
                        })
                        .map(|(k, _)| k.clone())
                        .collect()
                })
                .unwrap_or_default();
            names
                .iter()
                .filter_map(|(n, name)| w.delete(inner, n, name, &opts).ok())
                .map(|o| versioned(info, &o))
                .collect::<Vec<_>>()
        })
        .map_err(internal)?;
    refresh_if_crd(st, info);
    let rv = st.store.read().rv().to_string();
    Ok(json_response(
        StatusCode::OK,
        &json!({"kind": format!("{}List", info.kind), "apiVersion": info.api_version(),
        "metadata": {"resourceVersion": rv}, "items": deleted}),
    ))
}

/// The label and field selectors of a request.
pub fn selectors(ctx: &Ctx) -> ApiResult<(LabelSelector, FieldSelector)> {
    Ok((
        LabelSelector::parse(ctx.query.get("labelSelector").unwrap_or_default())?,
        FieldSelector::parse(ctx.query.get("fieldSelector").unwrap_or_default())?,
    ))
}

/// Whether an object passes both selectors.
pub fn matches(obj: &Value, labels: &LabelSelector, fields: &FieldSelector) -> bool {
    labels.matches(&obj["metadata"]["labels"]) && fields.matches(obj)
}

fn parse_rv(s: &str) -> ApiResult<u64> {
    s.parse().map_err(|_| {
        ApiError::bad_request(format!(
            "resourceVersion: Invalid value: \"{s}\": must be an unsigned integer"
        ))
    })
}

fn list(st: &State, ctx: &Ctx, info: &ResourceInfo, ns: Option<&str>) -> ApiResult<Response> {
    let (labels, fields) = selectors(ctx)?;
    let limit: usize = match ctx.query.get("limit") {
        Some(l) => l
            .parse()
            .map_err(|_| ApiError::bad_request(format!("limit: Invalid value: \"{l}\"")))?,
        None => 0,
    };
    let g = st.store.read();
    check_list_rv(ctx, g.rv(), g.compacted())?;
    let start = match ctx.query.get("continue").filter(|c| !c.is_empty()) {
        Some(tok) => Some(decode_continue(tok, g.compacted())?),
        None => None,
    };
    let mut items = Vec::new();
    let mut next = None;
    let mut remaining = 0u64;
    if let Some(map) = g.objects(&info.storage_key()) {
        let lower = start.clone().map_or(std::ops::Bound::Unbounded, std::ops::Bound::Excluded);
        let range = map.range((lower, std::ops::Bound::Unbounded));
        for (k, o) in range {
            if ns.is_some_and(|n| n != k.0) || !matches(o, &labels, &fields) {
                continue;
            }
            if limit > 0 && items.len() == limit {
                if next.is_none() {
                    next = Some(
                        items
                            .last()
                            .map(|(k, _): &((String, String), Arc<Value>)| k.clone())
                            .unwrap_or_default(),
                    );
                }
                remaining += 1;
                continue;
            }
            items.push((k.clone(), o.clone()));
        }
    }
    let rv = g.rv();
    drop(g);
    let objs: Vec<Arc<Value>> = items.into_iter().map(|(_, o)| o).collect();
    if ctx.wants_table() {
        let mut t =
            crate::table::table(info, &objs, &rv.to_string(), ctx.query.get("includeObject"));
        if let Some(k) = &next {
            t["metadata"]["continue"] = json!(encode_continue(rv, k));
        }
        return Ok(json_response(StatusCode::OK, &t));
    }
    let mut metadata = json!({"resourceVersion": rv.to_string()});
    if let Some(k) = &next {
        metadata["continue"] = json!(encode_continue(rv, k));
        metadata["remainingItemCount"] = json!(remaining);
    }
    let items: Vec<Value> = objs.iter().map(|o| versioned(info, o)).collect();
    Ok(json_response(
        StatusCode::OK,
        &json!({"kind": format!("{}List", info.kind), "apiVersion": info.api_version(), "metadata": metadata, "items": items}),
    ))
}

/// The `resourceVersion` / `resourceVersionMatch` rules of a list ("Resource versions" in the
/// API concepts): lists are served from the newest state, so an exact older version is gone
/// and a version from the future times out.
fn check_list_rv(ctx: &Ctx, current: u64, compacted: u64) -> ApiResult<()> {
    let rv = ctx.query.get("resourceVersion").filter(|r| !r.is_empty());
    let matching = ctx.query.get("resourceVersionMatch").filter(|r| !r.is_empty());
    match (rv, matching) {
        (None, Some(_)) => Err(ApiError::bad_request(
            "resourceVersionMatch: Forbidden: resourceVersionMatch is forbidden unless resourceVersion is provided",
        )),
        (Some(r), Some("Exact")) => {
            let n = parse_rv(r)?;
            if n > current {
                Err(ApiError::too_large_resource_version(n))
            } else if n < current || n < compacted {
                Err(ApiError::gone(format!("too old resource version: {n} ({current})")))
            } else {
                Ok(())
            }
        }
        (Some(r), Some("NotOlderThan") | None) => {
            let n = parse_rv(r)?;
            if n > current { Err(ApiError::too_large_resource_version(n)) } else { Ok(()) }
        }
        (_, Some(other)) => Err(ApiError::bad_request(format!(
            "resourceVersionMatch: Unsupported value: \"{other}\": supported values: \"Exact\", \"NotOlderThan\""
        ))),
        (None, None) => Ok(()),
    }
}

fn encode_continue(rv: u64, key: &(String, String)) -> String {
    use base64::Engine;
    let doc = json!({"v": "meta.k8s.io/v1", "rv": rv, "start": [key.0, key.1]});
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(doc.to_string())
}

fn decode_continue(tok: &str, compacted: u64) -> ApiResult<(String, String)> {
    use base64::Engine;
    let bad = || {
        ApiError::bad_request(
            "continue key is not valid: incorrect encoded start resourceVersion (version meta.k8s.io/v1)",
        )
    };
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(tok).map_err(|_| bad())?;
    let doc: Value = serde_json::from_slice(&raw).map_err(|_| bad())?;
    let rv = doc["rv"].as_u64().ok_or_else(bad)?;
    if rv < compacted {
        return Err(ApiError::gone(
            "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.",
        ));
    }
    let s = |i: usize| doc["start"][i].as_str().map(str::to_owned);
    Ok((s(0).ok_or_else(bad)?, s(1).ok_or_else(bad)?))
}

/// The `autoscaling/v1` Scale of an object.
pub fn to_scale(info: &ResourceInfo, obj: &Value) -> Value {
    let Some(paths) = &info.scale else { return Value::Null };
    let m = &obj["metadata"];
    let selector = match &paths.label_selector {
        Some(p) => meta::at_path(obj, p).cloned().unwrap_or(json!("")),
        None => {
            let labels =
                obj["spec"]["selector"]["matchLabels"].as_object().cloned().unwrap_or_default();
            let parts: Vec<String> = labels
                .iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                .collect();
            json!(parts.join(","))
        }
    };
    json!({"kind": "Scale", "apiVersion": "autoscaling/v1",
        "metadata": {"name": m["name"], "namespace": m["namespace"], "uid": m["uid"],
            "resourceVersion": m["resourceVersion"], "creationTimestamp": m["creationTimestamp"]},
        "spec": {"replicas": meta::at_path(obj, &paths.spec_replicas).cloned().unwrap_or(json!(0))},
        "status": {"replicas": meta::at_path(obj, &paths.status_replicas).cloned().unwrap_or(json!(0)), "selector": selector}})
}

/// The object with the replicas of a Scale written into it.
pub fn from_scale(info: &ResourceInfo, old: &Value, scale: &Value) -> ApiResult<Value> {
    let Some(paths) = &info.scale else { return Err(ApiError::no_route("scale")) };
    let replicas = scale["spec"]["replicas"].clone();
    if !(replicas.is_i64() || replicas.is_u64()) || replicas.as_i64().is_some_and(|r| r < 0) {
        return Err(ApiError::invalid(
            "autoscaling",
            "Scale",
            old["metadata"]["name"].as_str().unwrap_or_default(),
            vec![crate::status::Cause {
                reason: "FieldValueInvalid".into(),
                message: format!("Invalid value: {replicas}: must be greater than or equal to 0"),
                field: "spec.replicas".into(),
            }],
        ));
    }
    let mut new = old.clone();
    meta::set_path(&mut new, &paths.spec_replicas, replicas);
    if let Some(rv) = scale["metadata"]["resourceVersion"].as_str() {
        new["metadata"]["resourceVersion"] = json!(rv);
    }
    new["metadata"].as_object_mut().map(|m| m.remove("managedFields"));
    Ok(new)
}
