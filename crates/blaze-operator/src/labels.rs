//! Names and labels of the objects the operator creates. Selectors use only labels that never
//! change for an object's life, because a Deployment's selector is immutable.

use std::collections::BTreeMap;

/// Label carrying the BlazeEngine a worker pod belongs to.
pub(crate) const ENGINE_LABEL: &str = "blaze.ai/engine";
/// Label carrying the BlazeRouter a router pod belongs to.
pub(crate) const ROUTER_LABEL: &str = "blaze.ai/router";
/// `app.kubernetes.io/name`.
pub(crate) const NAME_LABEL: &str = "app.kubernetes.io/name";
/// `app.kubernetes.io/instance`.
pub(crate) const INSTANCE_LABEL: &str = "app.kubernetes.io/instance";
/// `app.kubernetes.io/component`.
pub(crate) const COMPONENT_LABEL: &str = "app.kubernetes.io/component";
/// `app.kubernetes.io/managed-by`.
pub(crate) const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
/// `app.kubernetes.io/part-of`.
pub(crate) const PART_OF_LABEL: &str = "app.kubernetes.io/part-of";
/// Who manages the children, as `app.kubernetes.io/managed-by` says.
pub(crate) const MANAGED_BY: &str = "blaze-operator";
/// The worker binary and container name.
pub(crate) const WORKER: &str = "blaze-worker";
/// The router binary and container name.
pub(crate) const ROUTER: &str = "blaze-router";

/// Suffix of an engine's child names.
pub(crate) const WORKER_SUFFIX: &str = "-worker";

/// Name of an engine's Deployment, Service and PodDisruptionBudget.
pub fn engine_child_name(engine: &str) -> String {
    format!("{engine}{WORKER_SUFFIX}")
}

/// Name of a router's Deployment, Service and ConfigMap.
pub fn router_child_name(router: &str) -> String {
    format!("{router}-router")
}

/// The labels that select an engine's worker pods (stable for the engine's life).
pub(crate) fn engine_selector(engine: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (NAME_LABEL.to_owned(), WORKER.to_owned()),
        (ENGINE_LABEL.to_owned(), engine.to_owned()),
    ])
}

/// The labels that select a router's pods.
pub(crate) fn router_selector(router: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (NAME_LABEL.to_owned(), ROUTER.to_owned()),
        (ROUTER_LABEL.to_owned(), router.to_owned()),
    ])
}

/// Every label of an engine's children and pods.
pub(crate) fn engine_labels(engine: &str) -> BTreeMap<String, String> {
    let mut l = engine_selector(engine);
    common(&mut l, engine, "engine");
    l
}

/// Every label of a router's children and pods.
pub(crate) fn router_labels(router: &str) -> BTreeMap<String, String> {
    let mut l = router_selector(router);
    common(&mut l, router, "router");
    l
}

fn common(l: &mut BTreeMap<String, String>, instance: &str, component: &str) {
    l.insert(INSTANCE_LABEL.to_owned(), instance.to_owned());
    l.insert(COMPONENT_LABEL.to_owned(), component.to_owned());
    l.insert(MANAGED_BY_LABEL.to_owned(), MANAGED_BY.to_owned());
    l.insert(PART_OF_LABEL.to_owned(), "blaze".to_owned());
}

/// A selector in the string form of `status.selector` (`k=v,k=v`, sorted).
pub(crate) fn selector_string(selector: &BTreeMap<String, String>) -> String {
    selector.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selector_is_a_subset_of_the_labels_and_renders_sorted() {
        let labels = engine_labels("chat");
        for (k, v) in engine_selector("chat") {
            assert_eq!(labels.get(&k), Some(&v));
        }
        assert_eq!(
            selector_string(&engine_selector("chat")),
            "app.kubernetes.io/name=blaze-worker,blaze.ai/engine=chat"
        );
        assert_eq!(labels[MANAGED_BY_LABEL], "blaze-operator");
        assert_eq!(router_child_name("front"), "front-router");
    }
}
