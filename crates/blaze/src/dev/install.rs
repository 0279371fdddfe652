//! What `blaze dev up` installs: the CRDs, the operator as the install manifest describes it
//! (with the changes a shared loopback network needs), the model claim and the examples.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};

use super::apply::{self, MANAGER};

/// The operator's install manifest (`manifests/install.yaml`).
pub const INSTALL_YAML: &str = include_str!("../../../../manifests/install.yaml");
/// The quickstart (`manifests/examples/quickstart.yaml`), applied when no file is named.
pub const QUICKSTART_YAML: &str = include_str!("../../../../manifests/examples/quickstart.yaml");
/// Port of the operator's dashboard on its pod and on its Service.
pub const DASHBOARD_PORT: u16 = 8090;
/// The dashboard's Service (in the operator's namespace), as the chart names it with
/// `dashboard.enabled`.
pub const DASHBOARD_SERVICE: &str = "blaze-operator-dashboard";
/// The operator's namespace in the install manifest.
pub const OPERATOR_NAMESPACE: &str = "blaze-system";
/// The claim that holds the local model cache.
pub const MODELS_CLAIM: &str = "blaze-models";

/// Applies the CRDs and waits until both are established.
pub async fn crds(client: &Client) -> anyhow::Result<()> {
    let mut names = Vec::new();
    for (_, yaml) in blaze_api::crds::render_all()? {
        let objs = apply::parse(&yaml, "CRD")?;
        apply::apply_all(client, &objs).await?;
        names.extend(objs.iter().map(|o| o.name_any()));
    }
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let deadline = Instant::now() + Duration::from_secs(30);
    for name in names {
        loop {
            let crd = api.get(&name).await?;
            let established = crd
                .status
                .iter()
                .flat_map(|s| s.conditions.iter().flatten())
                .any(|c| c.type_ == "Established" && c.status == "True");
            if established {
                break;
            }
            anyhow::ensure!(Instant::now() < deadline, "CRD {name} not established in 30 s");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Ok(())
}

/// Applies the install manifest, less its CRDs ([`crds`] applied them from this build's
/// types, which a stale rendering must not undo). All pods here share this machine's network,
/// each on its own loopback address, so the operator listens on its pod IP and tells workers
/// and routers to do the same (`0.0.0.0` would take the port on every address). The dashboard
/// is on, as the chart's `dashboard.enabled` turns it on, with its Service.
pub async fn operator(client: &Client) -> anyhow::Result<()> {
    let mut objs = apply::parse(INSTALL_YAML, "manifests/install.yaml")?;
    objs.retain(|o| o.types.as_ref().is_none_or(|t| t.kind != "CustomResourceDefinition"));
    let mut dashboard = None;
    for obj in &mut objs {
        if obj.types.as_ref().is_some_and(|t| t.kind == "Deployment") {
            set_env(obj, "BLAZE_METRICS_LISTEN", "$(POD_IP):8080");
            // Escaped: the operator passes `$(POD_IP)` on to each worker and router pod, where
            // the kubelet expands it to that pod's address.
            set_env(obj, "BLAZE_LISTEN_HOST", "$$(POD_IP)");
            set_env(obj, "BLAZE_DASHBOARD_LISTEN", &format!("$(POD_IP):{DASHBOARD_PORT}"));
            dashboard = Some(dashboard_service(&obj.data["spec"]["selector"]["matchLabels"])?);
        }
    }
    objs.extend(dashboard);
    apply::apply_all(client, &objs).await
}

/// The dashboard's Service over the operator pods that `selector` picks.
fn dashboard_service(selector: &Value) -> anyhow::Result<DynamicObject> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": DASHBOARD_SERVICE, "namespace": OPERATOR_NAMESPACE},
        "spec": {
            "selector": selector,
            "ports": [{"name": "dashboard", "port": DASHBOARD_PORT, "targetPort": DASHBOARD_PORT}],
        },
    }))?)
}

/// Sets (or replaces) an environment variable of the first container of a Deployment.
fn set_env(obj: &mut DynamicObject, name: &str, value: &str) {
    let container = &mut obj.data["spec"]["template"]["spec"]["containers"][0];
    if !container["env"].is_array() {
        container["env"] = json!([]);
    }
    if let Some(env) = container["env"].as_array_mut() {
        env.retain(|e| e["name"] != name);
        env.push(json!({"name": name, "value": value}));
    }
}

/// The embedding model's folder in the model cache (scripts/fetch-models.sh).
const MINILM: &str = "all-MiniLM-L6-v2";

/// The tiny diffusion pipeline's folder in the model cache, written on first use.
pub const TINY_DIFFUSION: &str = "tiny-sd";

/// Provides the claim `blaze-models` in `namespace`, bound to a hostPath volume whose
/// `smollm2/` folder is the model cache `models`, so the quickstart's
/// `pvc://blaze-models/smollm2/...` is the cached file, whose `all-MiniLM-L6-v2/` is the
/// cache's embedding model (the embedding example's `pvc://blaze-models/all-MiniLM-L6-v2`),
/// and whose `tiny-sd/` is a tiny random-weight diffusion pipeline (the diffusion example's
/// `pvc://blaze-models/tiny-sd`), written into the cache by `blaze-tiny-diffusion` the first
/// time.
/// Each namespace gets a volume of its own (`blaze-models` for `default`,
/// `blaze-models-NAMESPACE` otherwise) on the same folder.
pub async fn models_claim(
    client: &Client,
    dir: &Path,
    models: &Path,
    namespace: &str,
) -> anyhow::Result<()> {
    let root = std::path::absolute(dir.join("volumes").join(MODELS_CLAIM))?;
    std::fs::create_dir_all(&root).with_context(|| format!("creating {}", root.display()))?;
    let models = std::path::absolute(models)?;
    if let Err(e) = tiny_diffusion(&models.join(TINY_DIFFUSION)).await {
        println!("note: no tiny diffusion pipeline for the diffusion example: {e:#}");
    }
    let links = [
        ("smollm2", models.clone()),
        (MINILM, models.join(MINILM)),
        (TINY_DIFFUSION, models.join(TINY_DIFFUSION)),
    ];
    for (name, target) in links {
        let link = root.join(name);
        if link.symlink_metadata().is_err() {
            std::os::unix::fs::symlink(&target, &link)
                .with_context(|| format!("linking {} to {}", link.display(), target.display()))?;
        }
    }
    let volume = match namespace {
        "default" => MODELS_CLAIM.to_owned(),
        ns => format!("{MODELS_CLAIM}-{ns}"),
    };
    let pv = json!({
        "apiVersion": "v1", "kind": "PersistentVolume",
        "metadata": {"name": volume, "labels": {"app.kubernetes.io/part-of": "blaze"}},
        "spec": {
            "capacity": {"storage": "10Gi"},
            "accessModes": ["ReadOnlyMany", "ReadWriteOnce"],
            "persistentVolumeReclaimPolicy": "Retain",
            "storageClassName": "",
            "hostPath": {"path": root.display().to_string(), "type": "Directory"},
            "claimRef": {"namespace": namespace, "name": MODELS_CLAIM},
        },
    });
    let pvc = json!({
        "apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": MODELS_CLAIM, "namespace": namespace},
        "spec": {
            "accessModes": ["ReadOnlyMany"],
            "storageClassName": "",
            "volumeName": volume,
            "resources": {"requests": {"storage": "10Gi"}},
        },
    });
    for v in [pv, pvc] {
        let obj: DynamicObject = serde_json::from_value(v)?;
        apply::apply(client, &obj, Duration::from_secs(10)).await?;
    }
    mark_bound(client, &volume, namespace).await;
    Ok(())
}

/// Writes the tiny diffusion pipeline into `dir` unless it is there, with the
/// `blaze-tiny-diffusion` binary of this build: into a folder of its own first, renamed into
/// place when complete, so that two callers at once (or a crash) never leave half a pipeline.
async fn tiny_diffusion(dir: &Path) -> anyhow::Result<()> {
    if dir.join("model_index.json").is_file() {
        return Ok(());
    }
    let binary = blaze_devnode::image::ImageMap::from_env()
        .resolve("blaze-tiny-diffusion")
        .context("finding blaze-tiny-diffusion (built with blaze-worker)")?;
    let part = dir.with_extension(format!("part-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&part);
    let status = tokio::process::Command::new(&binary)
        .arg(&part)
        .args(["sd", "0"])
        .stdout(std::process::Stdio::null())
        .status()
        .await
        .with_context(|| format!("running {}", binary.display()))?;
    anyhow::ensure!(
        status.success(),
        "{} {} exited with {status}",
        binary.display(),
        part.display()
    );
    if std::fs::rename(&part, dir).is_err() {
        // Another caller finished first.
        let _ = std::fs::remove_dir_all(&part);
    }
    anyhow::ensure!(dir.join("model_index.json").is_file(), "{} is not a pipeline", dir.display());
    Ok(())
}

/// Reports the volume and claim bound, as the volume controller of a cluster would.
async fn mark_bound(client: &Client, volume: &str, namespace: &str) {
    use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
    let params = PatchParams::apply(MANAGER).force();
    let pv: Api<PersistentVolume> = Api::all(client.clone());
    let status =
        json!({"apiVersion": "v1", "kind": "PersistentVolume", "status": {"phase": "Bound"}});
    if let Err(e) = pv.patch_status(volume, &params, &Patch::Apply(status)).await {
        tracing::debug!(error = %e, "cannot mark the volume bound");
    }
    let pvc: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), namespace);
    let status: Value = json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "status": {
        "phase": "Bound", "accessModes": ["ReadOnlyMany"], "capacity": {"storage": "10Gi"},
    }});
    if let Err(e) = pvc.patch_status(MODELS_CLAIM, &params, &Patch::Apply(status)).await {
        tracing::debug!(error = %e, "cannot mark the claim bound");
    }
}
