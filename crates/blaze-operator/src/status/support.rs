//! Engines this release's worker cannot serve, and how the operator shows them.
//!
//! The worker of this release serves `spec.kind: llm` and `embedding`; a `diffusion` worker
//! would exit as soon as it started, and its pods would crash-loop with a message only
//! `kubectl logs` shows. Instead the operator marks such an engine and runs no worker for it:
//! `Ready=False`, `ModelLoaded=False` and `Degraded=True`, each with reason `Unsupported` and
//! a message that names the field, and one Warning event (from that flip, as for any other).
//!
//! The engine keeps its children, with the worker Deployment at 0 replicas, rather than
//! having none: the Service, the PodDisruptionBudget, owner references, routers' endpoint
//! lists (empty, as for an engine scaled to zero) and status all take the paths they take for
//! every engine, and changing `spec.kind` to one the worker serves scales the Deployment up
//! with no other step. Creating the Deployment only for served kinds would need a second
//! path that deletes it when `spec.kind` changes. The autoscaler is not consulted (nothing
//! to measure), and the scale subresource's `spec.replicas` waits until the kind is served.

use blaze_api::engine::{BlazeEngineSpec, EngineKind};

/// The condition reason of an engine this release does not serve.
pub const UNSUPPORTED: &str = "Unsupported";

/// Why this release's worker cannot serve `spec`, naming the field; `None` if it can.
pub fn unsupported(spec: &BlazeEngineSpec) -> Option<String> {
    let kind = match spec.kind {
        EngineKind::Llm | EngineKind::Embedding => return None,
        EngineKind::Diffusion => "diffusion",
    };
    Some(format!(
        "spec.kind: {kind} is not served by this release's worker; it serves spec.kind: llm and embedding, so no workers run for this engine (change spec.kind, or delete the engine)"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(kind: &str) -> BlazeEngineSpec {
        serde_json::from_value(serde_json::json!({
            "kind": kind, "model": {"source": "hf://org/m"}
        }))
        .unwrap()
    }

    #[test]
    fn llm_and_embedding_are_served_and_the_message_names_the_field() {
        assert_eq!(unsupported(&spec("llm")), None);
        assert_eq!(unsupported(&spec("embedding")), None);
        let kind = "diffusion";
        let msg = unsupported(&spec(kind)).unwrap();
        assert!(
            msg.starts_with(&format!("spec.kind: {kind} is not served by this release's worker;")),
            "{msg}"
        );
    }
}
