//! A resource request routed by method and subresource to its verb: get, create, update,
//! delete and delete collection here; list, patch, watch, binding and log in their modules.
//! Also the object in the form the client asked for.

use std::sync::Arc;

use axum::response::{IntoResponse, Response};
use http::{Method, StatusCode};
use serde_json::{Value, json};

use crate::api::{Ctx, Target, json_response};
use crate::error::{ApiError, ApiResult};
use crate::resources::ResourceInfo;
use crate::scale::{from_scale, to_scale};
use crate::server::State;
use crate::store::Inner;
use crate::writes::{DeleteOpts, Managed, Propagation, Writer};

/// Routes a resource request by method and subresource.
pub(crate) async fn dispatch(st: &Arc<State>, ctx: &Ctx, t: Target) -> ApiResult<Response> {
    let ns = t.ns.clone().unwrap_or_default();
    let info = t.info.clone();
    let (name, sub, path_ns) = (t.name.clone(), t.sub.clone(), t.ns.clone());
    match (&ctx.method, name.as_deref(), sub.as_deref()) {
        (&Method::GET, None, _) if ctx.query.flag("watch") => {
            crate::watch::watch(st.clone(), ctx, t).await
        }
        (&Method::GET, None, _) => crate::list::list(st, ctx, &info, path_ns.as_deref()),
        (&Method::GET, Some(name), None | Some("status" | "scale")) => {
            let obj = st.store.read().get(&info.storage_key(), &ns, name);
            let obj = obj.ok_or_else(|| ApiError::not_found(&info.group, &info.plural, name))?;
            Ok(respond_to(ctx, &info, sub.as_deref(), StatusCode::OK, &obj))
        }
        (&Method::GET, Some(name), Some("log")) => {
            let obj = st.store.read().get(&info.storage_key(), &ns, name);
            obj.ok_or_else(|| ApiError::not_found(&info.group, &info.plural, name))?;
            let text = st.logs(&ns, name, ctx.query.get("container")).unwrap_or_default();
            Ok((StatusCode::OK, [(http::header::CONTENT_TYPE, "text/plain")], text).into_response())
        }
        (&Method::POST, None, None) => {
            if info.namespaced && path_ns.is_none() {
                return Err(ApiError::method_not_allowed("POST", &ctx.path));
            }
            let body = ctx.object()?;
            let w = ctx.writer(st, &info);
            let obj = write(st, &info, |inner| w.create(inner, &ns, body, Managed::Record))?;
            Ok(with_warnings(respond(ctx, &info, StatusCode::CREATED, &obj), &w.warnings.lock()))
        }
        (&Method::POST, Some(name), Some("binding")) => {
            crate::binding::bind(st, ctx, &info, &ns, name)
        }
        (&Method::POST, Some(name), Some("token")) => {
            crate::auth::token::request(st, ctx, &ns, name)
        }
        (&Method::PUT, Some(name), sub) if !matches!(sub, Some("binding" | "token")) => {
            let body = ctx.object()?;
            let w = ctx.writer(st, &info);
            let sub_name = sub.unwrap_or_default();
            let obj =
                write(st, &info, |inner| update(&w, inner, &ns, name, sub_name, |_| Ok(body)))?;
            let response = respond_to(ctx, &info, sub, StatusCode::OK, &obj);
            Ok(with_warnings(response, &w.warnings.lock()))
        }
        (&Method::PATCH, Some(name), sub) if !matches!(sub, Some("log" | "binding" | "token")) => {
            let (code, obj, warnings) =
                crate::patch::patch(st, ctx, &info, &ns, name, sub.unwrap_or_default())?;
            Ok(with_warnings(respond_to(ctx, &info, sub, code, &obj), &warnings))
        }
        (&Method::DELETE, Some(name), None) => {
            let opts = delete_opts(ctx)?;
            let w = ctx.writer(st, &info);
            let obj = write(st, &info, |inner| w.delete(inner, &ns, name, &opts))?;
            Ok(respond(ctx, &info, StatusCode::OK, &obj))
        }
        (&Method::DELETE, None, None) => delete_collection(st, ctx, &info, path_ns.as_deref()),
        (m, _, _) => Err(ApiError::method_not_allowed(m.as_str(), &ctx.path)),
    }
}

/// Runs `f` with write access to the store, then rebuilds the registry if a CRD changed.
pub(crate) fn write<T>(
    st: &State,
    info: &ResourceInfo,
    f: impl FnOnce(&mut Inner) -> ApiResult<T>,
) -> ApiResult<T> {
    let out = st.store.write(f)??;
    if info.group == "apiextensions.k8s.io" {
        st.refresh_registry();
    }
    Ok(out)
}

/// Updates `name` with what `edit` makes of the stored object; on the `scale` subresource
/// `edit` is given the object's Scale and the replicas of the Scale it returns are written
/// back. PUT and PATCH (other than apply) both write through here.
pub(crate) fn update(
    w: &Writer<'_>,
    inner: &mut Inner,
    ns: &str,
    name: &str,
    sub: &str,
    edit: impl FnOnce(Value) -> ApiResult<Value>,
) -> ApiResult<Arc<Value>> {
    let info = w.info;
    let old = inner.get(&info.storage_key(), ns, name);
    let old = old.ok_or_else(|| ApiError::not_found(&info.group, &info.plural, name))?;
    let new = if sub == "scale" {
        from_scale(info, &old, &edit(to_scale(info, &old))?)?
    } else {
        edit((*old).clone())?
    };
    w.update(inner, ns, name, new, sub, Managed::Record)
}

/// `response` with a `Warning: 299 - "TEXT"` header per admission warning, as kube-apiserver
/// sends them (`"` and `\` escaped inside the quotes); kubectl prints each as `Warning: TEXT`.
pub(crate) fn with_warnings(mut response: Response, warnings: &[String]) -> Response {
    let mut sent = Vec::new();
    for w in warnings {
        if sent.contains(&w) {
            continue;
        }
        sent.push(w);
        let escaped = w.replace('\\', "\\\\").replace('"', "\\\"");
        if let Ok(v) = http::HeaderValue::from_str(&format!("299 - \"{escaped}\"")) {
            response.headers_mut().append(http::header::WARNING, v);
        }
    }
    response
}

/// The answer to a request on subresource `sub`: the Scale for `scale`, else [`respond`].
fn respond_to(
    ctx: &Ctx,
    info: &ResourceInfo,
    sub: Option<&str>,
    code: StatusCode,
    obj: &Value,
) -> Response {
    if sub == Some("scale") {
        return json_response(code, &to_scale(info, obj));
    }
    respond(ctx, info, code, obj)
}

/// The object as the client asked for it (with this version's apiVersion, or as a Table).
fn respond(ctx: &Ctx, info: &ResourceInfo, code: StatusCode, obj: &Value) -> Response {
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
pub(crate) fn versioned(info: &ResourceInfo, obj: &Value) -> Value {
    let mut v = obj.clone();
    if info.custom && v["apiVersion"].as_str() != Some(info.api_version().as_str()) {
        v["apiVersion"] = json!(info.api_version());
    }
    v
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
    let (labels, fields) = crate::selectors::from_query(&ctx.query, info)?;
    let opts = delete_opts(ctx)?;
    let w = ctx.writer(st, info);
    let deleted = write(st, info, |inner| {
        let names: Vec<(String, String)> = inner
            .objects(&info.storage_key())
            .map(|m| {
                m.iter()
                    .filter(|((n, _), o)| {
                        ns.is_none_or(|x| x == n) && crate::selectors::matches(o, &labels, &fields)
                    })
                    .map(|(k, _)| k.clone())
                    .collect()
            })
            .unwrap_or_default();
        Ok(names
            .iter()
            .filter_map(|(n, name)| w.delete(inner, n, name, &opts).ok())
            .map(|o| versioned(info, &o))
            .collect::<Vec<_>>())
    })?;
    let rv = st.store.read().rv().to_string();
    Ok(json_response(
        StatusCode::OK,
        &json!({"kind": format!("{}List", info.kind), "apiVersion": info.api_version(),
        "metadata": {"resourceVersion": rv}, "items": deleted}),
    ))
}
