use super::*;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{ConfigMapVolumeSource, EmptyDirVolumeSource, SecretVolumeSource};

fn sources() -> PodSources {
    let mut s = PodSources::default();
    s.config_maps.insert(
        "cfg".into(),
        ConfigMap {
            data: Some([("config.yaml".to_string(), "a: 1\n".to_string())].into()),
            ..Default::default()
        },
    );
    s.secrets.insert(
        "keys".into(),
        Secret {
            data: Some([("token".to_string(), ByteString(b"s3cret".to_vec()))].into()),
            ..Default::default()
        },
    );
    s
}

fn volumes() -> Vec<Volume> {
    vec![
        Volume {
            name: "config".into(),
            config_map: Some(ConfigMapVolumeSource { name: "cfg".into(), ..Default::default() }),
            ..Default::default()
        },
        Volume {
            name: "keys".into(),
            secret: Some(SecretVolumeSource {
                secret_name: Some("keys".into()),
                items: Some(vec![KeyToPath {
                    key: "token".into(),
                    path: "nested/api-token".into(),
                    mode: Some(0o400),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        },
        Volume {
            name: "scratch".into(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Default::default()
        },
    ]
}

fn mount(name: &str, path: &str) -> VolumeMount {
    VolumeMount { name: name.into(), mount_path: path.into(), ..Default::default() }
}

#[test]
fn volumes_are_visible_at_their_mount_paths_through_rewritten_args() {
    let dir = tempfile::tempdir().unwrap();
    materialise(dir.path(), &volumes(), &sources()).unwrap();
    let mounts = [
        mount("config", "/etc/blaze"),
        mount("keys", "/var/run/secrets/blaze/"),
        mount("scratch", "/tmp"),
    ];
    let table = MountTable::create(dir.path(), "main", &mounts).unwrap();

    let arg = table.rewrite("--config=/etc/blaze/config.yaml");
    let path = arg.strip_prefix("--config=").unwrap();
    assert_eq!(std::fs::read_to_string(path).unwrap(), "a: 1\n");

    let token = table.rewrite("/var/run/secrets/blaze/nested/api-token");
    assert_eq!(std::fs::read(&token).unwrap(), b"s3cret");
    let mode = std::fs::metadata(&token).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o400);

    let scratch = table.rewrite("/tmp");
    std::fs::write(format!("{scratch}/x"), b"1").unwrap();

    // Not a path start, or a longer name that merely shares the prefix: left alone.
    assert_eq!(table.rewrite("/etc/blazer"), "/etc/blazer");
    assert_eq!(table.rewrite("x/etc/blaze"), "x/etc/blaze");
    assert_eq!(table.rewrite("plain"), "plain");
}

#[test]
fn missing_sources_fail_unless_optional() {
    let dir = tempfile::tempdir().unwrap();
    let err = materialise(dir.path(), &volumes(), &PodSources::default()).unwrap_err();
    assert_eq!(err.waiting_reason(), "CreateContainerConfigError");
    let mut optional = volumes();
    optional.truncate(1);
    optional[0].config_map.as_mut().unwrap().optional = Some(true);
    materialise(dir.path(), &optional, &PodSources::default()).unwrap();
}

#[test]
fn working_dir_defaults_to_the_rootfs_and_follows_mounts() {
    let dir = tempfile::tempdir().unwrap();
    materialise(dir.path(), &volumes(), &sources()).unwrap();
    let table = MountTable::create(dir.path(), "main", &[mount("scratch", "/work")]).unwrap();
    assert_eq!(table.working_dir(None).unwrap(), table.rootfs);
    let wd = table.working_dir(Some("/work")).unwrap();
    assert!(wd.ends_with("rootfs/main/work"));
    let other = table.working_dir(Some("/app")).unwrap();
    assert!(other.is_dir());
}

#[test]
fn claims_and_host_paths_show_the_directory_of_this_machine_at_the_mount_path() {
    use k8s_openapi::api::core::v1::{HostPathVolumeSource, PersistentVolumeClaimVolumeSource};
    let pod_dir = tempfile::tempdir().unwrap();
    let store = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(store.path().join("models/tiny")).unwrap();
    std::fs::write(store.path().join("models/tiny/model.gguf"), b"GGUF").unwrap();
    let mut s = sources();
    s.claims.insert("blaze-models".into(), store.path().join("models"));
    let created = store.path().join("made-on-demand");
    let volumes = vec![
        Volume {
            name: "model".into(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: "blaze-models".into(),
                read_only: Some(true),
            }),
            ..Default::default()
        },
        Volume {
            name: "host".into(),
            host_path: Some(HostPathVolumeSource {
                path: created.display().to_string(),
                type_: Some("DirectoryOrCreate".into()),
            }),
            ..Default::default()
        },
    ];
    materialise(pod_dir.path(), &volumes, &s).unwrap();
    assert!(created.is_dir(), "DirectoryOrCreate makes the host directory");
    let table = MountTable::create(
        pod_dir.path(),
        "worker",
        &[mount("model", "/models/blaze-models"), mount("host", "/data")],
    )
    .unwrap();
    let arg = table.rewrite("--model=/models/blaze-models/tiny/model.gguf");
    let path = arg.strip_prefix("--model=").unwrap();
    assert_eq!(std::fs::read(path).unwrap(), b"GGUF");
    std::fs::write(PathBuf::from(table.rewrite("/data")).join("out"), b"x").unwrap();
    assert!(created.join("out").is_file(), "writes land in the host directory");

    let mut unbound = sources();
    unbound.claims.clear();
    let err = materialise(tempfile::tempdir().unwrap().path(), &volumes[..1], &unbound)
        .unwrap_err()
        .to_string();
    assert!(err.contains("PersistentVolumeClaim") && err.contains("blaze-models"), "{err}");
}
