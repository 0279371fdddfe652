//! Kubernetes `Status` errors: the code, reason and causes a real API server answers with
//! (API conventions, "Response Status Kind").

use axum::response::{IntoResponse, Response};
use http::StatusCode;
use serde_json::{Value, json};

/// One field-level cause of an `Invalid` or `Conflict` error.
#[derive(Debug, Clone, PartialEq)]
pub struct Cause {
    /// Machine-readable reason, e.g. `FieldValueInvalid`, `FieldValueRequired`.
    pub reason: String,
    /// Human-readable message.
    pub message: String,
    /// The field, e.g. `spec.replicas`.
    pub field: String,
}

/// An error answered to a client as a `Status` object.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// HTTP status code.
    pub code: u16,
    /// `StatusReason`, e.g. `NotFound`.
    pub reason: &'static str,
    /// Human-readable message.
    pub message: String,
    /// `details` (name, group, kind, causes); `None` for errors about the request itself.
    pub details: Option<Box<Details>>,
    /// `metadata.continue`: where a list whose continue token expired may go on from.
    pub continue_token: Option<String>,
}

/// `Status.details`.
#[derive(Debug, Clone, Default)]
pub struct Details {
    /// Object name.
    pub name: String,
    /// API group.
    pub group: String,
    /// Resource (plural) the error is about.
    pub kind: String,
    /// Field causes.
    pub causes: Vec<Cause>,
}

/// Result of a request handler.
pub type ApiResult<T> = std::result::Result<T, ApiError>;

impl ApiError {
    fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        Self { code, reason, message: message.into(), details: None, continue_token: None }
    }

    fn with_details(mut self, group: &str, kind: &str, name: &str) -> Self {
        self.details = Some(Box::new(Details {
            name: name.to_owned(),
            group: group.to_owned(),
            kind: kind.to_owned(),
            causes: Vec::new(),
        }));
        self
    }

    /// 404 for an object: `configmaps "x" not found`.
    pub fn not_found(group: &str, resource: &str, name: &str) -> Self {
        Self::new(404, "NotFound", format!("{} \"{name}\" not found", qualified(group, resource)))
            .with_details(group, resource, name)
    }

    /// 404 for a path the server does not serve.
    pub fn no_route(path: &str) -> Self {
        Self::new(
            404,
            "NotFound",
            format!("the server could not find the requested resource ({path})"),
        )
    }

    /// 409 on create of an existing name.
    pub fn already_exists(group: &str, resource: &str, name: &str) -> Self {
        Self::new(
            409,
            "AlreadyExists",
            format!("{} \"{name}\" already exists", qualified(group, resource)),
        )
        .with_details(group, resource, name)
    }

    /// 409 on a stale `resourceVersion` or a failed precondition.
    pub fn conflict(group: &str, resource: &str, name: &str, why: &str) -> Self {
        let message = format!(
            "Operation cannot be fulfilled on {} \"{name}\": {why}",
            qualified(group, resource)
        );
        Self::new(409, "Conflict", message).with_details(group, resource, name)
    }

    /// 409 from server-side apply, one cause per conflicting field.
    pub fn apply_conflict(group: &str, resource: &str, name: &str, causes: Vec<Cause>) -> Self {
        let n = causes.len();
        let list: Vec<String> =
            causes.iter().map(|c| format!("{}: {}", c.message, c.field)).collect();
        let plural = if n == 1 { "conflict" } else { "conflicts" };
        let mut e = Self::new(
            409,
            "Conflict",
            format!("Apply failed with {n} {plural}: {}", list.join("\n")),
        )
        .with_details(group, resource, name);
        if let Some(d) = e.details.as_mut() {
            d.causes = causes;
        }
        e
    }

    /// 422 with field causes: `BlazeEngine.blaze.ai "x" is invalid: spec.kind: ...`.
    pub fn invalid(group: &str, kind: &str, name: &str, causes: Vec<Cause>) -> Self {
        let parts: Vec<String> =
            causes.iter().map(|c| format!("{}: {}", c.field, c.message)).collect();
        let what = if group.is_empty() { kind.to_owned() } else { format!("{kind}.{group}") };
        let joined =
            if parts.len() == 1 { parts[0].clone() } else { format!("[{}]", parts.join(", ")) };
        let mut e = Self::new(422, "Invalid", format!("{what} \"{name}\" is invalid: {joined}"))
            .with_details(group, kind, name);
        if let Some(d) = e.details.as_mut() {
            d.causes = causes;
        }
        e
    }

    /// 400 for a malformed request.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }

    /// 401 without a valid bearer token.
    pub fn unauthorized() -> Self {
        Self::new(401, "Unauthorized", "Unauthorized")
    }

    /// 403, e.g. creating inside a terminating namespace.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(403, "Forbidden", message)
    }

    /// 403 from authorization or admission about a resource: `pods "x" is forbidden: ...`
    /// (`pods is forbidden: ...` without a name), as `apierrors.NewForbidden` words it.
    pub fn forbidden_resource(group: &str, resource: &str, name: &str, why: String) -> Self {
        let what = qualified(group, resource);
        let message = if name.is_empty() {
            format!("{what} is forbidden: {why}")
        } else {
            format!("{what} \"{name}\" is forbidden: {why}")
        };
        Self::new(403, "Forbidden", message).with_details(group, resource, name)
    }

    /// 405 for a verb the resource does not support.
    pub fn method_not_allowed(method: &str, path: &str) -> Self {
        Self::new(
            405,
            "MethodNotAllowed",
            format!(
                "the server does not allow this method on the requested resource ({method} {path})"
            ),
        )
    }

    /// 410 once a resource version has left the history.
    pub fn gone(message: impl Into<String>) -> Self {
        Self::new(410, "Expired", message)
    }

    /// 410 for a list whose continue token is too old, with a token that goes on from the
    /// newest state (kube-apiserver's words for an etcd compaction while paging).
    pub fn continue_expired(fresh_token: String) -> Self {
        let mut e = Self::gone(
            "The provided continue parameter is too old to display a consistent list result. \
             You can start a new list without the continue parameter, or use the continue token \
             in this response to retrieve the remainder of the results. Continuing with the \
             provided token results in an inconsistent list - objects that were created, \
             modified, or deleted between the time the first chunk was returned and now may \
             show up in the list.",
        );
        e.continue_token = Some(fresh_token);
        e
    }

    /// 413 for bodies over the limit.
    pub fn too_large() -> Self {
        Self::new(413, "RequestEntityTooLarge", "Request entity too large: limit is 3145728")
    }

    /// 415 for a content type the endpoint does not take.
    pub fn unsupported_media_type(ct: &str) -> Self {
        Self::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types include: application/json, application/yaml, application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, application/strategic-merge-patch+json (got {ct:?})"
            ),
        )
    }

    /// 504 for a resource version from the future.
    pub fn too_large_resource_version(rv: u64) -> Self {
        Self::new(504, "Timeout", format!("Too large resource version: {rv}, current: less"))
    }

    /// 422 for a patch that cannot be applied.
    pub fn unprocessable(message: impl Into<String>) -> Self {
        Self::new(422, "Invalid", message)
    }

    /// 500 for a bug or an IO failure.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(500, "InternalError", message)
    }

    /// The `Status` object.
    pub fn to_status(&self) -> Value {
        let mut s = json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {},
            "status": "Failure", "message": self.message, "reason": self.reason, "code": self.code,
        });
        if let Some(token) = &self.continue_token {
            s["metadata"]["continue"] = json!(token);
        }
        if let Some(d) = &self.details {
            let mut details = json!({"name": d.name, "kind": d.kind});
            if !d.group.is_empty() {
                details["group"] = json!(d.group);
            }
            if !d.causes.is_empty() {
                let causes: Vec<Value> = d
                    .causes
                    .iter()
                    .map(|c| json!({"reason": c.reason, "message": c.message, "field": c.field}))
                    .collect();
                details["causes"] = Value::Array(causes);
            }
            s["details"] = details;
        }
        s
    }
}

fn qualified(group: &str, resource: &str) -> String {
    if group.is_empty() { resource.to_owned() } else { format!("{resource}.{group}") }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = StatusCode::from_u16(self.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = serde_json::to_vec(&self.to_status()).unwrap_or_default();
        (code, [(http::header::CONTENT_TYPE, "application/json")], body).into_response()
    }
}

/// A storage failure is the server's fault: a 500 worded as kube-apiserver words one.
impl From<crate::Error> for ApiError {
    fn from(e: crate::Error) -> Self {
        Self::internal(format!("Internal error occurred: {e}"))
    }
}
