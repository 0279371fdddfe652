//! The controllers: kube-runtime `Controller`s for BlazeEngine and BlazeRouter, run while this
//! replica holds the leader Lease.
//!
//! No finalizer: every child carries a controller owner reference, so the garbage collector
//! removes them with their owner, and the operator keeps no state outside the cluster that
//! deletion would have to clean up. A router whose engine is deleted is reconciled again (it
//! watches engines and EndpointSlices) and simply drops that engine's endpoints.

pub mod backoff;
pub mod engine;
pub mod leader;
pub mod permissions;
pub mod router;
pub mod scrape;

use std::collections::HashMap;
use std::sync::Arc;

use futures::Stream;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use parking_lot::Mutex;
use serde::de::DeserializeOwned;

use crate::children::Defaults;
use crate::metrics::Metrics;
use crate::policy::autoscale::Autoscaler;
use crate::status::events::Note;
use backoff::Backoff;

/// Field manager of the engine controller's server-side applies.
pub const ENGINE_MANAGER: &str = "blaze-operator/engine";
/// Field manager of the router controller's server-side applies.
pub const ROUTER_MANAGER: &str = "blaze-operator/router";

/// What reconciles share.
pub struct Context {
    /// The API client.
    pub client: Client,
    /// Images.
    pub defaults: Defaults,
    /// Metrics.
    pub metrics: Metrics,
    /// Publishes `events.k8s.io/v1` events.
    pub recorder: Recorder,
    /// Per-object failure counts.
    pub backoff: Backoff,
    /// Autoscaler state per engine (`namespace/name`).
    pub autoscalers: Mutex<HashMap<String, Autoscaler>>,
    /// Restrict to one namespace.
    pub namespace: Option<String>,
    /// The last scrape of each engine's workers.
    pub scrapes: scrape::Scrapes,
    /// Reconciles each controller runs at once (0: unbounded).
    pub concurrency: u16,
    /// Engines to reconcile now rather than at their next resync: a sample that asks for
    /// more workers, requests held for an engine at zero.
    pub urgent:
        tokio::sync::broadcast::Sender<kube::runtime::reflector::ObjectRef<blaze_api::BlazeEngine>>,
}

/// Reconciles each controller runs at once unless told otherwise. Every reconcile in flight
/// holds its own API connection and decoded children, so this bounds the operator's memory
/// when thousands of objects change together (a restart, a bulk apply) while still keeping
/// the API server busy.
pub const DEFAULT_CONCURRENCY: u16 = 32;

impl Context {
    /// A context for `client`, reporting events as `instance` (the pod name).
    pub fn new(
        client: Client,
        defaults: Defaults,
        metrics: Metrics,
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
            concurrency,
            urgent: tokio::sync::broadcast::channel(1024).0,
        })
    }

    /// Publishes `note` about `obj`; a failure to publish is logged, never fatal.
    pub async fn publish<K: Resource<DynamicType = ()>>(&self, obj: &K, action: &str, note: &Note) {
        let ev = Event {
            type_: if note.warning { EventType::Warning } else { EventType::Normal },
            reason: note.reason.clone(),
            note: Some(truncate(&note.message, 1000)),
            action: action.to_owned(),
            secondary: None,
        };
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
pub fn key<K: Resource>(obj: &K) -> String {
    format!(
        "{}/{}",
        obj.meta().namespace.as_deref().unwrap_or(""),
        obj.meta().name.as_deref().unwrap_or("")
    )
}

/// Objects per page when a watch starts with a list: each page is decoded whole, so this
/// bounds the memory a (re)list of thousands of objects takes at once.
pub const LIST_PAGE: u32 = 100;

/// The watch of a controller's own kind and the cache it fills, holding each object without
/// `metadata.managedFields`. A reconcile never reads them, and in a cache of thousands of
/// objects they are most of its memory (every field path is a JSON map).
pub fn lean_watch<K>(
    api: Api<K>,
    config: watcher::Config,
) -> (impl Stream<Item = Result<K, watcher::Error>> + Send + 'static, Store<K>)
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync,
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
