//! The diffusion example as a user applies it.

use std::sync::Arc;

use anyhow::{Context as _, Result, ensure};
use base64::Engine as _;
use blaze::dev::{apply, install};
use blaze_devnode::k8s::service_proxy::{self, ServiceTarget};
use blaze_e2e::{cluster, http, until};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::{Value, json};

use crate::Fixture;

const EXAMPLE: &str = include_str!("../../manifests/examples/engine-diffusion.yaml");

/// `manifests/examples/engine-diffusion.yaml` (the tiny pipeline the model claim holds)
/// serves OpenAI's `/v1/images/generations` through its router: two PNGs of the asked size,
/// each with its seed, and a bad size refused with a 400 naming it.
pub async fn the_diffusion_example_returns_a_png_through_its_router(f: Arc<Fixture>) -> Result<()> {
    let dev = f.cluster().await?;
    let client = dev.client().await?;
    let ns = "diffusion";
    cluster::namespace(&client, ns).await?;
    install::models_claim(&client, dev.dir(), dev.models(), ns).await?;
    let objects = apply::parse(EXAMPLE, "the diffusion example")?;
    let objects: Vec<_> = objects
        .into_iter()
        .map(|mut o| {
            o.metadata.namespace = Some(ns.to_owned());
            o
        })
        .collect();
    apply::apply_all(&client, &objects).await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let target = ServiceTarget {
        namespace: ns.to_owned(),
        name: blaze_operator::labels::router_child_name("tiny-sd-api"),
        port: IntOrString::String("http".into()),
    };
    let forward = tokio::spawn(service_proxy::forward(client.clone(), target, listener));

    let ask = json!({"model": "tiny-sd", "prompt": "a lighthouse at dusk", "n": 2, "size": "96x64", "seed": 7});
    let body = ask.to_string();
    let answer = until("images through the router", 420, async || {
        let out = http::request(&url, "POST", "/v1/images/generations", &body).await.ok()?;
        let (head, json) = out.split_once("\r\n\r\n")?;
        head.starts_with("HTTP/1.1 200").then(|| serde_json::from_str::<Value>(json).ok())?
    })
    .await;
    let bad = json!({"model": "tiny-sd", "prompt": "a lighthouse", "size": "100x64"}).to_string();
    let refused = http::request(&url, "POST", "/v1/images/generations", &bad).await;
    forward.abort();
    // Its worker and router go, so that they take nothing from the scenarios that measure
    // latency alone after this one.
    cluster::delete_engine_and_router(&client, ns, "tiny-sd", "tiny-sd-api").await?;
    let answer = answer?;
    let data = answer["data"].as_array().context("no data")?;
    ensure!(data.len() == 2, "{} images", data.len());
    for (i, image) in data.iter().enumerate() {
        ensure!(image["seed"] == 7 + i as u64, "image {i}: seed {}", image["seed"]);
        let b64 = image["b64_json"].as_str().context("no b64_json")?;
        let png = base64::engine::general_purpose::STANDARD.decode(b64)?;
        ensure!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "image {i} is not a PNG");
        // The IHDR chunk: width and height, big-endian, at bytes 16..24.
        let side = |at: usize| u32::from_be_bytes([png[at], png[at + 1], png[at + 2], png[at + 3]]);
        ensure!((side(16), side(20)) == (96, 64), "image {i} is {}x{}", side(16), side(20));
    }
    let refused = refused?;
    ensure!(refused.starts_with("HTTP/1.1 400"), "{refused}");
    ensure!(refused.contains(r#""param":"size""#), "{refused}");
    Ok(())
}
