use clap::Parser;

use super::*;

fn parse(args: &[String]) -> Args {
    Args::try_parse_from(std::iter::once("blaze-worker".to_owned()).chain(args.iter().cloned()))
        .unwrap_or_else(|e| panic!("{args:?} does not parse: {e}"))
}

/// Every field away from its default: a field that `to_args` forgets (or spells in a way
/// the parser reads differently) comes back as its default and fails the comparison.
fn every_field_set() -> Args {
    Args {
        command: None,
        model: Some("/mnt/models/claim/tiny".into()),
        served_model_name: Some("tiny-chat".into()),
        listen: HostPort::new("10.1.2.3", 8000),
        grpc_listen: Some(HostPort::new("::1", 9000)),
        kind: Kind::Embedding,
        model_format: Some(ModelFormat::Safetensors),
        dtype: Dtype::Bf16,
        quantization: Some(Quantization::Q4K),
        device: Device::Cuda,
        pvc_root: "/data/claims".into(),
        cache_dir: Some("/var/cache/hub".into()),
        weights: Weights::Dual,
        threads: Some(3),
        max_batch_size: 7,
        max_wait_ms: 40,
        max_batch_tokens: 999,
        max_queue: 11,
        default_max_tokens: 12,
        request_timeout_seconds: 13,
        grace_period_seconds: 14,
        stall_timeout_seconds: 15,
        response_cache_memory_bytes: 16,
        response_cache_disk_bytes: 17,
        response_cache_dir: Some("/var/cache/answers".into()),
        response_cache_ttl_seconds: 18,
        response_cache_redis: Some("redis.cache:6379".into()),
        response_cache_redis_password_file: Some("/var/run/secrets/redis/password".into()),
        response_cache_redis_timeout_ms: 19,
        prefix_cache_bytes: 20,
        warm_prompts: vec![
            WarmPrompt { prompt: Some("You are terse.".into()), messages: None },
            WarmPrompt {
                prompt: None,
                messages: Some(vec![WarmMessage {
                    role: "system".into(),
                    content: "Answer in French, \"s'il vous plaît\".".into(),
                }]),
            },
        ],
        attention_slicing: true,
        vae_slicing: true,
        vae_tiling: true,
        cpu_offload: true,
        default_width: 768,
        default_height: 640,
        default_steps: 21,
        max_image_side: 1024,
        max_steps: 22,
        auth_token_dir: Some("/etc/blaze/worker-token".into()),
        log_format: LogFormat::Json,
    }
}

#[test]
fn rendered_arguments_parse_back_to_the_same_settings() {
    let args = every_field_set();
    let defaults = Args::serve("/mnt/models/claim/tiny");
    assert_eq!(parse(&args.to_args()), args);
    assert_eq!(parse(&defaults.to_args()), defaults);
    // Each field differs from its default, so the check above covers all of them.
    let rendered = args.to_args();
    // --warm-prompt is the one flag given once per value.
    let flags: Vec<_> =
        rendered.iter().filter(|a| a.starts_with("--") && *a != "--warm-prompt").collect();
    let mut unique = flags.clone();
    unique.dedup();
    assert_eq!(flags, unique, "a flag is written twice");
    assert_eq!(rendered.iter().filter(|a| *a == "--warm-prompt").count(), 2);
}

#[test]
fn download_arguments_parse_back() {
    let d = DownloadArgs {
        model: "hf://org/name@v2".into(),
        cache_dir: Some("/cache".into()),
        log_format: LogFormat::Json,
    };
    let parsed = parse(&d.to_args());
    assert_eq!(parsed.command, Some(Command::Download(d)));
}

#[test]
fn host_port_spellings() {
    for (text, host, port) in [
        ("0.0.0.0:8080", "0.0.0.0", 8080),
        ("[::1]:80", "::1", 80),
        ("$(POD_IP):8000", "$(POD_IP)", 8000),
    ] {
        let hp: HostPort = text.parse().unwrap();
        assert_eq!((hp.host.as_str(), hp.port), (host, port));
        assert_eq!(hp.to_string(), text);
    }
    for bad in ["8080", ":8080", "::1:80", "host:99999", "[::1:80"] {
        assert!(bad.parse::<HostPort>().is_err(), "{bad}");
    }
}

#[test]
fn combinations_that_make_no_sense_are_refused_naming_the_flag() {
    let mut a = Args::serve("/m");
    assert_eq!(a.validate(), Ok(()));
    a.model_format = Some(ModelFormat::Gguf);
    a.dtype = Dtype::F16;
    assert!(a.validate().unwrap_err().starts_with("--dtype f16"));
    a.dtype = Dtype::Auto;
    a.quantization = Some(Quantization::Q8_0);
    assert!(a.validate().unwrap_err().starts_with("--quantization q8_0"));
    a.model_format = None;
    a.dtype = Dtype::Bf16;
    assert!(a.validate().unwrap_err().contains("--dtype bf16"));
    a.dtype = Dtype::F32;
    assert_eq!(a.validate(), Ok(()));
    a.max_queue = 0;
    assert_eq!(a.validate().unwrap_err(), "--max-queue must be at least 1");
    a.max_queue = 1;
    a.response_cache_disk_bytes = 1 << 20;
    assert_eq!(a.validate().unwrap_err(), "--response-cache-disk-bytes needs --response-cache-dir");
    a.response_cache_dir = Some("/cache".into());
    assert_eq!(a.validate(), Ok(()));
}

#[test]
fn warm_prompts_name_what_is_wrong() {
    let bad = |json: &str| json.parse::<WarmPrompt>().unwrap_err();
    assert!(
        bad(r#"{"prompt": "a", "messages": [{"role": "system", "content": "b"}]}"#)
            .contains("not both")
    );
    assert!(bad("{}").contains("needs `prompt` or `messages`"));
    assert!(bad(r#"{"messages": []}"#).contains("empty"));
    assert!(bad(r#"{"promt": "a"}"#).contains("unknown field `promt`"));
    let mut args = Args::serve("/m");
    args.warm_prompts = vec![r#"{"prompt": "hi"}"#.parse().unwrap()];
    assert_eq!(args.validate().unwrap_err(), "--warm-prompt needs --prefix-cache-bytes");
    args.prefix_cache_bytes = 1 << 20;
    assert_eq!(args.validate(), Ok(()));
}
