use super::*;
use prometheus_client::registry::Registry;

fn auth(header: &str) -> Auth {
    let mut keys = BTreeMap::new();
    keys.insert("team-a".to_owned(), "sk-alpha".to_owned());
    keys.insert("team-b".to_owned(), "sk-beta".to_owned());
    Auth::from_config(&RoutingAuth { header: header.into(), keys_file: None, keys_dir: None, keys })
        .unwrap()
}

fn headers(k: &str, v: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(http::HeaderName::from_bytes(k.as_bytes()).unwrap(), v.parse().unwrap());
    h
}

#[test]
fn bearer_keys_are_accepted_and_counted_per_name() {
    let m = Metrics::new(&mut Registry::default());
    let a = auth("authorization");
    assert!(a.check(&headers("authorization", "Bearer sk-beta"), &m));
    assert!(!a.check(&headers("authorization", "Bearer sk-bet"), &m));
    assert!(!a.check(&headers("authorization", "sk-beta"), &m));
    assert!(!a.check(&HeaderMap::new(), &m));
    assert_eq!(m.key_requests.get_or_create(&KeyLabels { key: "team-b".into() }).get(), 1);
    assert_eq!(m.unauthorized.get(), 3);
}

#[test]
fn other_headers_hold_the_bare_key_and_files_add_keys() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keys.yaml");
    std::fs::write(&path, "ops: sk-file\n").unwrap();
    let cfg = RoutingAuth {
        header: "X-Api-Key".into(),
        keys_file: Some(path.display().to_string()),
        keys_dir: None,
        keys: BTreeMap::new(),
    };
    let a = Auth::from_config(&cfg).unwrap();
    let m = Metrics::new(&mut Registry::default());
    assert!(a.check(&headers("x-api-key", "sk-file"), &m));
    assert!(!a.check(&headers("x-api-key", "Bearer sk-file"), &m));
}

#[test]
fn a_keys_file_keeps_keys_as_written_and_refuses_a_name_given_twice() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keys.yaml");
    std::fs::write(&path, "a: 0123\nb: yes\nc: 1e3\nd: 0x1F\n").unwrap();
    let cfg = RoutingAuth {
        header: "authorization".into(),
        keys_file: Some(path.display().to_string()),
        keys_dir: None,
        keys: BTreeMap::new(),
    };
    let want: BTreeMap<String, String> = [("a", "0123"), ("b", "yes"), ("c", "1e3"), ("d", "0x1F")]
        .map(|(k, v)| (k.into(), v.into()))
        .into();
    assert_eq!(load_keys(&cfg).unwrap(), want);
    std::fs::write(&path, "a: sk-1\na: sk-2\n").unwrap();
    let err = load_keys(&cfg).unwrap_err().to_string();
    assert!(err.contains("keys.yaml"), "{err}");
}

/// Lays out `keys` as the kubelet mounts a Secret: the files live in a timestamped directory,
/// `..data` links to it, and each key name is a link through `..data`. A second call swaps
/// `..data` atomically to a new directory and then adds links for new keys, in the kubelet's
/// order.
fn mount_secret(dir: &Path, generation: u32, keys: &[(&str, &str)]) {
    use std::os::unix::fs::symlink;
    let ts = format!("..2026_11_27_19_00_0{generation}.123");
    std::fs::create_dir(dir.join(&ts)).unwrap();
    for (name, key) in keys {
        std::fs::write(dir.join(&ts).join(name), key).unwrap();
    }
    symlink(&ts, dir.join("..data_tmp")).unwrap();
    std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
    for (name, _) in keys {
        if std::fs::symlink_metadata(dir.join(name)).is_err() {
            symlink(format!("..data/{name}"), dir.join(name)).unwrap();
        }
    }
}

#[test]
fn a_secret_directory_gives_one_key_per_file_and_skips_dotfiles() {
    let dir = tempfile::tempdir().unwrap();
    mount_secret(dir.path(), 1, &[("team-a", "sk-alpha\n"), ("team-b", "sk-beta")]);
    std::fs::write(dir.path().join(".hidden"), "sk-hidden").unwrap();
    std::fs::create_dir(dir.path().join("nested")).unwrap();
    let keys = keys_from_dir(dir.path()).unwrap();
    let want: BTreeMap<String, String> =
        [("team-a", "sk-alpha"), ("team-b", "sk-beta")].map(|(k, v)| (k.into(), v.into())).into();
    assert_eq!(keys, want);

    let cfg = RoutingAuth {
        header: "authorization".into(),
        keys_file: None,
        keys_dir: Some(dir.path().display().to_string()),
        keys: BTreeMap::new(),
    };
    let a = Auth::from_config(&cfg).unwrap();
    let m = Metrics::new(&mut Registry::default());
    assert!(a.check(&headers("authorization", "Bearer sk-alpha"), &m));
    assert!(!a.check(&headers("authorization", "Bearer sk-hidden"), &m));
    assert_eq!(m.key_requests.get_or_create(&KeyLabels { key: "team-a".into() }).get(), 1);
    assert!(keys_from_dir(&dir.path().join("absent")).is_err());
}

#[tokio::test]
async fn the_watch_follows_an_atomic_secret_update() {
    let dir = tempfile::tempdir().unwrap();
    mount_secret(dir.path(), 1, &[("team-a", "sk-alpha\n")]);
    let cfg = RoutingAuth {
        header: "authorization".into(),
        keys_file: None,
        keys_dir: Some(dir.path().display().to_string()),
        keys: BTreeMap::new(),
    };
    let (_cfg_tx, cfg_rx) = tokio::sync::watch::channel(Some(cfg));
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let task = tokio::spawn(watch(cfg_rx, move |a| drop(tx.send(a)), |_| {}));
    let first = rx.recv().await.unwrap().unwrap();
    assert_eq!(first.key_names().collect::<Vec<_>>(), ["team-a"]);
    // The key is replaced and a second one added.
    mount_secret(dir.path(), 2, &[("team-a", "sk-new\n"), ("team-b", "sk-beta\n")]);
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    let a = loop {
        let a = tokio::time::timeout_at(deadline, rx.recv()).await.unwrap().unwrap().unwrap();
        if a.key_names().count() == 2 {
            break a;
        }
    };
    assert_eq!(a.key_names().collect::<Vec<_>>(), ["team-a", "team-b"]);
    let m = Metrics::new(&mut Registry::default());
    assert!(a.check(&headers("authorization", "Bearer sk-new"), &m));
    assert!(!a.check(&headers("authorization", "Bearer sk-alpha"), &m));
    task.abort();
}
