//! The worker pod: container, probes, security, scheduling and volumes.

use std::collections::BTreeMap;

use blaze_api::engine::{BlazeEngineSpec, SchedulingSpec};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, EmptyDirVolumeSource, HTTPGetAction, KeyToPath,
    PodSecurityContext, PodSpec, Probe, ResourceRequirements, SeccompProfile, SecretVolumeSource,
    SecurityContext, Toleration, Volume,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::model_source::{self, mount};
use super::worker_flags::{self, WORKER_PORT};
use super::worker_token;
use crate::Result;
use crate::labels::WORKER;

/// Name of the init container that fills the hub cache.
pub const DOWNLOAD_CONTAINER: &str = "model-download";
/// Name of the container port (and of the Service port).
pub const HTTP_PORT_NAME: &str = "http";
/// UID and GID the pods run as (the distroless `nonroot` user).
pub const NON_ROOT_ID: i64 = 65532;
/// Seconds a worker may take to load its model before the startup probe gives up. Loading
/// tens of GiB from a network volume and warming up takes minutes; 30 minutes leaves room for
/// the largest models while still replacing a worker that hangs for good.
pub const STARTUP_BUDGET_SECONDS: i32 = 1800;
const STARTUP_PERIOD_SECONDS: i32 = 10;

/// Where a GPU worker's driver keeps the kernels it compiled (in the pod's `/tmp` emptyDir).
pub const CUDA_CACHE_PATH: &str = "/tmp/cuda-cache";

/// The worker pod spec for the engine `name` with `spec`, before the `spec.podTemplate`
/// override.
pub fn worker_pod_spec(
    spec: &BlazeEngineSpec,
    name: &str,
    image: &str,
    listen_host: &str,
    selector: &BTreeMap<String, String>,
) -> Result<PodSpec> {
    let plan = model_source::plan(&spec.model.source, spec.model.revision.as_deref())?;
    let mut volumes = vec![
        memory_dir("dshm", None),
        Volume { name: "tmp".into(), empty_dir: Some(Default::default()), ..Default::default() },
    ];
    let mut mounts = vec![mount("dshm", "/dev/shm", false), mount("tmp", "/tmp", false)];
    volumes.extend(plan.volumes.iter().cloned());
    mounts.extend(plan.mounts.iter().cloned());
    let mut command =
        worker_flags::worker_command(spec, &plan.model_arg, plan.hf_cache.as_deref(), listen_host);
    // Clients ask for the model by the engine's name, as they would for a KServe service.
    command.served_model_name = Some(name.to_owned());
    // Inference needs the engine's token (health and metrics do not): see `worker_token`.
    command.auth_token_dir = Some(worker_token::WORKER_MOUNT.into());
    let args = command.to_args();
    let mut env = super::pod_ip_env(listen_host).unwrap_or_default();
    if spec.resources.gpus > 0 {
        // The driver compiles candle's PTX kernels for the GPU at their first use (the
        // worker's warm-up, before it is ready) and caches the result under
        // CUDA_CACHE_PATH, by default in a home directory the read-only root file system
        // refuses. In the pod's /tmp the cache outlives a container restart, so a restarted
        // worker skips the compiling.
        env.push(k8s_openapi::api::core::v1::EnvVar {
            name: "CUDA_CACHE_PATH".into(),
            value: Some(CUDA_CACHE_PATH.into()),
            ..Default::default()
        });
    }
    let mut worker_mounts = mounts.clone();
    let (token_volume, token_mount) = worker_token::worker_volume(name);
    volumes.push(token_volume);
    worker_mounts.push(token_mount);
    if spec.cache.disk_bytes > 0 {
        volumes.push(response_cache(spec.cache.disk_bytes));
        worker_mounts.push(mount(RESPONSE_CACHE_VOLUME, worker_flags::RESPONSE_CACHE_MOUNT, false));
    }
    if let Some(secret) = spec.cache.redis.as_ref().and_then(|r| r.password_secret.as_ref()) {
        volumes.push(redis_password(&secret.name, &secret.key));
        worker_mounts.push(mount(REDIS_PASSWORD_VOLUME, worker_flags::REDIS_PASSWORD_MOUNT, true));
    }
    let worker = Container {
        name: WORKER.into(),
        image: Some(image.to_owned()),
        args: Some(args),
        env: (!env.is_empty()).then_some(env),
        ports: Some(vec![ContainerPort {
            name: Some(HTTP_PORT_NAME.into()),
            container_port: WORKER_PORT,
            protocol: Some("TCP".into()),
            ..Default::default()
        }]),
        resources: Some(resources(spec)),
        startup_probe: Some(probe(
            "/readyz",
            STARTUP_PERIOD_SECONDS,
            STARTUP_BUDGET_SECONDS / STARTUP_PERIOD_SECONDS,
            5,
        )),
        readiness_probe: Some(probe("/readyz", 5, 3, 2)),
        liveness_probe: Some(probe("/livez", 10, 6, 5)),
        security_context: Some(container_security()),
        volume_mounts: Some(worker_mounts),
        ..Default::default()
    };
    let init = plan.hf_cache.as_deref().map(|dir| Container {
        name: DOWNLOAD_CONTAINER.into(),
        image: Some(image.to_owned()),
        args: Some(worker_flags::download_args(&plan.model_arg, dir)),
        security_context: Some(container_security()),
        volume_mounts: Some(mounts),
        ..Default::default()
    });
    let mut pod = PodSpec {
        containers: vec![worker],
        init_containers: init.map(|c| vec![c]),
        volumes: Some(volumes),
        security_context: Some(pod_security()),
        // Long generations should finish before the pod goes: the worker drains on SIGTERM.
        termination_grace_period_seconds: Some(120),
        enable_service_links: Some(false),
        // Workers never call the Kubernetes API: no token for anything in the pod to steal.
        automount_service_account_token: Some(false),
        ..Default::default()
    };
    scheduling(&mut pod, spec, selector);
    Ok(pod)
}

/// The volume of the disk response cache.
pub const RESPONSE_CACHE_VOLUME: &str = "response-cache";

/// The emptyDir for `bytes` of cached answers. The worker counts each answer in whole 4 KiB
/// blocks, as the node's disk accounting does; the limit leaves an eighth more, and 16 MiB,
/// for answers being written (under temporary names until complete) and the folder itself,
/// so the kubelet never evicts the pod for the cache it was given.
fn response_cache(bytes: i64) -> Volume {
    let limit = bytes.saturating_add(bytes / 8).saturating_add(16 << 20);
    Volume {
        name: RESPONSE_CACHE_VOLUME.into(),
        empty_dir: Some(EmptyDirVolumeSource {
            size_limit: Some(Quantity(limit.to_string())),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The volume of the Redis password.
pub const REDIS_PASSWORD_VOLUME: &str = "redis-password";

/// The Secret `name`'s `key` as the file the worker reads the Redis password from.
fn redis_password(name: &str, key: &str) -> Volume {
    Volume {
        name: REDIS_PASSWORD_VOLUME.into(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(name.to_owned()),
            items: Some(vec![KeyToPath {
                key: key.to_owned(),
                path: worker_flags::REDIS_PASSWORD_FILE.into(),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A memory-backed emptyDir (for `/dev/shm`, which NCCL and tokenizers use).
fn memory_dir(name: &str, size: Option<Quantity>) -> Volume {
    Volume {
        name: name.into(),
        empty_dir: Some(EmptyDirVolumeSource {
            medium: Some("Memory".into()),
            size_limit: size,
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Requests and limits. GPUs are an extended resource: limit and request must be equal, so
/// both are set. Memory is requested and limited; CPU is only requested so workers can burst.
pub fn resources(spec: &BlazeEngineSpec) -> ResourceRequirements {
    let r = &spec.resources;
    let mut requests = BTreeMap::new();
    let mut limits = BTreeMap::new();
    if let Some(cpu) = &r.cpu {
        requests.insert("cpu".to_owned(), cpu.clone());
    }
    if let Some(mem) = &r.memory {
        requests.insert("memory".to_owned(), mem.clone());
        limits.insert("memory".to_owned(), mem.clone());
    }
    if r.gpus > 0 {
        let q = Quantity(r.gpus.to_string());
        requests.insert(r.gpu_resource_name.clone(), q.clone());
        limits.insert(r.gpu_resource_name.clone(), q);
    }
    ResourceRequirements {
        requests: (!requests.is_empty()).then_some(requests),
        limits: (!limits.is_empty()).then_some(limits),
        ..Default::default()
    }
}

fn probe(path: &str, period: i32, failures: i32, timeout: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_owned()),
            port: IntOrString::String(HTTP_PORT_NAME.into()),
            ..Default::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(failures),
        timeout_seconds: Some(timeout),
        ..Default::default()
    }
}

/// Non-root, read-only root filesystem, no privilege escalation, no capabilities.
pub fn container_security() -> SecurityContext {
    SecurityContext {
        run_as_non_root: Some(true),
        read_only_root_filesystem: Some(true),
        allow_privilege_escalation: Some(false),
        capabilities: Some(Capabilities { drop: Some(vec!["ALL".into()]), add: None }),
        seccomp_profile: Some(runtime_default()),
        ..Default::default()
    }
}

/// The pod-level part: a fixed non-root user and group and the runtime's seccomp profile.
pub fn pod_security() -> PodSecurityContext {
    PodSecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(NON_ROOT_ID),
        run_as_group: Some(NON_ROOT_ID),
        fs_group: Some(NON_ROOT_ID),
        seccomp_profile: Some(runtime_default()),
        ..Default::default()
    }
}

fn runtime_default() -> SeccompProfile {
    SeccompProfile { type_: "RuntimeDefault".into(), localhost_profile: None }
}

fn scheduling(pod: &mut PodSpec, spec: &BlazeEngineSpec, selector: &BTreeMap<String, String>) {
    let s: &SchedulingSpec = &spec.scheduling;
    pod.node_selector = (!s.node_selector.is_empty()).then(|| s.node_selector.clone());
    pod.affinity = s.affinity.clone();
    pod.priority_class_name = s.priority_class_name.clone();
    pod.runtime_class_name = s.runtime_class_name.clone();
    let tolerations = tolerations(spec);
    pod.tolerations = (!tolerations.is_empty()).then_some(tolerations);
    if !s.topology_spread_constraints.is_empty() {
        let mut tsc = s.topology_spread_constraints.clone();
        // A constraint without a selector counts no pods; default it to this engine's workers.
        for c in &mut tsc {
            if c.label_selector.is_none() {
                c.label_selector = Some(LabelSelector {
                    match_labels: Some(selector.clone()),
                    ..Default::default()
                });
            }
        }
        pod.topology_spread_constraints = Some(tsc);
    }
}

/// The spec's tolerations plus, for GPU engines, the GPU taint (`KEY:NoSchedule` where KEY is
/// the GPU resource name, as the NVIDIA and AMD device plugins taint GPU nodes) unless the
/// spec turns that off or already tolerates the key.
pub fn tolerations(spec: &BlazeEngineSpec) -> Vec<Toleration> {
    let s = &spec.scheduling;
    let mut t = s.tolerations.clone();
    let key = &spec.resources.gpu_resource_name;
    let wants_gpu_taint = spec.resources.gpus > 0 && s.tolerate_gpu_taint && !key.is_empty();
    if wants_gpu_taint && !t.iter().any(|x| x.key.as_deref() == Some(key.as_str())) {
        t.push(Toleration {
            key: Some(key.clone()),
            operator: Some("Exists".into()),
            effect: Some("NoSchedule".into()),
            ..Default::default()
        });
    }
    t
}
