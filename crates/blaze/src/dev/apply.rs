//! Server-side apply of YAML documents of any kind, as `kubectl apply --server-side` does.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::core::GroupVersionKind;
use kube::discovery::{self, Scope};
use kube::{Client, ResourceExt};

/// Field manager of everything `blaze dev` applies.
pub const MANAGER: &str = "blaze-dev";

/// The objects of a multi-document YAML text (empty documents skipped).
pub fn parse(text: &str, origin: &str) -> anyhow::Result<Vec<DynamicObject>> {
    let docs: Vec<serde_json::Value> =
        serde_saphyr::from_multiple(text).with_context(|| format!("{origin}: not YAML"))?;
    let mut out = Vec::new();
    for (i, value) in docs.into_iter().enumerate() {
        let obj: DynamicObject = serde_json::from_value(value)
            .with_context(|| format!("{origin}: document {} is not a Kubernetes object", i + 1))?;
        if obj.types.is_none() {
            bail!("{origin}: document {} has no apiVersion/kind", i + 1);
        }
        out.push(obj);
    }
    Ok(out)
}

/// Applies `obj`, waiting up to `wait` for its kind to be served (a CRD just created takes a
/// moment to be established). Namespaced objects without a namespace go to `default`.
pub async fn apply(client: &Client, obj: &DynamicObject, wait: Duration) -> anyhow::Result<()> {
    let types = obj.types.clone().context("object without apiVersion/kind")?;
    let gvk = GroupVersionKind::try_from(&types)
        .with_context(|| format!("bad apiVersion {:?}", types.api_version))?;
    let deadline = Instant::now() + wait;
    let (resource, caps) = loop {
        match discovery::pinned_kind(client, &gvk).await {
            Ok(found) => break found,
            Err(e) if Instant::now() < deadline => {
                tracing::debug!(kind = %gvk.kind, error = %e, "kind not served yet");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => return Err(e).with_context(|| format!("{} is not served", gvk.kind)),
        }
    };
    let name = obj.name_any();
    let api: Api<DynamicObject> = match caps.scope {
        Scope::Cluster => Api::all_with(client.clone(), &resource),
        Scope::Namespaced => {
            let ns = obj.namespace().unwrap_or_else(|| "default".into());
            Api::namespaced_with(client.clone(), &ns, &resource)
        }
    };
    let params = PatchParams::apply(MANAGER).force();
    api.patch(&name, &params, &Patch::Apply(obj))
        .await
        .with_context(|| format!("applying {} {name}", gvk.kind))?;
    Ok(())
}

/// Applies every object in order.
pub async fn apply_all(client: &Client, objs: &[DynamicObject]) -> anyhow::Result<()> {
    for obj in objs {
        apply(client, obj, Duration::from_secs(30)).await?;
    }
    Ok(())
}
