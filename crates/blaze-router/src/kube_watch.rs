//! In-cluster delivery: watch the ConfigMap the operator renders (see the crate docs for why)
//! through the API server and apply each new routing document.
//!
//! A watch event reaches the router within milliseconds of the operator's write, well within
//! the two seconds allowed. A document that does not parse is refused and counted, and the
//! router keeps the last good one, exactly as with the file.

use blaze_api::routing::{CONFIG_MAP_KEY, RoutingConfig};
use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use kube::runtime::watcher;

use crate::{Error, Result, config};

/// The routing document inside a ConfigMap.
pub fn from_config_map(cm: &ConfigMap) -> Result<RoutingConfig> {
    let name = cm.metadata.name.clone().unwrap_or_default();
    let text = cm.data.as_ref().and_then(|d| d.get(CONFIG_MAP_KEY)).ok_or_else(|| {
        Error::InvalidConfig(format!("ConfigMap {name} has no key {CONFIG_MAP_KEY}"))
    })?;
    config::parse(text, &format!("ConfigMap {name}"))
}

/// Reads the ConfigMap once (so the router starts with a configuration), then watches it
/// forever, calling `apply` with every new good document and `on_error` with every bad one.
pub async fn watch(
    api: Api<ConfigMap>,
    name: String,
    apply: impl Fn(RoutingConfig) + Send,
    on_error: impl Fn(&Error) + Send,
) {
    let cfg = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut events = std::pin::pin!(watcher(api, cfg));
    let mut last: Option<String> = None;
    while let Some(ev) = events.next().await {
        let cm = match ev {
            Ok(watcher::Event::Apply(cm) | watcher::Event::InitApply(cm)) => cm,
            Ok(watcher::Event::Delete(_)) => {
                tracing::warn!(configmap = %name, "routing ConfigMap deleted; keeping the last configuration");
                continue;
            }
            Ok(_) => continue,
            Err(e) => {
                // The watcher retries by itself; say so once per error.
                tracing::warn!(configmap = %name, error = %e, "watching the routing ConfigMap");
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                continue;
            }
        };
        let text = cm.data.as_ref().and_then(|d| d.get(CONFIG_MAP_KEY)).cloned();
        if text.is_some() && text == last {
            continue;
        }
        last = text;
        match from_config_map(&cm) {
            Ok(c) => apply(c),
            Err(e) => on_error(&e),
        }
    }
}

/// Reads the ConfigMap once, for start-up.
pub async fn fetch(api: &Api<ConfigMap>, name: &str) -> Result<RoutingConfig> {
    let cm = api
        .get(name)
        .await
        .map_err(|e| Error::InvalidConfig(format!("reading ConfigMap {name}: {e}")))?;
    from_config_map(&cm)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_is_read_from_the_routing_key() {
        let mut cm = ConfigMap::default();
        cm.metadata.name = Some("chat-routing".into());
        assert!(from_config_map(&cm).unwrap_err().to_string().contains("routing.yaml"));
        cm.data = Some(
            [(CONFIG_MAP_KEY.to_owned(), "endpoints:\n- address: 10.0.0.1:8000\n".to_owned())]
                .into_iter()
                .collect(),
        );
        assert_eq!(from_config_map(&cm).unwrap().endpoints[0].address, "10.0.0.1:8000");
    }
}
