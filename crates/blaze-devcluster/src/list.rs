//! `GET` of a collection: `list`, with selectors, pages (`limit` / `continue`) and the
//! `resourceVersion` rules of a list.

use std::sync::Arc;

use axum::response::Response;
use http::StatusCode;
use serde_json::{Value, json};

use crate::api::{Ctx, json_response};
use crate::error::{ApiError, ApiResult};
use crate::handlers::versioned;
use crate::resources::ResourceInfo;
use crate::selectors;
use crate::server::State;

fn parse_rv(s: &str) -> ApiResult<u64> {
    s.parse().map_err(|_| {
        ApiError::bad_request(format!(
            "resourceVersion: Invalid value: \"{s}\": must be an unsigned integer"
        ))
    })
}

pub(crate) fn list(
    st: &State,
    ctx: &Ctx,
    info: &ResourceInfo,
    ns: Option<&str>,
) -> ApiResult<Response> {
    let (labels, fields) = selectors::from_query(&ctx.query)?;
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
            if ns.is_some_and(|n| n != k.0) || !selectors::matches(o, &labels, &fields) {
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
