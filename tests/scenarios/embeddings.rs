//! The embedding example as a user applies it.

use std::sync::Arc;

use anyhow::{Context as _, Result, ensure};
use blaze::dev::{apply, install};
use blaze_devnode::k8s::service_proxy::{self, ServiceTarget};
use blaze_e2e::{cluster, http, until};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::{Value, json};

use crate::Fixture;

const EXAMPLE: &str = include_str!("../../manifests/examples/engine-embedding.yaml");

/// `manifests/examples/engine-embedding.yaml` (one replica, to spare the machine) serves
/// OpenAI's `/v1/embeddings` through its router: 384 numbers per input, a paraphrase closer
/// than an unrelated sentence.
pub async fn the_embedding_example_serves_embeddings_through_its_router(
    f: Arc<Fixture>,
) -> Result<()> {
    let dev = f.cluster().await?;
    let client = dev.client().await?;
    let ns = "embeddings";
    cluster::namespace(&client, ns).await?;
    install::models_claim(&client, dev.dir(), dev.models(), ns).await?;
    let mut objects = apply::parse(EXAMPLE, "the embedding example")?;
    for o in &mut objects {
        o.metadata.namespace = Some(ns.to_owned());
        if o.types.as_ref().is_some_and(|t| t.kind == "BlazeEngine") {
            o.data["spec"]["replicas"] = json!(1);
            o.data["spec"]["resources"]["cpu"] = json!("1");
        }
    }
    apply::apply_all(&client, &objects).await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let target = ServiceTarget {
        namespace: ns.to_owned(),
        name: blaze_operator::labels::router_child_name("minilm-api"),
        port: IntOrString::String("http".into()),
    };
    let forward = tokio::spawn(service_proxy::forward(client.clone(), target, listener));

    let body = json!({
        "model": "minilm",
        "input": ["A cat sits on the mat.", "A kitten is sitting on a rug.", "Stock markets fell sharply today."],
    })
    .to_string();
    let answer = until("embeddings through the router", 420, async || {
        let out = http::request(&url, "POST", "/v1/embeddings", &body).await.ok()?;
        let (head, json) = out.split_once("\r\n\r\n")?;
        head.starts_with("HTTP/1.1 200").then(|| serde_json::from_str::<Value>(json).ok())?
    })
    .await;
    forward.abort();
    // Its workers and router go, so that they take nothing from the scenarios that measure
    // latency alone after this one.
    cluster::delete_engine_and_router(&client, ns, "minilm", "minilm-api").await?;
    let answer = answer?;
    let vectors: Vec<Vec<f64>> = answer["data"]
        .as_array()
        .context("no data")?
        .iter()
        .map(|d| d["embedding"].as_array().map(|v| v.iter().filter_map(Value::as_f64).collect()))
        .collect::<Option<_>>()
        .context("an embedding that is not a list of numbers")?;
    ensure!(vectors.len() == 3 && vectors.iter().all(|v| v.len() == 384), "{answer}");
    let cosine = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>();
    let (close, far) = (cosine(&vectors[0], &vectors[1]), cosine(&vectors[0], &vectors[2]));
    ensure!(close > far + 0.2, "paraphrase {close:.3}, unrelated {far:.3}");
    Ok(())
}
