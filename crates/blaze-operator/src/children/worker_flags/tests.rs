use blaze_api::engine::BlazeEngineSpec;
use blaze_worker_cli::{Args, Device, Dtype, HostPort, Kind, LogFormat, ModelFormat, Quantization};
use clap::Parser;

use super::*;

/// A spec that sets every field the API has, each away from its default where it can be.
fn every_field() -> BlazeEngineSpec {
    serde_json::from_value(serde_json::json!({
        "kind": "llm",
        "model": {
            "source": "hf://org/tiny",
            "revision": "v2",
            "format": "safetensors",
            "dtype": "f32",
            "quantization": "q4k"
        },
        "replicas": 3,
        "autoscaling": {"mode": "blaze", "minReplicas": 0, "maxReplicas": 9,
            "targetInFlightPerReplica": 4, "targetLatencyP95Ms": 900, "stableWindowSeconds": 30,
            "panicWindowSeconds": 3, "scaleDownDelaySeconds": 40, "maxScaleUpRate": 3.0,
            "tolerance": 0.2},
        "resources": {"gpus": 2, "gpuResourceName": "amd.com/gpu", "cpu": "3", "memory": "5Gi"},
        "scheduling": {"nodeSelector": {"a": "b"}, "tolerateGpuTaint": false,
            "priorityClassName": "high", "runtimeClassName": "nvidia"},
        "batching": {"maxBatchSize": 7, "maxWaitMs": 40, "maxBatchTokens": 999, "maxQueue": 11},
        "cache": {"memoryBytes": 1048576, "diskBytes": 8388608, "ttlSeconds": 60,
            "prefixCache": true, "prefixCacheBytes": 33554432,
            "warm": [{"prompt": "You are terse."},
                {"messages": [{"role": "system", "content": "Answer in \"French\"."}]}],
            "redis": {"address": "redis.cache:6379", "timeoutMs": 30,
                "passwordSecret": {"name": "redis-auth", "key": "password"}}},
        "recovery": {"maxRestartsBeforeReplace": 2, "unhealthyAfterSeconds": 30},
        "image": "reg/worker:1",
        "podTemplate": {"metadata": {"annotations": {"x": "y"}}}
    }))
    .unwrap()
}

/// The contract: what the operator renders is parsed by the worker's own parser into the
/// settings the spec asked for.
#[test]
fn the_worker_parses_what_the_operator_renders_for_every_field() {
    let spec = every_field();
    let rendered = worker_args(&spec, "hf://org/tiny@v2", Some("/var/cache/hub"), "$(POD_IP)");
    let program = std::iter::once("blaze-worker".to_owned());
    let parsed = Args::try_parse_from(program.chain(rendered.iter().cloned()))
        .unwrap_or_else(|e| panic!("the worker refuses {rendered:?}: {e}"));
    assert_eq!(
        parsed,
        worker_command(&spec, "hf://org/tiny@v2", Some("/var/cache/hub"), "$(POD_IP)")
    );
    assert_eq!(parsed.validate(), Ok(()));
    assert_eq!(parsed.model(), "hf://org/tiny@v2");
    assert_eq!(parsed.cache_dir.as_deref(), Some(std::path::Path::new("/var/cache/hub")));
    assert_eq!(parsed.listen, HostPort::new("$(POD_IP)", 8000));
    assert_eq!(parsed.grpc_listen, Some(parsed.listen.clone()), "gRPC on the HTTP port");
    assert_eq!(parsed.kind, Kind::Llm);
    assert_eq!(parsed.model_format, Some(ModelFormat::Safetensors));
    assert_eq!(parsed.dtype, Dtype::F32);
    assert_eq!(parsed.quantization, Some(Quantization::Q4K));
    assert_eq!(parsed.device, Device::Cuda);
    assert_eq!(
        (parsed.max_batch_size, parsed.max_wait_ms, parsed.max_batch_tokens, parsed.max_queue),
        (7, 40, 999, 11)
    );
    assert_eq!(
        (parsed.response_cache_memory_bytes, parsed.response_cache_disk_bytes),
        (1048576, 8388608)
    );
    assert_eq!(
        parsed.response_cache_dir.as_deref(),
        Some(std::path::Path::new(RESPONSE_CACHE_MOUNT))
    );
    assert_eq!(parsed.response_cache_ttl_seconds, 60);
    assert_eq!(parsed.response_cache_redis.as_deref(), Some("redis.cache:6379"));
    assert_eq!(parsed.response_cache_redis_timeout_ms, 30);
    let password = format!("{REDIS_PASSWORD_MOUNT}/{REDIS_PASSWORD_FILE}");
    assert_eq!(parsed.response_cache_redis_password_file, Some(password.into()));
    assert_eq!(parsed.prefix_cache_bytes, 33554432);
    assert_eq!(parsed.warm_prompts, spec.cache.warm);
    assert_eq!(
        parsed.warm_prompts[1].messages.as_ref().unwrap()[0].content,
        "Answer in \"French\"."
    );
    assert_eq!(parsed.log_format, LogFormat::Json);
}

/// `prefixCacheBytes` has a default, so an engine that never asked for the prefix cache has
/// one in its spec: it must not reach the worker.
#[test]
fn the_prefix_cache_and_its_warm_prompts_reach_the_worker_only_when_turned_on() {
    let mut spec = every_field();
    spec.cache.prefix_cache = false;
    let a = worker_command(&spec, "hf://org/tiny@v2", None, "0.0.0.0");
    assert_eq!((a.prefix_cache_bytes, a.warm_prompts.len()), (0, 0));
    assert_eq!(a.validate(), Ok(()));
    let defaults: BlazeEngineSpec = serde_json::from_value(serde_json::json!({
        "kind": "llm", "model": {"source": "file:///m/tiny.gguf"}
    }))
    .unwrap();
    assert_eq!(defaults.cache.prefix_cache_bytes, 256 << 20);
    let a = worker_command(&defaults, "/m/tiny.gguf", None, "0.0.0.0");
    assert_eq!(a.prefix_cache_bytes, 0);
}

#[test]
fn cpu_engines_compute_on_the_cpu_and_gguf_keeps_its_types() {
    let mut spec = every_field();
    spec.resources.gpus = 0;
    spec.model.source = "file:///m/tiny.gguf".into();
    spec.model.format = None;
    spec.model.dtype = blaze_api::engine::Dtype::Auto;
    spec.model.quantization = None;
    let a = worker_command(&spec, "/m/tiny.gguf", None, "0.0.0.0");
    assert_eq!(a.device, Device::Cpu);
    assert_eq!(a.model_format, Some(ModelFormat::Gguf));
    assert_eq!((a.dtype, a.quantization), (Dtype::Auto, None));
    assert_eq!(a.validate(), Ok(()));
}

/// A diffusion engine's settings reach the worker as its flags, every one away from the
/// default, and parse back.
#[test]
fn diffusion_settings_become_the_workers_flags() {
    let spec: BlazeEngineSpec = serde_json::from_value(serde_json::json!({
        "kind": "diffusion",
        "model": {"source": "pvc://models/tiny-sd", "format": "safetensors"},
        "resources": {"cpu": "2"},
        "batching": {"maxBatchSize": 3},
        "diffusion": {"attentionSlicing": true, "vaeSlicing": true, "vaeTiling": true,
            "cpuOffload": true, "width": 768, "height": 640, "steps": 12,
            "maxImageSide": 1024, "maxSteps": 40}
    }))
    .unwrap();
    let rendered = worker_args(&spec, "/mnt/models/models/tiny-sd", None, "0.0.0.0");
    let program = std::iter::once("blaze-worker".to_owned());
    let parsed = Args::try_parse_from(program.chain(rendered.iter().cloned())).unwrap();
    assert_eq!(parsed, worker_command(&spec, "/mnt/models/models/tiny-sd", None, "0.0.0.0"));
    assert_eq!(parsed.validate(), Ok(()));
    assert_eq!(parsed.kind, Kind::Diffusion);
    assert!(
        parsed.attention_slicing && parsed.vae_slicing && parsed.vae_tiling && parsed.cpu_offload
    );
    assert_eq!((parsed.default_width, parsed.default_height, parsed.default_steps), (768, 640, 12));
    assert_eq!((parsed.max_image_side, parsed.max_steps, parsed.max_batch_size), (1024, 40, 3));
    assert_eq!(parsed.device, Device::Cpu);
    // No spec.diffusion: the API's defaults.
    let bare: BlazeEngineSpec = serde_json::from_value(serde_json::json!({
        "kind": "diffusion", "model": {"source": "pvc://models/tiny-sd"}
    }))
    .unwrap();
    let a = worker_command(&bare, "/m/tiny-sd", None, "0.0.0.0");
    assert!(!a.attention_slicing && !a.cpu_offload);
    assert_eq!(
        (a.default_width, a.default_steps, a.max_image_side, a.max_steps),
        (512, 30, 2048, 150)
    );
    // Other kinds keep the flags' defaults.
    let llm = worker_command(&every_field(), "hf://org/tiny@v2", None, "0.0.0.0");
    assert!(!llm.attention_slicing && !llm.vae_tiling);
}

#[test]
fn the_download_init_container_parses_as_the_download_subcommand() {
    let rendered = download_args("hf://org/tiny@v2", "/cache");
    let program = std::iter::once("blaze-worker".to_owned());
    let parsed = Args::try_parse_from(program.chain(rendered)).unwrap();
    let Some(blaze_worker_cli::Command::Download(d)) = parsed.command else {
        panic!("not the download subcommand")
    };
    assert_eq!(
        (d.model.as_str(), d.cache_dir.unwrap().to_str()),
        ("hf://org/tiny@v2", Some("/cache"))
    );
}
