use std::path::{Path, PathBuf};

use serde_json::json;

use super::*;

const KEY: &str = "/configmaps";

fn cm(name: &str, v: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": "default"}, "data": {"v": v}})
}

fn store(dir: &Path) -> Store {
    Store::new(100, Some(Persist::new(dir).unwrap())).unwrap()
}

/// A directory where the write of `name` puts its temporary file: saving it fails as a full
/// or broken disk would make it fail.
fn block(dir: &Path, name: &str) -> PathBuf {
    let blocker = dir.join("objects/core/configmaps/default").join(format!(".{name}.json.tmp"));
    std::fs::create_dir_all(&blocker).unwrap();
    blocker
}

fn data(s: &Store, name: &str) -> Option<String> {
    s.read().get(KEY, "default", name).map(|o| o["data"]["v"].as_str().unwrap().to_owned())
}

#[test]
fn a_write_that_cannot_be_saved_is_undone_before_anyone_sees_it() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path());
    let mut rx = s.events();
    s.write(|i| i.put(KEY, cm("a", "1"))).unwrap();
    assert_eq!(rx.try_recv().unwrap().rv, 1);

    let b = block(dir.path(), "b");
    let err = s.write(|i| i.put(KEY, cm("b", "1"))).unwrap_err();
    assert!(err.to_string().contains(".b.json.tmp"), "the error names the file: {err}");
    let a = block(dir.path(), "a");
    s.write(|i| i.put(KEY, cm("a", "2"))).unwrap_err();
    let rv_file = dir.path().join(".resource-version.tmp");
    std::fs::create_dir_all(&rv_file).unwrap();
    s.write(|i| i.remove(KEY, "default", "a")).unwrap_err();

    assert_eq!((data(&s, "a").as_deref(), data(&s, "b")), (Some("1"), None));
    assert_eq!(s.read().rv(), 1);
    assert!(s.read().events_since(1).is_empty(), "no failed write is in the history");
    assert!(rx.try_recv().is_err(), "no watcher saw a failed write");
    let reloaded = store(dir.path());
    assert_eq!((data(&reloaded, "a").as_deref(), data(&reloaded, "b")), (Some("1"), None));

    for blocker in [b, a, rv_file] {
        std::fs::remove_dir(blocker).unwrap();
    }
    s.write(|i| i.put(KEY, cm("b", "1"))).unwrap();
    assert_eq!(rx.try_recv().unwrap().rv, 2, "versions go on without a gap");
}

#[test]
fn a_write_of_several_objects_is_undone_on_disk_too() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path());
    s.write(|i| i.put(KEY, cm("x", "1"))).unwrap();
    block(dir.path(), "z");
    s.write(|i| {
        i.put(KEY, cm("x", "2"));
        i.remove(KEY, "default", "x");
        i.put(KEY, cm("y", "1"));
        i.put(KEY, cm("z", "1"));
    })
    .unwrap_err();
    assert_eq!(s.read().rv(), 1);
    for st in [&s, &store(dir.path())] {
        assert_eq!((data(st, "x").as_deref(), data(st, "y")), (Some("1"), None));
    }
}

#[test]
fn a_delete_is_on_disk_when_it_returns() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path());
    s.write(|i| i.put(KEY, cm("a", "1"))).unwrap();
    let file = dir.path().join("objects/core/configmaps/default/a.json");
    assert!(file.is_file());
    s.write(|i| i.remove(KEY, "default", "a")).unwrap();
    assert!(!file.exists());
    // A crash in the middle of a later write leaves its temporary file: it is dropped.
    let stale = dir.path().join("objects/core/configmaps/default/.b.json.tmp");
    std::fs::write(&stale, b"{\"key\": \"/configm").unwrap();
    let reloaded = store(dir.path());
    assert_eq!(data(&reloaded, "a"), None);
    assert_eq!(reloaded.read().rv(), 2, "the version of the deletion is kept");
    assert!(!stale.exists());
}

#[test]
fn older_versions_are_read_by_undoing_later_events() {
    let s = Store::new(100, None).unwrap();
    s.write(|i| {
        i.put(KEY, cm("a", "1"));
        i.put(KEY, cm("b", "1"));
        i.put("/secrets", cm("s", "1"));
    })
    .unwrap();
    let then = s.read().rv();
    s.write(|i| {
        i.put(KEY, cm("a", "2"));
        i.put(KEY, cm("a", "3"));
        i.remove(KEY, "default", "b");
        i.put(KEY, cm("c", "1"));
        i.put("/secrets", cm("s", "2"));
    })
    .unwrap();
    let g = s.read();
    let diff = g.at_version(KEY, then);
    let v = |n: &str| {
        diff[&("default".to_owned(), n.to_owned())].as_ref().map(|o| o["data"]["v"].clone())
    };
    assert_eq!((v("a"), v("b"), v("c")), (Some(json!("1")), Some(json!("1")), None));
    assert_eq!(diff.len(), 3, "only this resource's changes");
    assert!(g.at_version(KEY, g.rv()).is_empty());
    let now = Instant::now();
    assert!(g.readable_at(then, now) && g.readable_at(g.rv(), now));
    assert!(!g.readable_at(then, now + SNAPSHOT_RETENTION + Duration::from_secs(1)));
    assert!(g.readable_at(g.rv(), now + 2 * SNAPSHOT_RETENTION), "the newest version stays");
    assert!(!g.readable_at(g.rv() + 1, now));
    drop(g);
    s.write(Inner::compact).unwrap();
    assert!(!s.read().readable_at(then, now), "compacted away");
}
