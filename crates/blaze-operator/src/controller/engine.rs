//! The BlazeEngine controller: creates the engine's worker token Secret when it is absent,
//! applies the worker Deployment, Service, PodDisruptionBudget and NetworkPolicy, replaces failing workers per `spec.recovery`, and writes status when it
//! changed.

use std::sync::Arc;
use std::time::Duration;

use blaze_api::BlazeEngine;
use blaze_api::engine::AutoscalingMode;
use blaze_worker_cli::DownloadProgress;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, Secret, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, LogParams, PostParams};
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use tracing::{debug, info, instrument};

use super::{Context, Reconciled, apply, apply_status, clock, key, scoped};
use crate::children::engine as build;
use crate::children::pod::DOWNLOAD_CONTAINER;
use crate::children::worker_token;
use crate::labels;
use crate::status::engine::{Observation, engine_status, replacements};
use crate::status::events::{Note, engine_events};
use crate::status::pods;
use crate::{Error, Result};

/// How often a settled engine is looked at again (recovery timers, status freshness).
const RESYNC: Duration = Duration::from_secs(60);
/// How often an engine that is changing is looked at again.
const RESYNC_BUSY: Duration = Duration::from_secs(10);
/// How often an autoscaled engine is looked at again, so the autoscaler's decisions (from
/// the scrape loop's samples) reach the Deployment quickly. Applies that change nothing
/// are cheap no-ops for the API server.
const RESYNC_AUTOSCALED: Duration = Duration::from_secs(4);

/// Runs the engine controller until `shutdown` resolves.
pub async fn run(ctx: Arc<Context>, shutdown: impl Future<Output = ()> + Send + Sync + 'static) {
    let c = ctx.client.clone();
    let ns = ctx.namespace.as_deref();
    let children = super::children_of(labels::WORKER);
    let engines = watcher::Config::default().any_semantic();
    let (engines, store) = super::lean_watch(scoped::<BlazeEngine>(c.clone(), ns), engines);
    let urgent = futures::stream::unfold(ctx.urgent.subscribe(), |mut rx| async move {
        loop {
            match rx.recv().await {
                Ok(engine) => return Some((engine, rx)),
                // Missed some: the resync catches up with them.
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
            }
        }
    });
    let controller = Controller::for_stream(engines, store)
        .with_config(controller::Config::default().concurrency(ctx.concurrency))
        .reconcile_on(urgent);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let stopped = async {
        let _ = stop_rx.await;
    };
    let scraper = tokio::spawn(super::scrape::run(ctx.clone(), controller.store(), stopped));
    let controller = controller
        .owns(scoped::<Deployment>(c.clone(), ns), children.clone())
        .owns(scoped::<Service>(c.clone(), ns), children.clone())
        .owns(scoped::<PodDisruptionBudget>(c.clone(), ns), children.clone())
        .owns(scoped::<NetworkPolicy>(c, ns), children)
        .graceful_shutdown_on(shutdown);
    super::drive(controller, reconcile, ctx.clone()).await;
    let _ = stop_tx.send(());
    let _ = scraper.await;
}

/// Demand for `engine` seen by the router `router`: `held` requests wait for a worker there.
/// An engine the autoscaler may bring up from zero gets one at its next reconcile (a few
/// seconds); the first wake-up of an engine with no ready worker is a cold start, counted and
/// reported as an event.
pub(crate) async fn wake(ctx: &Context, engine: &BlazeEngine, held: u64, router: &str) {
    let a = &engine.spec.autoscaling;
    if a.mode != AutoscalingMode::Blaze || a.max_replicas.is_some_and(|m| m < 1) {
        return;
    }
    let idle = engine.status.as_ref().is_none_or(|s| s.ready_replicas == 0);
    let fresh = ctx.autoscalers.lock().entry(key(engine)).or_default().wake(a, clock(), idle);
    let _ = ctx.urgent.send(ObjectRef::from_obj(engine));
    if fresh {
        info!(engine = %key(engine), held, router, "waking an engine at zero workers");
        ctx.metrics.cold_start_begun();
        let note = Note {
            warning: false,
            reason: "ScalingFromZero".into(),
            message: format!(
                "{held} request(s) held by router {router} with no worker: starting one"
            ),
        };
        ctx.publish(engine, "Scale", &note).await;
    }
}

#[instrument(skip_all, fields(engine = %key(engine.as_ref())))]
async fn reconcile(engine: Arc<BlazeEngine>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.reconcile(BlazeEngine::CONTROLLER);
    let ns = engine.namespace().ok_or(Error::MissingField("metadata.namespace"))?;
    let name = engine.name_any();
    let client = ctx.client.clone();
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    // Only the autoscaler needs the Deployment as it is before the apply.
    let current = if engine.spec.autoscaling.mode == AutoscalingMode::Blaze {
        deployments.get_opt(&labels::engine_child_name(&name)).await?
    } else {
        None
    };
    let (desired, panicking) = desired_replicas(&engine, current.as_ref(), &ctx);
    let m = BlazeEngine::MANAGER;
    // Before the Deployment: a worker pod does not start without its token.
    ensure_token(&client, &engine, &ns).await?;
    let deployment =
        apply(&client, m, &build::deployment(&engine, desired, &ctx.defaults)?).await?;
    apply(&client, m, &build::service(&engine)?).await?;
    apply(&client, m, &build::pdb(&engine)?).await?;
    apply(&client, m, &build::network_policy(&engine)?).await?;

    let pod_api: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let workers = super::pods(&client, &ns, &labels::engine_selector(&name)).await?;
    let mut facts: Vec<_> = workers.iter().map(pods::facts).collect();
    if let Some(f) = facts.iter_mut().find(|f| f.downloading && !f.terminating) {
        f.download_progress = download_progress(&pod_api, &f.name).await;
    }
    let now = Timestamp::now();
    for r in replacements(&engine, &facts, now) {
        info!(pod = %r.pod, reason = r.reason, "replacing worker");
        pod_api.delete(&r.pod, &DeleteParams::default()).await?;
        let note = Note {
            warning: true,
            reason: r.reason.into(),
            message: format!("replaced worker {} per spec.recovery", r.pod),
        };
        ctx.publish(engine.as_ref(), "Recover", &note).await;
    }
    let caches = ctx.scrapes.caches(&key(engine.as_ref()));
    let mut status = engine_status(
        &engine,
        &Observation { deployment: Some(&deployment), pods: &facts, desired, now, caches: &caches },
    );
    if let Some(m) = ctx.scrapes.metrics_due(&key(engine.as_ref())) {
        status.metrics = Some(m);
    }
    if status.ready_replicas > 0 {
        let done = ctx
            .autoscalers
            .lock()
            .get_mut(&key(engine.as_ref()))
            .and_then(|a| a.cold_start_done(clock()));
        if let Some(secs) = done {
            info!(seconds = secs, "cold start done");
            ctx.metrics.cold_start_done(secs);
            let note = Note {
                warning: false,
                reason: "ColdStart".into(),
                message: format!("first worker ready {secs:.1} s after requests were held for it"),
            };
            ctx.publish(engine.as_ref(), "Scale", &note).await;
        }
    }
    record(&ctx, &engine, &status, panicking);
    if engine.status.as_ref() != Some(&status) {
        apply_status(&client, engine.as_ref(), &status).await?;
        for note in engine_events(engine.status.as_ref(), &status) {
            ctx.publish(engine.as_ref(), "Reconcile", &note).await;
        }
    }
    super::reconciled(&ctx, engine.as_ref());
    let settled = status.ready_replicas == desired && status.replicas == desired;
    let next = if engine.spec.autoscaling.mode == AutoscalingMode::Blaze {
        RESYNC_AUTOSCALED
    } else if settled {
        RESYNC
    } else {
        RESYNC_BUSY
    };
    Ok(Action::requeue(next))
}

/// Creates the engine's worker token Secret when it is absent (see
/// [`crate::children::worker_token`]). The operator holds `create` on Secrets and no right to
/// read them: `409 AlreadyExists` says the Secret is there, whoever made it.
async fn ensure_token(client: &kube::Client, engine: &BlazeEngine, ns: &str) -> Result<()> {
    let secret = worker_token::secret(engine)?;
    let pp = PostParams { field_manager: Some(BlazeEngine::MANAGER.into()), ..Default::default() };
    match Api::<Secret>::namespaced(client.clone(), ns).create(&pp, &secret).await {
        Ok(_) => {
            info!(secret = ?secret.metadata.name, "created the engine's worker token");
            Ok(())
        }
        Err(kube::Error::Api(status)) if status.is_already_exists() => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// The last progress report of `pod`'s model download, from the tail of its init container's
/// log (`pods/log`). One small read per reconcile, of one pod however many download (they
/// fetch the same files), only while one does: the cheapest way to see a running init
/// container's progress (its termination message comes only at its end). A failed read only
/// leaves the condition without figures.
async fn download_progress(pods: &Api<Pod>, pod: &str) -> Option<DownloadProgress> {
    let lp = LogParams {
        container: Some(DOWNLOAD_CONTAINER.into()),
        // Progress comes every 5 s; a file finished since logs one line more.
        tail_lines: Some(20),
        limit_bytes: Some(64 * 1024),
        ..LogParams::default()
    };
    match pods.logs(pod, &lp).await {
        Ok(log) => DownloadProgress::last_in(&log),
        Err(e) => {
            debug!(pod, error = %e, "cannot read the model download's log");
            None
        }
    }
}

/// Keeps the engine's replicas in its history, and a change of its desired workers with the
/// reason (the first status has no earlier size to change from).
fn record(ctx: &Context, engine: &BlazeEngine, status: &blaze_api::BlazeEngineStatus, panic: bool) {
    let k = key(engine);
    let t = crate::history::now_ms();
    ctx.history.engine_replicas(&k, t, status.desired_replicas, status.ready_replicas);
    let a = &engine.spec.autoscaling;
    let scaled = |v: Option<i32>| v.filter(|_| a.mode == AutoscalingMode::Blaze);
    ctx.history.engine_bounds(&k, scaled(a.max_replicas), scaled(a.target_latency_p95_ms));
    let Some(before) = engine.status.as_ref().filter(|s| !s.conditions.is_empty()) else {
        return;
    };
    let (from, to) = (before.desired_replicas, status.desired_replicas);
    if from == to {
        return;
    }
    let sample = ctx.autoscalers.lock().get(&k).and_then(|a| a.latest());
    let reason =
        crate::history::scale_reason(&engine.spec.autoscaling, from, to, panic, sample.as_ref());
    info!(from, to, %reason, "desired workers changed");
    ctx.history.scaled(&k, t, from, to, reason);
}

/// Workers wanted, and whether the autoscaler is in panic mode: the spec's with autoscaling
/// `off` or `external` (the scale subresource writes `spec.replicas`), the autoscaler's with
/// `blaze`.
fn desired_replicas(
    engine: &BlazeEngine,
    current: Option<&Deployment>,
    ctx: &Context,
) -> (i32, bool) {
    let a = &engine.spec.autoscaling;
    if a.mode != AutoscalingMode::Blaze {
        return (engine.spec.replicas, false);
    }
    let ready = current.and_then(|d| d.status.as_ref()).and_then(|s| s.ready_replicas);
    // A new engine starts at one worker (Knative's initial scale), within the bounds.
    let asked = current.and_then(|d| d.spec.replicas).unwrap_or(1);
    let mut scalers = ctx.autoscalers.lock();
    let scaler = scalers.entry(key(engine)).or_default();
    let d = scaler.decide(a, asked, ready.unwrap_or(0), clock());
    (d.desired, d.panicking)
}
