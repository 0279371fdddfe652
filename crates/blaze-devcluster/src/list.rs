//! `GET` of a collection: `list`, with selectors, pages (`limit` / `continue`) and the
//! `resourceVersion` rules of a list. Every page of a paged list is read at the version of its
//! first page, which its continue token carries, as kube-apiserver reads them from one etcd
//! revision: a client paging through a changing collection sees one consistent state. A token
//! whose version can no longer be read gets `410 Expired` with a token that goes on from the
//! newest state.

use std::ops::Bound;
use std::sync::Arc;
use std::time::Instant;

use axum::response::Response;
use http::StatusCode;
use serde_json::{Value, json};

use crate::api::{Ctx, json_response};
use crate::error::{ApiError, ApiResult};
use crate::handlers::versioned;
use crate::resources::ResourceInfo;
use crate::selectors;
use crate::server::State;
use crate::store::Objects;

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
    let (labels, fields) = selectors::from_query(&ctx.query, info)?;
    let limit: usize = match ctx.query.get("limit") {
        Some(l) => l
            .parse()
            .map_err(|_| ApiError::bad_request(format!("limit: Invalid value: \"{l}\"")))?,
        None => 0,
    };
    let token = match ctx.query.get("continue").filter(|c| !c.is_empty()) {
        Some(tok) => Some(decode_continue(tok)?),
        None => None,
    };
    let g = st.store.read();
    let exact = check_list_rv(ctx, g.rv(), token.is_some())?;
    // The version the list is read at: a continue token's (the first page's), or an exact
    // one asked for; otherwise, and for a token that gave its version up, the newest.
    let at = match &token {
        Some(t) => t.rv,
        None => exact,
    }
    .filter(|v| *v != g.rv());
    if let Some(v) = at
        && !g.readable_at(v, Instant::now())
    {
        return Err(match &token {
            Some(t) => ApiError::continue_expired(encode_continue(None, &t.start)),
            None => ApiError::gone("The resourceVersion for the provided list is too old."),
        });
    }
    let rv = at.unwrap_or(g.rv());
    let key = info.storage_key();
    let lower = token.map_or(Bound::Unbounded, |t| Bound::Excluded(t.start));
    let empty = Objects::new();
    let newest = g.objects(&key).unwrap_or(&empty);
    let then = at.map(|v| g.at_version(&key, v)).unwrap_or_default();
    let patched: Objects;
    let objects = if then.is_empty() {
        newest
    } else {
        let range = (lower.clone(), Bound::Unbounded);
        let mut m: Objects =
            newest.range(range.clone()).map(|(k, o)| (k.clone(), o.clone())).collect();
        for (k, o) in then.range(range) {
            match o {
                Some(o) => m.insert(k.clone(), o.clone()),
                None => m.remove(k),
            };
        }
        patched = m;
        &patched
    };
    let mut items: Vec<((String, String), Arc<Value>)> = Vec::new();
    let mut next = None;
    let mut remaining = 0u64;
    for (k, o) in objects.range((lower, Bound::Unbounded)) {
        if ns.is_some_and(|n| n != k.0) || !selectors::matches(o, &labels, &fields) {
            continue;
        }
        if limit > 0 && items.len() == limit {
            if next.is_none() {
                next = items.last().map(|(k, _)| k.clone());
            }
            remaining += 1;
            continue;
        }
        items.push((k.clone(), o.clone()));
    }
    drop(g);
    let objs: Vec<Arc<Value>> = items.into_iter().map(|(_, o)| o).collect();
    let next = next.map(|k| encode_continue(Some(rv), &k));
    if ctx.wants_table() {
        let mut t =
            crate::table::table(info, &objs, &rv.to_string(), ctx.query.get("includeObject"));
        if let Some(tok) = &next {
            t["metadata"]["continue"] = json!(tok);
        }
        return Ok(json_response(StatusCode::OK, &t));
    }
    let mut metadata = json!({"resourceVersion": rv.to_string()});
    if let Some(tok) = next {
        metadata["continue"] = json!(tok);
        // As kube-apiserver: with a selector the count of the rest is unknown, so left out.
        if labels.is_empty() && fields.is_empty() {
            metadata["remainingItemCount"] = json!(remaining);
        }
    }
    let items: Vec<Value> = objs.iter().map(|o| versioned(info, o)).collect();
    Ok(json_response(
        StatusCode::OK,
        &json!({"kind": format!("{}List", info.kind), "apiVersion": info.api_version(), "metadata": metadata, "items": items}),
    ))
}

/// The `resourceVersion` / `resourceVersionMatch` rules of a list ("Resource versions" in the
/// API concepts); the version an `Exact` list asks for. A version from the future times out.
fn check_list_rv(ctx: &Ctx, current: u64, paging: bool) -> ApiResult<Option<u64>> {
    let rv = ctx.query.get("resourceVersion").filter(|r| !r.is_empty());
    let matching = ctx.query.get("resourceVersionMatch").filter(|r| !r.is_empty());
    if paging && rv.is_some_and(|r| r != "0") {
        return Err(ApiError::bad_request(
            "specifying resource version is not allowed when using continue",
        ));
    }
    match (rv, matching) {
        (None, Some(_)) => Err(ApiError::bad_request(
            "resourceVersionMatch: Forbidden: resourceVersionMatch is forbidden unless resourceVersion is provided",
        )),
        (Some(r), Some("Exact")) => {
            let n = parse_rv(r)?;
            if n > current { Err(ApiError::too_large_resource_version(n)) } else { Ok(Some(n)) }
        }
        (Some(r), Some("NotOlderThan") | None) => {
            let n = parse_rv(r)?;
            if n > current { Err(ApiError::too_large_resource_version(n)) } else { Ok(None) }
        }
        (_, Some(other)) => Err(ApiError::bad_request(format!(
            "resourceVersionMatch: Unsupported value: \"{other}\": supported values: \"Exact\", \"NotOlderThan\""
        ))),
        (None, None) => Ok(None),
    }
}

/// A decoded continue token: the version of the list's first page (`None`: the token of an
/// expired list, which goes on from the newest state) and the last key served.
struct Continue {
    rv: Option<u64>,
    start: (String, String),
}

/// kube-apiserver's token: base64url of `{"v": "meta.k8s.io/v1", "rv": N, "start": KEY}`, with
/// `rv: -1` for a list that goes on from the newest state.
fn encode_continue(rv: Option<u64>, key: &(String, String)) -> String {
    use base64::Engine;
    let rv = rv.map_or(json!(-1), |v| json!(v));
    let doc = json!({"v": "meta.k8s.io/v1", "rv": rv, "start": [key.0, key.1]});
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(doc.to_string())
}

fn decode_continue(tok: &str) -> ApiResult<Continue> {
    use base64::Engine;
    let bad = || {
        ApiError::bad_request(
            "continue key is not valid: incorrect encoded start resourceVersion (version meta.k8s.io/v1)",
        )
    };
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(tok).map_err(|_| bad())?;
    let doc: Value = serde_json::from_slice(&raw).map_err(|_| bad())?;
    if doc["v"] != "meta.k8s.io/v1" {
        return Err(bad());
    }
    let rv = match doc["rv"].as_i64() {
        Some(-1) => None,
        Some(v) if v > 0 => Some(v.unsigned_abs()),
        _ => return Err(bad()),
    };
    let s = |i: usize| doc["start"][i].as_str().map(str::to_owned);
    Ok(Continue { rv, start: (s(0).ok_or_else(bad)?, s(1).ok_or_else(bad)?) })
}
