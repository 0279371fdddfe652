//! `rbac.yaml` grants exactly what the operator calls, no more.

use std::collections::BTreeSet;

use blaze_operator::controller::permissions::{CLUSTER, LEADER};
use k8s_openapi::api::rbac::v1::{ClusterRole, PolicyRule, Role};
use serde_json::Value;

type Grant = BTreeSet<(String, String, String)>;

/// The documents of a multi-document YAML file.
fn docs(text: &str) -> Vec<Value> {
    serde_saphyr::from_multiple(text).expect("YAML documents")
}

fn grants(rules: &[PolicyRule]) -> Grant {
    let mut g = Grant::new();
    for r in rules {
        assert!(r.resource_names.is_none() && r.non_resource_urls.is_none());
        for group in r.api_groups.iter().flatten() {
            for res in r.resources.iter().flatten() {
                for verb in &r.verbs {
                    assert!(
                        ![group, res, verb].iter().any(|s| s.contains('*')),
                        "wildcard in {r:?}"
                    );
                    g.insert((group.clone(), res.clone(), verb.clone()));
                }
            }
        }
    }
    g
}

fn wanted(table: &[(&str, &str, &[&str])]) -> Grant {
    table
        .iter()
        .flat_map(|(g, r, vs)| {
            vs.iter().map(move |v| (g.to_string(), r.to_string(), v.to_string()))
        })
        .collect()
}

#[test]
fn rbac_grants_exactly_the_calls_the_code_makes() {
    let text = include_str!("../rbac.yaml");
    let docs = docs(text);
    let kind = |d: &Value| d["kind"].as_str().unwrap_or("").to_owned();
    let cluster: Vec<ClusterRole> = docs
        .iter()
        .filter(|d| kind(d) == "ClusterRole")
        .map(|d| serde_json::from_value(d.clone()).unwrap())
        .collect();
    let roles: Vec<Role> = docs
        .iter()
        .filter(|d| kind(d) == "Role")
        .map(|d| serde_json::from_value(d.clone()).unwrap())
        .collect();
    assert_eq!(cluster.len(), 1);
    assert_eq!(roles.len(), 1);
    assert_eq!(grants(cluster[0].rules.as_deref().unwrap()), wanted(CLUSTER));
    assert_eq!(grants(roles[0].rules.as_deref().unwrap()), wanted(LEADER));
    assert!(
        docs.iter().any(|d| kind(d) == "ClusterRoleBinding")
            && docs.iter().any(|d| kind(d) == "RoleBinding")
    );
}

#[test]
fn the_install_manifest_carries_the_same_rbac() {
    // The install manifest is rendered from the Helm chart, whose objects carry its labels;
    // rbac.yaml has none. Everything else must be equal.
    let install: Vec<Value> = docs(include_str!("../../../manifests/install.yaml"))
        .into_iter()
        .map(|mut d| {
            if let Some(meta) = d.get_mut("metadata").and_then(|m| m.as_object_mut()) {
                meta.remove("labels");
            }
            d
        })
        .collect();
    for doc in docs(include_str!("../rbac.yaml")) {
        assert!(
            install.contains(&doc),
            "manifests/install.yaml lacks or differs from rbac.yaml's {} {}",
            doc["kind"].as_str().unwrap_or(""),
            doc["metadata"]["name"].as_str().unwrap_or("")
        );
    }
    let deployment = install
        .iter()
        .find(|d| d["kind"] == "Deployment")
        .expect("manifests/install.yaml has the operator Deployment");
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], "blaze-operator");
    let image = pod["containers"][0]["image"].as_str().unwrap();
    assert!(image.ends_with(&format!(":{}", env!("CARGO_PKG_VERSION"))), "{image}");
}

/// The chart's RBAC objects as `helm template` renders them with `values` (helm comes from
/// scripts/test-deps.sh).
fn chart_rbac(values: &[&str]) -> String {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../../charts/blaze");
    let mut cmd = std::process::Command::new("helm");
    cmd.args(["template", "blaze", root, "--show-only", "templates/rbac.yaml"]);
    for v in values {
        cmd.args(["--set", v]);
    }
    let out = cmd.output().expect("helm must be on the PATH (scripts/test-deps.sh installs it)");
    assert!(out.status.success(), "helm template: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// The chart grants what rbac.yaml does: cluster-wide by default, and the same rules as a
/// Role in the one namespace `operator.watchNamespace` names.
#[test]
fn the_chart_grants_the_same_rules() {
    let rules = |text: &str| -> Vec<(String, Value)> {
        docs(text)
            .into_iter()
            .filter(|d| d["rules"].is_array())
            .map(|d| (d["kind"].as_str().unwrap().to_owned(), d["rules"].clone()))
            .collect()
    };
    let plain = rules(include_str!("../rbac.yaml"));
    let chart = rules(&chart_rbac(&[]));
    assert_eq!(chart.len(), 2);
    assert_eq!(chart, plain, "charts/blaze/templates/rbac.yaml and rbac.yaml differ");
    let scoped = chart_rbac(&["operator.watchNamespace=team-a"]);
    let scoped_rules = rules(&scoped);
    let kinds: Vec<&str> = scoped_rules.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(kinds, ["Role", "Role"], "nothing cluster-wide with a watched namespace");
    assert_eq!(scoped_rules[0].1, plain[0].1, "the same rules, namespaced");
    let team_a = docs(&scoped)
        .into_iter()
        .filter(|d| d["metadata"]["name"] == "blaze-operator" && d["kind"] != "ServiceAccount")
        .map(|d| (d["kind"].as_str().unwrap().to_owned(), d["metadata"]["namespace"].clone()))
        .collect::<Vec<_>>();
    assert_eq!(
        team_a,
        [("Role".into(), "team-a".into()), ("RoleBinding".into(), "team-a".into())],
        "{scoped}"
    );
}

#[test]
fn the_operator_holds_what_it_grants_router_pods() {
    // RBAC refuses to create a Role granting more than its creator holds.
    let rule = blaze_operator::children::router::role(
        &serde_json::from_value(serde_json::json!({
            "apiVersion": "blaze.ai/v1alpha1", "kind": "BlazeRouter",
            "metadata": {"name": "r", "namespace": "default", "uid": "u"},
            "spec": {"engines": {"names": ["e"]}}
        }))
        .unwrap(),
    )
    .unwrap()
    .rules
    .unwrap();
    let held = wanted(CLUSTER);
    for r in &rule {
        for group in r.api_groups.iter().flatten() {
            for res in r.resources.iter().flatten() {
                for verb in &r.verbs {
                    let grant = (group.clone(), res.clone(), verb.clone());
                    assert!(
                        held.contains(&grant),
                        "router pods get {grant:?}, the operator lacks it"
                    );
                }
            }
        }
    }
}
