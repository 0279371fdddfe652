//! What `blaze dev up` and `blaze dev status` show: one line per pod, engine and router.

use std::collections::BTreeMap;

use blaze_api::conditions::find;
use blaze_api::engine::BlazeEngine;
use blaze_api::router::BlazeRouter;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use kube::{Client, ResourceExt};

/// The state of the cluster's workloads, keyed by object.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Snapshot {
    /// `kind/namespace/name` -> the line describing it.
    pub lines: BTreeMap<String, String>,
    /// `namespace/name` of BlazeEngines and BlazeRouters whose `Ready` condition is `True`.
    pub ready: Vec<String>,
}

impl Snapshot {
    /// Reads pods, engines and routers in every namespace.
    pub async fn read(client: &Client) -> anyhow::Result<Self> {
        let mut snap = Snapshot::default();
        let lp = ListParams::default();
        for pod in Api::<Pod>::all(client.clone()).list(&lp).await? {
            let key = format!("pod/{}/{}", pod.namespace().unwrap_or_default(), pod.name_any());
            snap.lines.insert(key, pod_line(&pod));
        }
        for e in Api::<BlazeEngine>::all(client.clone()).list(&lp).await? {
            let id = format!("{}/{}", e.namespace().unwrap_or_default(), e.name_any());
            let status = e.status.clone().unwrap_or_default();
            let line = format!(
                "blazeengine {id}: {}/{} ready{}",
                status.ready_replicas,
                e.spec.replicas,
                condition_text(find(&status.conditions, "Ready"))
            );
            if blaze_api::conditions::is_true(&status.conditions, "Ready") {
                snap.ready.push(id.clone());
            }
            snap.lines.insert(format!("blazeengine/{id}"), line);
        }
        for r in Api::<BlazeRouter>::all(client.clone()).list(&lp).await? {
            let id = format!("{}/{}", r.namespace().unwrap_or_default(), r.name_any());
            let status = r.status.clone().unwrap_or_default();
            let line =
                format!("blazerouter {id}:{}", condition_text(find(&status.conditions, "Ready")));
            if blaze_api::conditions::is_true(&status.conditions, "Ready") {
                snap.ready.push(id.clone());
            }
            snap.lines.insert(format!("blazerouter/{id}"), line);
        }
        Ok(snap)
    }

    /// Lines that are new or changed since `before`, and objects that went away.
    pub fn changes(&self, before: &Snapshot) -> Vec<String> {
        let mut out: Vec<String> = self
            .lines
            .iter()
            .filter(|(k, v)| before.lines.get(*k) != Some(*v))
            .map(|(_, v)| v.clone())
            .collect();
        for k in before.lines.keys().filter(|k| !self.lines.contains_key(*k)) {
            out.push(format!("{k} deleted"));
        }
        out
    }
}

fn condition_text(c: Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition>) -> String {
    match c {
        None => " (not reconciled yet)".into(),
        Some(c) if c.status == "True" => " Ready".into(),
        Some(c) if c.message.is_empty() => format!(" not ready: {}", c.reason),
        Some(c) => format!(" not ready: {}: {}", c.reason, c.message),
    }
}

/// `pod NS/NAME: PHASE, READY/TOTAL ready[, restarts N][, waiting: REASON]`.
pub fn pod_line(pod: &Pod) -> String {
    let status = pod.status.clone().unwrap_or_default();
    let containers = status.container_statuses.unwrap_or_default();
    let total = pod.spec.as_ref().map_or(0, |s| s.containers.len());
    let ready = containers.iter().filter(|c| c.ready).count();
    let restarts: i32 = containers.iter().map(|c| c.restart_count).sum();
    let mut line = format!(
        "pod {}/{}: {}, {ready}/{total} ready",
        pod.namespace().unwrap_or_default(),
        pod.name_any(),
        status.phase.unwrap_or_else(|| "Pending".into())
    );
    if restarts > 0 {
        line.push_str(&format!(", restarts {restarts}"));
    }
    let waiting =
        containers.iter().filter_map(|c| c.state.as_ref()?.waiting.as_ref()?.reason.clone()).next();
    let unscheduled = status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "PodScheduled" && c.status == "False")
        .and_then(|c| c.reason.clone());
    if let Some(reason) = waiting.or(unscheduled) {
        line.push_str(&format!(", {reason}"));
    }
    if pod.metadata.deletion_timestamp.is_some() {
        line.push_str(", Terminating");
    }
    line
}
