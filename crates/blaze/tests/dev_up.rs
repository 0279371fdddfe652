//! `blaze dev up` end to end, as a user runs it: the real binaries (the operator, workers and
//! router as pods, that is processes), the real SmolLM2 model, kubectl. One long scenario,
//! since every step needs the model loaded: the quickstart serves a chat completion through
//! its router, `kubectl scale` gives three workers, a killed worker comes back, an engine
//! asking for more GPUs than exist is Unschedulable, restarting the operator rewrites nothing,
//! deleting the engine ends its processes, and `blaze dev down` leaves no process behind.
//!
//! Needs the workspace's binaries built (`cargo test --workspace` builds them) and the model in
//! `.dev/models` (`scripts/fetch-models.sh`; `make test` runs it).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use blaze::closed_loop::{Setup, pid, ready, until};
use blaze_api::engine::BlazeEngine;
use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{Api, DeleteParams, ListParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, ResourceExt};

const BLAZE: &str = env!("CARGO_BIN_EXE_blaze");
const WORKERS: &str = "blaze.ai/engine=smollm2";

/// The binaries beside `blaze` and the model cache, checked.
fn setup() -> Setup {
    let models = std::env::var_os("BLAZE_TEST_MODELS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.dev/models"));
    Setup::new(BLAZE.into(), None, models).unwrap_or_else(|e| panic!("{e}"))
}

async fn poll<T>(what: &str, secs: u64, f: impl AsyncFnMut() -> Option<T>) -> T {
    until(what, secs, f).await.unwrap_or_else(|e| panic!("{e}"))
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| !s.rsplit(')').next().unwrap_or("").trim_start().starts_with('Z'))
        .unwrap_or(false)
}

fn pids(pods: &[Pod]) -> Vec<u32> {
    pods.iter().filter_map(pid).filter_map(|p| u32::try_from(p).ok()).collect()
}

fn condition(e: &BlazeEngine, type_: &str) -> Option<(String, String)> {
    let c = e.status.as_ref()?.conditions.iter().find(|c| c.type_ == type_)?;
    Some((c.status.clone(), c.reason.clone()))
}

/// A running `blaze dev up`, stopped with `blaze dev down` (or killed) when dropped.
struct Dev {
    child: Child,
    dir: tempfile::TempDir,
}

impl Drop for Dev {
    fn drop(&mut self) {
        let _ = Command::new(BLAZE).args(["dev", "down", "--dir"]).arg(self.dir.path()).status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn kubectl(dev: &Dev, args: &[&str]) -> String {
    let out = Command::new("kubectl")
        .args(args)
        .env("KUBECONFIG", dev.dir.path().join("kubeconfig"))
        .output()
        .expect("kubectl must be on the PATH");
    assert!(out.status.success(), "kubectl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Sends a request with a JSON body over HTTP/1.1 and returns the whole response.
async fn request(url: &str, method: &str, path: &str, body: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = url.trim_start_matches("http://");
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out).await;
    out
}

/// Follows the quickstart's routing ConfigMap and the router's `/metrics` (at `metrics_url`)
/// together, every 50 ms, until the router lists `n` endpoints, and returns, for each larger
/// endpoint set the ConfigMap was seen with, how long after that the router showed it (zero
/// when the router showed it before the ConfigMap was sampled with it).
async fn endpoint_delivery(client: &Client, metrics_url: &str, n: usize) -> Vec<Duration> {
    let cms: Api<k8s_openapi::api::core::v1::ConfigMap> =
        Api::namespaced(client.clone(), "default");
    let deadline = Instant::now() + Duration::from_secs(240);
    let mut written: Vec<Option<Instant>> = vec![None; n + 1];
    let mut delays = Vec::new();
    let mut shown = None;
    loop {
        assert!(Instant::now() < deadline, "the router never listed {n} endpoints");
        if let Ok(cm) = cms.get("quickstart-routing").await {
            let doc = cm.data.and_then(|d| d.get("routing.yaml").cloned()).unwrap_or_default();
            let listed = doc.matches("address:").count().min(n);
            written[listed].get_or_insert_with(Instant::now);
        }
        let metrics = request(metrics_url, "GET", "/metrics", "").await;
        let seen = metrics.lines().filter(|l| l.starts_with("blaze_router_endpoint_weight{"));
        let seen = seen.count().min(n);
        // The set the router had before the change is no measurement.
        let before = *shown.get_or_insert(seen);
        let new = written.iter().take(seen + 1).skip(before + 1);
        delays.extend(new.map(|w| w.map_or(Duration::ZERO, |at| at.elapsed())));
        shown = Some(seen.max(before));
        if seen == n {
            return delays;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A CA and a certificate for `localhost` it signed: the CA, the certificate and its key, PEM.
fn certificate() -> (rustls::pki_types::CertificateDer<'static>, String, String) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    let leaf = leaf.signed_by(&key, &ca, &ca_key).unwrap();
    (ca.der().clone(), leaf.pem(), key.serialize_pem())
}

/// GET `path` over TLS (trusting `ca`, as `localhost`, offering HTTP/2 and HTTP/1.1) from
/// `addr`, over HTTP/2 when the server picks it: the version, status and body, or `None` if
/// the connection failed.
async fn get_tls(
    addr: &str,
    ca: &rustls::pki_types::CertificateDer<'static>,
    path: &str,
) -> Option<(http::Version, u16, String)> {
    use http_body_util::BodyExt as _;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.clone()).ok()?;
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .ok()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let tcp = tokio::net::TcpStream::connect(addr).await.ok()?;
    let name = rustls::pki_types::ServerName::try_from("localhost").ok()?;
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let tls = connector.connect(name, tcp).await.ok()?;
    let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
    let io = hyper_util::rt::TokioIo::new(tls);
    let empty = http_body_util::Empty::<bytes::Bytes>::new();
    let resp = if h2 {
        let exec = hyper_util::rt::TokioExecutor::new();
        let (mut tx, conn) = hyper::client::conn::http2::handshake(exec, io).await.ok()?;
        tokio::spawn(conn);
        let req = http::Request::get(format!("https://localhost{path}")).body(empty).ok()?;
        tx.send_request(req).await.ok()?
    } else {
        let (mut tx, conn) = hyper::client::conn::http1::handshake(io).await.ok()?;
        tokio::spawn(conn);
        let req = http::Request::get(path).header("host", "localhost").body(empty).ok()?;
        tx.send_request(req).await.ok()?
    };
    let (version, status) = (resp.version(), resp.status().as_u16());
    let body = resp.into_body().collect().await.ok()?.to_bytes();
    Some((version, status, String::from_utf8_lossy(&body).into_owned()))
}

/// `blaze dev up` with pods on `pod_addresses` (each scenario its own range, as they run at
/// once).
async fn start(pod_addresses: &str) -> (Dev, Client, String) {
    let setup = setup();
    let dir = tempfile::tempdir().unwrap();
    let child = Command::new(BLAZE)
        .args(["dev", "up", "--listen", "127.0.0.1:0", "--port", "0"])
        .args(["--pod-addresses", pod_addresses, "--dir"])
        .arg(dir.path())
        .arg("--models")
        .arg(&setup.models)
        .env("BLAZE_BIN_DIR", &setup.bin_dir)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let dev = Dev { child, dir };
    let info_path = dev.dir.path().join("blaze-dev.json");
    let url = poll("blaze dev up to expose the router", 60, async || {
        let info: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&info_path).ok()?).ok()?;
        info["routers"][0][1].as_str().map(str::to_owned)
    })
    .await;
    let kc = Kubeconfig::read_from(dev.dir.path().join("kubeconfig")).unwrap();
    let config =
        kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await.unwrap();
    (dev, Client::try_from(config).unwrap(), url)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quickstart_serves_scales_recovers_and_cleans_up() {
    let (dev, client, url) = start("127.0.60.1-127.0.60.254").await;
    let engines: Api<BlazeEngine> = Api::namespaced(client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let ready_workers = async |n: usize| {
        poll(&format!("{n} ready workers"), 240, async || {
            let list = pods.list(&ListParams::default().labels(WORKERS)).await.ok()?.items;
            let ready: Vec<Pod> = list.into_iter().filter(ready).collect();
            let e = engines.get("smollm2").await.ok()?;
            let status = e.status.clone()?;
            (ready.len() == n && status.ready_replicas == n as i32).then_some(ready)
        })
        .await
    };

    // The quickstart: a Ready engine and router, and a chat completion through the router.
    let first = ready_workers(1).await;
    poll("router Ready", 120, async || {
        let r = Api::<blaze_api::router::BlazeRouter>::namespaced(client.clone(), "default")
            .get("quickstart")
            .await
            .ok()?;
        blaze_api::conditions::is_true(&r.status?.conditions, "Ready").then_some(())
    })
    .await;
    let body = r#"{"model": "smollm2", "messages": [{"role": "system", "content": "You are a helpful assistant."}, {"role": "user", "content": "What is the capital of France?"}], "temperature": 0, "max_tokens": 24}"#;
    let answer = poll("a chat completion through the router", 60, async || {
        let out = request(&url, "POST", "/v1/chat/completions", body).await;
        out.starts_with("HTTP/1.1 200").then_some(out)
    })
    .await;
    assert!(answer.contains("Paris"), "{answer}");
    let listing = kubectl(&dev, &["get", "pods", "-A"]);
    assert!(listing.contains("READY") && listing.contains("STATUS"), "{listing}");
    assert_eq!(listing.matches("Running").count(), 3, "operator, worker, router:\n{listing}");

    // kubectl scale through the scale subresource. The router pods watch their routing
    // ConfigMap: each new endpoint reaches them within two seconds of the operator's write.
    let router_pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let router_ip = router_pods
        .list(&ListParams::default().labels("blaze.ai/router=quickstart"))
        .await
        .unwrap()
        .items
        .iter()
        .find_map(|p| p.status.as_ref()?.pod_ip.clone())
        .expect("a router pod with an IP");
    let metrics_url = format!("http://{router_ip}:9090");
    kubectl(&dev, &["scale", "be/smollm2", "--replicas", "3"]);
    let delays = endpoint_delivery(&client, &metrics_url, 3).await;
    eprintln!("routing changes reached the router after {delays:?}");
    assert!(
        !delays.is_empty() && delays.iter().all(|d| *d < Duration::from_secs(2)),
        "the router saw a routing change more than 2 s after it was written: {delays:?}"
    );
    let three = ready_workers(3).await;
    assert!(pids(&three).contains(&pids(&first)[0]), "scaling up keeps the first worker");

    // A killed worker process is restarted and the engine is whole again.
    let victim = pids(&three)[1];
    Command::new("kill").args(["-9", &victim.to_string()]).status().unwrap();
    poll("the killed worker restarted", 120, async || {
        let list = pods.list(&ListParams::default().labels(WORKERS)).await.ok()?.items;
        let restarted = list
            .iter()
            .flat_map(|p| p.status.iter().flat_map(|s| s.container_statuses.iter().flatten()))
            .any(|c| c.restart_count >= 1);
        restarted.then_some(())
    })
    .await;
    let recovered = ready_workers(3).await;
    assert!(!pids(&recovered).contains(&victim));

    // A router serving TLS from a kubernetes.io/tls Secret: HTTP/2 by ALPN, on to the workers.
    let (ca, cert, key) = certificate();
    let secret = Secret {
        metadata: kube::api::ObjectMeta { name: Some("secure-tls".into()), ..Default::default() },
        type_: Some("kubernetes.io/tls".into()),
        data: Some(
            [("tls.crt", cert), ("tls.key", key)]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), ByteString(v.into_bytes())))
                .collect(),
        ),
        ..Default::default()
    };
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "default");
    secrets.create(&Default::default(), &secret).await.unwrap();
    let secure: blaze_api::router::BlazeRouter = serde_saphyr::from_str(
        "apiVersion: blaze.ai/v1alpha1\nkind: BlazeRouter\nmetadata: {name: secure, namespace: default}\n\
         spec: {engines: {names: [smollm2]}, replicas: 1, tls: {secretName: secure-tls}}\n",
    )
    .unwrap();
    Api::<blaze_api::router::BlazeRouter>::namespaced(client.clone(), "default")
        .create(&Default::default(), &secure)
        .await
        .unwrap();
    let secure_ip = poll("the TLS router's pod ready", 90, async || {
        let list = pods.list(&ListParams::default().labels("blaze.ai/router=secure")).await;
        list.ok()?.items.iter().filter(|p| ready(p)).find_map(|p| p.status.as_ref()?.pod_ip.clone())
    })
    .await;
    let (version, models) = poll("the model list over TLS", 60, async || {
        let (version, status, body) =
            get_tls(&format!("{secure_ip}:8080"), &ca, "/v1/models").await?;
        (status == 200 && body.contains("smollm2")).then_some((version, body))
    })
    .await;
    assert_eq!(version, http::Version::HTTP_2, "{models}");

    // More GPUs than any node has: Unschedulable, said in the engine's status.
    let greedy: BlazeEngine = serde_saphyr::from_str(
        "apiVersion: blaze.ai/v1alpha1\nkind: BlazeEngine\nmetadata: {name: greedy, namespace: default}\n\
         spec: {kind: llm, model: {source: 'pvc://blaze-models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf'}, resources: {gpus: 8}}\n",
    )
    .unwrap();
    engines.create(&Default::default(), &greedy).await.unwrap();
    let unschedulable = poll("greedy Unschedulable", 60, async || {
        let e = engines.get("greedy").await.ok()?;
        condition(&e, "Unschedulable").filter(|(s, _)| s == "True")
    })
    .await;
    assert_eq!(unschedulable.1, "InsufficientGPU");

    // Restarting the operator rewrites nothing that was right.
    let before = deployments.list(&ListParams::default()).await.unwrap().items;
    let operator_pods: Api<Pod> = Api::namespaced(client.clone(), "blaze-system");
    let old = operator_pods.list(&ListParams::default()).await.unwrap().items;
    operator_pods.delete(&old[0].name_any(), &DeleteParams::default()).await.unwrap();
    poll("a new operator pod ready", 90, async || {
        let list = operator_pods.list(&ListParams::default()).await.ok()?.items;
        list.iter().any(|p| p.name_any() != old[0].name_any() && ready(p)).then_some(())
    })
    .await;
    let lease: Api<k8s_openapi::api::coordination::v1::Lease> =
        Api::namespaced(client.clone(), "blaze-system");
    poll("the new operator to lead", 60, async || {
        let holder = lease.get("blaze-operator-leader").await.ok()?.spec?.holder_identity?;
        (holder != old[0].name_any()).then_some(())
    })
    .await;
    // Wait until the new leader has reconciled both engines and the router (its own metrics
    // say so), then nothing may have been rewritten.
    let new_ip = poll("the new operator's address", 30, async || {
        let list = operator_pods.list(&ListParams::default()).await.ok()?.items;
        let p = list.into_iter().find(|p| p.name_any() != old[0].name_any())?;
        p.status?.pod_ip
    })
    .await;
    poll("the new operator to reconcile everything", 60, async || {
        let metrics = request(&format!("http://{new_ip}:8080"), "GET", "/metrics", "").await;
        let count = |controller: &str| -> u64 {
            let prefix = format!("blaze_operator_reconciles_total{{controller=\"{controller}\"}} ");
            let line = metrics.lines().find_map(|l| l.strip_prefix(&prefix));
            line.and_then(|v| v.trim().parse().ok()).unwrap_or(0)
        };
        (count("engine") >= 2 && count("router") >= 1).then_some(())
    })
    .await;
    let after = deployments.list(&ListParams::default()).await.unwrap().items;
    let ids = |l: &[Deployment]| -> Vec<(String, Option<String>, Option<i64>)> {
        let mut v: Vec<_> =
            l.iter().map(|d| (d.name_any(), d.uid(), d.metadata.generation)).collect();
        v.sort();
        v
    };
    assert_eq!(ids(&before), ids(&after), "same Deployments, same uids, no spec rewritten");

    // Deleting the engine removes every worker process.
    let worker_pids = pids(&ready_workers(3).await);
    engines.delete("smollm2", &DeleteParams::default()).await.unwrap();
    poll("no worker pods", 90, async || {
        let list = pods.list(&ListParams::default().labels(WORKERS)).await.ok()?.items;
        list.is_empty().then_some(())
    })
    .await;
    poll("no worker processes", 30, async || worker_pids.iter().all(|p| !alive(*p)).then_some(()))
        .await;

    // blaze dev down stops the rest.
    let all =
        pids(&Api::<Pod>::all(client.clone()).list(&ListParams::default()).await.unwrap().items);
    assert!(!all.is_empty());
    let down =
        Command::new(BLAZE).args(["dev", "down", "--dir"]).arg(dev.dir.path()).output().unwrap();
    assert!(down.status.success(), "{}", String::from_utf8_lossy(&down.stderr));
    poll("no pod process left", 30, async || all.iter().all(|p| !alive(*p)).then_some(())).await;
}

/// The quickstart's only worker freezes (SIGSTOP: alive, but answering nothing): once it has
/// been unready for `spec.recovery.unhealthyAfterSeconds`, the operator replaces it, although
/// no other worker is ready, and the engine serves again from the new one. An engine of a
/// kind this release does not serve is marked Unsupported and runs no workers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_only_worker_is_replaced_and_unsupported_kinds_are_marked() {
    let (dev, client, url) = start("127.0.61.1-127.0.61.254").await;
    let engines: Api<BlazeEngine> = Api::namespaced(client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    kubectl(
        &dev,
        &[
            "patch",
            "be/smollm2",
            "--type=merge",
            "-p",
            r#"{"spec":{"recovery":{"unhealthyAfterSeconds":10}}}"#,
        ],
    );
    let first = poll("one ready worker", 240, async || {
        let list = pods.list(&ListParams::default().labels(WORKERS)).await.ok()?.items;
        let ready: Vec<Pod> = list.into_iter().filter(ready).collect();
        (ready.len() == 1).then(|| ready[0].clone())
    })
    .await;
    let frozen = pids(std::slice::from_ref(&first))[0];
    Command::new("kill").args(["-STOP", &frozen.to_string()]).status().unwrap();
    let stopped = Instant::now();
    let replacement = poll("a new worker ready in place of the frozen one", 180, async || {
        let list = pods.list(&ListParams::default().labels(WORKERS)).await.ok()?.items;
        list.into_iter().find(|p| ready(p) && p.uid() != first.uid())
    })
    .await;
    let took = stopped.elapsed();
    eprintln!("the frozen worker was replaced and its successor ready after {took:?}");
    assert!(!pids(std::slice::from_ref(&replacement)).contains(&frozen));
    // The old pod is being deleted by the operator (not restarted in place by the kubelet,
    // whose liveness probe would take a minute); a stopped process cannot act on SIGTERM, so
    // it lingers until its grace period ends: end it now.
    let old = pods.get_opt(&first.name_any()).await.unwrap();
    assert!(old.is_none_or(|p| p.metadata.deletion_timestamp.is_some()), "not deleted");
    let _ =
        Command::new("kill").args(["-KILL", &frozen.to_string()]).stderr(Stdio::null()).status();
    let body = r#"{"model": "smollm2", "prompt": "Hello", "max_tokens": 4, "temperature": 0}"#;
    poll("a completion from the replacement", 60, async || {
        let out = request(&url, "POST", "/v1/completions", body).await;
        out.starts_with("HTTP/1.1 200").then_some(())
    })
    .await;

    let embedding: BlazeEngine = serde_saphyr::from_str(
        "apiVersion: blaze.ai/v1alpha1\nkind: BlazeEngine\nmetadata: {name: minilm, namespace: default}\n\
         spec: {kind: embedding, model: {source: 'pvc://blaze-models/minilm'}}\n",
    )
    .unwrap();
    engines.create(&Default::default(), &embedding).await.unwrap();
    let degraded = poll("the embedding engine marked", 60, async || {
        let e = engines.get("minilm").await.ok()?;
        condition(&e, "Degraded").filter(|(s, _)| s == "True")
    })
    .await;
    assert_eq!(degraded.1, "Unsupported");
    let listed = pods.list(&ListParams::default().labels("blaze.ai/engine=minilm")).await.unwrap();
    assert!(listed.items.is_empty(), "no workers for an unsupported kind");
    drop(dev);
}
