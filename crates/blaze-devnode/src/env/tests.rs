use super::*;
use k8s_openapi::api::core::v1::{
    ConfigMap, ConfigMapKeySelector, EnvVarSource, ObjectFieldSelector, VolumeMount,
};

fn pod() -> PodIdentity {
    PodIdentity {
        namespace: "ns".into(),
        name: "web-1".into(),
        uid: "u1".into(),
        node_name: "node-0".into(),
        pod_ip: Ipv4Addr::new(127, 0, 1, 9),
        service_account: "default".into(),
    }
}

fn var(name: &str, value: &str) -> EnvVar {
    EnvVar { name: name.into(), value: Some(value.into()), ..Default::default() }
}

fn from(name: &str, source: EnvVarSource) -> EnvVar {
    EnvVar { name: name.into(), value_from: Some(source), ..Default::default() }
}

#[test]
fn env_has_downward_api_references_and_expansion() {
    let dir = tempfile::tempdir().unwrap();
    let mounts = MountTable::create(dir.path(), "c", &[]).unwrap();
    let mut sources = PodSources::default();
    sources.config_maps.insert(
        "cfg".into(),
        ConfigMap {
            data: Some([("level".to_string(), "debug".to_string())].into()),
            ..Default::default()
        },
    );
    let container = Container {
        name: "c".into(),
        image: Some("blaze-worker:v1".into()),
        env: Some(vec![
            var("PORT", "8080"),
            var("ADDR", "$(POD_IP):$(PORT)"),
            from(
                "NS",
                EnvVarSource {
                    field_ref: Some(ObjectFieldSelector {
                        field_path: "metadata.namespace".into(),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
            ),
            from(
                "LEVEL",
                EnvVarSource {
                    config_map_key_ref: Some(ConfigMapKeySelector {
                        name: "cfg".into(),
                        key: "level".into(),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
            ),
        ]),
        ..Default::default()
    };
    let extra = [("CUDA_VISIBLE_DEVICES".to_string(), "0,1".to_string())];
    let env = container_env(&pod(), &container, &sources, &extra, &mounts).unwrap();
    assert_eq!(env.get("ADDR"), Some("127.0.1.9:8080"));
    assert_eq!(env.get("NS"), Some("ns"));
    assert_eq!(env.get("LEVEL"), Some("debug"));
    assert_eq!(env.get("POD_NAME"), Some("web-1"));
    assert_eq!(env.get("CUDA_VISIBLE_DEVICES"), Some("0,1"));
    assert_eq!(env.get("BLAZE_IMAGE"), Some("blaze-worker:v1"));

    let err = container_env(&pod(), &container, &PodSources::default(), &[], &mounts).unwrap_err();
    assert!(err.to_string().contains("ConfigMap \"cfg\" key \"level\""), "{err}");
}

#[test]
fn command_line_expands_and_rewrites() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("volumes/config")).unwrap();
    let mount = VolumeMount {
        name: "config".into(),
        mount_path: "/etc/blaze".into(),
        ..Default::default()
    };
    let mounts = MountTable::create(dir.path(), "c", &[mount]).unwrap();
    let mut env = Env::default();
    env.set("POD_IP", "127.0.1.9");
    let bin = PathBuf::from("/opt/bin/blaze-router");
    let container = Container {
        name: "c".into(),
        image: Some("ghcr.io/blaze-ai/blaze-router:v1".into()),
        args: Some(vec![
            "--listen=$(POD_IP):80".into(),
            "--config".into(),
            "/etc/blaze/r.yaml".into(),
        ]),
        ..Default::default()
    };
    let cl = command_line(&container, &bin, &env, &mounts);
    assert_eq!(cl.program, bin);
    assert_eq!(cl.args[0], "--listen=127.0.1.9:80");
    assert_eq!(cl.args[2], mounts.rootfs.join("etc/blaze/r.yaml").to_string_lossy());

    let with_command = Container {
        command: Some(vec!["blaze-router".into(), "serve".into()]),
        ..container.clone()
    };
    let cl = command_line(&with_command, &bin, &env, &mounts);
    assert_eq!(cl.program, bin);
    assert_eq!(cl.args[0], "serve");

    let shell = Container {
        command: Some(vec!["/bin/sh".into(), "-c".into(), "echo $$(POD_IP)".into()]),
        args: None,
        ..container
    };
    let cl = command_line(&shell, &bin, &env, &mounts);
    assert_eq!(cl.program, PathBuf::from("/bin/sh"));
    assert_eq!(cl.args, ["-c", "echo $(POD_IP)"]);
}
