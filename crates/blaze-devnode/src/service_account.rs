//! A pod's ServiceAccount credentials, as a kubelet mounts them: the token of the pod's own
//! ServiceAccount (`spec.serviceAccountName`, `default` when unset), asked of the API server
//! with a TokenRequest bound to the pod, with the CA certificate and the namespace, in the
//! files `token`, `ca.crt` and `namespace` of a volume every container mounts at
//! [`MOUNT_PATH`]. Nothing is mounted when the pod (or, when the pod does not say, its
//! ServiceAccount) sets `automountServiceAccountToken: false`.
//!
//! A process here cannot open the literal mount path, so besides the mount (which rewrites
//! the path where a container names it, see [`crate::volumes`]) each container gets
//! `KUBECONFIG` naming a kubeconfig beside the volume that reads the same files
//! (`tokenFile`, `certificate-authority`): clients that look for a kubeconfig before the
//! in-cluster files (kube-rs, client-go) find the pod's own identity either way.

use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::VolumeMount;

use crate::error::{Result, io};

/// Where a real kubelet mounts a pod's ServiceAccount credentials.
pub const MOUNT_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
/// The volume holding them (a real kubelet names it `kube-api-access-` and a random suffix).
pub const VOLUME: &str = "kube-api-access";
/// The lifetime a kubelet asks for; the API server extends a pod-bound token's to a year.
pub const TOKEN_SECONDS: i64 = 3607;

/// Where pods reach the API server.
#[derive(Debug, Clone)]
pub struct ApiAccess {
    /// The server's URL, as clients outside the cluster use it (`https://127.0.0.1:PORT`).
    pub server: String,
    /// PEM of the certificate authority that signed the server's certificate, if it is TLS.
    pub ca_pem: Option<String>,
}

/// One pod's credentials.
#[derive(Debug, Clone)]
pub struct Credentials {
    /// The ServiceAccount token.
    pub token: String,
    /// The pod's namespace.
    pub namespace: String,
    /// The API server.
    pub api: ApiAccess,
}

impl Credentials {
    /// Writes the volume under `pod_dir/volumes/` and the kubeconfig beside it; returns the
    /// kubeconfig's path.
    pub fn materialise(&self, pod_dir: &Path) -> Result<PathBuf> {
        let dir = pod_dir.join("volumes").join(VOLUME);
        std::fs::create_dir_all(&dir).map_err(io(format!("creating {}", dir.display())))?;
        let mut files = vec![("token", self.token.as_str()), ("namespace", &self.namespace)];
        if let Some(ca) = &self.api.ca_pem {
            files.push(("ca.crt", ca));
        }
        for (name, text) in files {
            write(&dir.join(name), text)?;
        }
        let kubeconfig = pod_dir.join("kubeconfig");
        write(&kubeconfig, &self.kubeconfig(&dir))?;
        Ok(kubeconfig)
    }

    fn kubeconfig(&self, dir: &Path) -> String {
        let ca = match &self.api.ca_pem {
            Some(_) => format!("\n    certificate-authority: {}", dir.join("ca.crt").display()),
            None => String::new(),
        };
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: in-cluster\n  cluster:\n    server: {}{ca}\n\
             users:\n- name: serviceaccount\n  user:\n    tokenFile: {}\ncontexts:\n- name: in-cluster\n\
             \x20 context:\n    cluster: in-cluster\n    user: serviceaccount\n    namespace: {}\n\
             current-context: in-cluster\n",
            self.api.server,
            dir.join("token").display(),
            self.namespace
        )
    }

    /// The mount every container of the pod gets.
    pub fn mount() -> VolumeMount {
        VolumeMount {
            name: VOLUME.into(),
            mount_path: MOUNT_PATH.into(),
            read_only: Some(true),
            ..VolumeMount::default()
        }
    }
}

/// Writes a file readable by its owner only, as a kubelet writes secrets.
fn write(path: &Path, text: &str) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).map_err(io(format!("writing {}", path.display())))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(io(format!("chmod {}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_the_standard_files_and_a_kubeconfig_that_reads_them() {
        let dir = tempfile::tempdir().unwrap();
        let api = ApiAccess { server: "https://127.0.0.1:6443".into(), ca_pem: Some("CA".into()) };
        let creds = Credentials { token: "t0k".into(), namespace: "demo".into(), api };
        let kubeconfig = creds.materialise(dir.path()).unwrap();
        let volume = dir.path().join("volumes").join(VOLUME);
        assert_eq!(std::fs::read_to_string(volume.join("token")).unwrap(), "t0k");
        assert_eq!(std::fs::read_to_string(volume.join("namespace")).unwrap(), "demo");
        assert_eq!(std::fs::read_to_string(volume.join("ca.crt")).unwrap(), "CA");
        let text = std::fs::read_to_string(kubeconfig).unwrap();
        assert!(text.contains(&format!("tokenFile: {}", volume.join("token").display())), "{text}");
        assert!(text.contains("namespace: demo"), "{text}");
        let parsed = kube::config::Kubeconfig::from_yaml(&text).unwrap();
        assert_eq!(parsed.current_context.as_deref(), Some("in-cluster"));
    }
}
