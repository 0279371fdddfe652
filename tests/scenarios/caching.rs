//! Caches as the engine spec turns them on.

use std::sync::Arc;

use anyhow::{Context as _, Result, ensure};
use blaze_e2e::load::{chat, series};
use blaze_e2e::{Quickstart, http, pods, until};
use serde_json::json;

use crate::Fixture;

/// Shared by the conversations below: well over the router's 256 hashed bytes and about a
/// hundred tokens (six 16-token blocks and more).
const SYSTEM: &str = "You are the on-call assistant of a platform team that runs inference \
    services on Kubernetes. Answer in one sentence. Name the Kubernetes resource involved \
    (Deployment, Pod, Service, PersistentVolumeClaim, ConfigMap or one of the team's own \
    engines and routers), never invent command-line flags, and when a question is about \
    something outside the cluster, say that you do not know rather than guess. Prefer the \
    words the team's documentation uses, and keep every answer short enough to read aloud \
    during an incident call.";

/// With `prefixAware` routing over two workers with the prefix cache on and the system prompt
/// warmed, three conversations sharing that prompt all reach one worker, and each of them
/// reuses the prompt's keys from its cache; the engine reports `CacheReady`.
pub async fn conversations_sharing_a_system_prompt_reach_one_worker_and_reuse_its_prefix(
    f: Arc<Fixture>,
) -> Result<()> {
    let q = Quickstart::deploy(f.cluster().await?, "prefix-cache").await?;
    let warm = [json!({"messages": [{"role": "system", "content": SYSTEM}]})];
    q.patch_engine(json!({
        "replicas": 2,
        "cache": {"prefixCache": true, "prefixCacheBytes": 64 << 20, "warm": warm},
    }))
    .await?;
    q.patch_router(json!({"strategy": "prefixAware"})).await?;
    // Both ready workers run the new spec (warmed before they report ready).
    until("two warmed workers ready", 300, async || {
        let ready = q.ready_workers().await.ok()?;
        let warmed = |p: &k8s_openapi::api::core::v1::Pod| {
            let args = p.spec.as_ref()?.containers.first()?.args.clone()?;
            args.iter().any(|a| a == "--warm-prompt").then_some(())
        };
        (ready.len() == 2 && ready.iter().all(|p| warmed(p).is_some())).then_some(())
    })
    .await?;
    q.serving(2).await?;
    until("CacheReady", 120, async || {
        let engine = q.engine().await.ok()?;
        (pods::condition(&engine, "CacheReady")? == ("True".into(), "Ready".into())).then_some(())
    })
    .await?;

    let workers = q.ready_workers().await?;
    let addresses: Vec<String> = workers
        .iter()
        .map(|p| Some(format!("{}:8000", p.status.as_ref()?.pod_ip.as_ref()?)))
        .collect::<Option<_>>()
        .context("a worker without an address")?;
    let counts = async || -> Result<Vec<(f64, f64)>> {
        let mut out = Vec::new();
        for a in &addresses {
            let m = http::get(a, "/metrics").await?;
            out.push((
                series(&m, "vllm:prefix_cache_queries_total"),
                series(&m, "vllm:prefix_cache_hits_total"),
            ));
        }
        Ok(out)
    };
    let before = counts().await?;
    for user in ["Which object scales the workers?", "Why is my pod pending?", "What is a PVC?"] {
        let body = json!({
            "model": "smollm2",
            "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}],
            "max_tokens": 4,
            "temperature": 0,
        });
        ensure!(chat(&q.url, &body.to_string()).await.ok, "the conversation {user:?} failed");
    }
    let after = counts().await?;
    let grew: Vec<usize> = (0..addresses.len()).filter(|&i| after[i].0 > before[i].0).collect();
    ensure!(grew.len() == 1, "the conversations reached {grew:?} of {addresses:?}");
    let (i, hits) = (grew[0], after[grew[0]].1 - before[grew[0]].1);
    // The system prompt renders to over six blocks; each conversation reuses them.
    ensure!(
        hits >= 3.0 * 96.0,
        "{hits} prompt tokens reused on {} ({before:?} -> {after:?})",
        addresses[i]
    );
    Ok(())
}
