//! A router serving TLS.

use std::sync::Arc;

use anyhow::{Result, ensure};
use blaze_api::router::BlazeRouter;
use blaze_e2e::http::{Certificate, get_tls};
use blaze_e2e::{Quickstart, pods, until};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::ListParams;

use crate::Fixture;

/// A BlazeRouter with `spec.tls` serves from a `kubernetes.io/tls` Secret, HTTP/2 by ALPN,
/// and passes requests on to the workers.
pub async fn a_router_serves_http2_over_tls_from_a_secret(f: Arc<Fixture>) -> Result<()> {
    let q = Quickstart::deploy(f.cluster().await?, "tls").await?;
    let cert = Certificate::localhost()?;
    let secret = Secret {
        metadata: kube::api::ObjectMeta { name: Some("secure-tls".into()), ..Default::default() },
        type_: Some("kubernetes.io/tls".into()),
        data: Some(
            [("tls.crt", &cert.cert_pem), ("tls.key", &cert.key_pem)]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), ByteString(v.clone().into_bytes())))
                .collect(),
        ),
        ..Default::default()
    };
    q.api::<Secret>().create(&Default::default(), &secret).await?;
    let secure: BlazeRouter = serde_saphyr::from_str(
        "apiVersion: blaze.ai/v1alpha1\nkind: BlazeRouter\nmetadata: {name: secure}\n\
         spec: {engines: {names: [smollm2]}, replicas: 1, tls: {secretName: secure-tls}}\n",
    )?;
    q.api::<BlazeRouter>().create(&Default::default(), &secure).await?;
    let ip = until("the TLS router's pod ready", 90, async || {
        let params = ListParams::default().labels("blaze.ai/router=secure");
        let list = q.api::<Pod>().list(&params).await.ok()?.items;
        list.iter().filter(|p| pods::ready(p)).find_map(|p| p.status.as_ref()?.pod_ip.clone())
    })
    .await?;
    let (version, models) = until("the model list over TLS", 60, async || {
        let (version, status, body) =
            get_tls(&format!("{ip}:8080"), &cert.ca, "/v1/models").await.ok()?;
        (status == 200 && body.contains("smollm2")).then_some((version, body))
    })
    .await?;
    ensure!(version == http::Version::HTTP_2, "served over {version:?}: {models}");
    Ok(())
}
