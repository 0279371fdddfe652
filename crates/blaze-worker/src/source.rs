//! Model sources: `file:///path`, `pvc://claim/path` (a mounted volume), `hf://org/name[@rev]`
//! (downloaded from the Hugging Face hub, or any server with its file layout, into a cache),
//! or a plain path.

use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// Where `pvc://` claims are mounted unless `--pvc-root` says otherwise.
pub const DEFAULT_PVC_ROOT: &str = "/mnt/models";

/// Files fetched for a Hugging Face repository in the safetensors layout; missing optional
/// ones are skipped.
const HF_FILES: &[(&str, bool)] = &[
    ("config.json", true),
    ("tokenizer.json", true),
    ("tokenizer_config.json", false),
    ("generation_config.json", false),
];

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

/// How hub downloads are done.
#[derive(Debug, Clone)]
pub struct HubOptions {
    /// Base URL (`HF_ENDPOINT`, default `https://huggingface.co`).
    pub endpoint: String,
    /// The cache folder (`HF_HUB_CACHE`, `$HF_HOME/hub`, `~/.cache/huggingface/hub`).
    pub cache_dir: PathBuf,
    /// Bearer token (`HF_TOKEN`).
    pub token: Option<String>,
}

impl HubOptions {
    /// Settings from the environment, as the Hugging Face tools read them.
    pub fn from_env() -> Self {
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let cache_dir = env("HF_HUB_CACHE")
            .map(PathBuf::from)
            .or_else(|| env("HF_HOME").map(|h| Path::new(&h).join("hub")))
            .or_else(|| env("HOME").map(|h| Path::new(&h).join(".cache/huggingface/hub")))
            .unwrap_or_else(|| PathBuf::from(".cache/huggingface/hub"));
        let endpoint = env("HF_ENDPOINT").unwrap_or_else(|| "https://huggingface.co".into());
        Self {
            endpoint: endpoint.trim_end_matches('/').to_string(),
            cache_dir,
            token: env("HF_TOKEN"),
        }
    }
}

/// Turns a source into a local path, downloading hub files into the cache when needed.
pub async fn resolve(source: &ModelSource, pvc_root: &Path, hub: &HubOptions) -> Result<PathBuf> {
    match source {
        ModelSource::Path(p) => Ok(p.clone()),
        ModelSource::Pvc { claim, path } => Ok(pvc_root.join(claim).join(path)),
        ModelSource::Hub { repo, revision, file } => {
            download(repo, revision, file.as_deref(), hub).await
        }
    }
}

async fn download(
    repo: &str,
    revision: &str,
    file: Option<&str>,
    hub: &HubOptions,
) -> Result<PathBuf> {
    let dir = hub
        .cache_dir
        .join(format!("models--{}", repo.replace('/', "--")))
        .join("snapshots")
        .join(revision);
    // Written after every file of a snapshot is in place: a later start (or a restart
    // without network) uses the cache and asks the hub nothing.
    let complete = dir.join(".blaze-complete");
    let client = reqwest::Client::new();
    if let Some(file) = file {
        fetch(&client, hub, repo, revision, file, &dir, true).await?;
        return Ok(dir.join(file));
    }
    if complete.is_file() {
        return Ok(dir);
    }
    for (name, required) in HF_FILES {
        fetch(&client, hub, repo, revision, name, &dir, *required).await?;
    }
    let index = "model.safetensors.index.json";
    if fetch(&client, hub, repo, revision, index, &dir, false).await? {
        let index: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join(index))?)?;
        let mut shards: Vec<String> = index["weight_map"]
            .as_object()
            .map(|m| m.values().filter_map(|v| v.as_str().map(str::to_string)).collect())
            .unwrap_or_default();
        shards.sort();
        shards.dedup();
        for shard in shards {
            fetch(&client, hub, repo, revision, &shard, &dir, true).await?;
        }
    } else {
        fetch(&client, hub, repo, revision, "model.safetensors", &dir, true).await?;
    }
    std::fs::write(&complete, b"")?;
    Ok(dir)
}

/// Downloads one file unless the cache has it; returns whether the file is there.
async fn fetch(
    client: &reqwest::Client,
    hub: &HubOptions,
    repo: &str,
    revision: &str,
    name: &str,
    dir: &Path,
    required: bool,
) -> Result<bool> {
    let target = dir.join(name);
    if target.is_file() {
        return Ok(true);
    }
    let url = format!("{}/{repo}/resolve/{revision}/{name}", hub.endpoint);
    let err =
        |message: String| Error::Source { source_name: format!("hf://{repo}@{revision}"), message };
    let mut request = client.get(&url);
    if let Some(token) = &hub.token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.map_err(|e| err(format!("GET {url}: {e}")))?;
    if response.status() == reqwest::StatusCode::NOT_FOUND && !required {
        return Ok(false);
    }
    if !response.status().is_success() {
        return Err(err(format!("GET {url}: HTTP {}", response.status())));
    }
    let bytes = response.bytes().await.map_err(|e| err(format!("GET {url}: {e}")))?;
    if let Some(parent) = target.parent() {
        std::fs::create_dir_all(parent)?;
    }
    // Write then rename, so an interrupted download never looks complete.
    let partial = target.with_extension("partial");
    std::fs::write(&partial, &bytes)?;
    std::fs::rename(&partial, &target)?;
    tracing::info!(%url, bytes = bytes.len(), "downloaded");
    Ok(true)
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
