//! The dashboard: a read-only web page on its own port (`--dashboard-listen`) showing every
//! BlazeEngine and BlazeRouter with its conditions and recent events, per engine charts of the
//! last hour with each scale decision and its reason, and per router each endpoint's weight,
//! breaker, in-flight and latency over time.
//!
//! The page, its script and its style are embedded in the binary (`include_str!`); the script
//! draws plain SVG and polls the JSON API below every few seconds, so the page needs no network
//! beyond the operator and no build step. The API:
//!
//! - `GET /api/overview`: every engine and router (summary, conditions, recent events);
//! - `GET /api/engines/{ns}/{name}`: one engine with its history (404 when missing);
//! - `GET /api/routers/{ns}/{name}`: one router with its endpoints' history (404 when missing).
//!
//! Objects are listed from the API server at each request, with the operator's own rights
//! (list on BlazeEngines and BlazeRouters, which it holds anyway); history and events come
//! from [`History`], which only the leading replica fills. The dashboard offers no actions:
//! acting (scaling, draining an endpoint) would have to go through the Kubernetes API with
//! the viewer's own rights, never the operator's, and that is left out.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use blaze_api::{BlazeEngine, BlazeRouter};
use futures::future::BoxFuture;
use kube::ResourceExt;
use serde_json::{Value, json};

use crate::history::History;

/// The page shell: the script fills it from the API.
const PAGE: &str = include_str!("dashboard/page.html");
/// The script that polls the API and draws the charts.
const SCRIPT: &str = include_str!("dashboard/app.js");
/// The style sheet.
const STYLE: &str = include_str!("dashboard/style.css");
/// Recent events shown per object.
const EVENTS_SHOWN: usize = 5;

/// Where the dashboard finds the objects it shows.
pub trait Objects: Send + Sync + 'static {
    /// Every BlazeEngine the operator watches.
    fn engines(&self) -> BoxFuture<'_, crate::Result<Vec<BlazeEngine>>>;
    /// Every BlazeRouter the operator watches.
    fn routers(&self) -> BoxFuture<'_, crate::Result<Vec<BlazeRouter>>>;
}

/// The objects as the API server lists them, in one namespace or all.
pub struct ApiObjects {
    /// The client.
    pub client: kube::Client,
    /// The namespace the operator watches (`None`: every one).
    pub namespace: Option<String>,
}

impl ApiObjects {
    async fn list<K>(&self) -> crate::Result<Vec<K>>
    where
        K: kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>,
        K: Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    {
        let api = crate::controller::scoped::<K>(self.client.clone(), self.namespace.as_deref());
        Ok(api.list(&kube::api::ListParams::default()).await?.items)
    }
}

impl Objects for ApiObjects {
    fn engines(&self) -> BoxFuture<'_, crate::Result<Vec<BlazeEngine>>> {
        Box::pin(self.list())
    }

    fn routers(&self) -> BoxFuture<'_, crate::Result<Vec<BlazeRouter>>> {
        Box::pin(self.list())
    }
}

/// What the handlers share.
#[derive(Clone)]
pub struct Dashboard {
    objects: Arc<dyn Objects>,
    history: Arc<History>,
}

impl Dashboard {
    /// A dashboard over `objects` and `history`.
    pub fn new(objects: Arc<dyn Objects>, history: Arc<History>) -> Self {
        Self { objects, history }
    }

    /// The dashboard's routes.
    pub fn routes(self) -> Router {
        Router::new()
            .route("/", get(overview_page))
            .route("/engines/{ns}/{name}", get(engine_page))
            .route("/routers/{ns}/{name}", get(router_page))
            .route("/assets/app.js", get(|| asset("text/javascript; charset=utf-8", SCRIPT)))
            .route("/assets/style.css", get(|| asset("text/css; charset=utf-8", STYLE)))
            .route("/api/overview", get(overview))
            .route("/api/engines/{ns}/{name}", get(engine))
            .route("/api/routers/{ns}/{name}", get(router))
            .fallback(|| async { not_found_page("Page", "this address") })
            .with_state(self)
    }

    /// Serves the dashboard on `listener` until `shutdown` resolves.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        axum::serve(listener, self.routes()).with_graceful_shutdown(shutdown).await
    }

    async fn find_engine(&self, ns: &str, name: &str) -> crate::Result<Option<BlazeEngine>> {
        let all = self.objects.engines().await?;
        Ok(all.into_iter().find(|e| e.namespace().as_deref() == Some(ns) && e.name_any() == name))
    }

    async fn find_router(&self, ns: &str, name: &str) -> crate::Result<Option<BlazeRouter>> {
        let all = self.objects.routers().await?;
        Ok(all.into_iter().find(|r| r.namespace().as_deref() == Some(ns) && r.name_any() == name))
    }

    fn events(&self, kind: &str, key: &str) -> Vec<crate::history::Note> {
        let mut notes = self.history.notes(&format!("{kind}/{key}"));
        notes.reverse();
        notes.truncate(EVENTS_SHOWN);
        notes
    }

    fn engine_summary(&self, e: &BlazeEngine) -> Value {
        let key = crate::controller::key(e);
        let st = e.status.clone().unwrap_or_default();
        json!({
            "namespace": e.namespace(),
            "name": e.name_any(),
            "kind": e.spec.kind,
            "model": e.spec.model.source,
            "autoscaling": e.spec.autoscaling.mode,
            "replicas": st.replicas,
            "readyReplicas": st.ready_replicas,
            "desiredReplicas": st.desired_replicas,
            "conditions": st.conditions,
            "metrics": st.metrics,
            "events": self.events("BlazeEngine", &key),
        })
    }

    fn router_summary(&self, r: &BlazeRouter) -> Value {
        let key = crate::controller::key(r);
        let st = r.status.clone().unwrap_or_default();
        json!({
            "namespace": r.namespace(),
            "name": r.name_any(),
            "strategy": r.spec.strategy,
            "replicas": st.replicas,
            "readyReplicas": st.ready_replicas,
            "readyEndpoints": st.ready_endpoints,
            "conditions": st.conditions,
            "endpoints": st.endpoints,
            "events": self.events("BlazeRouter", &key),
        })
    }
}

/// An embedded asset.
async fn asset(content_type: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type), (header::CACHE_CONTROL, "no-cache")], body)
        .into_response()
}

/// The page shell for `page` (`overview`, `engine`, `router`) of object `ns/name`.
fn page(title: &str, page: &str, ns: &str, name: &str) -> Html<String> {
    Html(
        PAGE.replace("{{title}}", &escape(title))
            .replace("{{page}}", page)
            .replace("{{namespace}}", &escape(ns))
            .replace("{{name}}", &escape(name)),
    )
}

/// A 404 page saying which `kind` named `what` does not exist.
fn not_found_page(kind: &str, what: &str) -> Response {
    let body = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>Not found</title>\
         <link rel=\"stylesheet\" href=\"/assets/style.css\"></head><body>\
         <header><a href=\"/\">Blaze</a></header><main><h1 class=\"missing\">{} {} not found</h1>\
         <p>It does not exist, or the operator does not watch its namespace. \
         <a href=\"/\">All engines and routers</a></p></main></body></html>",
        escape(kind),
        escape(what)
    );
    (StatusCode::NOT_FOUND, Html(body)).into_response()
}

/// The API server could not be read.
fn unavailable(e: &crate::Error) -> Response {
    let body = Json(json!({"error": format!("cannot list objects: {e}")}));
    (StatusCode::SERVICE_UNAVAILABLE, body).into_response()
}

use axum::Json;

async fn overview_page() -> Html<String> {
    page("Blaze", "overview", "", "")
}

async fn engine_page(
    State(d): State<Dashboard>,
    Path((ns, name)): Path<(String, String)>,
) -> Response {
    match d.find_engine(&ns, &name).await {
        Ok(Some(_)) => {
            page(&format!("BlazeEngine {ns}/{name}"), "engine", &ns, &name).into_response()
        }
        Ok(None) => not_found_page("BlazeEngine", &format!("{ns}/{name}")),
        Err(e) => unavailable(&e),
    }
}

async fn router_page(
    State(d): State<Dashboard>,
    Path((ns, name)): Path<(String, String)>,
) -> Response {
    match d.find_router(&ns, &name).await {
        Ok(Some(_)) => {
            page(&format!("BlazeRouter {ns}/{name}"), "router", &ns, &name).into_response()
        }
        Ok(None) => not_found_page("BlazeRouter", &format!("{ns}/{name}")),
        Err(e) => unavailable(&e),
    }
}

async fn overview(State(d): State<Dashboard>) -> Response {
    let (engines, routers) = match tokio::try_join!(d.objects.engines(), d.objects.routers()) {
        Ok(both) => both,
        Err(e) => return unavailable(&e),
    };
    let engines: Vec<Value> = engines.iter().map(|e| d.engine_summary(e)).collect();
    let routers: Vec<Value> = routers.iter().map(|r| d.router_summary(r)).collect();
    Json(json!({"engines": engines, "routers": routers})).into_response()
}

async fn engine(State(d): State<Dashboard>, Path((ns, name)): Path<(String, String)>) -> Response {
    match d.find_engine(&ns, &name).await {
        Ok(Some(e)) => {
            let history = d.history.engine(&format!("{ns}/{name}"));
            let (points, decisions) = history
                .map_or_else(|| (json!([]), json!([])), |h| (json!(h.points), json!(h.decisions)));
            let mut out = d.engine_summary(&e);
            out["points"] = points;
            out["decisions"] = decisions;
            Json(out).into_response()
        }
        Ok(None) => missing("BlazeEngine", &ns, &name),
        Err(e) => unavailable(&e),
    }
}

async fn router(State(d): State<Dashboard>, Path((ns, name)): Path<(String, String)>) -> Response {
    match d.find_router(&ns, &name).await {
        Ok(Some(r)) => {
            let mut out = d.router_summary(&r);
            out["history"] = json!(d.history.router_endpoints(&format!("{ns}/{name}")));
            Json(out).into_response()
        }
        Ok(None) => missing("BlazeRouter", &ns, &name),
        Err(e) => unavailable(&e),
    }
}

fn missing(kind: &str, ns: &str, name: &str) -> Response {
    let body = Json(json!({"error": format!("{kind} {ns}/{name} not found")}));
    (StatusCode::NOT_FOUND, body).into_response()
}

/// Escapes text for HTML.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Binds the dashboard's address.
pub async fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await
}

#[cfg(test)]
mod tests;
