//! The operator benchmark: create many BlazeEngines (with no workers, so no model process
//! starts), run the engine controller in this process, and measure the time until every
//! engine's status describes its current generation, and this process's peak memory. Meant
//! for `blaze bench operator` against the development control plane or a real cluster. It
//! creates and deletes BlazeEngines itself, so it needs more rights than the operator's RBAC.

use std::sync::Arc;
use std::time::{Duration, Instant};

use blaze_api::BlazeEngine;
use futures::{StreamExt, TryStreamExt};
use kube::api::{Api, DeleteParams, ListParams, PostParams};

use crate::children::Defaults;
use crate::controller::Context;
use crate::metrics::Metrics;
use crate::{Error, Result};

/// Label on every engine the benchmark creates, so they can be found and removed.
const BENCH_LABEL: &str = "blaze.ai/bench";

/// What the benchmark measured.
#[derive(Clone, Debug, PartialEq)]
pub struct Report {
    /// Engines created.
    pub engines: usize,
    /// Seconds from the first create until every engine was reconciled.
    pub seconds: f64,
    /// Peak resident memory of this process (controller, caches and the benchmark's own
    /// client), in bytes, when the platform reports it.
    pub peak_rss_bytes: Option<u64>,
}

/// An engine for the benchmark: replicas 0, so reconciling creates every child but no pod.
fn bench_engine(i: usize) -> Result<BlazeEngine> {
    Ok(serde_json::from_value(serde_json::json!({
        "apiVersion": "blaze.ai/v1alpha1",
        "kind": "BlazeEngine",
        "metadata": {"name": format!("bench-{i:05}"), "labels": {BENCH_LABEL: "true"}},
        "spec": {"kind": "llm", "model": {"source": "file:///models/bench.gguf"}, "replicas": 0}
    }))?)
}

/// Runs the benchmark with `n` engines in `namespace` and `concurrency` reconciles at once,
/// giving up after `deadline`.
pub async fn run(
    client: kube::Client,
    namespace: &str,
    n: usize,
    concurrency: u16,
    deadline: Duration,
) -> Result<Report> {
    let api: Api<BlazeEngine> = Api::namespaced(client.clone(), namespace);
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = Metrics::new(&mut registry);
    let history = Arc::new(crate::history::History::new(metrics.objects.clone()));
    let ctx = Context::new(
        client,
        Defaults::default(),
        metrics,
        history,
        None,
        Some(namespace.to_owned()),
        concurrency,
    );
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let controller = tokio::spawn(crate::controller::engine::run(Arc::clone(&ctx), async {
        let _ = stop_rx.await;
    }));
    let start = Instant::now();
    // Each created engine comes back whole: drop it at once, so the benchmark's own
    // bookkeeping does not weigh on the memory it reports.
    futures::stream::iter(0..n)
        .map(Ok)
        .try_for_each_concurrent(32, |i| {
            let api = api.clone();
            async move {
                api.create(&PostParams::default(), &bench_engine(i)?).await?;
                Ok::<(), Error>(())
            }
        })
        .await?;
    let lp = ListParams::default().labels(&format!("{BENCH_LABEL}=true"));
    let done = loop {
        if count_reconciled(&api, &lp).await? >= n {
            break true;
        }
        if start.elapsed() > deadline {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let seconds = start.elapsed().as_secs_f64();
    let _ = stop_tx.send(());
    let _ = controller.await;
    // Read before the clean-up: the API answers a collection delete with every deleted
    // engine, which would count the benchmark's own clean-up as the operator's peak.
    let peak_rss_bytes = peak_rss();
    api.delete_collection(&DeleteParams::default(), &lp).await?;
    if !done {
        return Err(Error::Timeout(format!("not every engine was reconciled within {deadline:?}")));
    }
    Ok(Report { engines: n, seconds, peak_rss_bytes })
}

/// How many of the listed engines are reconciled, read a page at a time so that the
/// benchmark's own polling does not weigh on the memory it reports.
async fn count_reconciled(api: &Api<BlazeEngine>, lp: &ListParams) -> Result<usize> {
    let mut count = 0;
    let mut page = lp.clone().limit(crate::controller::LIST_PAGE);
    loop {
        let list = api.list(&page).await?;
        count += list.items.iter().filter(|e| reconciled(e)).count();
        match list.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(token) => page = page.continue_token(&token),
            None => return Ok(count),
        }
    }
}

/// Whether an engine's status describes its current generation.
fn reconciled(e: &BlazeEngine) -> bool {
    let status_gen = e.status.as_ref().and_then(|s| s.observed_generation);
    status_gen.is_some() && status_gen == e.metadata.generation
}

/// This process's peak resident memory, from `/proc/self/status` (Linux).
fn peak_rss() -> Option<u64> {
    parse_vm_hwm(&std::fs::read_to_string("/proc/self/status").ok()?)
}

/// The `VmHWM` line of a `/proc/PID/status` text, in bytes.
fn parse_vm_hwm(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bench_engines_start_no_worker_and_reconciled_means_current_generation() {
        let mut e = bench_engine(7).unwrap();
        assert_eq!(e.metadata.name.as_deref(), Some("bench-00007"));
        assert_eq!(e.spec.replicas, 0);
        e.metadata.generation = Some(2);
        assert!(!reconciled(&e));
        e.status = Some(blaze_api::BlazeEngineStatus {
            observed_generation: Some(1),
            ..Default::default()
        });
        assert!(!reconciled(&e));
        e.status.as_mut().unwrap().observed_generation = Some(2);
        assert!(reconciled(&e));
    }

    #[test]
    fn peak_memory_is_read_from_proc() {
        let text = "Name:\tblaze\nVmPeak:\t  900 kB\nVmHWM:\t   51200 kB\nVmRSS:\t 40000 kB\n";
        assert_eq!(parse_vm_hwm(text), Some(51200 * 1024));
        assert_eq!(parse_vm_hwm("Name: x\n"), None);
        if cfg!(target_os = "linux") {
            assert!(peak_rss().unwrap() > 1024 * 1024, "a test process uses more than 1 MiB");
        }
    }
}
