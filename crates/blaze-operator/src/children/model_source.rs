//! Model sources mapped to what the pod needs: volumes, mounts, the path the worker opens, and
//! for hub sources the init step that downloads once into a cache volume.
//!
//! - `file:///PATH` is passed as is (a path in the image or on the node).
//! - `pvc://CLAIM/PATH` mounts the claim read-only at [`PVC_MOUNT`]`/CLAIM` (the worker's
//!   default `--pvc-root` layout) and passes the in-pod path (a plain path, which the
//!   development control plane rewrites to its own mount directories).
//! - `hf://ORG/NAME` is passed as `hf://ORG/NAME@REVISION[/FILE]` (the worker's form, with
//!   `spec.model.revision` folded in) and gets a cache volume named [`HF_CACHE_VOLUME`] (an emptyDir unless
//!   `spec.podTemplate` declares a volume of that name, such as a shared ReadWriteMany claim)
//!   that an init container fills with `blaze-worker download`, so the worker starts from a
//!   complete cache and replicas sharing the claim do not each download.

use k8s_openapi::api::core::v1::{
    EmptyDirVolumeSource, PersistentVolumeClaimVolumeSource, Volume, VolumeMount,
};

use crate::{Error, Result};

/// Under which `pvc://` claims are mounted in the worker (`PVC_MOUNT/CLAIM`).
pub const PVC_MOUNT: &str = "/mnt/models";
/// Where the hub cache is mounted.
pub const HF_CACHE_MOUNT: &str = "/var/cache/blaze/hf";
/// Name of the volume holding a `pvc://` claim.
pub const MODEL_VOLUME: &str = "model";
/// Name of the hub cache volume; declare a volume of this name in `spec.podTemplate` to share
/// a cache across replicas.
pub const HF_CACHE_VOLUME: &str = "model-cache";

/// A parsed model source.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// `hf://REPO` (REPO is `org/name`, maybe with a path after it).
    Hub(String),
    /// `file:///PATH`: the absolute path.
    File(String),
    /// `pvc://CLAIM/PATH`: the claim and the path inside it (maybe empty).
    Pvc {
        /// The PersistentVolumeClaim.
        claim: String,
        /// The path inside it, without a leading `/`.
        path: String,
    },
}

impl Source {
    /// Parses `spec.model.source`. The CRD's validation rule admits only these three forms;
    /// this check repeats it for objects that bypassed validation.
    pub fn parse(source: &str) -> Result<Self> {
        if let Some(repo) = source.strip_prefix("hf://") {
            if repo.split('/').filter(|s| !s.is_empty()).count() >= 2 {
                return Ok(Source::Hub(repo.to_owned()));
            }
        } else if let Some(path) = source.strip_prefix("file://") {
            if path.starts_with('/') {
                return Ok(Source::File(path.to_owned()));
            }
        } else if let Some(rest) = source.strip_prefix("pvc://") {
            let (claim, path) = rest.split_once('/').unwrap_or((rest, ""));
            if !claim.is_empty() {
                let path = path.trim_start_matches('/').to_owned();
                return Ok(Source::Pvc { claim: claim.to_owned(), path });
            }
        }
        Err(Error::InvalidSpec(format!(
            "spec.model.source {source:?} must be hf://ORG/NAME, file:///PATH or pvc://CLAIM/PATH"
        )))
    }
}

/// What a source needs in the pod.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SourcePlan {
    /// The `--model` argument of the worker.
    pub model_arg: String,
    /// The hub cache directory when an init container must download.
    pub hf_cache: Option<String>,
    /// Volumes to add to the pod.
    pub volumes: Vec<Volume>,
    /// Mounts to add to the worker (and to the download init container).
    pub mounts: Vec<VolumeMount>,
}

/// `hf://ORG/NAME[/FILE]` with `revision` folded in as `hf://ORG/NAME@REVISION[/FILE]`.
pub fn hub_with_revision(repo: &str, revision: Option<&str>) -> String {
    let mut parts = repo.splitn(3, '/');
    let (org, name) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let (name, inline) = name.split_once('@').map_or((name, None), |(n, r)| (n, Some(r)));
    let rev = revision.or(inline).unwrap_or("main");
    match parts.next() {
        Some(file) => format!("hf://{org}/{name}@{rev}/{file}"),
        None => format!("hf://{org}/{name}@{rev}"),
    }
}

/// Maps `source` (with `revision` for hub sources) to volumes, mounts and the worker's
/// `--model`.
pub fn plan(source: &str, revision: Option<&str>) -> Result<SourcePlan> {
    Ok(match Source::parse(source)? {
        Source::File(_) => SourcePlan { model_arg: source.to_owned(), ..Default::default() },
        Source::Pvc { claim, path } => SourcePlan {
            model_arg: if path.is_empty() {
                format!("{PVC_MOUNT}/{claim}")
            } else {
                format!("{PVC_MOUNT}/{claim}/{path}")
            },
            hf_cache: None,
            volumes: vec![Volume {
                name: MODEL_VOLUME.to_owned(),
                persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                    claim_name: claim.clone(),
                    read_only: Some(true),
                }),
                ..Default::default()
            }],
            mounts: vec![mount(MODEL_VOLUME, &format!("{PVC_MOUNT}/{claim}"), true)],
        },
        Source::Hub(repo) => SourcePlan {
            model_arg: hub_with_revision(&repo, revision),
            hf_cache: Some(HF_CACHE_MOUNT.to_owned()),
            volumes: vec![Volume {
                name: HF_CACHE_VOLUME.to_owned(),
                empty_dir: Some(EmptyDirVolumeSource::default()),
                ..Default::default()
            }],
            mounts: vec![mount(HF_CACHE_VOLUME, HF_CACHE_MOUNT, false)],
        },
    })
}

/// A volume mount.
pub fn mount(name: &str, path: &str, read_only: bool) -> VolumeMount {
    VolumeMount {
        name: name.to_owned(),
        mount_path: path.to_owned(),
        read_only: read_only.then_some(true),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pvc_sources_mount_the_claim_read_only_and_pass_the_in_pod_path() {
        let p = plan("pvc://blaze-models/smollm2/model.gguf", None).unwrap();
        assert_eq!(p.model_arg, "/mnt/models/blaze-models/smollm2/model.gguf");
        let pvc = p.volumes[0].persistent_volume_claim.as_ref().unwrap();
        assert_eq!(pvc.claim_name, "blaze-models");
        assert_eq!(pvc.read_only, Some(true));
        assert_eq!(p.mounts[0].read_only, Some(true));
        assert_eq!(p.mounts[0].mount_path, "/mnt/models/blaze-models");
        assert_eq!(plan("pvc://models", None).unwrap().model_arg, "/mnt/models/models");
    }

    #[test]
    fn file_sources_pass_through_and_hub_sources_get_a_cache() {
        let f = plan("file:///models/a.gguf", Some("v1")).unwrap();
        assert_eq!(f.model_arg, "file:///models/a.gguf");
        assert!(f.volumes.is_empty() && f.hf_cache.is_none());
        let h = plan("hf://Qwen/Qwen3-8B", None).unwrap();
        assert_eq!(h.model_arg, "hf://Qwen/Qwen3-8B@main");
        assert_eq!(h.hf_cache.as_deref(), Some(HF_CACHE_MOUNT));
        assert!(h.volumes[0].empty_dir.is_some());
        assert_eq!(h.mounts[0].read_only, None);
    }

    #[test]
    fn hub_revisions_fold_into_the_source_as_the_worker_reads_it() {
        assert_eq!(hub_with_revision("a/b", Some("v2")), "hf://a/b@v2");
        assert_eq!(hub_with_revision("a/b/m.Q4.gguf", Some("v2")), "hf://a/b@v2/m.Q4.gguf");
        assert_eq!(hub_with_revision("a/b/m.gguf", None), "hf://a/b@main/m.gguf");
    }

    #[test]
    fn malformed_sources_name_the_field() {
        for bad in ["s3://bucket/x", "hf://onlyorg", "file://relative", "pvc://"] {
            let e = plan(bad, None).unwrap_err().to_string();
            assert!(e.contains("spec.model.source"), "{bad}: {e}");
        }
    }
}
