//! Model sources: `file:///path`, `pvc://claim/path` (a mounted volume), `hf://org/name[@rev]`
//! (downloaded from the Hugging Face hub, or any server with its file layout, into a cache),
//! or a plain path.

pub mod hub;

use std::path::{Path, PathBuf};

pub use hub::HubOptions;

use crate::{Error, Result};

/// Where `pvc://` claims are mounted unless `--pvc-root` says otherwise.
pub use blaze_worker_cli::DEFAULT_PVC_ROOT;

/// A parsed model source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelSource {
    /// A local file or folder.
    Path(PathBuf),
    /// A path inside a mounted PersistentVolumeClaim.
    Pvc {
        /// Claim name.
        claim: String,
        /// Path inside the claim.
        path: String,
    },
    /// A Hugging Face hub repository.
    Hub {
        /// `org/name`.
        repo: String,
        /// Branch, tag or commit (`main` by default).
        revision: String,
        /// A single file to fetch (e.g. a `.gguf`) instead of the safetensors layout.
        file: Option<String>,
    },
}

impl ModelSource {
    /// Parses `hf://org/name[@rev][/file]`, `pvc://claim/path`, `file:///path` or a path.
    pub fn parse(source: &str) -> Result<Self> {
        let bad = |message: &str| Error::Source {
            source_name: source.to_string(),
            message: message.to_string(),
        };
        if let Some(rest) = source.strip_prefix("hf://") {
            let parts: Vec<&str> = rest.splitn(3, '/').collect();
            if parts.len() < 2 || parts[0].is_empty() || parts[1].is_empty() {
                return Err(bad("expected hf://org/name[@revision][/file]"));
            }
            let (name, revision) = parts[1].split_once('@').unwrap_or((parts[1], "main"));
            let file = parts.get(2).filter(|f| !f.is_empty()).map(|f| f.to_string());
            return Ok(ModelSource::Hub {
                repo: format!("{}/{name}", parts[0]),
                revision: revision.into(),
                file,
            });
        }
        if let Some(rest) = source.strip_prefix("pvc://") {
            let (claim, path) = rest.split_once('/').unwrap_or((rest, ""));
            if claim.is_empty() {
                return Err(bad("expected pvc://claim/path"));
            }
            return Ok(ModelSource::Pvc { claim: claim.into(), path: path.into() });
        }
        if let Some(path) = source.strip_prefix("file://") {
            return Ok(ModelSource::Path(path.into()));
        }
        if source.contains("://") {
            return Err(bad("unknown scheme (use hf://, pvc://, file:// or a path)"));
        }
        Ok(ModelSource::Path(source.into()))
    }
}

/// Turns a source into a local path, downloading hub files into the cache when needed.
pub async fn resolve(source: &ModelSource, pvc_root: &Path, hub: &HubOptions) -> Result<PathBuf> {
    match source {
        ModelSource::Path(p) => Ok(p.clone()),
        ModelSource::Pvc { claim, path } => Ok(pvc_root.join(claim).join(path)),
        ModelSource::Hub { repo, revision, file } => {
            hub::download(repo, revision, file.as_deref(), hub).await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_scheme() {
        let hub = |repo: &str, rev: &str, file: Option<&str>| ModelSource::Hub {
            repo: repo.into(),
            revision: rev.into(),
            file: file.map(str::to_string),
        };
        assert_eq!(ModelSource::parse("hf://a/b").unwrap(), hub("a/b", "main", None));
        assert_eq!(
            ModelSource::parse("hf://a/b@v1/m.gguf").unwrap(),
            hub("a/b", "v1", Some("m.gguf"))
        );
        assert_eq!(
            ModelSource::parse("pvc://models/llama").unwrap(),
            ModelSource::Pvc { claim: "models".into(), path: "llama".into() }
        );
        assert_eq!(ModelSource::parse("file:///m").unwrap(), ModelSource::Path("/m".into()));
        assert!(ModelSource::parse("hf://onlyorg").is_err());
        assert!(ModelSource::parse("s3://x/y").is_err());
    }
}
