//! `--data-dir`: one JSON file per object, each written to a temporary file, synced and renamed
//! into place before the write is acknowledged, so a crash mid-write loses no acknowledged write.

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
                match fs::remove_file(&path) {
                    Ok(()) => {}
                    Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
                    Err(err) => return Err(Error::io(&path, err)),
                }
                // Deletions leave no file behind, so the newest version is kept aside.
                atomic_write(&self.dir.join("resource-version"), rv.to_string().as_bytes())
            }
            _ => {
                let doc = serde_json::json!({"key": e.key, "object": &*e.object});
                atomic_write(&path, &serde_json::to_vec(&doc).unwrap_or_default())
            }
        }
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
    fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let tmp =
        dir.join(format!(".{}.tmp", path.file_name().and_then(|n| n.to_str()).unwrap_or("x")));
    let mut f = fs::File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
    f.write_all(bytes).map_err(|e| Error::io(&tmp, e))?;
    f.sync_all().map_err(|e| Error::io(&tmp, e))?;
    fs::rename(&tmp, path).map_err(|e| Error::io(path, e))?;
    // The rename itself is durable only once the directory is synced.
    fs::File::open(dir).and_then(|d| d.sync_all()).map_err(|e| Error::io(dir, e))?;
    Ok(())
}
