//! The BlazeRouter controller: finds the ready workers of the engines a router selects (from
//! EndpointSlices), computes weights, delivers them in the routing ConfigMap, applies the
//! router's identity (ServiceAccount, Role, RoleBinding), Deployment and Service, and writes
//! status when it changed.
//!
//! A router whose weights are `auto` is reconciled every [`WEIGHTS_CADENCE`] (besides the
//! changes it watches), each time scraping its own pods and computing weights over the last
//! [`WINDOW_S`] seconds, so a worker that turns slow loses its traffic within about one
//! window; other routers every [`RESYNC`].
//!
//! [`WINDOW_S`]: crate::policy::router_stats::WINDOW_S

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use blaze_api::engine::AutoscalingMode;
use blaze_api::router::WeightsMode;
use blaze_api::{BlazeEngine, BlazeRouter};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Service, ServiceAccount};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::{Api, ListParams};
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use tracing::instrument;

use super::{Context, Reconciled, apply, apply_status, clock, key, paged, scoped, scrape};
use crate::children::router as build;
use crate::children::routing;
use crate::labels;
use crate::policy::prom;
use crate::policy::router_stats::EndpointView;
use crate::status::router::router_status;
use crate::{Error, Result};

/// The label an EndpointSlice carries naming its Service.
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// How often a router with `manual` weights is looked at again.
const RESYNC: Duration = Duration::from_secs(30);
/// How often a router with `auto` weights is observed and its weights published again: a
/// third of the weights' window (6 s), so each window holds three scrapes of the router's
/// pods and a worker that turns slow shows in its weight within 10 s. Each look lists the
/// router's engines, EndpointSlices and pods and applies its children again (applies that
/// change nothing write nothing); the ConfigMap changes only when weights moved past the
/// damping.
const WEIGHTS_CADENCE: Duration = Duration::from_secs(2);
/// How often a router selecting an engine at zero workers is looked at: the requests it holds
/// wake that engine, so this bounds what a cold start adds to the first request's wait.
const HOLD_CADENCE: Duration = Duration::from_secs(2);
/// The router's gauge of requests waiting for an endpoint.
const HELD_REQUESTS: &str = "blaze_router_held_requests";

/// Runs the router controller until `shutdown` resolves.
pub async fn run(ctx: Arc<Context>, shutdown: impl Future<Output = ()> + Send + Sync + 'static) {
    let c = ctx.client.clone();
    let ns = ctx.namespace.as_deref();
    let children = super::children_of(labels::ROUTER);
    let (own, store) = super::lean_watch(
        scoped::<BlazeRouter>(c.clone(), ns),
        watcher::Config::default().any_semantic(),
    );
    let controller = Controller::for_stream(own, store)
        .with_config(controller::Config::default().concurrency(ctx.concurrency))
        .owns(scoped::<Deployment>(c.clone(), ns), children.clone())
        .owns(scoped::<Service>(c.clone(), ns), children.clone())
        .owns(scoped::<ConfigMap>(c.clone(), ns), children.clone())
        .owns(scoped::<ServiceAccount>(c.clone(), ns), children.clone())
        .owns(scoped::<Role>(c.clone(), ns), children.clone())
        .owns(scoped::<RoleBinding>(c.clone(), ns), children);
    let routers = controller.store();
    let by_engine = routers.clone();
    let controller = controller
        .watches(scoped::<BlazeEngine>(c.clone(), ns), paged(), move |e| {
            routers_selecting(&by_engine, &e.name_any(), e.namespace(), e.labels())
        })
        .watches(scoped::<EndpointSlice>(c, ns), paged(), move |s| {
            let service = s.labels().get(SERVICE_NAME_LABEL).cloned().unwrap_or_default();
            let Some(engine) = service.strip_suffix(labels::WORKER_SUFFIX) else {
                return Vec::new();
            };
            routers_selecting(&routers, engine, s.namespace(), &BTreeMap::new())
        })
        .graceful_shutdown_on(shutdown);
    super::drive(controller, reconcile, ctx).await;
}

/// Routers in `ns` that select the engine (by name; by labels when `engine_labels` are known,
/// and every selector-based router when they are not, since a reconcile is cheap).
fn routers_selecting(
    store: &Store<BlazeRouter>,
    engine: &str,
    ns: Option<String>,
    engine_labels: &BTreeMap<String, String>,
) -> Vec<ObjectRef<BlazeRouter>> {
    store
        .state()
        .iter()
        .filter(|r| r.namespace() == ns)
        .filter(|r| {
            let sel = &r.spec.engines;
            routing::selects(sel, engine, engine_labels)
                || sel.selector.is_some() && engine_labels.is_empty()
        })
        .map(|r| ObjectRef::from_obj(r.as_ref()))
        .collect()
}

#[instrument(skip_all, fields(router = %key(router.as_ref())))]
async fn reconcile(router: Arc<BlazeRouter>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.reconcile(BlazeRouter::CONTROLLER);
    let ns = router.namespace().ok_or(Error::MissingField("metadata.namespace"))?;
    let c = ctx.client.clone();
    let selected: Vec<BlazeEngine> = Api::<BlazeEngine>::namespaced(c.clone(), &ns)
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|e| routing::selects(&router.spec.engines, &e.name_any(), e.labels()))
        .collect();
    let engines: Vec<String> = selected.iter().map(|e| e.name_any()).collect();
    // Engines the autoscaler may bring back from zero, with no worker serving now: the
    // requests this router holds are their only demand.
    let asleep: Vec<&BlazeEngine> = selected.iter().filter(|e| may_wake(e)).collect();
    let services: Vec<String> = engines.iter().map(|e| labels::engine_child_name(e)).collect();
    let slices = if services.is_empty() {
        Vec::new()
    } else {
        let sel = format!("{SERVICE_NAME_LABEL} in ({})", services.join(","));
        Api::<EndpointSlice>::namespaced(c.clone(), &ns)
            .list(&ListParams::default().labels(&sel))
            .await?
            .items
    };
    let eps = routing::endpoints(&engines, &slices);
    let published: Vec<(String, i32)> = router
        .status
        .iter()
        .flat_map(|s| s.endpoints.iter().map(|e| (e.address.clone(), e.weight)))
        .collect();
    let (observed, held) = observe_endpoints(&router, &ns, &eps, &ctx).await?;
    if held > 0.0 {
        for e in &asleep {
            super::engine::wake(&ctx, e, held as u64, &router.name_any()).await;
        }
    }
    let stats = observed.iter().map(|(a, o)| (a.clone(), o.stats.clone())).collect();
    let mut config = routing::config(&router, eps, &stats);
    routing::keep_small_moves(&published, &mut config.endpoints);
    let m = BlazeRouter::MANAGER;
    apply(&c, m, &build::config_map(&router, &config)?).await?;
    // The pods' identity first: a new pod starts by reading the ConfigMap with it.
    apply(&c, m, &build::service_account(&router)?).await?;
    apply(&c, m, &build::role(&router)?).await?;
    apply(&c, m, &build::role_binding(&router)?).await?;
    let deployment = apply(&c, m, &build::deployment(&router, &engines, &ctx.defaults)?).await?;
    apply(&c, m, &build::service(&router)?).await?;

    ctx.history.router(
        &key(router.as_ref()),
        crate::history::now_ms(),
        &config.endpoints,
        &observed,
    );
    let status = router_status(
        &router,
        &deployment,
        &engines,
        &config.endpoints,
        &observed,
        Timestamp::now(),
    );
    if router.status.as_ref() != Some(&status) {
        apply_status(&c, router.as_ref(), &status).await?;
    }
    super::reconciled(&ctx, router.as_ref());
    Ok(Action::requeue(match router.spec.weights.mode {
        _ if !asleep.is_empty() => HOLD_CADENCE,
        WeightsMode::Auto => WEIGHTS_CADENCE,
        WeightsMode::Manual => RESYNC,
    }))
}

/// Whether `engine` is at zero ready workers with an autoscaler that may start one.
fn may_wake(engine: &BlazeEngine) -> bool {
    let a = &engine.spec.autoscaling;
    a.mode == AutoscalingMode::Blaze
        && a.min_replicas == 0
        && a.max_replicas.is_none_or(|m| m > 0)
        && engine.status.as_ref().is_none_or(|s| s.ready_replicas == 0)
}

/// Requests held by the router's pods (summed), waiting for an endpoint.
fn held_requests(scrapes: &BTreeMap<String, Vec<prom::Sample>>) -> f64 {
    scrapes.values().map(|s| prom::sum(s, HELD_REQUESTS)).sum()
}

/// Per-endpoint latency, errors, load and breaker state from the router's own pods over
/// the weights' window, with each endpoint's condition and slow-start age. Without
/// measurements (the first reconcile, no pod answering) an endpoint is unmeasured and keeps
/// its last condition.
async fn observe_endpoints(
    router: &BlazeRouter,
    ns: &str,
    eps: &[routing::Endpoint],
    ctx: &Context,
) -> Result<(BTreeMap<String, EndpointView>, f64)> {
    let selector = labels::router_selector(&router.name_any());
    let (now, _failed) =
        scrape::scrape_selected(ctx, ns, &selector, build::ADMIN_PORT, "router").await?;
    let held = held_requests(&now);
    let observed = ctx.scrapes.observe_router(&key(router), clock(), now, eps);
    Ok((observed, held))
}
