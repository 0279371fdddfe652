//! A container's environment and command line, as the kubelet builds them.
//!
//! Besides what the spec asks for, every container gets `POD_IP`, `POD_NAME` and
//! `POD_NAMESPACE` (unless the spec defines them itself), `BLAZE_VOLUME_ROOT` (see
//! [`crate::volumes`]) and `BLAZE_IMAGE`. So `--listen=$(POD_IP):8080` in `args` works without
//! a downward-API entry. Of the control plane's own environment only `PATH`, `RUST_LOG` and
//! `RUST_BACKTRACE` are passed on, and only when the spec does not set them.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{Container, EnvVar};

use crate::error::{Error, Result};
use crate::expand::expand;
use crate::image::repository_name;
use crate::volumes::{MountTable, PodSources};

/// Who a pod is, for the downward API.
#[derive(Debug, Clone)]
pub struct PodIdentity {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// UID.
    pub uid: String,
    /// The node the pod is bound to.
    pub node_name: String,
    /// The pod's loopback address.
    pub pod_ip: Ipv4Addr,
    /// The service account name.
    pub service_account: String,
}

/// An ordered environment; later entries with the same name replace earlier ones.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Env(Vec<(String, String)>);

impl Env {
    /// Sets `name`, replacing an earlier value.
    pub fn set(&mut self, name: impl Into<String>, value: impl Into<String>) {
        let (name, value) = (name.into(), value.into());
        match self.0.iter_mut().find(|(n, _)| *n == name) {
            Some(slot) => slot.1 = value,
            None => self.0.push((name, value)),
        }
    }

    /// The value of `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    /// All entries in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }
}

/// Builds the environment of `container`. `extra` (for instance the GPU device variables)
/// comes before the spec's own entries, so the spec may refer to it.
pub fn container_env(
    pod: &PodIdentity,
    container: &Container,
    sources: &PodSources,
    extra: &[(String, String)],
    mounts: &MountTable,
) -> Result<Env> {
    let mut env = Env::default();
    for key in ["PATH", "RUST_LOG", "RUST_BACKTRACE"] {
        if let Ok(value) = std::env::var(key) {
            env.set(key, value);
        }
    }
    env.set("POD_IP", pod.pod_ip.to_string());
    env.set("POD_NAME", &pod.name);
    env.set("POD_NAMESPACE", &pod.namespace);
    env.set("BLAZE_VOLUME_ROOT", mounts.rootfs.to_string_lossy());
    env.set("BLAZE_IMAGE", container.image.clone().unwrap_or_default());
    for (k, v) in extra {
        env.set(k, v);
    }
    for from in container.env_from.iter().flatten() {
        let prefix = from.prefix.clone().unwrap_or_default();
        if let Some(r) = &from.config_map_ref {
            match sources.config_maps.get(&r.name) {
                Some(cm) => {
                    for (k, v) in cm.data.iter().flatten() {
                        env.set(format!("{prefix}{k}"), v);
                    }
                }
                None if r.optional == Some(true) => {}
                None => return Err(missing("ConfigMap", &r.name, None)),
            }
        }
        if let Some(r) = &from.secret_ref {
            match sources.secrets.get(&r.name) {
                Some(s) => {
                    for (k, v) in s.data.iter().flatten() {
                        env.set(format!("{prefix}{k}"), String::from_utf8_lossy(&v.0));
                    }
                }
                None if r.optional == Some(true) => {}
                None => return Err(missing("Secret", &r.name, None)),
            }
        }
    }
    for var in container.env.iter().flatten() {
        if let Some(value) = env_value(pod, var, sources, &env)? {
            env.set(&var.name, mounts.rewrite(&value));
        }
    }
    Ok(env)
}

fn missing(kind: &'static str, name: &str, key: Option<&str>) -> Error {
    Error::MissingSource { kind, name: name.to_string(), key: key.map(str::to_string) }
}

/// One env entry's value; `None` when an optional reference is missing.
fn env_value(
    pod: &PodIdentity,
    var: &EnvVar,
    sources: &PodSources,
    env: &Env,
) -> Result<Option<String>> {
    let Some(from) = &var.value_from else {
        let raw = var.value.clone().unwrap_or_default();
        return Ok(Some(expand(&raw, |n| env.get(n).map(str::to_string))));
    };
    if let Some(field) = &from.field_ref {
        let value = match field.field_path.as_str() {
            "metadata.name" => pod.name.clone(),
            "metadata.namespace" => pod.namespace.clone(),
            "metadata.uid" => pod.uid.clone(),
            "spec.nodeName" => pod.node_name.clone(),
            "spec.serviceAccountName" => pod.service_account.clone(),
            "status.podIP" | "status.hostIP" => pod.pod_ip.to_string(),
            "status.podIPs" | "status.hostIPs" => pod.pod_ip.to_string(),
            other => return Err(Error::Unsupported(format!("fieldRef {other:?}"))),
        };
        return Ok(Some(value));
    }
    if let Some(r) = &from.config_map_key_ref {
        return match sources.config_map_key(&r.name, &r.key) {
            Some(v) => Ok(Some(String::from_utf8_lossy(&v).into_owned())),
            None if r.optional == Some(true) => Ok(None),
            None => Err(missing("ConfigMap", &r.name, Some(&r.key))),
        };
    }
    if let Some(r) = &from.secret_key_ref {
        return match sources.secret_key(&r.name, &r.key) {
            Some(v) => Ok(Some(String::from_utf8_lossy(&v).into_owned())),
            None if r.optional == Some(true) => Ok(None),
            None => Err(missing("Secret", &r.name, Some(&r.key))),
        };
    }
    Err(Error::Unsupported(format!("valueFrom of env {:?}", var.name)))
}

/// The program and arguments to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandLine {
    /// The executable.
    pub program: PathBuf,
    /// Its arguments, expanded and rewritten.
    pub args: Vec<String>,
}

/// Builds the command line: `command` replaces the image's entry point (the image binary)
/// unless its first word names the image itself; `args` follow. `$(VAR)` refers to `env`.
pub fn command_line(
    container: &Container,
    image_binary: &Path,
    env: &Env,
    mounts: &MountTable,
) -> CommandLine {
    let fix = |s: &String| mounts.rewrite(&expand(s, |n| env.get(n).map(str::to_string)));
    let image = container.image.as_deref().unwrap_or_default();
    let command: Vec<String> = container.command.iter().flatten().map(fix).collect();
    let mut args: Vec<String> = Vec::new();
    let program = match command.split_first() {
        None => image_binary.to_path_buf(),
        Some((first, rest)) => {
            args.extend(rest.iter().cloned());
            let base = Path::new(first).file_name().and_then(|f| f.to_str()).unwrap_or(first);
            if base == repository_name(image) {
                image_binary.to_path_buf()
            } else {
                PathBuf::from(first)
            }
        }
    };
    args.extend(container.args.iter().flatten().map(fix));
    CommandLine { program, args }
}

#[cfg(test)]
mod tests;
