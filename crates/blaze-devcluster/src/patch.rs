//! PATCH: JSON patch, JSON merge patch, strategic merge patch and server-side apply.

use std::sync::Arc;

use http::StatusCode;
use serde_json::Value;

use crate::api::{Ctx, parse_json, parse_yaml};
use crate::apply::{self, Shape};
use crate::error::{ApiError, ApiResult};
use crate::handlers::{update, write};
use crate::resources::ResourceInfo;
use crate::server::State;
use crate::store::Inner;
use crate::writes::{Managed, Writer};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Json,
    Merge,
    Strategic,
    Apply,
}

/// Applies a patch to `name` (or its `status` / `scale` subresource).
pub(crate) fn patch(
    st: &State,
    ctx: &Ctx,
    info: &ResourceInfo,
    ns: &str,
    name: &str,
    sub: &str,
) -> ApiResult<(StatusCode, Arc<Value>, Vec<String>)> {
    let ct = ctx.content_type();
    let kind = match ct.as_str() {
        "application/json-patch+json" => Kind::Json,
        "application/merge-patch+json" => Kind::Merge,
        "application/strategic-merge-patch+json" if !info.custom => Kind::Strategic,
        "application/apply-patch+yaml" => Kind::Apply,
        other => return Err(ApiError::unsupported_media_type(other)),
    };
    let body = match kind {
        Kind::Apply => parse_yaml(&ctx.body)?,
        _ => parse_json(&ctx.body)?,
    };
    let w = ctx.writer(st, info);
    if kind == Kind::Apply && ctx.query.get("fieldManager").is_none_or(str::is_empty) {
        return Err(ApiError::bad_request(format!(
            "PATCH {}: fieldManager is required for apply requests",
            ctx.path
        )));
    }
    let force = ctx.query.flag("force");
    let (code, obj) = write(st, info, |inner| match kind {
        Kind::Apply => server_side_apply(&w, inner, ns, name, sub, body, force),
        _ => update(&w, inner, ns, name, sub, |mut doc| {
            patch_doc(kind, info, &mut doc, &body)?;
            Ok(doc)
        })
        .map(|o| (StatusCode::OK, o)),
    })?;
    Ok((code, obj, w.warnings.into_inner()))
}

fn patch_doc(kind: Kind, info: &ResourceInfo, doc: &mut Value, body: &Value) -> ApiResult<()> {
    match kind {
        Kind::Json => {
            let p: json_patch::Patch = serde_json::from_value(body.clone()).map_err(|e| {
                ApiError::bad_request(format!(
                    "the server rejected our request due to an error in our request: {e}"
                ))
            })?;
            json_patch::patch(doc, &p).map_err(|e| {
                ApiError::unprocessable(format!(
                    "the server rejected our request due to an error in our request: {e}"
                ))
            })
        }
        Kind::Merge => {
            if !body.is_object() {
                return Err(ApiError::bad_request(
                    "the body of a merge patch must be a JSON object",
                ));
            }
            json_patch::merge(doc, body);
            Ok(())
        }
        Kind::Strategic => {
            if !body.is_object() {
                return Err(ApiError::bad_request(
                    "the body of a strategic merge patch must be a JSON object",
                ));
            }
            let at = blaze_merge::lists::Node::builtin(&info.api_version(), &info.kind);
            blaze_merge::merge(doc, body, at);
            Ok(())
        }
        Kind::Apply => Ok(()),
    }
}

fn server_side_apply(
    w: &Writer<'_>,
    inner: &mut Inner,
    ns: &str,
    name: &str,
    sub: &str,
    mut applied: Value,
    force: bool,
) -> ApiResult<(StatusCode, Arc<Value>)> {
    let info = w.info;
    w.check_type(&mut applied)?;
    // An apply body may leave the name out: the object is named by the URL (what the lease
    // client of kube-lease-manager relies on). A name that is there must match it.
    if applied["metadata"]["name"].as_str().is_none_or(str::is_empty) && applied.is_object() {
        applied["metadata"]["name"] = Value::String(name.to_owned());
    }
    let body_name = applied["metadata"]["name"].as_str().unwrap_or_default();
    if body_name != name {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({body_name}) does not match the name on the URL ({name})"
        )));
    }
    let shape = Shape { schema: info.schema.as_deref(), custom: info.custom };
    let old = inner.get(&info.storage_key(), ns, name);
    let conflict = |causes| ApiError::apply_conflict(&info.group, &info.plural, name, causes);
    match old {
        None if sub.is_empty() => {
            let mut merged =
                apply::apply(None, &applied, &w.manager, force, sub, &info.api_version(), shape)
                    .map_err(conflict)?;
            if info.namespaced {
                merged["metadata"]["namespace"] = Value::String(ns.to_owned());
            }
            w.create(inner, ns, merged, Managed::Keep).map(|o| (StatusCode::CREATED, o))
        }
        None => Err(ApiError::not_found(&info.group, &info.plural, name)),
        Some(old) => {
            let merged = apply::apply(
                Some(&old),
                &applied,
                &w.manager,
                force,
                sub,
                &info.api_version(),
                shape,
            )
            .map_err(conflict)?;
            w.update(inner, ns, name, merged, sub, Managed::Keep).map(|o| (StatusCode::OK, o))
        }
    }
}
