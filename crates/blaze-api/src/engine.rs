//! `BlazeEngine`: a fleet of inference workers serving one model.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Affinity, Toleration, TopologySpreadConstraint};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A BlazeEngine runs one model on a set of Blaze inference workers, scheduled onto GPU
/// nodes, and scales them from the load and latency it observes.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "blaze.ai",
    version = "v1alpha1",
    kind = "BlazeEngine",
    plural = "blazeengines",
    singular = "blazeengine",
    shortname = "be",
    category = "blaze",
    namespaced,
    status = "BlazeEngineStatus",
    scale(
        spec_replicas_path = ".spec.replicas",
        status_replicas_path = ".status.replicas",
        label_selector_path = ".status.selector"
    ),
    printcolumn = r#"{"name":"Kind","type":"string","jsonPath":".spec.kind"}"#,
    printcolumn = r#"{"name":"Model","type":"string","jsonPath":".spec.model.source"}"#,
    printcolumn = r#"{"name":"Ready","type":"integer","jsonPath":".status.readyReplicas"}"#,
    printcolumn = r#"{"name":"Desired","type":"integer","jsonPath":".status.desiredReplicas"}"#,
    printcolumn = r#"{"name":"P95","type":"number","description":"p95 request latency in milliseconds","jsonPath":".status.metrics.p95LatencyMs"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "!has(self.diffusion) || self.kind == 'diffusion'",
        "message": "spec.diffusion applies only to engines of kind diffusion: remove it or set spec.kind to diffusion",
        "fieldPath": ".diffusion",
        "reason": "FieldValueForbidden"
    },
    {
        "rule": "self.kind == 'llm' || !has(self.cache) || ((!has(self.cache.memoryBytes) || self.cache.memoryBytes == 0) && (!has(self.cache.diskBytes) || self.cache.diskBytes == 0) && !has(self.cache.redis) && (!has(self.cache.prefixCache) || !self.cache.prefixCache))",
        "message": "embedding and diffusion engines keep no response or prefix cache: remove spec.cache.memoryBytes, diskBytes, redis and prefixCache",
        "fieldPath": ".cache",
        "reason": "FieldValueForbidden"
    },
    {
        "rule": "self.kind != 'diffusion' || !has(self.model.format) || self.model.format == 'safetensors'",
        "message": "diffusion engines load safetensors checkpoints only: set spec.model.format to safetensors",
        "fieldPath": ".model.format",
        "reason": "FieldValueInvalid"
    }
]))]
pub struct BlazeEngineSpec {
    /// What the engine serves: `llm` (text generation), `embedding` (vector embeddings) or
    /// `diffusion` (image generation). Immutable: create a new BlazeEngine to change it.
    #[schemars(extend("x-kubernetes-validations" = [{
        "rule": "self == oldSelf",
        "message": "spec.kind is immutable: create a new BlazeEngine to serve another kind of model"
    }]))]
    pub kind: EngineKind,

    /// The model to load and where it comes from.
    pub model: ModelSpec,

    /// Desired number of workers while `spec.autoscaling.mode` is `off`. With `external`, the
    /// scale subresource (`kubectl scale`, an HPA, KEDA) writes this field. With `blaze` the
    /// operator decides and this field is ignored.
    #[serde(default = "default_replicas")]
    #[schemars(range(min = 0, max = 10000))]
    pub replicas: i32,

    /// How the number of workers follows load.
    #[serde(default)]
    pub autoscaling: AutoscalingSpec,

    /// GPUs, CPU and memory for each worker.
    #[serde(default)]
    pub resources: ResourcesSpec,

    /// Where workers may run.
    #[serde(default)]
    pub scheduling: SchedulingSpec,

    /// How requests are grouped into forward passes.
    #[serde(default)]
    pub batching: BatchingSpec,

    /// Response and prompt-prefix caching in each worker.
    #[serde(default)]
    pub cache: CacheSpec,

    /// Image-generation settings; only for engines of kind `diffusion`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diffusion: Option<DiffusionSpec>,

    /// When a failing worker is replaced rather than restarted in place.
    #[serde(default)]
    pub recovery: RecoverySpec,

    /// Worker container image. Defaults to the operator's own release of `blaze-worker`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub image: Option<String>,

    /// A partial pod template merged (strategic merge) over the one the operator generates,
    /// for what this API does not model: extra containers, volumes, annotations, security
    /// settings. Fields the operator manages (the worker's args, probes, GPU limits) win.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::schema::free_form_object")]
    pub pod_template: Option<serde_json::Value>,
}

fn default_replicas() -> i32 {
    1
}

/// The kind of model an engine serves.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum EngineKind {
    /// Text generation (completions and chat).
    Llm,
    /// Vector embeddings.
    Embedding,
    /// Image generation.
    Diffusion,
}

/// The model to serve.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "!((has(self.format) && self.format == 'gguf') || (!has(self.format) && self.source.lowerAscii().endsWith('.gguf'))) || ((!has(self.dtype) || self.dtype == 'auto') && !has(self.quantization))",
        "message": "GGUF models are quantized already and keep their own weight types: remove spec.model.dtype and spec.model.quantization (or set format to safetensors)",
        "fieldPath": ".quantization",
        "reason": "FieldValueForbidden"
    },
    {
        "rule": "!has(self.quantization) || !has(self.dtype) || self.dtype == 'auto' || self.dtype == 'f32'",
        "message": "quantized weights are multiplied in f32: with spec.model.quantization, leave spec.model.dtype unset, auto or f32",
        "fieldPath": ".dtype",
        "reason": "FieldValueInvalid"
    }
]))]
pub struct ModelSpec {
    /// Where the model comes from: `hf://ORG/NAME` (a Hugging Face hub repository, downloaded
    /// once into a cache volume), `file:///PATH` (a path on the node or in the image, a
    /// directory or a single `.gguf` file) or `pvc://CLAIM/PATH` (a path inside a
    /// PersistentVolumeClaim, mounted read-only).
    #[schemars(length(min = 1, max = 2048))]
    #[schemars(extend("x-kubernetes-validations" = [{
        "rule": "self.matches('^(hf://[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*(/[^@ ]+)?|file:///[^ ]*|pvc://[a-z0-9]([-a-z0-9]*[a-z0-9])?(/[^ ]*)?)$')",
        "message": "spec.model.source must be hf://ORG/NAME, file:///ABSOLUTE/PATH or pvc://CLAIM/PATH (no spaces; put a hub revision in spec.model.revision)",
        "reason": "FieldValueInvalid"
    }]))]
    pub source: String,

    /// Hub revision (branch, tag or commit) for `hf://` sources. Defaults to `main`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    pub revision: Option<String>,

    /// Checkpoint format. When unset, a source ending in `.gguf` is GGUF and anything else is
    /// safetensors.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<ModelFormat>,

    /// Numeric type of safetensors projection weights in memory. `auto` is f32 on CPUs and
    /// bf16 on GPUs; f16 and bf16 halve the weights' memory. On a GPU bf16 weights compute
    /// in bf16 (activations and the KV cache) unless quantized; everything else computes
    /// in f32. Only `auto` for GGUF, whose blocks keep their stored types.
    #[serde(default)]
    pub dtype: Dtype,

    /// Quantize safetensors projection weights when the worker loads them: `q8_0` (8.5 bits
    /// per weight) or `q4k` (4.5 bits; the output head then gets q8_0). Not for GGUF, which
    /// is quantized already.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantization: Option<Quantization>,
}

// The model's format, dtype and quantization are the worker's own flag values: one spelling
// for the CRD and the worker's command line.
pub use blaze_worker_cli::{Dtype, ModelFormat, Quantization};

/// Who decides the number of workers.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum AutoscalingMode {
    /// The Blaze operator, from in-flight requests and latency.
    Blaze,
    /// Something else through the scale subresource (an HPA, KEDA, `kubectl scale`).
    External,
    /// Nobody: `spec.replicas` is the number.
    #[default]
    Off,
}

/// How the number of workers follows load. The policy is Knative's: a stable window for
/// ordinary changes, a short panic window that only scales up when load bursts.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "!has(self.maxReplicas) || self.minReplicas <= self.maxReplicas",
        "message": "autoscaling.minReplicas must not exceed autoscaling.maxReplicas",
        "fieldPath": ".minReplicas",
        "reason": "FieldValueInvalid"
    },
    {
        "rule": "self.mode != 'blaze' || has(self.maxReplicas)",
        "message": "autoscaling.mode blaze needs autoscaling.maxReplicas, the most workers it may start",
        "fieldPath": ".maxReplicas",
        "reason": "FieldValueRequired"
    },
    {
        "rule": "self.mode != 'blaze' || has(self.targetInFlightPerReplica) || has(self.targetLatencyP95Ms)",
        "message": "autoscaling.mode blaze needs a target: set targetInFlightPerReplica, targetLatencyP95Ms or both",
        "reason": "FieldValueRequired"
    },
    {
        "rule": "self.panicWindowSeconds <= self.stableWindowSeconds",
        "message": "autoscaling.panicWindowSeconds must not exceed autoscaling.stableWindowSeconds",
        "fieldPath": ".panicWindowSeconds",
        "reason": "FieldValueInvalid"
    }
]))]
pub struct AutoscalingSpec {
    /// `blaze` (the operator scales), `external` (the scale subresource does) or `off`.
    #[serde(default)]
    pub mode: AutoscalingMode,
    /// Fewest workers. 0 allows scaling to zero when idle.
    #[serde(default = "default_min_replicas")]
    #[schemars(range(min = 0, max = 10000))]
    pub min_replicas: i32,
    /// Most workers. Required when `mode` is `blaze`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 10000))]
    pub max_replicas: Option<i32>,
    /// Requests in flight (queued or running) that one worker should carry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100000))]
    pub target_in_flight_per_replica: Option<i32>,
    /// p95 request latency, in milliseconds, to keep under by adding workers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 3600000))]
    pub target_latency_p95_ms: Option<i32>,
    /// Window, in seconds, over which load is averaged for ordinary decisions.
    #[serde(default = "default_stable_window")]
    #[schemars(range(min = 6, max = 3600))]
    pub stable_window_seconds: i32,
    /// Short window, in seconds, that detects bursts and only ever scales up.
    #[serde(default = "default_panic_window")]
    #[schemars(range(min = 1, max = 600))]
    pub panic_window_seconds: i32,
    /// Seconds a lower recommendation must hold before workers are removed.
    #[serde(default = "default_scale_down_delay")]
    #[schemars(range(min = 0, max = 86400))]
    pub scale_down_delay_seconds: i32,
    /// Largest factor by which one decision may multiply the number of workers.
    #[serde(default = "default_max_scale_up_rate")]
    #[schemars(range(min = 1.0, max = 100.0))]
    pub max_scale_up_rate: f64,
    /// Relative change in load below which nothing is done (0.1 is 10%).
    #[serde(default = "default_tolerance")]
    #[schemars(range(min = 0.0, max = 0.99))]
    pub tolerance: f64,
}

fn default_min_replicas() -> i32 {
    1
}
fn default_stable_window() -> i32 {
    60
}
fn default_panic_window() -> i32 {
    6
}
fn default_scale_down_delay() -> i32 {
    300
}
fn default_max_scale_up_rate() -> f64 {
    2.0
}
fn default_tolerance() -> f64 {
    0.1
}

impl Default for AutoscalingSpec {
    fn default() -> Self {
        Self {
            mode: AutoscalingMode::default(),
            min_replicas: default_min_replicas(),
            max_replicas: None,
            target_in_flight_per_replica: None,
            target_latency_p95_ms: None,
            stable_window_seconds: default_stable_window(),
            panic_window_seconds: default_panic_window(),
            scale_down_delay_seconds: default_scale_down_delay(),
            max_scale_up_rate: default_max_scale_up_rate(),
            tolerance: default_tolerance(),
        }
    }
}

/// Compute resources of one worker.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "self.gpus == 0 || size(self.gpuResourceName) > 0",
    "message": "resources.gpus > 0 needs resources.gpuResourceName, the extended resource to request (for example nvidia.com/gpu)",
    "fieldPath": ".gpuResourceName",
    "reason": "FieldValueRequired"
}]))]
pub struct ResourcesSpec {
    /// GPUs per worker. 0 runs on CPU.
    #[serde(default)]
    #[schemars(range(min = 0, max = 64))]
    pub gpus: i32,
    /// Extended resource name the GPUs are requested under.
    #[serde(default = "default_gpu_resource_name")]
    #[schemars(regex(
        pattern = r"^$|^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
    ))]
    #[schemars(length(max = 253))]
    pub gpu_resource_name: String,
    /// CPU request per worker (limits are left unset so workers can burst).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<Quantity>,
    /// Memory request and limit per worker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<Quantity>,
}

fn default_gpu_resource_name() -> String {
    "nvidia.com/gpu".to_owned()
}

impl Default for ResourcesSpec {
    fn default() -> Self {
        Self { gpus: 0, gpu_resource_name: default_gpu_resource_name(), cpu: None, memory: None }
    }
}

/// Placement of workers.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SchedulingSpec {
    /// Labels a node must carry to run a worker.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    /// Node and pod affinity for workers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,
    /// Taints workers tolerate. The GPU taint (`nvidia.com/gpu:NoSchedule`, or the taint of
    /// `resources.gpuResourceName`) is tolerated by default for engines that ask for GPUs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub tolerations: Vec<Toleration>,
    /// Set false to not add the GPU taint toleration.
    #[serde(default = "default_true")]
    pub tolerate_gpu_taint: bool,
    /// PriorityClass of worker pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority_class_name: Option<String>,
    /// RuntimeClass of worker pods (for example `nvidia`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime_class_name: Option<String>,
    /// How workers spread across zones and nodes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub topology_spread_constraints: Vec<TopologySpreadConstraint>,
}

pub(crate) fn default_true() -> bool {
    true
}

impl Default for SchedulingSpec {
    fn default() -> Self {
        Self {
            node_selector: BTreeMap::new(),
            affinity: None,
            tolerations: Vec::new(),
            tolerate_gpu_taint: true,
            priority_class_name: None,
            runtime_class_name: None,
            topology_spread_constraints: Vec::new(),
        }
    }
}

/// Continuous batching: how running sequences share forward passes.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BatchingSpec {
    /// Most sequences decoded together in one forward pass.
    #[serde(default = "default_max_batch_size")]
    #[schemars(range(min = 1, max = 4096))]
    pub max_batch_size: i32,
    /// Longest time, in milliseconds, a new request waits for others to batch its prefill
    /// with.
    #[serde(default = "default_max_wait_ms")]
    #[schemars(range(min = 0, max = 10000))]
    pub max_wait_ms: i32,
    /// Most prompt tokens prefilled in one pass between two decode steps: bounds how long
    /// running sequences stall when new ones arrive.
    #[serde(default = "default_max_batch_tokens")]
    #[schemars(range(min = 16, max = 10000000))]
    pub max_batch_tokens: i32,
    /// Most requests waiting for admission; beyond it requests are refused at once with 429
    /// (HTTP) or RESOURCE_EXHAUSTED (gRPC) so clients and routers can go elsewhere.
    #[serde(default = "default_max_queue")]
    #[schemars(range(min = 1, max = 1000000))]
    pub max_queue: i32,
}

fn default_max_batch_size() -> i32 {
    32
}
fn default_max_wait_ms() -> i32 {
    5
}
fn default_max_batch_tokens() -> i32 {
    16384
}
fn default_max_queue() -> i32 {
    256
}

impl Default for BatchingSpec {
    fn default() -> Self {
        Self {
            max_batch_size: default_max_batch_size(),
            max_wait_ms: default_max_wait_ms(),
            max_batch_tokens: default_max_batch_tokens(),
            max_queue: default_max_queue(),
        }
    }
}

/// Caching in each worker. Answers to deterministic requests (greedy, or with a seed) are kept
/// in memory, on the pod's disk and in a Redis the workers share, so the same request is
/// answered without the model. With `prefixCache`, the KV blocks of recent prompts are kept in
/// the worker's memory, so a request that shares a prefix with an earlier one (a system
/// prompt, a conversation's history) skips prefilling that prefix.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "!has(self.warm) || size(self.warm) == 0 || (has(self.prefixCache) && self.prefixCache)",
    "message": "spec.cache.warm prefills the prefix cache: set spec.cache.prefixCache to true, or remove spec.cache.warm",
    "fieldPath": ".warm",
    "reason": "FieldValueForbidden"
}]))]
pub struct CacheSpec {
    /// Bytes of the worker's memory for cached answers (least recently used evicted first);
    /// they count within the container's memory. 0 disables.
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub memory_bytes: i64,
    /// Bytes of disk for cached answers, in an emptyDir sized for them; they outlive a
    /// restart of the worker container. 0 disables.
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub disk_bytes: i64,
    /// Seconds a cached response stays valid.
    #[serde(default = "default_ttl_seconds")]
    #[schemars(range(min = 1, max = 2592000))]
    pub ttl_seconds: i32,
    /// Keep the KV blocks of recent prompts in the worker's memory, so a request that shares a
    /// prefix with an earlier one skips prefilling it (`prefixCacheBytes` bounds them). Any
    /// request benefits, sampled or not; answers are the same as without it. A router with
    /// strategy `prefixAware` sends prompts that share a prefix to the same worker.
    #[serde(default)]
    pub prefix_cache: bool,
    /// Bytes of the worker's memory for the prefix cache's KV blocks (least recently used
    /// evicted first, the ends of prompts before their beginnings); they count within the
    /// container's memory, so leave room for them in `spec.resources.memory`. Only with
    /// `prefixCache`.
    #[serde(default = "default_prefix_cache_bytes")]
    #[schemars(range(min = 1048576))]
    pub prefix_cache_bytes: i64,
    /// Prompts each worker prefills into its prefix cache before it reports ready (typically
    /// the system prompts conversations share), so the first requests that start with them
    /// skip their prefill too. Needs `prefixCache`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub warm: Vec<WarmPrompt>,
    /// Redis shared by the engine's workers as a third level: an answer one worker computed
    /// is served by the others. Redis bounds and evicts it (its `maxmemory`). A Redis that is
    /// down or slow costs a request at most `timeoutMs`, never an error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis: Option<RedisCacheSpec>,
}

// A warm prompt is the worker's own `--warm-prompt` value: one spelling for the CRD and the
// worker's command line, and the worker's check of it is the CRD's rule.
pub use blaze_worker_cli::{WarmMessage, WarmPrompt};

/// Redis for the response cache.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RedisCacheSpec {
    /// `HOST:PORT`, for example `redis.cache.svc:6379`.
    #[schemars(length(min = 3, max = 261), regex(pattern = r"^[^\s:/]+:[0-9]{1,5}$"))]
    pub address: String,
    /// The password (`AUTH`): a key of a Secret in the engine's namespace, mounted into the
    /// workers (a rotated Secret is used for new connections).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_secret: Option<SecretKeySpec>,
    /// Milliseconds a Redis command may take, connecting included, before it counts as a
    /// miss (Redis is then left alone for a second).
    #[serde(default = "default_redis_timeout_ms")]
    #[schemars(range(min = 1, max = 10000))]
    pub timeout_ms: i32,
}

/// One key of a Secret in the resource's namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeySpec {
    /// The Secret's name.
    #[schemars(length(min = 1, max = 253), regex(pattern = crate::router::SECRET_NAME))]
    pub name: String,
    /// The key within it.
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[-._a-zA-Z0-9]+$"))]
    pub key: String,
}

fn default_ttl_seconds() -> i32 {
    300
}

fn default_redis_timeout_ms() -> i32 {
    50
}

/// 256 MiB: the keys and values of about 2,000 prompt tokens of an 8B model with grouped-query
/// attention in bf16 (32 layers x 8 KV heads x 128 x 2 x 2 bytes = 128 KiB a token), a few
/// system prompts; over 5,000 for SmolLM2-135M even in f32 (45 KiB a token). Small enough to
/// fit beside the model in the memory a worker is usually given.
fn default_prefix_cache_bytes() -> i64 {
    256 << 20
}

impl Default for CacheSpec {
    fn default() -> Self {
        Self {
            memory_bytes: 0,
            disk_bytes: 0,
            ttl_seconds: default_ttl_seconds(),
            prefix_cache: false,
            prefix_cache_bytes: default_prefix_cache_bytes(),
            warm: Vec::new(),
            redis: None,
        }
    }
}

/// Image-generation settings.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "self.width <= self.maxImageSide && self.height <= self.maxImageSide",
        "message": "spec.diffusion.width and height must not exceed spec.diffusion.maxImageSide",
        "fieldPath": ".maxImageSide",
        "reason": "FieldValueInvalid"
    },
    {
        "rule": "self.steps <= self.maxSteps",
        "message": "spec.diffusion.steps must not exceed spec.diffusion.maxSteps",
        "fieldPath": ".steps",
        "reason": "FieldValueInvalid"
    }
]))]
pub struct DiffusionSpec {
    /// Compute attention for half of a block's heads at a time: less memory for large
    /// images, somewhat slower.
    #[serde(default)]
    pub attention_slicing: bool,
    /// Decode a batch's images one at a time to cut peak memory.
    #[serde(default)]
    pub vae_slicing: bool,
    /// Decode images larger than the autoencoder was trained at in overlapping tiles, blended
    /// where they meet: the decoder's memory grows with the tile, not the image.
    #[serde(default)]
    pub vae_tiling: bool,
    /// Keep each component (text encoders, UNet, autoencoder) on the device only while it
    /// runs: the GPU holds one component's weights at a time, at the cost of moving them for
    /// every batch.
    #[serde(default)]
    pub cpu_offload: bool,
    /// Default image width in pixels (a multiple of 8).
    #[serde(default = "default_image_side")]
    #[schemars(range(min = 64, max = 4096), extend("multipleOf" = 8))]
    pub width: i32,
    /// Default image height in pixels (a multiple of 8).
    #[serde(default = "default_image_side")]
    #[schemars(range(min = 64, max = 4096), extend("multipleOf" = 8))]
    pub height: i32,
    /// Default number of denoising steps.
    #[serde(default = "default_steps")]
    #[schemars(range(min = 1, max = 500))]
    pub steps: i32,
    /// The largest width or height a request may ask for, in pixels.
    #[serde(default = "default_max_image_side")]
    #[schemars(range(min = 64, max = 8192))]
    pub max_image_side: i32,
    /// The most denoising steps a request may ask for.
    #[serde(default = "default_max_steps")]
    #[schemars(range(min = 1, max = 1000))]
    pub max_steps: i32,
}

impl Default for DiffusionSpec {
    fn default() -> Self {
        Self {
            attention_slicing: false,
            vae_slicing: false,
            vae_tiling: false,
            cpu_offload: false,
            width: default_image_side(),
            height: default_image_side(),
            steps: default_steps(),
            max_image_side: default_max_image_side(),
            max_steps: default_max_steps(),
        }
    }
}

fn default_max_image_side() -> i32 {
    2048
}
fn default_max_steps() -> i32 {
    150
}

fn default_image_side() -> i32 {
    512
}
fn default_steps() -> i32 {
    30
}

/// When a failing worker is replaced.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RecoverySpec {
    /// Container restarts after which the pod is deleted and replaced (a fresh node or GPU
    /// may cure what restarts in place do not).
    #[serde(default = "default_max_restarts")]
    #[schemars(range(min = 1, max = 1000))]
    pub max_restarts_before_replace: i32,
    /// Seconds a started worker may stay unready before it is replaced.
    #[serde(default = "default_unhealthy_after")]
    #[schemars(range(min = 10, max = 86400))]
    pub unhealthy_after_seconds: i32,
}

fn default_max_restarts() -> i32 {
    5
}
fn default_unhealthy_after() -> i32 {
    300
}

impl Default for RecoverySpec {
    fn default() -> Self {
        Self {
            max_restarts_before_replace: default_max_restarts(),
            unhealthy_after_seconds: default_unhealthy_after(),
        }
    }
}

/// What the operator observed of an engine.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BlazeEngineStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, `ModelLoaded`, `Scaling`, `Degraded` and `Unschedulable`; `CacheReady` while
    /// `spec.cache` turns a cache on.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// Worker pods that exist.
    #[serde(default)]
    pub replicas: i32,
    /// Worker pods that are ready to serve.
    #[serde(default)]
    pub ready_replicas: i32,
    /// Workers the operator wants, after autoscaling.
    #[serde(default)]
    pub desired_replicas: i32,
    /// Label selector of the worker pods, in string form, for the scale subresource.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
    /// When the number of workers last changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_scale_time: Option<Time>,
    /// Load and latency observed across workers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<EngineMetrics>,
}

/// Load and latency of an engine, aggregated over its workers.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EngineMetrics {
    /// Requests queued or running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_flight: Option<f64>,
    /// Median request latency in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p50_latency_ms: Option<f64>,
    /// 95th percentile request latency in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p95_latency_ms: Option<f64>,
    /// 95th percentile time to first token in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttft_p95_ms: Option<f64>,
    /// Generated tokens per second across workers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_per_second: Option<f64>,
    /// Fraction of requests that failed (0 to 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_rate: Option<f64>,
}

/// Condition types of a BlazeEngine.
pub mod condition_types {
    /// Enough workers are ready to serve.
    pub const READY: &str = "Ready";
    /// The model loaded in at least one worker.
    pub const MODEL_LOADED: &str = "ModelLoaded";
    /// The number of workers is changing.
    pub const SCALING: &str = "Scaling";
    /// Something is wrong but the engine may still serve.
    pub const DEGRADED: &str = "Degraded";
    /// Workers cannot be placed on any node.
    pub const UNSCHEDULABLE: &str = "Unschedulable";
    /// Every ready worker reports the caches `spec.cache` asks for working (present only
    /// while `spec.cache` turns one on).
    pub const CACHE_READY: &str = "CacheReady";
}

impl ModelSpec {
    /// The checkpoint format, from `format` or else from the source's file name.
    pub fn effective_format(&self) -> ModelFormat {
        self.format.unwrap_or_else(|| {
            if self.source.to_ascii_lowercase().ends_with(".gguf") {
                ModelFormat::Gguf
            } else {
                ModelFormat::Safetensors
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minimal_spec_deserialises_with_the_schema_defaults() {
        let spec: BlazeEngineSpec = serde_json::from_value(serde_json::json!({
            "kind": "llm",
            "model": {"source": "file:///models/smollm2.gguf"}
        }))
        .unwrap();
        assert_eq!(spec.replicas, 1);
        assert_eq!(spec.autoscaling, AutoscalingSpec::default());
        assert_eq!(spec.autoscaling.stable_window_seconds, 60);
        assert_eq!(spec.resources.gpu_resource_name, "nvidia.com/gpu");
        assert_eq!(spec.batching.max_queue, 256);
        assert!(!spec.cache.prefix_cache);
        assert_eq!(spec.cache.prefix_cache_bytes, 256 << 20);
        assert!(spec.cache.warm.is_empty());
        assert!(spec.scheduling.tolerate_gpu_taint);
        assert_eq!(spec.model.effective_format(), ModelFormat::Gguf);
    }

    #[test]
    fn warm_prompts_are_the_workers_own_values() {
        let cache: CacheSpec = serde_json::from_value(serde_json::json!({
            "prefixCache": true,
            "warm": [{"prompt": "Be brief."},
                {"messages": [{"role": "system", "content": "You are a helpful assistant."}]}]
        }))
        .unwrap();
        let flags: Vec<String> = cache.warm.iter().map(ToString::to_string).collect();
        assert_eq!(flags[0], r#"{"prompt":"Be brief."}"#);
        for (flag, warm) in flags.iter().zip(&cache.warm) {
            assert_eq!(&flag.parse::<WarmPrompt>().unwrap(), warm, "the worker reads it back");
        }
        // An empty list is left out, as written by a user who never set it.
        let json = serde_json::to_value(CacheSpec::default()).unwrap();
        assert!(json.get("warm").is_none(), "{json}");
    }

    #[test]
    fn format_is_inferred_from_the_source_unless_given() {
        let mut m = ModelSpec {
            source: "hf://org/name".into(),
            revision: None,
            format: None,
            dtype: Dtype::Auto,
            quantization: None,
        };
        assert_eq!(m.effective_format(), ModelFormat::Safetensors);
        m.format = Some(ModelFormat::Gguf);
        assert_eq!(m.effective_format(), ModelFormat::Gguf);
    }
}
