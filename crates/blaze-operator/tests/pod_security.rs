//! The pods the operator renders meet the `restricted` Pod Security Standard, as the
//! development API server's admission (the real plugin's checks and wording) judges them: a
//! namespace labelled `pod-security.kubernetes.io/enforce=restricted` runs Blaze.
//!
//! Every engine and router of `manifests/examples/` is rendered into its Deployment and the
//! Deployment's pod template is checked.

use std::path::Path;

use blaze_api::{BlazeEngine, BlazeRouter};
use blaze_devcluster::pod_security::{Level, LevelVersion, evaluate, forbidden_detail};
use blaze_operator::children::{Defaults, engine, router};
use serde_json::Value;

/// Every document of the example manifests, with its file name.
fn examples() -> Vec<(String, Value)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../manifests/examples");
    let mut files: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    let mut docs = Vec::new();
    for file in files.iter().filter(|f| f.extension().is_some_and(|e| e == "yaml")) {
        let text = std::fs::read_to_string(file).unwrap();
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        for doc in serde_saphyr::from_multiple::<Value>(&text).unwrap() {
            docs.push((name.clone(), doc));
        }
    }
    docs
}

fn with_cluster_fields(mut doc: Value) -> Value {
    doc["metadata"]["namespace"] = "demo".into();
    doc["metadata"]["uid"] = "uid-1".into();
    doc
}

/// The `restricted` violations of a rendered Deployment's pod template, if any.
fn violations(deployment: &impl serde::Serialize) -> Option<String> {
    let d = serde_json::to_value(deployment).unwrap();
    let template = &d["spec"]["template"];
    let containers = template["spec"]["containers"].as_array();
    assert!(containers.is_some_and(|c| !c.is_empty()), "a pod template with containers: {d}");
    let restricted = LevelVersion::latest(Level::Restricted);
    let found = evaluate(restricted, &template["metadata"], &template["spec"]);
    (!found.is_empty()).then(|| forbidden_detail(&found))
}

#[test]
fn worker_and_router_pods_meet_the_restricted_standard() {
    let defaults = Defaults::default();
    let (mut engines, mut routers, mut broken) = (0, 0, Vec::new());
    for (file, doc) in examples() {
        let doc = with_cluster_fields(doc);
        let rendered = match doc["kind"].as_str() {
            Some("BlazeEngine") => {
                engines += 1;
                let e: BlazeEngine = serde_json::from_value(doc).unwrap();
                engine::deployment(&e, 1, &defaults).unwrap()
            }
            Some("BlazeRouter") => {
                routers += 1;
                let r: BlazeRouter = serde_json::from_value(doc).unwrap();
                router::deployment(&r, &["smollm2".to_owned()], &defaults).unwrap()
            }
            _ => continue,
        };
        let name = rendered.metadata.name.clone().unwrap_or_default();
        if let Some(v) = violations(&rendered) {
            broken.push(format!("{file} {name}: {v}"));
        }
    }
    assert!(engines >= 5 && routers >= 5, "the examples hold engines and routers");
    assert!(broken.is_empty(), "pods that break restricted:\n{}", broken.join("\n"));
}
