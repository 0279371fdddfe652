//! `blaze dev up`, `blaze dev down` and `blaze dev status`: Blaze on its development control
//! plane (the API server, a process kubelet per node, the scheduler and controllers, all in
//! this process; the operator, workers and routers as pods, that is local processes).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub mod apply;
pub mod install;
mod progress;
pub mod redis;
mod run;
mod up;

pub use run::{down, status};
pub use up::up;

/// `blaze dev up`.
#[derive(Debug, clap::Args)]
pub struct UpArgs {
    /// Address of the API server (port 0 picks a free one).
    #[arg(long, env = "BLAZE_DEV_LISTEN", default_value = "127.0.0.1:6443")]
    pub listen: SocketAddr,
    /// Directory for everything the control plane keeps: objects (`state/`), pod files
    /// (`node/`), volumes, the kubeconfig and the model cache (`models/`).
    #[arg(long, env = "BLAZE_DEV_DIR", default_value = ".dev")]
    pub dir: PathBuf,
    /// Nodes to run.
    #[arg(long, env = "BLAZE_DEV_NODES", default_value_t = 1)]
    pub nodes: u32,
    /// `nvidia.com/gpu` capacity of each node. No GPU needs to exist: pods granted devices get
    /// `NVIDIA_VISIBLE_DEVICES`/`CUDA_VISIBLE_DEVICES` naming them.
    #[arg(long, env = "BLAZE_DEV_GPUS_PER_NODE", default_value_t = 4)]
    pub gpus_per_node: u32,
    /// CPU capacity each node declares. Pods are processes sharing this machine, so this is
    /// what the scheduler counts requests against, not a limit: the default leaves room for a
    /// few workers asking for a CPU each on a small machine.
    #[arg(long, env = "BLAZE_DEV_CPUS_PER_NODE", default_value_t = 16)]
    pub cpus_per_node: u32,
    /// Model cache that the claim `blaze-models` serves under `smollm2/` (default `DIR/models`).
    #[arg(long, env = "BLAZE_DEV_MODELS")]
    pub models: Option<PathBuf>,
    /// Manifests to apply once the operator is installed (default: the quickstart).
    #[arg(long = "apply", env = "BLAZE_DEV_APPLY", value_delimiter = ',')]
    pub apply: Vec<PathBuf>,
    /// Apply nothing after the operator.
    #[arg(long, env = "BLAZE_DEV_NO_EXAMPLES", conflicts_with = "apply")]
    pub no_examples: bool,
    /// Do not install the operator (the control plane alone).
    #[arg(long, env = "BLAZE_DEV_NO_OPERATOR")]
    pub no_operator: bool,
    /// First local port on which BlazeRouters' Services are exposed (one port per router).
    #[arg(long, env = "BLAZE_DEV_PORT", default_value_t = 8000)]
    pub port: u16,
    /// Local port of the operator's dashboard (`http://127.0.0.1:PORT`; default 8090, or a
    /// free one when `--port` is 0, so that several control planes run side by side).
    #[arg(long, env = "BLAZE_DEV_DASHBOARD_PORT")]
    pub dashboard_port: Option<u16>,
    /// Loopback addresses for pods, `FIRST-LAST`.
    #[arg(long, env = "BLAZE_DEV_POD_ADDRESSES", default_value = "127.0.1.1-127.0.255.254")]
    pub pod_addresses: String,
    /// Also run a Redis for engines' `spec.cache.redis` (`address: 127.0.0.1:PORT`): the
    /// `redis-server` on PATH (Debian's package `redis-server`), bound to 127.0.0.1, saving
    /// nothing, stopped with the rest.
    #[arg(long, env = "BLAZE_DEV_REDIS")]
    pub redis: bool,
    /// Port of the `--redis` server.
    #[arg(long, env = "BLAZE_DEV_REDIS_PORT", default_value_t = 6379, requires = "redis")]
    pub redis_port: u16,
}

/// `blaze dev down` and `blaze dev status`.
#[derive(Debug, clap::Args)]
pub struct DirArgs {
    /// The directory `blaze dev up` was given.
    #[arg(long, env = "BLAZE_DEV_DIR", default_value = ".dev")]
    pub dir: PathBuf,
}

/// What a running `blaze dev up` writes to `DIR/blaze-dev.json` for `down` and `status`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunInfo {
    /// Its process id.
    pub pid: u32,
    /// The API server's URL.
    pub apiserver: String,
    /// The kubeconfig for kubectl.
    pub kubeconfig: PathBuf,
    /// `router namespace/name` -> local URL of its Service.
    pub routers: Vec<(String, String)>,
    /// Local URL of the operator's dashboard, when the operator runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dashboard: Option<String>,
    /// `HOST:PORT` of the `--redis` server, when one runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis: Option<String>,
}

impl RunInfo {
    /// Where the file lives.
    pub fn path(dir: &Path) -> PathBuf {
        dir.join("blaze-dev.json")
    }

    /// Reads it, if a `blaze dev up` wrote one.
    pub fn read(dir: &Path) -> Option<Self> {
        let text = std::fs::read_to_string(Self::path(dir)).ok()?;
        serde_json::from_str(&text).ok()
    }
}
