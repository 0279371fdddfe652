//! ConfigMap, Secret, emptyDir, hostPath and PersistentVolumeClaim volumes, materialised per
//! pod in a directory.
//!
//! A pod's files live under `<root>/pods/<uid>/`:
//! - `volumes/<volume>/` holds each volume's content (one file per ConfigMap or Secret key,
//!   or an empty directory for `emptyDir`), or is a symbolic link to a directory of this
//!   machine: the `hostPath` path, or for a claim the `hostPath` or `local` path of the
//!   PersistentVolume it is bound to (`spec.volumeName`);
//! - `rootfs/<container>/` is a stand-in for the container's filesystem: each `volumeMount`
//!   is a symbolic link at `rootfs/<container>/<mountPath>` to the volume (or its `subPath`).
//!
//! Blaze binaries need no change to see their mounts: every occurrence of a mount path in the
//! container's `command`, `args`, env values and `workingDir` is rewritten to the matching
//! path under `rootfs/<container>/`, and `BLAZE_VOLUME_ROOT` is set to that rootfs so a
//! program that builds paths itself can prefix them. The working directory defaults to the
//! rootfs too. A mount path is rewritten only where it starts a path: at the start of a value
//! or after `=`, `:`, `,` or a quote, and followed by the end, `/` or one of those characters.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{ConfigMap, KeyToPath, Secret, Volume, VolumeMount};

use crate::error::{Error, Result, io};

/// The ConfigMaps and Secrets a pod refers to, fetched by the caller.
#[derive(Debug, Clone, Default)]
pub struct PodSources {
    /// ConfigMaps by name, in the pod's namespace.
    pub config_maps: BTreeMap<String, ConfigMap>,
    /// Secrets by name, in the pod's namespace.
    pub secrets: BTreeMap<String, Secret>,
    /// PersistentVolumeClaims by name, with the directory of the volume each is bound to.
    pub claims: BTreeMap<String, PathBuf>,
}

impl PodSources {
    /// The value of `key` in ConfigMap `name` (text or binary data).
    pub fn config_map_key(&self, name: &str, key: &str) -> Option<Vec<u8>> {
        let cm = self.config_maps.get(name)?;
        cm.data
            .as_ref()
            .and_then(|d| d.get(key).map(|v| v.clone().into_bytes()))
            .or_else(|| cm.binary_data.as_ref().and_then(|d| d.get(key).map(|v| v.0.clone())))
    }

    /// The value of `key` in Secret `name` (`data` or, not yet folded in, `stringData`).
    pub fn secret_key(&self, name: &str, key: &str) -> Option<Vec<u8>> {
        let s = self.secrets.get(name)?;
        s.data.as_ref().and_then(|d| d.get(key).map(|v| v.0.clone())).or_else(|| {
            s.string_data.as_ref().and_then(|d| d.get(key).map(|v| v.clone().into_bytes()))
        })
    }

    fn config_map_files(&self, name: &str) -> Option<BTreeMap<String, Vec<u8>>> {
        let cm = self.config_maps.get(name)?;
        let mut files: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        for (k, v) in cm.data.iter().flatten() {
            files.insert(k.clone(), v.clone().into_bytes());
        }
        for (k, v) in cm.binary_data.iter().flatten() {
            files.insert(k.clone(), v.0.clone());
        }
        Some(files)
    }

    fn secret_files(&self, name: &str) -> Option<BTreeMap<String, Vec<u8>>> {
        let s = self.secrets.get(name)?;
        let mut files: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        for (k, v) in s.string_data.iter().flatten() {
            files.insert(k.clone(), v.clone().into_bytes());
        }
        for (k, v) in s.data.iter().flatten() {
            files.insert(k.clone(), v.0.clone());
        }
        Some(files)
    }
}

/// Writes every volume of a pod under `pod_dir/volumes/`. Called again with newer sources it
/// updates the ConfigMap and Secret files that changed (each replaced atomically), as a
/// kubelet's periodic sync does; keys removed from the source are left in place.
pub fn materialise(pod_dir: &Path, volumes: &[Volume], sources: &PodSources) -> Result<()> {
    for volume in volumes {
        let dir = pod_dir.join("volumes").join(&volume.name);
        if let Some(host) = host_directory(volume, sources)? {
            link_directory(&dir, &host)?;
            continue;
        }
        std::fs::create_dir_all(&dir).map_err(io(format!("creating {}", dir.display())))?;
        let (files, items, mode) = if let Some(cm) = &volume.config_map {
            let files = match sources.config_map_files(&cm.name) {
                Some(f) => f,
                None if cm.optional == Some(true) => BTreeMap::new(),
                None => return Err(missing("ConfigMap", &cm.name)),
            };
            (files, cm.items.clone(), cm.default_mode.unwrap_or(0o644))
        } else if let Some(secret) = &volume.secret {
            let name = secret.secret_name.clone().unwrap_or_default();
            let files = match sources.secret_files(&name) {
                Some(f) => f,
                None if secret.optional == Some(true) => BTreeMap::new(),
                None => return Err(missing("Secret", &name)),
            };
            (files, secret.items.clone(), secret.default_mode.unwrap_or(0o644))
        } else if volume.empty_dir.is_some() {
            continue;
        } else {
            return Err(Error::Unsupported(format!(
                "volume {:?}: only configMap, secret, emptyDir, hostPath and \
                 persistentVolumeClaim volumes are supported",
                volume.name
            )));
        };
        write_files(&dir, files, items.as_deref(), mode)?;
    }
    Ok(())
}

/// The directory of this machine a `hostPath` or claim volume stands for.
fn host_directory(volume: &Volume, sources: &PodSources) -> Result<Option<PathBuf>> {
    if let Some(h) = &volume.host_path {
        let path = PathBuf::from(&h.path);
        match h.type_.as_deref().unwrap_or("") {
            "DirectoryOrCreate" => std::fs::create_dir_all(&path)
                .map_err(io(format!("creating hostPath {}", path.display())))?,
            "Directory" if !path.is_dir() => {
                return Err(Error::Unsupported(format!(
                    "volume {:?}: hostPath {} is not a directory",
                    volume.name, h.path
                )));
            }
            _ => {}
        }
        return Ok(Some(path));
    }
    if let Some(c) = &volume.persistent_volume_claim {
        return match sources.claims.get(&c.claim_name) {
            Some(path) => Ok(Some(path.clone())),
            None => Err(missing("PersistentVolumeClaim", &c.claim_name)),
        };
    }
    Ok(None)
}

fn link_directory(dir: &Path, target: &Path) -> Result<()> {
    if dir.symlink_metadata().is_ok() {
        return Ok(());
    }
    if let Some(parent) = dir.parent() {
        std::fs::create_dir_all(parent).map_err(io(format!("creating {}", parent.display())))?;
    }
    std::os::unix::fs::symlink(target, dir).map_err(io(format!("linking {}", dir.display())))
}

fn missing(kind: &'static str, name: &str) -> Error {
    Error::MissingSource { kind, name: name.to_string(), key: None }
}

fn write_files(
    dir: &Path,
    files: BTreeMap<String, Vec<u8>>,
    items: Option<&[KeyToPath]>,
    default_mode: i32,
) -> Result<()> {
    let planned: Vec<(String, Vec<u8>, i32)> = match items {
        None => files.into_iter().map(|(k, v)| (k, v, default_mode)).collect(),
        Some(items) => items
            .iter()
            .filter_map(|item| {
                let data = files.get(&item.key)?.clone();
                Some((item.path.clone(), data, item.mode.unwrap_or(default_mode)))
            })
            .collect(),
    };
    for (rel, data, mode) in planned {
        if rel.split('/').any(|part| part == "..") || rel.starts_with('/') {
            return Err(Error::Unsupported(format!("volume item path {rel:?}")));
        }
        let path = dir.join(&rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .map_err(io(format!("creating {}", parent.display())))?;
        }
        if std::fs::read(&path).is_ok_and(|old| old == data) {
            continue;
        }
        // Written aside and renamed, so a process reading the file (a router watching its
        // configuration) sees the old content or the new, never half of it.
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let tmp = path.with_file_name(format!("..{name}.tmp"));
        std::fs::write(&tmp, data).map_err(io(format!("writing {}", tmp.display())))?;
        let perms = std::fs::Permissions::from_mode(mode as u32 & 0o777);
        std::fs::set_permissions(&tmp, perms).map_err(io(format!("chmod {}", tmp.display())))?;
        std::fs::rename(&tmp, &path).map_err(io(format!("replacing {}", path.display())))?;
    }
    Ok(())
}

/// A container's view of its mounts.
#[derive(Debug, Clone)]
pub struct MountTable {
    /// The stand-in root filesystem of the container.
    pub rootfs: PathBuf,
    /// `(mountPath, path on this machine)`, longest mount path first.
    mounts: Vec<(String, PathBuf)>,
}

impl MountTable {
    /// Creates the container's rootfs and a link for each mount.
    pub fn create(pod_dir: &Path, container: &str, mounts: &[VolumeMount]) -> Result<Self> {
        let rootfs = pod_dir.join("rootfs").join(container);
        std::fs::create_dir_all(&rootfs).map_err(io(format!("creating {}", rootfs.display())))?;
        let mut table = Vec::new();
        for m in mounts {
            let mount_path = m.mount_path.trim_end_matches('/');
            if mount_path.is_empty() || !mount_path.starts_with('/') {
                return Err(Error::Unsupported(format!("mountPath {:?}", m.mount_path)));
            }
            let mut target = pod_dir.join("volumes").join(&m.name);
            if let Some(sub) = m.sub_path.as_deref().filter(|s| !s.is_empty()) {
                target = target.join(sub);
            }
            let link = rootfs.join(mount_path.trim_start_matches('/'));
            if let Some(parent) = link.parent() {
                std::fs::create_dir_all(parent)
                    .map_err(io(format!("creating {}", parent.display())))?;
            }
            if link.symlink_metadata().is_err() {
                std::os::unix::fs::symlink(&target, &link)
                    .map_err(io(format!("linking {}", link.display())))?;
            }
            table.push((mount_path.to_string(), link));
        }
        table.sort_by_key(|m| std::cmp::Reverse(m.0.len()));
        Ok(Self { rootfs, mounts: table })
    }

    /// Rewrites mount paths in `value` to where they are on this machine.
    pub fn rewrite(&self, value: &str) -> String {
        let mut out = String::with_capacity(value.len());
        let mut i = 0;
        'scan: while i < value.len() {
            let at_path_start = i == 0 || value[..i].ends_with(is_separator);
            if at_path_start {
                for (mount, host) in &self.mounts {
                    let rest = &value[i..];
                    if let Some(after) = rest.strip_prefix(mount.as_str())
                        && (after.is_empty()
                            || after.starts_with('/')
                            || after.starts_with(is_separator))
                    {
                        out.push_str(&host.to_string_lossy());
                        i += mount.len();
                        continue 'scan;
                    }
                }
            }
            let ch = value[i..].chars().next().unwrap_or(' ');
            out.push(ch);
            i += ch.len_utf8();
        }
        out
    }

    /// The working directory for the process: `workingDir` (rewritten) or the rootfs.
    pub fn working_dir(&self, working_dir: Option<&str>) -> Result<PathBuf> {
        let Some(dir) = working_dir.filter(|d| !d.is_empty()) else {
            return Ok(self.rootfs.clone());
        };
        let rewritten = self.rewrite(dir);
        let path = if rewritten != dir {
            PathBuf::from(rewritten)
        } else {
            self.rootfs.join(dir.trim_start_matches('/'))
        };
        std::fs::create_dir_all(&path).map_err(io(format!("creating {}", path.display())))?;
        Ok(path)
    }
}

fn is_separator(c: char) -> bool {
    matches!(c, '=' | ':' | ',' | '"' | '\'' | ' ')
}

#[cfg(test)]
mod tests;
