use blaze_api::BlazeEngine;
use k8s_openapi::api::core::v1::{Container, PodSpec};
use serde_json::json;

use super::*;
use crate::children::manifest_doc;
use crate::children::model_source::{HF_CACHE_MOUNT, HF_CACHE_VOLUME, PVC_MOUNT};
use crate::children::pod::DOWNLOAD_CONTAINER;

/// An engine from a YAML document, as the API server would hand it over.
fn engine(yaml: &str) -> BlazeEngine {
    let mut e: BlazeEngine = manifest_doc(yaml, 0);
    e.metadata.namespace = Some("ml".into());
    e.metadata.uid = Some("uid-1".into());
    e
}

fn hf_gpu() -> BlazeEngine {
    engine(include_str!("../../../../../manifests/examples/engine-llm-hf.yaml"))
}
fn cpu_pvc() -> BlazeEngine {
    engine(include_str!("../../../../../manifests/examples/quickstart.yaml"))
}
fn gguf_file() -> BlazeEngine {
    engine(include_str!("../../../../../manifests/examples/engine-llm-gguf-local.yaml"))
}

fn pod_spec(d: &Deployment) -> &PodSpec {
    d.spec.template.spec.as_ref().unwrap()
}
fn worker_of(d: &Deployment) -> &Container {
    worker(&d.spec.template).unwrap()
}
/// A worker setting from the command line (no setting travels in the environment).
fn arg<'a>(c: &'a Container, flag: &str) -> Option<&'a str> {
    let args = c.args.as_ref().unwrap();
    let i = args.iter().position(|a| a == flag)?;
    Some(args[i + 1].as_str())
}

#[test]
fn gpu_engine_requests_gpus_tolerates_the_taint_and_uses_its_runtime_class() {
    let e = hf_gpu();
    let d = deployment(&e, 3, &Defaults::default()).unwrap();
    assert_eq!(d.metadata.name.as_deref(), Some("qwen3-8b-worker"));
    assert_eq!(d.spec.replicas, Some(3));
    let w = worker_of(&d);
    let res = w.resources.as_ref().unwrap();
    assert_eq!(res.limits.as_ref().unwrap()["nvidia.com/gpu"].0, "2");
    assert_eq!(res.requests.as_ref().unwrap()["nvidia.com/gpu"].0, "2");
    assert_eq!(res.limits.as_ref().unwrap()["memory"].0, "64Gi");
    assert!(!res.limits.as_ref().unwrap().contains_key("cpu"), "CPU is not limited");
    assert_eq!(arg(w, "--device"), Some("cuda"));
    assert_eq!(arg(w, "--dtype"), Some("bf16"));
    let cache = w.env.iter().flatten().find(|e| e.name == "CUDA_CACHE_PATH").unwrap();
    assert_eq!(cache.value.as_deref(), Some(crate::children::pod::CUDA_CACHE_PATH));
    let tmp = w.volume_mounts.iter().flatten().find(|m| m.mount_path == "/tmp");
    assert!(tmp.is_some(), "the cache is in the pod's /tmp");
    let cpu = worker_of(&deployment(&cpu_pvc(), 1, &Defaults::default()).unwrap()).clone();
    assert!(!cpu.env.iter().flatten().any(|e| e.name == "CUDA_CACHE_PATH"));
    let p = pod_spec(&d);
    let tol = p.tolerations.as_ref().unwrap();
    assert!(tol.iter().any(|t| t.key.as_deref() == Some("nvidia.com/gpu")
        && t.effect.as_deref() == Some("NoSchedule")
        && t.operator.as_deref() == Some("Exists")));
    assert_eq!(p.runtime_class_name.as_deref(), Some("nvidia"));
    assert_eq!(
        p.node_selector.as_ref().unwrap()["nvidia.com/gpu.product"],
        "NVIDIA-H100-80GB-HBM3"
    );
    assert_eq!(
        p.topology_spread_constraints.as_ref().unwrap()[0].topology_key,
        "kubernetes.io/hostname"
    );
}

#[test]
fn hf_engine_downloads_once_in_an_init_container_into_the_cache() {
    let d = deployment(&hf_gpu(), 1, &Defaults::default()).unwrap();
    let p = pod_spec(&d);
    let init = &p.init_containers.as_ref().unwrap()[0];
    assert_eq!(init.name, DOWNLOAD_CONTAINER);
    let args = init.args.as_ref().unwrap();
    assert_eq!(args[0], "download");
    assert_eq!(arg(init, "--model"), Some("hf://Qwen/Qwen3-8B@main"));
    assert_eq!(arg(init, "--cache-dir"), Some(HF_CACHE_MOUNT));
    let w = worker_of(&d);
    assert_eq!(arg(w, "--model"), Some("hf://Qwen/Qwen3-8B@main"));
    assert_eq!(arg(w, "--cache-dir"), Some(HF_CACHE_MOUNT));
    let cache = p.volumes.as_ref().unwrap().iter().find(|v| v.name == HF_CACHE_VOLUME).unwrap();
    assert!(cache.empty_dir.is_some());
}

#[test]
fn a_disk_response_cache_gets_a_sized_empty_dir_mounted_in_the_worker_only() {
    let mut e = hf_gpu();
    let d = deployment(&e, 1, &Defaults::default()).unwrap();
    assert_eq!(arg(worker_of(&d), "--response-cache-memory-bytes"), Some("0"));
    assert!(arg(worker_of(&d), "--response-cache-dir").is_none());
    assert!(pod_spec(&d).volumes.as_ref().unwrap().iter().all(|v| v.name != "response-cache"));

    e.spec.cache.memory_bytes = 64 << 20;
    e.spec.cache.disk_bytes = 1 << 30;
    let d = deployment(&e, 1, &Defaults::default()).unwrap();
    let w = worker_of(&d);
    assert_eq!(arg(w, "--response-cache-memory-bytes"), Some("67108864"));
    assert_eq!(arg(w, "--response-cache-disk-bytes"), Some("1073741824"));
    let dir = arg(w, "--response-cache-dir").unwrap();
    let p = pod_spec(&d);
    let vol = p.volumes.as_ref().unwrap().iter().find(|v| v.name == "response-cache").unwrap();
    // The bytes, an eighth more and 16 MiB: room for block rounding and answers being written.
    let limit = vol.empty_dir.as_ref().unwrap().size_limit.as_ref().unwrap();
    assert_eq!(limit.0, ((1i64 << 30) + (1 << 27) + (16 << 20)).to_string());
    let mounted = |c: &Container| {
        c.volume_mounts.iter().flatten().any(|m| m.name == "response-cache" && m.mount_path == dir)
    };
    assert!(mounted(w));
    assert!(!mounted(&p.init_containers.as_ref().unwrap()[0]));
}

#[test]
fn the_prefix_cache_gets_its_bytes_and_warm_prompts_within_the_memory_the_spec_gives() {
    let mut e = hf_gpu();
    let d = deployment(&e, 1, &Defaults::default()).unwrap();
    assert_eq!(arg(worker_of(&d), "--prefix-cache-bytes"), Some("0"));
    assert!(arg(worker_of(&d), "--warm-prompt").is_none());
    let before = worker_of(&d).resources.clone();

    e.spec.cache.prefix_cache = true;
    e.spec.cache.prefix_cache_bytes = 512 << 20;
    e.spec.cache.warm = vec![
        serde_json::from_value(json!({"messages": [{"role": "system", "content": "Be brief."}]}))
            .unwrap(),
    ];
    let d = deployment(&e, 1, &Defaults::default()).unwrap();
    let w = worker_of(&d);
    assert_eq!(arg(w, "--prefix-cache-bytes"), Some("536870912"));
    assert_eq!(
        arg(w, "--warm-prompt"),
        Some(r#"{"messages":[{"role":"system","content":"Be brief."}]}"#)
    );
    // Like the response cache's memory, the prefix cache's counts within spec.resources.memory.
    assert_eq!(w.resources, before);
    assert_eq!(before.unwrap().limits.unwrap()["memory"].0, "64Gi");
}

#[test]
fn a_redis_cache_level_gets_its_address_timeout_and_password_secret_as_a_file() {
    let mut e = hf_gpu();
    e.spec.cache.redis = Some(
        serde_json::from_value(json!({"address": "redis.cache:6379", "timeoutMs": 20,
            "passwordSecret": {"name": "redis-auth", "key": "pw"}}))
        .unwrap(),
    );
    let d = deployment(&e, 1, &Defaults::default()).unwrap();
    let w = worker_of(&d);
    assert_eq!(arg(w, "--response-cache-redis"), Some("redis.cache:6379"));
    assert_eq!(arg(w, "--response-cache-redis-timeout-ms"), Some("20"));
    let file = arg(w, "--response-cache-redis-password-file").unwrap();
    let p = pod_spec(&d);
    let vol = p.volumes.as_ref().unwrap().iter().find(|v| v.name == "redis-password").unwrap();
    let secret = vol.secret.as_ref().unwrap();
    assert_eq!(secret.secret_name.as_deref(), Some("redis-auth"));
    let item = &secret.items.as_ref().unwrap()[0];
    assert_eq!(item.key, "pw");
    let m = w.volume_mounts.iter().flatten().find(|m| m.name == "redis-password").unwrap();
    assert_eq!(format!("{}/{}", m.mount_path, item.path), file);
    assert_eq!(m.read_only, Some(true));
}

#[test]
fn hf_engine_with_a_shared_cache_claim_mounts_the_claim_instead_of_an_empty_dir() {
    let mut e = hf_gpu();
    e.spec.pod_template = Some(json!({"spec": {"volumes": [
        {"name": "model-cache", "persistentVolumeClaim": {"claimName": "hf-cache"}}
    ]}}));
    let d = deployment(&e, 2, &Defaults::default()).unwrap();
    let vols = pod_spec(&d).volumes.as_ref().unwrap();
    let cache: Vec<_> = vols.iter().filter(|v| v.name == HF_CACHE_VOLUME).collect();
    assert_eq!(cache.len(), 1);
    assert!(cache[0].empty_dir.is_none());
    assert_eq!(cache[0].persistent_volume_claim.as_ref().unwrap().claim_name, "hf-cache");
    let init = &pod_spec(&d).init_containers.as_ref().unwrap()[0];
    assert!(init.volume_mounts.as_ref().unwrap().iter().any(|m| m.name == HF_CACHE_VOLUME));
}

#[test]
fn cpu_engine_from_a_claim_has_no_gpu_and_mounts_the_claim_read_only() {
    let d = deployment(&cpu_pvc(), 1, &Defaults::default()).unwrap();
    let w = worker_of(&d);
    let res = w.resources.as_ref().unwrap();
    assert_eq!(res.requests.as_ref().unwrap()["cpu"].0, "1");
    assert!(res.limits.as_ref().unwrap().keys().all(|k| k == "memory"));
    assert_eq!(arg(w, "--device"), Some("cpu"));
    assert_eq!(arg(w, "--model-format"), Some("gguf"));
    assert_eq!(arg(w, "--max-batch-size"), Some("16"));
    assert_eq!(
        arg(w, "--model"),
        Some("/mnt/models/blaze-models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
    );
    let m = w
        .volume_mounts
        .as_ref()
        .unwrap()
        .iter()
        .find(|m| m.mount_path.starts_with(PVC_MOUNT))
        .unwrap();
    assert_eq!(m.mount_path, "/mnt/models/blaze-models");
    assert_eq!(m.read_only, Some(true));
    let p = pod_spec(&d);
    assert!(p.tolerations.is_none(), "no GPU, no GPU toleration");
    assert!(p.init_containers.is_none());
    let served = cpu_pvc().metadata.name.unwrap();
    assert_eq!(arg(w, "--served-model-name"), Some(served.as_str()));
    assert_eq!(arg(w, "--threads"), Some("1"), "one thread per requested CPU");
    assert_eq!(arg(w, "--device"), Some("cpu"));
}

#[test]
fn gguf_file_engine_passes_the_path_and_batching_flags() {
    let d = deployment(&gguf_file(), 1, &Defaults::default()).unwrap();
    let w = worker_of(&d);
    assert_eq!(arg(w, "--model"), Some("file:///models/SmolLM2-135M-Instruct.Q4_1.gguf"));
    assert_eq!(arg(w, "--listen"), Some("0.0.0.0:8000"));
    assert_eq!(arg(w, "--grpc-listen"), Some("0.0.0.0:8000"), "gRPC shares the HTTP port");
    assert_eq!(arg(w, "--kind"), Some("llm"));
    assert_eq!(arg(w, "--model-format"), Some("gguf"));
    assert_eq!(arg(w, "--max-batch-size"), Some("64"));
    assert_eq!(arg(w, "--max-wait-ms"), Some("5"));
    assert_eq!(arg(w, "--max-queue"), Some("512"));
    assert_eq!(arg(w, "--max-batch-tokens"), Some("16384"));
    assert!(w.env.iter().flatten().all(|e| !e.name.starts_with("BLAZE_")));
    assert_eq!(w.image.as_deref(), Some(Defaults::default().worker_cuda_image.as_str()));
}

#[test]
fn the_default_worker_image_follows_the_gpus_and_spec_image_overrides_both() {
    let defaults = Defaults {
        worker_image: "reg/worker:cpu".into(),
        worker_cuda_image: "reg/worker:cuda".into(),
        ..Defaults::default()
    };
    let image = |e: &BlazeEngine| {
        let d = deployment(e, 1, &defaults).unwrap();
        let init = pod_spec(&d).init_containers.iter().flatten().map(|c| c.image.clone());
        let all: Vec<_> = init.chain([worker_of(&d).image.clone()]).collect();
        assert!(all.windows(2).all(|w| w[0] == w[1]), "one image per pod: {all:?}");
        all[0].clone().unwrap()
    };
    assert_eq!(image(&cpu_pvc()), "reg/worker:cpu");
    assert_eq!(image(&hf_gpu()), "reg/worker:cuda", "the download runs the same image");
    let mut gpu = gguf_file();
    gpu.spec.image = Some("mine/worker:1".into());
    assert_eq!(image(&gpu), "mine/worker:1");
    let mut cpu = cpu_pvc();
    cpu.spec.image = Some("mine/worker:2".into());
    assert_eq!(image(&cpu), "mine/worker:2");
    // A tag of the same repository, which the development control plane runs as the same
    // `blaze-worker` binary (it picks binaries by repository name).
    let d = Defaults::default();
    assert_eq!(d.worker_cuda_image, format!("{}-cuda", d.worker_image));
}

#[test]
fn every_engine_gets_hardened_pods_probes_shm_and_a_surge_rollout() {
    for e in [hf_gpu(), cpu_pvc(), gguf_file()] {
        let d = deployment(&e, 1, &Defaults::default()).unwrap();
        let w = worker_of(&d);
        let sc = w.security_context.as_ref().unwrap();
        assert_eq!(sc.run_as_non_root, Some(true));
        assert_eq!(sc.read_only_root_filesystem, Some(true));
        assert_eq!(sc.allow_privilege_escalation, Some(false));
        assert_eq!(
            sc.capabilities.as_ref().unwrap().drop.as_deref(),
            Some(&["ALL".to_owned()][..])
        );
        assert_eq!(sc.seccomp_profile.as_ref().unwrap().type_, "RuntimeDefault");
        let startup = w.startup_probe.as_ref().unwrap();
        let budget = startup.period_seconds.unwrap() * startup.failure_threshold.unwrap();
        assert!(budget >= 1200, "startup budget {budget}s is too short for big models");
        assert_eq!(
            w.readiness_probe.as_ref().unwrap().http_get.as_ref().unwrap().path.as_deref(),
            Some("/readyz")
        );
        assert_eq!(
            w.liveness_probe.as_ref().unwrap().http_get.as_ref().unwrap().path.as_deref(),
            Some("/livez")
        );
        let shm = pod_spec(&d).volumes.as_ref().unwrap().iter().find(|v| v.name == "dshm").unwrap();
        assert_eq!(shm.empty_dir.as_ref().unwrap().medium.as_deref(), Some("Memory"));
        assert!(w.volume_mounts.as_ref().unwrap().iter().any(|m| m.mount_path == "/dev/shm"));
        let ru = d.spec.strategy.as_ref().unwrap().rolling_update.clone().unwrap();
        assert_eq!(ru.max_surge, Some(IntOrString::Int(1)));
        assert_eq!(ru.max_unavailable, Some(IntOrString::Int(0)));
        let owner = &d.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!((owner.kind.as_str(), owner.controller), ("BlazeEngine", Some(true)));
    }
}

#[test]
fn pod_template_override_merges_but_cannot_take_over_managed_fields() {
    let mut e = cpu_pvc();
    e.spec.pod_template = Some(json!({
        "metadata": {"labels": {"team": "ml", "blaze.ai/engine": "other"}, "annotations": {"a": "b"}},
        "spec": {"containers": [
            {"name": "blaze-worker", "args": ["--evil"], "env": [{"name": "HF_ENDPOINT", "value": "http://mirror"}],
             "resources": {"limits": {"ephemeral-storage": "10Gi"}}},
            {"name": "sidecar", "image": "busybox"}
        ]}
    }));
    let d = deployment(&e, 1, &Defaults::default()).unwrap();
    let t = &d.spec.template;
    let meta = t.metadata.as_ref().unwrap();
    assert_eq!(meta.labels.as_ref().unwrap()["team"], "ml");
    assert_eq!(meta.labels.as_ref().unwrap()["blaze.ai/engine"], "smollm2", "selector label wins");
    assert_eq!(meta.annotations.as_ref().unwrap()["a"], "b");
    let w = worker_of(&d);
    assert_eq!(arg(w, "--kind"), Some("llm"), "managed args win");
    assert!(w.env.as_ref().unwrap().iter().any(|e| e.name == "HF_ENDPOINT"));
    assert_eq!(arg(w, "--dtype"), Some("auto"), "ours kept");
    let limits = w.resources.as_ref().unwrap().limits.as_ref().unwrap();
    assert_eq!(limits["ephemeral-storage"].0, "10Gi");
    assert_eq!(limits["memory"].0, "1Gi");
    assert_eq!(t.spec.as_ref().unwrap().containers.len(), 2);
}

/// A volume the override names replaces the generated one of that name whole: the hub cache
/// becomes a shared claim instead of an emptyDir with a claim beside it.
#[test]
fn volumes_are_replaced_whole_by_name() {
    let mut e = hf_gpu();
    e.spec.pod_template = Some(json!({"spec": {"volumes": [
        {"name": HF_CACHE_VOLUME, "persistentVolumeClaim": {"claimName": "hf-cache"}}
    ]}}));
    let d = deployment(&e, 1, &Defaults::default()).unwrap();
    let volumes = pod_spec(&d).volumes.as_ref().unwrap();
    let cache: Vec<_> = volumes.iter().filter(|v| v.name == HF_CACHE_VOLUME).collect();
    assert_eq!(cache.len(), 1);
    assert_eq!(cache[0].persistent_volume_claim.as_ref().unwrap().claim_name, "hf-cache");
    assert!(cache[0].empty_dir.is_none(), "the emptyDir is gone: {:?}", cache[0]);
    let plain = deployment(&hf_gpu(), 1, &Defaults::default()).unwrap();
    assert_eq!(pod_spec(&plain).volumes.as_ref().unwrap().len(), volumes.len(), "others kept");
}

#[test]
fn a_shared_network_namespace_listens_on_the_pod_ip() {
    let defaults = Defaults { listen_host: "$(POD_IP)".into(), ..Defaults::default() };
    let d = deployment(&cpu_pvc(), 1, &defaults).unwrap();
    let w = worker_of(&d);
    assert_eq!(arg(w, "--listen"), Some("$(POD_IP):8000"));
    let env = &w.env.as_ref().unwrap()[0];
    assert_eq!(env.name, "POD_IP");
    let field = env.value_from.as_ref().unwrap().field_ref.as_ref().unwrap();
    assert_eq!(field.field_path, "status.podIP");
    let plain = deployment(&cpu_pvc(), 1, &Defaults::default()).unwrap();
    assert!(worker_of(&plain).env.iter().flatten().all(|e| e.name != "POD_IP"));
}

#[test]
fn service_and_pdb_select_the_workers() {
    let e = cpu_pvc();
    let s = service(&e).unwrap();
    let spec = s.spec.as_ref().unwrap();
    let port = &spec.ports.as_ref().unwrap()[0];
    assert_eq!((port.name.as_deref(), port.port), (Some("http"), 8000));
    assert_eq!(port.target_port, Some(IntOrString::String("http".into())));
    // One port for HTTP/1.1, HTTP/2 and gRPC: proxies that read appProtocol speak h2c to it.
    assert_eq!(port.app_protocol.as_deref(), Some("kubernetes.io/h2c"));
    let d = deployment(&e, 1, &Defaults::default()).unwrap();
    let ports = worker_of(&d).ports.as_ref().unwrap();
    assert_eq!((ports[0].name.as_deref(), ports[0].container_port), (Some("http"), 8000));
    assert_eq!(spec.selector.as_ref().unwrap()["blaze.ai/engine"], "smollm2");
    let p = pdb(&e).unwrap();
    assert_eq!(p.spec.as_ref().unwrap().max_unavailable, Some(IntOrString::Int(1)));
    assert_eq!(p.metadata.owner_references.as_ref().unwrap()[0].name, "smollm2");
    assert_eq!(s.metadata.labels.as_ref().unwrap()["app.kubernetes.io/component"], "engine");
}

#[test]
fn workers_admit_only_routers_and_the_operator_and_carry_no_api_token() {
    let e = cpu_pvc();
    let np = network_policy(&e).unwrap();
    assert_eq!(np.metadata.owner_references.as_ref().unwrap()[0].name, "smollm2");
    let spec = np.spec.unwrap();
    assert_eq!(spec.pod_selector.unwrap().match_labels.unwrap()["blaze.ai/engine"], "smollm2");
    assert_eq!(spec.policy_types.as_deref(), Some(&["Ingress".to_owned()][..]));
    let rules = spec.ingress.unwrap();
    assert_eq!(rules.len(), 1, "one rule: anything else is refused");
    let ports = rules[0].ports.as_ref().unwrap();
    assert_eq!(ports[0].port, Some(IntOrString::Int(8000)));
    let json = serde_json::to_value(rules[0].from.as_ref().unwrap()).unwrap();
    assert_eq!(
        json,
        serde_json::json!([
            {"podSelector": {"matchExpressions": [{"key": "blaze.ai/router", "operator": "Exists"}]}},
            {"namespaceSelector": {}, "podSelector": {"matchLabels": {"app.kubernetes.io/name": "blaze-operator"}}},
        ])
    );
    // The operator's pods carry the label the policy admits (the chart sets it).
    let chart = include_str!("../../../../../charts/blaze/templates/_helpers.tpl");
    assert!(chart.contains("app.kubernetes.io/name: blaze-operator"));
    let d = deployment(&e, 1, &Defaults::default()).unwrap();
    let pod = d.spec.template.spec.unwrap();
    assert_eq!(pod.automount_service_account_token, Some(false));
}

#[test]
fn workers_mount_their_engines_token_and_require_it() {
    let d = deployment(&cpu_pvc(), 1, &Defaults::default()).unwrap();
    let w = worker_of(&d);
    let dir = arg(w, "--auth-token-dir").unwrap();
    let vol = pod_spec(&d).volumes.as_ref().unwrap().iter().find(|v| v.name == "worker-token");
    let secret = vol.unwrap().secret.as_ref().unwrap();
    assert_eq!(secret.secret_name.as_deref(), Some("smollm2-worker-token"));
    assert_eq!(secret.optional, None, "a worker never starts without its token");
    let m = w.volume_mounts.iter().flatten().find(|m| m.name == "worker-token").unwrap();
    assert_eq!((m.mount_path.as_str(), m.read_only), (dir, Some(true)));
    let init = pod_spec(&hf_gpu_deployment()).init_containers.clone().unwrap();
    assert!(init[0].volume_mounts.iter().flatten().all(|m| m.name != "worker-token"));
}

fn hf_gpu_deployment() -> Deployment {
    deployment(&hf_gpu(), 1, &Defaults::default()).unwrap()
}
