//! Engines that cannot run say why in their status.

use std::sync::Arc;

use anyhow::{Result, ensure};
use blaze_api::engine::BlazeEngine;
use blaze_e2e::pods::condition;
use blaze_e2e::{cluster, until};
use kube::api::Api;

use crate::Fixture;

/// An engine in a new namespace `ns` from the YAML `spec`.
async fn engine(f: &Fixture, ns: &str, name: &str, spec: &str) -> Result<Api<BlazeEngine>> {
    let client = f.cluster().await?.client().await?;
    cluster::namespace(&client, ns).await?;
    let engines: Api<BlazeEngine> = Api::namespaced(client, ns);
    let yaml = format!(
        "apiVersion: blaze.ai/v1alpha1\nkind: BlazeEngine\nmetadata: {{name: {name}}}\nspec: {spec}\n"
    );
    engines.create(&Default::default(), &serde_saphyr::from_str(&yaml)?).await?;
    Ok(engines)
}

/// An engine asking for more GPUs than any node has is Unschedulable, with the reason.
pub async fn more_gpus_than_any_node_has_is_unschedulable(f: Arc<Fixture>) -> Result<()> {
    let spec = "{kind: llm, model: {source: 'file:///models/greedy.gguf'}, resources: {gpus: 8}}";
    let engines = engine(&f, "unschedulable", "greedy", spec).await?;
    let (_, reason) = until("the engine Unschedulable", 60, async || {
        let e = engines.get("greedy").await.ok()?;
        condition(&e, "Unschedulable").filter(|(s, _)| s == "True")
    })
    .await?;
    ensure!(reason == "InsufficientGPU", "reason {reason}");
    Ok(())
}
