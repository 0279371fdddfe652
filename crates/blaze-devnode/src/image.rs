//! Which local binary runs a container image.
//!
//! The development control plane has no container engine: a container runs as a local process
//! of the binary its image names. The mapping, in order:
//!
//! 1. An explicit entry added with [`ImageMap::insert`] for the image's repository name (the last
//!    path segment without tag or digest: `ghcr.io/blaze-ai/blaze-worker:0.1` is `blaze-worker`).
//!    Tests register their test binary this way.
//! 2. `$BLAZE_BIN_DIR/<name>` when the directory is configured (the `BLAZE_BIN_DIR` environment
//!    variable by default).
//! 3. `<name>` beside the running program (the binaries of the same build).
//! 4. `<target>/release/<name>`, then `<target>/debug/<name>`, where `<target>` is
//!    `$CARGO_TARGET_DIR` or the `target` folder of the current directory.
//!
//! A binary found is named by its absolute path.
//!
//! The tag is not used to pick the binary; the full image is passed to the process as
//! `BLAZE_IMAGE` so a test binary can tell versions apart.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::error::{Error, Result};

/// Maps container images to local executables.
#[derive(Debug, Clone, Default)]
pub struct ImageMap {
    explicit: BTreeMap<String, PathBuf>,
    search_dirs: Vec<PathBuf>,
}

impl ImageMap {
    /// A map with no explicit entries and no search directories.
    pub fn empty() -> Self {
        Self::default()
    }

    /// The documented default search path, read from the environment.
    pub fn from_env() -> Self {
        let mut dirs = Vec::new();
        if let Some(dir) = std::env::var_os("BLAZE_BIN_DIR") {
            dirs.push(PathBuf::from(dir));
        }
        // The binaries built with this one before any other build's.
        if let Some(dir) = std::env::current_exe().ok().and_then(|e| e.parent().map(PathBuf::from))
        {
            dirs.push(dir);
        }
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("target"));
        dirs.push(target.join("release"));
        dirs.push(target.join("debug"));
        Self { explicit: BTreeMap::new(), search_dirs: dirs }
    }

    /// Runs images whose repository name is `name` with the binary at `path`.
    pub fn insert(&mut self, name: impl Into<String>, path: impl Into<PathBuf>) -> &mut Self {
        self.explicit.insert(name.into(), path.into());
        self
    }

    /// Adds a directory to search after the explicit entries.
    pub fn push_dir(&mut self, dir: impl Into<PathBuf>) -> &mut Self {
        self.search_dirs.push(dir.into());
        self
    }

    /// Finds the executable for `image`.
    pub fn resolve(&self, image: &str) -> Result<PathBuf> {
        let name = repository_name(image);
        if let Some(path) = self.explicit.get(name) {
            return Ok(path.clone());
        }
        let candidates: Vec<PathBuf> = self.search_dirs.iter().map(|d| d.join(name)).collect();
        // Absolute: a container runs in its own working directory, where a path relative to
        // this process's (`target/release/...`) names nothing.
        candidates
            .iter()
            .find(|p| p.is_file())
            .map(|p| std::path::absolute(p).unwrap_or_else(|_| p.clone()))
            .ok_or_else(|| Error::ImageNotFound { image: image.to_string(), searched: candidates })
    }
}

/// The last path segment of an image reference, without tag or digest.
pub fn repository_name(image: &str) -> &str {
    let without_digest = image.split('@').next().unwrap_or(image);
    let last = without_digest.rsplit('/').next().unwrap_or(without_digest);
    last.split(':').next().unwrap_or(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repository_names() {
        assert_eq!(repository_name("blaze-worker"), "blaze-worker");
        assert_eq!(repository_name("ghcr.io/blaze-ai/blaze-worker:0.1.0"), "blaze-worker");
        // The CUDA build is a tag of the same repository: the same local binary runs it.
        assert_eq!(repository_name("ghcr.io/blaze-ai/blaze-worker:0.1.0-cuda"), "blaze-worker");
        assert_eq!(repository_name("localhost:5000/x/y@sha256:abc"), "y");
        assert_eq!(repository_name("localhost:5000/router:v2"), "router");
    }

    #[test]
    fn explicit_entries_win_and_missing_lists_the_search() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("blaze-router"), b"").unwrap();
        let mut map = ImageMap::empty();
        map.push_dir(dir.path()).insert("tester", "/bin/true");
        assert_eq!(map.resolve("reg/tester:v1").unwrap(), PathBuf::from("/bin/true"));
        assert_eq!(map.resolve("blaze-router:latest").unwrap(), dir.path().join("blaze-router"));
        match map.resolve("blaze-worker") {
            Err(Error::ImageNotFound { searched, .. }) => {
                assert_eq!(searched, vec![dir.path().join("blaze-worker")]);
            }
            other => panic!("expected ImageNotFound, got {other:?}"),
        }
    }

    #[test]
    fn a_binary_found_through_a_relative_directory_is_named_absolutely() {
        // Containers run in their own working directory: `target/release/x` would name nothing.
        let mut map = ImageMap::empty();
        map.push_dir("src");
        let found = map.resolve("lib.rs").unwrap();
        assert!(found.is_absolute(), "{}", found.display());
        assert_eq!(found, std::env::current_dir().unwrap().join("src/lib.rs"));
    }
}
