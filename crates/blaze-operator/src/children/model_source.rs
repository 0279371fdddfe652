//! Model sources mapped to what the pod needs: volumes, mounts, the path the worker opens, and
//! for hub sources the init step that downloads once into a cache volume.
//!
//! - `file:///PATH` is passed as is (a path in the image or on the node).
//! - `pvc://CLAIM/PATH` mounts the claim read-only at [`PVC_MOUNT`] and passes
//!   `file://` + the in-pod path.
//! - `hf://ORG/NAME` gets a cache volume named [`HF_CACHE_VOLUME`] (an emptyDir unless
//!   `spec.podTemplate` declares a volume of that name, such as a shared ReadWriteMany claim)
//!   that an init container fills with `blaze-worker download`, so the worker starts from a
//!   complete cache and replicas sharing the claim do not each download.

use k8s_openapi::api::core::v1::{
    EmptyDirVolumeSource, PersistentVolumeClaimVolumeSource, Volume, VolumeMount,
};

use crate::{Error, Result};

/// Where a `pvc://` claim is mounted in the worker.
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

/// Maps `source` to volumes, mounts and the worker's `--model`.
pub fn plan(source: &str) -> Result<SourcePlan> {
    Ok(match Source::parse(source)? {
        Source::File(_) => SourcePlan { model_arg: source.to_owned(), ..Default::default() },
        Source::Pvc { claim, path } => SourcePlan {
            model_arg: if path.is_empty() {
                format!("file://{PVC_MOUNT}")
            } else {
                format!("file://{PVC_MOUNT}/{path}")
            },
            hf_cache: None,
            volumes: vec![Volume {
                name: MODEL_VOLUME.to_owned(),
                persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                    claim_name: claim,
                    read_only: Some(true),
                }),
                ..Default::default()
            }],
            mounts: vec![mount(MODEL_VOLUME, PVC_MOUNT, true)],
        },
        Source::Hub(_) => SourcePlan {
            model_arg: source.to_owned(),
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
        let p = plan("pvc://blaze-models/smollm2/model.gguf").unwrap();
        assert_eq!(p.model_arg, "file:///mnt/models/smollm2/model.gguf");
        let pvc = p.volumes[0].persistent_volume_claim.as_ref().unwrap();
        assert_eq!(pvc.claim_name, "blaze-models");
        assert_eq!(pvc.read_only, Some(true));
        assert_eq!(p.mounts[0].read_only, Some(true));
        assert_eq!(p.mounts[0].mount_path, PVC_MOUNT);
        assert_eq!(plan("pvc://models").unwrap().model_arg, "file:///mnt/models");
    }

    #[test]
    fn file_sources_pass_through_and_hub_sources_get_a_cache() {
        let f = plan("file:///models/a.gguf").unwrap();
        assert_eq!(f.model_arg, "file:///models/a.gguf");
        assert!(f.volumes.is_empty() && f.hf_cache.is_none());
        let h = plan("hf://Qwen/Qwen3-8B").unwrap();
        assert_eq!(h.model_arg, "hf://Qwen/Qwen3-8B");
        assert_eq!(h.hf_cache.as_deref(), Some(HF_CACHE_MOUNT));
        assert!(h.volumes[0].empty_dir.is_some());
        assert_eq!(h.mounts[0].read_only, None);
    }

    #[test]
    fn malformed_sources_name_the_field() {
        for bad in ["s3://bucket/x", "hf://onlyorg", "file://relative", "pvc://"] {
            let e = plan(bad).unwrap_err().to_string();
            assert!(e.contains("spec.model.source"), "{bad}: {e}");
        }
    }
}
