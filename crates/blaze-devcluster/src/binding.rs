//! `POST pods/NAME/binding`: how a scheduler assigns a pod to a node. The server sets
//! `spec.nodeName` once; binding a pod that is already bound, or is being deleted, is a 409,
//! and a Binding whose `metadata.uid` names another pod fails its precondition (Kubernetes API
//! reference, "Binding v1 core": "create a Binding" on a Pod).

use http::StatusCode;
use serde_json::{Value, json};

use crate::api::{Ctx, json_response};
use crate::error::{ApiError, ApiResult, Cause};
use crate::resources::ResourceInfo;
use crate::server::State;
use crate::writes::Managed;

/// Binds pod `name` in `ns` to the node the Binding body targets.
pub fn bind(
    st: &State,
    ctx: &Ctx,
    info: &ResourceInfo,
    ns: &str,
    name: &str,
) -> ApiResult<axum::response::Response> {
    let body = ctx.object()?;
    let node = body["target"]["name"].as_str().filter(|n| !n.is_empty()).map(str::to_owned);
    let Some(node) = node else {
        let cause = Cause {
            reason: "FieldValueRequired".into(),
            message: "Required value".into(),
            field: "target.name".into(),
        };
        return Err(ApiError::invalid("", "Binding", name, vec![cause]));
    };
    let w = ctx.writer(st, info);
    st.store.write(|inner| {
        let old = inner.get(&info.storage_key(), ns, name);
        let old = old.ok_or_else(|| ApiError::not_found(&info.group, &info.plural, name))?;
        refuse(&old, &body, name)?;
        let mut new = (*old).clone();
        new["spec"]["nodeName"] = Value::String(node.clone());
        w.update(inner, ns, name, new, "", Managed::Keep)
    })??;
    let status = json!({"kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": "Success", "code": 201});
    Ok(json_response(StatusCode::CREATED, &status))
}

/// Why `old` may not be bound by `binding`, if it may not.
fn refuse(old: &Value, binding: &Value, name: &str) -> ApiResult<()> {
    let conflict = |why: String| ApiError::conflict("", "pods/binding", name, &why);
    let want_uid = binding["metadata"]["uid"].as_str().filter(|u| !u.is_empty());
    let have_uid = old["metadata"]["uid"].as_str().unwrap_or_default();
    if let Some(want) = want_uid.filter(|w| *w != have_uid) {
        return Err(conflict(format!(
            "Precondition failed: UID in precondition: {want}, UID in object meta: {have_uid}"
        )));
    }
    if let Some(bound) = old["spec"]["nodeName"].as_str().filter(|n| !n.is_empty()) {
        return Err(conflict(format!("pod {name} is already assigned to node \"{bound}\"")));
    }
    if old["metadata"]["deletionTimestamp"].is_string() {
        return Err(conflict(format!("pod {name} is being deleted, cannot be assigned to a host")));
    }
    Ok(())
}
