//! `rbac.yaml` grants exactly what the operator calls, no more.

use std::collections::BTreeSet;

use blaze_operator::controller::permissions::{CLUSTER, LEADER};
use k8s_openapi::api::rbac::v1::{ClusterRole, PolicyRule, Role};
use serde::Deserialize;

type Grant = BTreeSet<(String, String, String)>;

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
    let docs: Vec<serde_yaml::Value> = serde_yaml::Deserializer::from_str(text)
        .map(|d| serde_yaml::Value::deserialize(d).unwrap())
        .collect();
    let kind = |d: &serde_yaml::Value| d["kind"].as_str().unwrap_or("").to_owned();
    let cluster: Vec<ClusterRole> = docs
        .iter()
        .filter(|d| kind(d) == "ClusterRole")
        .map(|d| serde_yaml::from_value(d.clone()).unwrap())
        .collect();
    let roles: Vec<Role> = docs
        .iter()
        .filter(|d| kind(d) == "Role")
        .map(|d| serde_yaml::from_value(d.clone()).unwrap())
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
