//! The token routers present to an engine's workers, so that nothing else that reaches a
//! worker pod can call the model past the routers' API keys.
//!
//! - **One Secret per engine**, `ENGINE-worker-token` (key [`TOKEN_KEY`]: 32 random bytes,
//!   base64url), owned by the engine. The operator creates it when it is absent and never
//!   reads it: it holds `create` on Secrets and nothing else, and a `409 AlreadyExists` tells
//!   it the Secret is there. A Secret of that name made beforehand by someone else is used
//!   as it is (bring your own token).
//! - **Workers** mount the whole Secret at [`WORKER_MOUNT`] and run with `--auth-token-dir`:
//!   every key of the Secret is an accepted token.
//! - **Routers** mount the [`TOKEN_KEY`] of each engine they serve at
//!   `ROUTER_MOUNT/ENGINE/token` (a Secret volume per engine, `optional` so that a router does
//!   not wait for a new engine's Secret) and name each with `--worker-token ENGINE=FILE`.
//!   The routing ConfigMap never holds a token: it is readable more widely than Secrets.
//!   Engines joining or leaving a router's selection change its pod template, so its pods
//!   roll (one surged at a time).
//! - Both re-read the files every second, so a change of the Secret takes effect once the
//!   kubelet has updated the volumes (about a minute), without a restart.
//!
//! Rotation: deleting the Secret makes the operator create a new one at the engine's next
//! reconcile (within a minute); requests that meet a worker and a router on different sides
//! of the change get 401 until both volumes are updated. Without refusing anyone: add the new
//! token under another key (`next`), wait for the volumes to update (workers accept both),
//! set `token` to the new value and `previous` to the old one (remove `next`), wait again
//! (routers send the new one), then remove `previous`.
//!
//! Health (`/livez`, `/readyz`, gRPC health) and `/metrics` need no token: the kubelet and
//! the operator's scrape carry none. Who reaches the worker port at all is the engine's
//! NetworkPolicy's business (the namespace's routers and the operator); the development
//! control plane does not enforce NetworkPolicies; the token is checked there all the same.

use blaze_api::BlazeEngine;
use k8s_openapi::api::core::v1::{KeyToPath, Secret, SecretVolumeSource, Volume, VolumeMount};

use super::model_source::mount;
use super::name_of;
use crate::Result;

/// The Secret key holding the token routers send.
pub const TOKEN_KEY: &str = "token";
/// Where a worker pod mounts its engine's token Secret (`--auth-token-dir`).
pub const WORKER_MOUNT: &str = "/etc/blaze/worker-token";
/// Where a router pod mounts the tokens of its engines, one folder per engine.
pub const ROUTER_MOUNT: &str = "/etc/blaze/worker-tokens";
/// The worker pod's volume of the token Secret.
pub const WORKER_VOLUME: &str = "worker-token";

/// The token Secret of the engine named `engine`.
pub fn secret_name(engine: &str) -> String {
    format!("{engine}-worker-token")
}

/// A new token: 32 bytes from the operating system's generator (through `rand`'s
/// cryptographically secure thread generator), base64url without padding.
pub fn new_token() -> String {
    use base64::Engine as _;
    let bytes: [u8; 32] = rand::random();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// The token Secret of `engine`, with a new token, owned by the engine.
pub fn secret(engine: &BlazeEngine) -> Result<Secret> {
    let mut metadata = super::engine::child_meta(engine)?;
    metadata.name = Some(secret_name(&name_of(engine)?));
    Ok(Secret {
        metadata,
        type_: Some("Opaque".into()),
        string_data: Some([(TOKEN_KEY.to_owned(), new_token())].into()),
        ..Default::default()
    })
}

/// The worker pod's volume of its engine's token Secret. Not optional: a worker never
/// starts without its token (the operator creates the Secret before the Deployment).
pub fn worker_volume(engine: &str) -> (Volume, VolumeMount) {
    let volume = Volume {
        name: WORKER_VOLUME.into(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(secret_name(engine)),
            default_mode: Some(0o440),
            ..Default::default()
        }),
        ..Default::default()
    };
    (volume, mount(WORKER_VOLUME, WORKER_MOUNT, true))
}

/// A router pod's volumes, mounts and `--worker-token` arguments for `engines`.
pub fn router_volumes(engines: &[String]) -> (Vec<Volume>, Vec<VolumeMount>, Vec<String>) {
    let (mut volumes, mut mounts, mut args) = (Vec::new(), Vec::new(), Vec::new());
    for (i, engine) in engines.iter().enumerate() {
        // By position: an engine's name may be as long as a volume name may be.
        let name = format!("worker-token-{i}");
        volumes.push(Volume {
            name: name.clone(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(secret_name(engine)),
                items: Some(vec![KeyToPath {
                    key: TOKEN_KEY.into(),
                    path: TOKEN_KEY.into(),
                    ..Default::default()
                }]),
                default_mode: Some(0o440),
                optional: Some(true),
                ..Default::default()
            }),
            ..Default::default()
        });
        let dir = format!("{ROUTER_MOUNT}/{engine}");
        args.push("--worker-token".to_owned());
        args.push(format!("{engine}={dir}/{TOKEN_KEY}"));
        mounts.push(mount(&name, &dir, true));
    }
    (volumes, mounts, args)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_and_url_safe() {
        let (a, b) = (new_token(), new_token());
        assert_ne!(a, b);
        assert_eq!(a.len(), 43, "32 bytes in base64 without padding");
        assert!(a.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'), "{a}");
    }

    #[test]
    fn the_secret_is_the_engines_and_holds_a_token() {
        let engine: BlazeEngine = serde_json::from_value(serde_json::json!({
            "apiVersion": "blaze.ai/v1alpha1", "kind": "BlazeEngine",
            "metadata": {"name": "chat", "namespace": "team-a", "uid": "u-1"},
            "spec": {"kind": "llm", "model": {"source": "hf://org/m"}}
        }))
        .unwrap();
        let s = secret(&engine).unwrap();
        assert_eq!(s.metadata.name.as_deref(), Some("chat-worker-token"));
        assert_eq!(s.metadata.namespace.as_deref(), Some("team-a"));
        let owner = &s.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!((owner.kind.as_str(), owner.uid.as_str()), ("BlazeEngine", "u-1"));
        assert_eq!(owner.controller, Some(true));
        assert_eq!(s.string_data.unwrap()[TOKEN_KEY].len(), 43);
    }

    #[test]
    fn routers_mount_each_engines_token_and_name_it_in_a_flag() {
        let (volumes, mounts, args) = router_volumes(&["chat".into(), "embed".into()]);
        assert_eq!(
            args,
            [
                "--worker-token",
                "chat=/etc/blaze/worker-tokens/chat/token",
                "--worker-token",
                "embed=/etc/blaze/worker-tokens/embed/token",
            ]
        );
        let secret = volumes[1].secret.as_ref().unwrap();
        assert_eq!(secret.secret_name.as_deref(), Some("embed-worker-token"));
        assert_eq!(secret.optional, Some(true));
        assert_eq!(secret.items.as_ref().unwrap()[0].key, TOKEN_KEY);
        assert_eq!(mounts[1].name, volumes[1].name);
        assert_eq!(mounts[1].mount_path, "/etc/blaze/worker-tokens/embed");
        assert_eq!(router_volumes(&[]).0.len(), 0);
    }
}
