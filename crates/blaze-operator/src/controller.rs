//! The controllers: kube-runtime `Controller`s for BlazeEngine and BlazeRouter, run while this
//! replica holds the leader Lease.
//!
//! No finalizer: every child carries a controller owner reference, so the garbage collector
//! removes them with their owner, and the operator keeps no state outside the cluster that
//! deletion would have to clean up. A router whose engine is deleted is reconciled again (it
//! watches engines and EndpointSlices) and simply drops that engine's endpoints.

pub(crate) mod backoff;
pub mod engine;
pub mod leader;
pub mod permissions;
pub mod router;
pub(crate) mod scrape;

use std::collections::{BTreeMap, HashMap};
use std::fmt::Debug;
use std::sync::Arc;

use blaze_api::{BlazeEngine, BlazeRouter};
use futures::{Stream, StreamExt};
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{ListParams, Patch, PatchParams};
use kube::runtime::controller::{self as runtime, Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use parking_lot::Mutex;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing::{debug, warn};

use crate::children::{Defaults, name_of};
use crate::history::History;
use crate::metrics::Metrics;
use crate::policy::autoscale::Autoscaler;
use crate::status::events::Note;
use crate::{Error, Result};
use backoff::Backoff;

/// A kind the operator reconciles, and what its controller does differently from the other.
pub(crate) trait Reconciled:
    Resource<DynamicType = (), Scope = NamespaceResourceScope>
    + Clone
    + Serialize
    + DeserializeOwned
    + Debug
    + Send
    + Sync
    + 'static
{
    /// The controller's name in metrics and logs.
    const CONTROLLER: &'static str;
    /// Field manager of the controller's server-side applies.
    const MANAGER: &'static str;

    /// Forgets what the operator keeps in memory of a deleted object (`namespace/name`).
    fn forget(ctx: &Context, key: &str);
}

impl Reconciled for BlazeEngine {
    const CONTROLLER: &'static str = "engine";
    const MANAGER: &'static str = "blaze-operator/engine";

    fn forget(ctx: &Context, key: &str) {
        ctx.autoscalers.lock().remove(key);
        ctx.scrapes.forget(key);
        ctx.history.forget_engine(key);
    }
}

impl Reconciled for BlazeRouter {
    const CONTROLLER: &'static str = "router";
    const MANAGER: &'static str = "blaze-operator/router";

    fn forget(ctx: &Context, key: &str) {
        ctx.scrapes.forget_router(key);
        ctx.history.forget_router(key);
    }
}

/// What reconciles share.
pub struct Context {
    /// The API client.
    pub(crate) client: Client,
    /// Images.
    pub(crate) defaults: Defaults,
    /// Metrics.
    pub(crate) metrics: Metrics,
    /// Publishes `events.k8s.io/v1` events.
    pub(crate) recorder: Recorder,
    /// Per-object failure counts.
    pub(crate) backoff: Backoff,
    /// Autoscaler state per engine (`namespace/name`).
    pub(crate) autoscalers: Mutex<HashMap<String, Autoscaler>>,
    /// Restrict to one namespace.
    pub(crate) namespace: Option<String>,
    /// The last scrape of each engine's workers.
    pub(crate) scrapes: scrape::Scrapes,
    /// The last hour of what the controllers observed and decided, for the dashboard.
    pub(crate) history: Arc<History>,
    /// Reconciles each controller runs at once (0: unbounded).
    pub(crate) concurrency: u16,
    /// Engines to reconcile now rather than at their next resync: a sample that asks for
    /// more workers, requests held for an engine at zero.
    pub(crate) urgent: tokio::sync::broadcast::Sender<ObjectRef<BlazeEngine>>,
}

/// Reconciles each controller runs at once unless told otherwise. Every reconcile in flight
/// holds its own API connection and decoded children, so this bounds the operator's memory
/// when thousands of objects change together (a restart, a bulk apply) while still keeping
/// the API server busy.
pub const DEFAULT_CONCURRENCY: u16 = 32;

impl Context {
    /// A context for `client`, reporting events as `instance` (the pod name) and keeping what
    /// it observes in `history`.
    pub fn new(
        client: Client,
        defaults: Defaults,
        metrics: Metrics,
        history: Arc<History>,
        instance: Option<String>,
        namespace: Option<String>,
        concurrency: u16,
    ) -> Arc<Self> {
        let reporter = Reporter { controller: "blaze-operator".into(), instance };
        Arc::new(Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            defaults,
            metrics,
            backoff: Backoff::default(),
            autoscalers: Mutex::new(HashMap::new()),
            namespace,
            scrapes: scrape::Scrapes::default(),
            history,
            concurrency,
            urgent: tokio::sync::broadcast::channel(1024).0,
        })
    }

    /// Publishes `note` about `obj`; a failure to publish is logged, never fatal.
    pub(crate) async fn publish<K: Resource<DynamicType = ()>>(
        &self,
        obj: &K,
        action: &str,
        note: &Note,
    ) {
        let ev = Event {
            type_: if note.warning { EventType::Warning } else { EventType::Normal },
            reason: note.reason.clone(),
            note: Some(truncate(&note.message, 1000)),
            action: action.to_owned(),
            secondary: None,
        };
        let object = format!("{}/{}", K::kind(&()), key(obj));
        let kept = crate::history::Note {
            t: crate::history::now_ms(),
            warning: note.warning,
            reason: note.reason.clone(),
            message: note.message.clone(),
        };
        self.history.note(&object, kept);
        if let Err(e) = self.recorder.publish(&ev, &obj.object_ref(&())).await {
            tracing::warn!(error = %e, reason = %note.reason, "cannot publish event");
        }
    }
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

/// `namespace/name` of an object.
pub(crate) fn key<K: Resource>(obj: &K) -> String {
    let meta = obj.meta();
    ns_name(meta.namespace.as_deref(), meta.name.as_deref().unwrap_or(""))
}

fn ns_name(namespace: Option<&str>, name: &str) -> String {
    format!("{}/{name}", namespace.unwrap_or(""))
}

/// Objects per page when a watch starts with a list: each page is decoded whole, so this
/// bounds the memory a (re)list of thousands of objects takes at once.
pub(crate) const LIST_PAGE: u32 = 100;

/// A watch that lists a page of [`LIST_PAGE`] objects at a time.
pub(crate) fn paged() -> watcher::Config {
    watcher::Config::default().page_size(LIST_PAGE)
}

/// The watch of the children a controller owns: objects labelled as part of `app`.
pub(crate) fn children_of(app: &str) -> watcher::Config {
    paged().labels(&format!("{}={app}", crate::labels::NAME_LABEL))
}

/// An Api over every namespace, or one.
pub(crate) fn scoped<K>(client: Client, ns: Option<&str>) -> Api<K>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>,
{
    match ns {
        Some(ns) => Api::namespaced(client, ns),
        None => Api::all(client),
    }
}

/// Seconds on a monotonic clock (from the first call in this process), the autoscaler's and
/// the router weights' time base: a wall clock stepped by NTP would stretch or cut their
/// windows and delays.
pub(crate) fn clock() -> f64 {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    START.get_or_init(std::time::Instant::now).elapsed().as_secs_f64()
}

/// The watch of a controller's own kind and the cache it fills, holding each object without
/// `metadata.managedFields`. A reconcile never reads them, and in a cache of thousands of
/// objects they are most of its memory (every field path is a JSON map).
pub(crate) fn lean_watch<K>(
    api: Api<K>,
    config: watcher::Config,
) -> (impl Stream<Item = Result<K, watcher::Error>> + Send + 'static, Store<K>)
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync,
    K: 'static,
{
    let (store, writer) = reflector::store();
    let stream = watcher(api, config.page_size(LIST_PAGE))
        .default_backoff()
        .modify(|o| o.managed_fields_mut().clear())
        .reflect(writer)
        .applied_objects();
    (stream, store)
}

/// The pods in `ns` that `selector` picks.
pub(crate) async fn pods(
    client: &Client,
    ns: &str,
    selector: &BTreeMap<String, String>,
) -> Result<Vec<Pod>> {
    let lp = ListParams::default().labels(&crate::labels::selector_string(selector));
    Ok(Api::<Pod>::namespaced(client.clone(), ns).list(&lp).await?.items)
}

/// Server-side applies `child` into its namespace as `manager`, forcing: the controller takes
/// back fields another manager changed. Returns the object as the API server stored it.
pub(crate) async fn apply<C>(client: &Client, manager: &str, child: &C) -> Result<C>
where
    C: Resource<DynamicType = (), Scope = NamespaceResourceScope>,
    C: Clone + Serialize + DeserializeOwned + Debug,
{
    let name = name_of(child)?;
    let ns = child.meta().namespace.as_deref().ok_or(Error::MissingField("metadata.namespace"))?;
    let pp = PatchParams::apply(manager).force();
    Ok(Api::<C>::namespaced(client.clone(), ns).patch(&name, &pp, &Patch::Apply(child)).await?)
}

/// Server-side applies `status` to `owner`'s status subresource as its controller.
pub(crate) async fn apply_status<K: Reconciled>(
    client: &Client,
    owner: &K,
    status: &impl Serialize,
) -> Result<()> {
    let name = name_of(owner)?;
    let ns = owner.namespace().ok_or(Error::MissingField("metadata.namespace"))?;
    let body = serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "metadata": {"name": name, "namespace": ns},
        "status": status,
    });
    let pp = PatchParams::apply(K::MANAGER).force();
    Api::<K>::namespaced(client.clone(), &ns)
        .patch_status(&name, &pp, &Patch::Apply(&body))
        .await?;
    Ok(())
}

/// The error policy of both controllers: counts the failure and retries the object after a
/// delay that doubles with each failure in a row (kube-runtime keeps no count).
///
/// The failure is also a Warning event `ReconcileFailed` on the object, with the error as
/// the API server gave it (a missing permission reads `services is forbidden: User ...`), so
/// `kubectl describe` shows why an engine or router goes nowhere. Published at the 1st,
/// 2nd, 4th, 8th... failure in a row, so a lasting failure does not flood the events.
pub(crate) fn error_policy<K: Reconciled>(obj: Arc<K>, e: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.failure(K::CONTROLLER, e);
    let key = key(obj.as_ref());
    let wait = ctx.backoff.fail(&K::kind(&()), &key);
    ctx.metrics.set_backing_off(K::CONTROLLER, ctx.backoff.failing(&K::kind(&())));
    warn!(controller = K::CONTROLLER, object = %key, error = %e, retry_in = ?wait, "reconcile failed");
    if ctx.backoff.in_a_row(&K::kind(&()), &key).is_power_of_two() {
        let note = Note { warning: true, reason: "ReconcileFailed".into(), message: e.to_string() };
        tokio::spawn(async move { ctx.publish(obj.as_ref(), "Reconcile", &note).await });
    }
    Action::requeue(wait)
}

/// Ends the backoff of `obj` after a reconcile that succeeded.
pub(crate) fn reconciled<K: Reconciled>(ctx: &Context, obj: &K) {
    settle::<K>(ctx, &key(obj));
}

fn settle<K: Reconciled>(ctx: &Context, key: &str) {
    ctx.backoff.succeed(&K::kind(&()), key);
    ctx.metrics.set_backing_off(K::CONTROLLER, ctx.backoff.failing(&K::kind(&())));
}

/// Runs `controller` with `reconcile` and the shared [`error_policy`] until its shutdown,
/// forgetting each object that is gone when one of its children's events arrives after it.
pub(crate) async fn drive<K, F>(
    controller: Controller<K>,
    reconcile: impl FnMut(Arc<K>, Arc<Context>) -> F,
    ctx: Arc<Context>,
) where
    K: Reconciled,
    F: Future<Output = Result<Action>> + Send + 'static,
{
    controller
        .run(reconcile, error_policy, ctx.clone())
        .for_each(|r| {
            match r {
                Err(runtime::Error::ObjectNotFound(obj)) => {
                    let key = ns_name(obj.namespace.as_deref(), &obj.name);
                    K::forget(&ctx, &key);
                    settle::<K>(&ctx, &key);
                    debug!(controller = K::CONTROLLER, object = %key, "deleted");
                }
                Err(e) => warn!(controller = K::CONTROLLER, error = %e, "controller"),
                Ok(_) => {}
            }
            std::future::ready(())
        })
        .await;
}
