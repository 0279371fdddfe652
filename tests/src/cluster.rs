//! One `blaze dev up` in a folder of its own.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU8, Ordering};

use anyhow::{Context as _, Result, bail};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, ResourceExt};

use crate::{Setup, pods, until};

/// The operator's namespace and leader lease, as the install manifest has them.
const OPERATOR_NS: &str = "blaze-system";
const LEADER_LEASE: &str = "blaze-operator-leader";

/// Each control plane of this process puts its pods on loopback addresses of its own
/// (`127.0.N.1` to `127.0.N.254`), so several can run side by side.
static NEXT_RANGE: AtomicU8 = AtomicU8::new(60);

/// A running `blaze dev up`, stopped with `blaze dev down` when dropped. It holds no client
/// (a client belongs to the async runtime that made it): [`DevCluster::client`] makes one.
pub struct DevCluster {
    child: Mutex<Option<Child>>,
    dir: tempfile::TempDir,
    setup: Setup,
    /// `namespace/name` and local URL of each router `blaze dev up` applied and exposed.
    pub routers: Vec<(String, String)>,
    /// The operator dashboard's local URL, as `blaze dev up` printed it.
    pub dashboard: Option<String>,
}

impl DevCluster {
    /// Starts `blaze dev up` with the quickstart applied (`quickstart`) or with the operator
    /// alone, and waits until the operator is ready (and the quickstart's router exposed).
    /// `BLAZE_KEEP_DEV_DIR` keeps its folder, with every pod's log, afterwards.
    pub async fn start(setup: &Setup, quickstart: bool) -> Result<Self> {
        let keep = std::env::var_os("BLAZE_KEEP_DEV_DIR").is_some();
        let dir = tempfile::Builder::new().prefix("blaze-e2e-").disable_cleanup(keep).tempdir()?;
        if keep {
            eprintln!("development control plane in {}", dir.path().display());
        }
        let n = NEXT_RANGE.fetch_add(1, Ordering::Relaxed);
        let mut cmd = Command::new(&setup.blaze);
        cmd.args(["dev", "up", "--listen", "127.0.0.1:0", "--port", "0"])
            .arg("--pod-addresses")
            .arg(format!("127.0.{n}.1-127.0.{n}.254"))
            .arg("--dir")
            .arg(dir.path())
            .arg("--models")
            .arg(&setup.models)
            .env("BLAZE_BIN_DIR", &setup.bin_dir)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null());
        if !quickstart {
            cmd.arg("--no-examples");
        }
        // Its own log (warnings and errors) stays in its folder with the pods' logs.
        let log = std::fs::File::create(dir.path().join("blaze-dev-up.log"))?;
        cmd.stderr(log);
        let child = cmd.spawn().context("starting blaze dev up")?;
        let mut cluster = Self {
            child: Mutex::new(Some(child)),
            dir,
            setup: setup.clone(),
            routers: vec![],
            dashboard: None,
        };
        let info_path = cluster.dir.path().join("blaze-dev.json");
        (cluster.routers, cluster.dashboard) =
            until("blaze dev up to write its state", 90, async || {
                let info: serde_json::Value =
                    serde_json::from_str(&std::fs::read_to_string(&info_path).ok()?).ok()?;
                let routers: Vec<(String, String)> =
                    serde_json::from_value(info["routers"].clone()).ok()?;
                let dashboard = info["dashboard"].as_str().map(str::to_owned);
                (!quickstart || !routers.is_empty()).then_some((routers, dashboard))
            })
            .await?;
        let client = cluster.client().await?;
        let operator: Api<Pod> = Api::namespaced(client, OPERATOR_NS);
        until("the operator ready", 120, async || {
            let list = operator.list(&ListParams::default()).await.ok()?.items;
            list.iter().any(pods::ready).then_some(())
        })
        .await?;
        Ok(cluster)
    }

    /// The folder `blaze dev up` keeps everything in.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The model cache the cluster serves.
    pub fn models(&self) -> &Path {
        &self.setup.models
    }

    /// The kubeconfig of its API server.
    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.path().join("kubeconfig")
    }

    /// A client of its API server, for the async runtime this is called in.
    pub async fn client(&self) -> Result<Client> {
        let kc = Kubeconfig::read_from(self.kubeconfig())?;
        let config =
            kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await?;
        Ok(Client::try_from(config)?)
    }

    /// Runs kubectl against the cluster: its standard output, or an error with its
    /// standard error.
    pub fn kubectl(&self, args: &[&str]) -> Result<String> {
        let out = Command::new("kubectl")
            .args(args)
            .env("KUBECONFIG", self.kubeconfig())
            .output()
            .context("kubectl must be on the PATH")?;
        if !out.status.success() {
            bail!("kubectl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Deletes the operator's pod and waits until a new one holds the leader lease.
    pub async fn restart_operator(&self) -> Result<()> {
        let client = self.client().await?;
        let pods: Api<Pod> = Api::namespaced(client.clone(), OPERATOR_NS);
        let leases: Api<Lease> = Api::namespaced(client, OPERATOR_NS);
        let old = pods.list(&ListParams::default()).await?.items;
        let old_names: BTreeSet<String> = old.iter().map(|p| p.name_any()).collect();
        for p in &old {
            pods.delete(&p.name_any(), &DeleteParams::default()).await?;
        }
        until("a new operator to lead", 120, async || {
            let holder = leases.get(LEADER_LEASE).await.ok()?.spec?.holder_identity?;
            (!old_names.iter().any(|n| holder.starts_with(n.as_str()))).then_some(())
        })
        .await?;
        Ok(())
    }

    /// `blaze dev down`, as a user stops it; an error carries its output if it fails.
    pub fn down(&self) -> Result<()> {
        let out = Command::new(&self.setup.blaze)
            .args(["dev", "down", "--dir"])
            .arg(self.dir.path())
            .output()
            .context("running blaze dev down")?;
        if let Some(mut child) = self.child.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = child.wait();
        }
        if !out.status.success() {
            bail!("blaze dev down: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(())
    }
}

impl Drop for DevCluster {
    fn drop(&mut self) {
        let child = self.child.get_mut().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(mut child) = child {
            let _ = Command::new(&self.setup.blaze)
                .args(["dev", "down", "--dir"])
                .arg(self.dir.path())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Creates namespace `name` (server-side apply: nothing happens if it exists).
pub async fn namespace(client: &Client, name: &str) -> Result<()> {
    let ns: kube::api::DynamicObject = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name},
    }))?;
    blaze::dev::apply::apply_all(client, std::slice::from_ref(&ns)).await
}

/// Deletes router `router` and engine `engine` in `namespace`, so that their processes take
/// nothing from scenarios that run after.
pub async fn delete_engine_and_router(
    client: &Client,
    namespace: &str,
    engine: &str,
    router: &str,
) -> Result<()> {
    use blaze_api::{engine::BlazeEngine, router::BlazeRouter};
    let dp = DeleteParams::default();
    Api::<BlazeRouter>::namespaced(client.clone(), namespace).delete(router, &dp).await?;
    Api::<BlazeEngine>::namespaced(client.clone(), namespace).delete(engine, &dp).await?;
    Ok(())
}
