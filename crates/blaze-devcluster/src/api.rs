//! HTTP entry: authentication, routing of Kubernetes REST paths, request decoding.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, Method, StatusCode, header};
use serde_json::Value;

use crate::error::{ApiError, ApiResult};
use crate::resources::ResourceInfo;
use crate::server::State;
use crate::writes::Writer;

/// Largest request body accepted (the real server's limit).
pub const MAX_BODY: usize = 3 * 1024 * 1024;

/// The axum router: every path goes through [`handle`].
pub fn router(st: Arc<State>) -> axum::Router {
    axum::Router::new().fallback(handle).with_state(st)
}

/// Query parameters.
#[derive(Debug, Default, Clone)]
pub struct Query(HashMap<String, String>);

impl Query {
    /// Parses a query string.
    pub fn parse(q: Option<&str>) -> Self {
        let mut out = HashMap::new();
        for pair in q.unwrap_or_default().split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            out.insert(decode(k), decode(v));
        }
        Self(out)
    }

    /// A parameter.
    pub fn get(&self, k: &str) -> Option<&str> {
        self.0.get(k).map(String::as_str)
    }

    /// A boolean parameter (`true` or `1`).
    pub fn flag(&self, k: &str) -> bool {
        matches!(self.get(k), Some("true" | "1"))
    }
}

fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// One decoded request.
pub struct Ctx {
    /// Method.
    pub method: Method,
    /// Path.
    pub path: String,
    /// Query.
    pub query: Query,
    /// Headers.
    pub headers: HeaderMap,
    /// Body.
    pub body: bytes::Bytes,
    /// Who asks (after impersonation).
    pub user: crate::auth::User,
}

impl Ctx {
    /// Media type of the body, without parameters.
    pub fn content_type(&self) -> String {
        let ct = self
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        ct.split(';').next().unwrap_or_default().trim().to_ascii_lowercase()
    }

    /// Whether the client asked for a `meta.k8s.io` Table.
    pub fn wants_table(&self) -> bool {
        self.headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|a| a.contains("as=Table"))
    }

    /// The body as JSON (or YAML, or Kubernetes' protobuf), for create and update.
    pub fn object(&self) -> ApiResult<Value> {
        match self.content_type().as_str() {
            "" | "application/json" | "*/*" => parse_json(&self.body),
            "application/yaml" => parse_yaml(&self.body),
            crate::protobuf::MEDIA_TYPE => crate::protobuf::decode(&self.body),
            other => Err(ApiError::unsupported_media_type(other)),
        }
    }

    /// A writer for `info` with this request's field manager and dry-run flag.
    pub fn writer<'a>(&self, st: &'a State, info: &'a ResourceInfo) -> Writer<'a> {
        let ua =
            self.headers.get(header::USER_AGENT).and_then(|v| v.to_str().ok()).unwrap_or("unknown");
        let manager = self
            .query
            .get("fieldManager")
            .map(str::to_owned)
            .unwrap_or_else(|| ua.split('/').next().unwrap_or("unknown").to_owned());
        let strict = self.query.get("fieldValidation") == Some("Strict");
        let dry_run = self.query.get("dryRun") == Some("All");
        Writer {
            st,
            info,
            manager,
            dry_run,
            strict,
            user: Some(self.user.clone()),
            warnings: Default::default(),
        }
    }
}

/// Parses a JSON body with the real server's message on failure.
pub fn parse_json(body: &[u8]) -> ApiResult<Value> {
    serde_json::from_slice(body).map_err(|e| {
        ApiError::bad_request(format!("couldn't get version/kind; json parse error: {e}"))
    })
}

/// Parses a YAML (or JSON) body.
pub fn parse_yaml(body: &[u8]) -> ApiResult<Value> {
    serde_saphyr::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("error converting YAML to JSON: {e}")))
}

/// A JSON response.
pub fn json_response(code: StatusCode, v: &Value) -> Response {
    (code, [(header::CONTENT_TYPE, "application/json")], serde_json::to_vec(v).unwrap_or_default())
        .into_response()
}

async fn handle(
    axum::extract::State(st): axum::extract::State<Arc<State>>,
    req: Request,
) -> Response {
    let (parts, body) = req.into_parts();
    let path = parts.uri.path().to_owned();
    if matches!(path.as_str(), "/healthz" | "/livez" | "/readyz") {
        return (StatusCode::OK, "ok").into_response();
    }
    let query = Query::parse(parts.uri.query());
    // Anonymous requests are let through to RBAC, where `system:public-info-viewer` lets
    // them read `/version` (the kubectl dispatcher asks it before choosing a kubectl).
    let user = match crate::auth::authenticate(&st, &parts.headers)
        .and_then(|user| crate::auth::impersonate::impersonate(&st, user, &parts.headers))
        .and_then(|user| {
            let attrs = crate::auth::Attributes::of_request(&parts.method, &path, &query);
            crate::auth::check(&st, &user, &attrs).map(|()| user)
        }) {
        Ok(user) => user,
        Err(e) => return e.into_response(),
    };
    let body = match read_body(body).await {
        Some(b) => b,
        None => return ApiError::too_large().into_response(),
    };
    let ctx = Ctx { method: parts.method, path, query, headers: parts.headers, body, user };
    match route(&st, &ctx).await {
        Ok(r) => r,
        Err(e) => {
            tracing::debug!(method = %ctx.method, path = %ctx.path, code = e.code, reason = e.reason, "request failed");
            e.into_response()
        }
    }
}

async fn route(st: &Arc<State>, ctx: &Ctx) -> ApiResult<Response> {
    let segs: Vec<&str> = ctx.path.trim_matches('/').split('/').collect();
    let reg = st.registry();
    if let Some(r) = crate::discovery::serve(st, &reg, &segs, ctx) {
        return r;
    }
    let (group, version, rest) = match segs.as_slice() {
        ["api", v, rest @ ..] if !rest.is_empty() => ("", *v, rest),
        ["apis", g, v, rest @ ..] if !rest.is_empty() => (*g, *v, rest),
        _ => return Err(ApiError::no_route(&ctx.path)),
    };
    if group == crate::auth::review::GROUP && version == "v1" {
        return crate::auth::review::serve(st, ctx, rest);
    }
    let t = target(&reg, group, version, rest).ok_or_else(|| ApiError::no_route(&ctx.path))?;
    crate::handlers::dispatch(st, ctx, t).await
}

/// What a resource path names.
pub struct Target {
    /// The resource.
    pub info: Arc<ResourceInfo>,
    /// Namespace from the path; `None` for cluster-scoped or all-namespace requests.
    pub ns: Option<String>,
    /// Object name.
    pub name: Option<String>,
    /// Subresource.
    pub sub: Option<String>,
}

fn target(reg: &crate::resources::Registry, g: &str, v: &str, rest: &[&str]) -> Option<Target> {
    let namespaced = rest.len() >= 3
        && rest[0] == "namespaces"
        && reg.get(g, v, rest[2]).is_some_and(|r| r.namespaced);
    let (ns, rest) = if namespaced { (Some(rest[1].to_owned()), &rest[2..]) } else { (None, rest) };
    if rest.len() > 3 || rest.iter().any(|s| s.is_empty()) {
        return None;
    }
    let info = reg.get(g, v, rest[0])?;
    let name = rest.get(1).map(|s| (*s).to_owned());
    let sub = rest.get(2).map(|s| (*s).to_owned());
    if info.namespaced && ns.is_none() && name.is_some() {
        return None;
    }
    let sub_ok = match sub.as_deref() {
        None => true,
        Some("status") => info.status,
        Some("scale") => info.scale.is_some(),
        Some("log") | Some("binding") => info.log,
        Some("token") => info.group.is_empty() && info.plural == "serviceaccounts",
        Some(_) => false,
    };
    sub_ok.then_some(Target { info, ns, name, sub })
}

/// How much of an oversized body is read (and dropped) before answering 413, so that the
/// client sees the answer rather than a reset connection.
const DRAIN_LIMIT: usize = 64 * 1024 * 1024;

/// The body, or `None` when it is larger than [`MAX_BODY`] (or unreadable).
async fn read_body(body: Body) -> Option<bytes::Bytes> {
    use http_body_util::BodyExt;
    let mut body = body;
    let mut buf = bytes::BytesMut::new();
    let mut seen = 0usize;
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame.ok()?.into_data() else { continue };
        seen += data.len();
        if seen <= MAX_BODY {
            buf.extend_from_slice(&data);
        } else if seen > DRAIN_LIMIT {
            return None;
        }
    }
    (seen <= MAX_BODY).then(|| buf.freeze())
}

/// A plain streaming body.
pub fn stream_body(rx: tokio::sync::mpsc::Receiver<bytes::Bytes>) -> Body {
    let s = tokio_stream::wrappers::ReceiverStream::new(rx);
    Body::from_stream(futures::StreamExt::map(s, Ok::<_, std::convert::Infallible>))
}
