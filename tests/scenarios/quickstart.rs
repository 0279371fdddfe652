//! The quickstart as a newcomer runs it: `blaze dev up` applies it, a chat completion goes
//! through its router, kubectl lists the pods, `blaze dev down` ends every process. On a
//! control plane of its own, since it stops it.

use std::sync::Arc;

use anyhow::{Result, ensure};
use blaze_api::router::BlazeRouter;
use blaze_e2e::pods::{alive, pids};
use blaze_e2e::quickstart::ROUTER;
use blaze_e2e::{DevCluster, Quickstart, http, until};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};

use crate::Fixture;

pub async fn dev_up_serves_a_chat_completion_and_dev_down_stops_every_process(
    f: Arc<Fixture>,
) -> Result<()> {
    let cluster = DevCluster::start(f.setup()?, true).await?;
    let q = Quickstart::applied(&cluster).await?;
    until("the router Ready", 120, async || {
        let r = q.api::<BlazeRouter>().get(ROUTER).await.ok()?;
        blaze_api::conditions::is_true(&r.status?.conditions, "Ready").then_some(())
    })
    .await?;
    let body = r#"{"model": "smollm2", "messages": [{"role": "system", "content": "You are a helpful assistant."}, {"role": "user", "content": "What is the capital of France?"}], "temperature": 0, "max_tokens": 24}"#;
    let answer = until("a chat completion through the router", 60, async || {
        let out = http::request(&q.url, "POST", "/v1/chat/completions", body).await.ok()?;
        out.starts_with("HTTP/1.1 200").then_some(out)
    })
    .await?;
    ensure!(answer.contains("Paris"), "{answer}");
    let listing = cluster.kubectl(&["get", "pods", "-A"])?;
    ensure!(listing.contains("READY") && listing.contains("STATUS"), "{listing}");
    let running = listing.matches("Running").count();
    ensure!(running == 3, "operator, worker, router:\n{listing}");

    let all = pids(&Api::<Pod>::all(q.client.clone()).list(&ListParams::default()).await?.items);
    ensure!(all.len() == 3, "a process for each pod: {all:?}");
    cluster.down()?;
    until("no pod process left", 30, async || all.iter().all(|p| !alive(*p)).then_some(())).await?;
    Ok(())
}
