//! Workers follow what is asked: `kubectl scale` through the scale subresource, the
//! autoscaler under a load step, an engine woken from zero by a request.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};
use blaze_api::engine::BlazeEngine;
use blaze_api::routing::{CONFIG_MAP_KEY, config_map_name};
use blaze_e2e::closed_loop as cl;
use blaze_e2e::pods::{alive, pids};
use blaze_e2e::quickstart::{ENGINE, ROUTER};
use blaze_e2e::{Quickstart, http, until};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::DeleteParams;

use crate::Fixture;

/// `kubectl scale` gives three workers; the router pods watch their routing ConfigMap, so
/// each new endpoint reaches them within 2 s of the operator's write; the first worker stays.
/// Deleting the engine then ends every worker process.
pub async fn kubectl_scale_reaches_the_router_within_2_s_and_deleting_the_engine_ends_its_workers(
    f: Arc<Fixture>,
) -> Result<()> {
    let cluster = f.cluster().await?;
    let q = Quickstart::deploy(cluster, "scaling").await?;
    let first = q.ready(1).await?;
    let metrics = format!("{}:9090", q.router_ip().await?);
    cluster.kubectl(&["scale", "be/smollm2", "--replicas", "3", "-n", &q.namespace])?;
    let delays = endpoint_delivery(&q, &metrics, 3).await?;
    eprintln!("routing changes reached the router after {delays:?}");
    ensure!(
        !delays.is_empty() && delays.iter().all(|d| *d < Duration::from_secs(2)),
        "the router saw a routing change more than 2 s after it was written: {delays:?}"
    );
    let three = q.ready(3).await?;
    let first_pid = pids(&first).first().copied().context("the first worker's process")?;
    ensure!(pids(&three).contains(&first_pid), "scaling up replaced the first worker");

    let worker_pids = pids(&three);
    q.api::<BlazeEngine>().delete(ENGINE, &DeleteParams::default()).await?;
    until("no worker pods", 90, async || q.workers().await.ok()?.is_empty().then_some(())).await?;
    Ok(until("no worker processes", 30, async || {
        worker_pids.iter().all(|p| !alive(*p)).then_some(())
    })
    .await?)
}

/// Follows the routing ConfigMap and the router's `/metrics` (at `metrics`) together, every
/// 50 ms, until the router lists `n` endpoints, and returns, for each larger endpoint set the
/// ConfigMap was seen with, how long after that the router showed it (zero when the router
/// showed it before the ConfigMap was sampled with it).
async fn endpoint_delivery(q: &Quickstart, metrics: &str, n: usize) -> Result<Vec<Duration>> {
    let cms = q.api::<ConfigMap>();
    let deadline = Instant::now() + Duration::from_secs(240);
    let mut written: Vec<Option<Instant>> = vec![None; n + 1];
    let mut delays = Vec::new();
    let mut shown = None;
    loop {
        if Instant::now() > deadline {
            bail!("the router never listed {n} endpoints");
        }
        if let Ok(cm) = cms.get(&config_map_name(ROUTER)).await {
            let doc = cm.data.and_then(|d| d.get(CONFIG_MAP_KEY).cloned()).unwrap_or_default();
            let listed = doc.matches("address:").count().min(n);
            written[listed].get_or_insert_with(Instant::now);
        }
        let text = http::get(metrics, "/metrics").await.unwrap_or_default();
        let seen = text.lines().filter(|l| l.starts_with("blaze_router_endpoint_weight{"));
        let seen = seen.count().min(n);
        // The set the router had before the change is no measurement.
        let before = *shown.get_or_insert(seen);
        let new = written.iter().take(seen + 1).skip(before + 1);
        delays.extend(new.map(|w| w.map_or(Duration::ZERO, |at| at.elapsed())));
        shown = Some(seen.max(before));
        if seen == n {
            return Ok(delays);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Eight clients on one worker with the autoscaler on: more workers are asked for within 10 s
/// and a new one takes requests; once the load stops the engine returns to one worker, but no
/// sooner than the stable window plus the scale-down delay (20 s + 20 s).
pub async fn a_load_step_scales_up_within_10_s_and_down_only_after_the_window_and_delay(
    f: Arc<Fixture>,
) -> Result<()> {
    let q = Quickstart::deploy(f.cluster().await?, "load-step").await?;
    let step = cl::load_step(&q, true, 8, 30).await?;
    eprintln!("{step:?}");
    let decision = step.decision_s.context("no more workers asked for")?;
    ensure!(decision <= 10.0, "the scale-up decision came {decision:.1} s after the step");
    ensure!(step.serving_s.is_some(), "no new worker took requests during the step: {step:?}");
    ensure!(step.failures == 0, "{step:?}");
    let down = step.back_to_min_s.context("never back to one worker")?;
    ensure!(down >= 38.0, "back to one worker {down:.1} s after the load stopped");
    Ok(())
}

/// An idle engine with `minReplicas: 0` goes to zero; the next request is held by the router,
/// wakes the engine and is answered, and the cold start is reported.
pub async fn an_engine_at_zero_answers_the_next_request_and_reports_the_cold_start(
    f: Arc<Fixture>,
) -> Result<()> {
    let q = Quickstart::deploy(f.cluster().await?, "cold-start").await?;
    let r = cl::scale_from_zero(&q).await?;
    eprintln!("{r:?}");
    ensure!(r.ok, "the request to an engine at zero was not answered: {r:?}");
    ensure!(r.held >= 1.0, "the router did not hold it: {r:?}");
    ensure!(r.reported, "no ColdStart event: {r:?}");
    Ok(())
}
