//! `--data-dir`: one JSON file per object, each written to a temporary file, synced and renamed
//! into place before the write is acknowledged, so a crash mid-write loses no acknowledged write
//! and leaves no half-written object. A deletion unlinks the file and syncs its directory before
//! it is acknowledged, so an acknowledged deletion does not come back after a crash either.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::store::{Event, EventType};
use crate::{Error, Result};

/// The on-disk copy of the store.
#[derive(Debug, Clone)]
pub struct Persist {
    dir: PathBuf,
}

impl Persist {
    /// Uses (and creates) `dir`.
    pub fn new(dir: &Path) -> Result<Self> {
        fs::create_dir_all(dir.join("objects")).map_err(|e| Error::io(dir, e))?;
        Ok(Self { dir: dir.to_owned() })
    }

    fn path_of(&self, key: &str, ns: &str, name: &str) -> PathBuf {
        let (group, plural) = key.split_once('/').unwrap_or(("", key));
        let group = if group.is_empty() { "core" } else { group };
        let ns = if ns.is_empty() { "_cluster" } else { ns };
        self.dir.join("objects").join(group).join(plural).join(ns).join(format!("{name}.json"))
    }

    /// Saves the effect of one event; `rv` is the store's newest version.
    pub fn record(&self, e: &Event, rv: u64) -> Result<()> {
        let name = e.object["metadata"]["name"].as_str().unwrap_or_default();
        let path = self.path_of(&e.key, &e.ns, name);
        match e.kind {
            EventType::Deleted => {
                // Deletions leave no file behind, so the newest version is kept aside first:
                // versions never go back after a restart.
                atomic_write(&self.dir.join("resource-version"), rv.to_string().as_bytes())?;
                remove_durably(&path)
            }
            _ => self.save(&e.key, &path, &e.object),
        }
    }

    /// Puts back on disk what was there before `e` (after [`Persist::record`] of a write that
    /// must be rolled back).
    pub fn undo(&self, e: &Event) -> Result<()> {
        let name = e.object["metadata"]["name"].as_str().unwrap_or_default();
        let path = self.path_of(&e.key, &e.ns, name);
        match &e.previous {
            Some(prev) => self.save(&e.key, &path, prev),
            None => remove_durably(&path),
        }
    }

    fn save(&self, key: &str, path: &Path, object: &Value) -> Result<()> {
        let doc = serde_json::json!({"key": key, "object": object});
        atomic_write(path, &serde_json::to_vec(&doc).unwrap_or_default())
    }

    /// Every saved object with its storage key, and the saved newest version.
    pub fn load(&self) -> Result<(Vec<(String, Value)>, u64)> {
        let rv = fs::read_to_string(self.dir.join("resource-version"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0);
        let mut out = Vec::new();
        walk(&self.dir.join("objects"), &mut out)?;
        Ok((out, rv))
    }
}

fn walk(dir: &Path, out: &mut Vec<(String, Value)>) -> Result<()> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io(dir, e)),
    };
    for entry in entries {
        let path = entry.map_err(|e| Error::io(dir, e))?.path();
        if path.is_dir() {
            walk(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "tmp") {
            // What a crash in the middle of a write left: that write was never acknowledged.
            fs::remove_file(&path).map_err(|e| Error::io(&path, e))?;
        } else if path.extension().is_some_and(|e| e == "json") {
            let bytes = fs::read(&path).map_err(|e| Error::io(&path, e))?;
            let mut doc: Value = serde_json::from_slice(&bytes)
                .map_err(|e| Error::Corrupt(path.clone(), e.to_string()))?;
            let key = doc["key"].as_str().unwrap_or_default().to_owned();
            out.push((key, doc["object"].take()));
        }
    }
    Ok(())
}

/// Writes `bytes` to `path` through a synced temporary file and a rename.
pub fn atomic_write(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    create_dir_durably(dir)?;
    let tmp =
        dir.join(format!(".{}.tmp", path.file_name().and_then(|n| n.to_str()).unwrap_or("x")));
    let mut f = fs::File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
    f.write_all(bytes).map_err(|e| Error::io(&tmp, e))?;
    f.sync_all().map_err(|e| Error::io(&tmp, e))?;
    fs::rename(&tmp, path).map_err(|e| Error::io(path, e))?;
    // The rename itself is durable only once the directory is synced.
    sync_dir(dir)
}

/// Removes `path` (if it is there) and syncs its directory, so the removal survives a crash.
fn remove_durably(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Ok(()) => {}
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(err) => return Err(Error::io(path, err)),
    }
    sync_dir(path.parent().unwrap_or(Path::new(".")))
}

/// Creates `dir` and its missing parents, syncing the parent of each one created: a new
/// directory's entry is durable only once its parent is synced.
fn create_dir_durably(dir: &Path) -> Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    let missing: Vec<&Path> = dir.ancestors().take_while(|d| !d.exists()).collect();
    fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    for d in missing.iter().rev() {
        sync_dir(d.parent().unwrap_or(Path::new(".")))?;
    }
    Ok(())
}

fn sync_dir(dir: &Path) -> Result<()> {
    fs::File::open(dir).and_then(|d| d.sync_all()).map_err(|e| Error::io(dir, e))
}
