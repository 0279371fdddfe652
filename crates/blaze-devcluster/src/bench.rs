//! `blaze bench apiserver`: sustained creates per second over HTTP, watch events per second
//! delivered to several watchers, and resident memory per 10,000 objects, as the admin (whom
//! authorization lets through at once); then the same load as a ServiceAccount whose rights
//! come from a RoleBinding (authentication of a signed token and RBAC on every request), and
//! the cost of authentication and authorization per request measured alone.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::json;

use crate::{ApiServer, Config, Error, Result};

/// What to measure.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    /// ConfigMaps to create.
    pub objects: usize,
    /// Concurrent writers.
    pub concurrency: usize,
    /// Watchers that must each receive every event.
    pub watchers: usize,
}

/// The measured figures.
#[derive(Debug, Clone)]
pub struct BenchReport {
    /// Objects created.
    pub objects: usize,
    /// Creates per second, over HTTP, while the watchers run.
    pub creates_per_sec: f64,
    /// Watch events per second, summed over watchers, while the creates run.
    pub live_watch_events_per_sec: f64,
    /// Watch events per second, summed over watchers, replaying the history from version 0.
    pub replay_watch_events_per_sec: f64,
    /// Watchers.
    pub watchers: usize,
    /// Resident memory added per 10,000 stored objects, in MiB.
    pub mib_per_10k_objects: f64,
    /// The same load as ServiceAccount `bench/writer`, allowed by a Role and RoleBinding.
    pub service_account: Throughput,
    /// Authentication and authorization of one create request, in microseconds, for the
    /// admin token and for the ServiceAccount's token (in-process, without HTTP).
    pub auth_micros: (f64, f64),
}

/// The rates of one run of the load.
#[derive(Debug, Clone, Copy)]
pub struct Throughput {
    /// Creates per second, over HTTP, while the watchers run.
    pub creates_per_sec: f64,
    /// Watch events per second, summed over watchers, while the creates run.
    pub live_watch_events_per_sec: f64,
    /// Watch events per second, summed over watchers, replaying the history from version 0.
    pub replay_watch_events_per_sec: f64,
}

impl std::fmt::Display for BenchReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "objects created:              {}", self.objects)?;
        writeln!(f, "creates/s:                    {:.0}", self.creates_per_sec)?;
        writeln!(
            f,
            "watch events/s ({} watchers, live):   {:.0}",
            self.watchers, self.live_watch_events_per_sec
        )?;
        writeln!(
            f,
            "watch events/s ({} watchers, replay): {:.0}",
            self.watchers, self.replay_watch_events_per_sec
        )?;
        writeln!(f, "memory per 10,000 objects:    {:.1} MiB", self.mib_per_10k_objects)?;
        let sa = &self.service_account;
        let change = |sa: f64, admin: f64| (sa / admin - 1.0) * 100.0;
        writeln!(f, "as ServiceAccount bench/writer (RBAC through a RoleBinding):")?;
        writeln!(
            f,
            "  creates/s:                  {:.0} ({:+.1}% against admin)",
            sa.creates_per_sec,
            change(sa.creates_per_sec, self.creates_per_sec)
        )?;
        writeln!(
            f,
            "  watch events/s, live:       {:.0} ({:+.1}%)",
            sa.live_watch_events_per_sec,
            change(sa.live_watch_events_per_sec, self.live_watch_events_per_sec)
        )?;
        writeln!(
            f,
            "  watch events/s, replay:     {:.0} ({:+.1}%)",
            sa.replay_watch_events_per_sec,
            change(sa.replay_watch_events_per_sec, self.replay_watch_events_per_sec)
        )?;
        let (admin, sa_us) = self.auth_micros;
        write!(
            f,
            "authentication + authorization per request: admin {admin:.2} us, ServiceAccount {sa_us:.2} us ({:+.2} us)",
            sa_us - admin
        )
    }
}

impl BenchReport {
    /// The report as JSON.
    pub fn to_json(&self) -> String {
        json!({"objects": self.objects, "creates_per_sec": self.creates_per_sec,
            "live_watch_events_per_sec": self.live_watch_events_per_sec,
            "replay_watch_events_per_sec": self.replay_watch_events_per_sec,
            "watchers": self.watchers, "mib_per_10k_objects": self.mib_per_10k_objects,
            "service_account": {"creates_per_sec": self.service_account.creates_per_sec,
                "live_watch_events_per_sec": self.service_account.live_watch_events_per_sec,
                "replay_watch_events_per_sec": self.service_account.replay_watch_events_per_sec},
            "auth_micros_admin": self.auth_micros.0,
            "auth_micros_service_account": self.auth_micros.1})
        .to_string()
    }
}

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

type HttpClient = Client<HttpConnector, Full<Bytes>>;

fn bench_error(what: impl std::fmt::Display) -> Error {
    Error::Io("bench".into(), std::io::Error::other(what.to_string()))
}

/// Starts `n` watchers from `rv`; each counts events until it has `want`.
fn watchers(
    client: &HttpClient,
    server: &ApiServer,
    token: &str,
    n: usize,
    rv: u64,
    want: u64,
) -> Vec<tokio::task::JoinHandle<Result<Instant>>> {
    (0..n)
        .map(|_| {
            let client = client.clone();
            let uri = format!(
                "{}/api/v1/namespaces/bench/configmaps?watch=true&resourceVersion={rv}",
                server.url()
            );
            let token = token.to_owned();
            tokio::spawn(async move {
                let req = http::Request::get(uri)
                    .header("authorization", format!("Bearer {token}"))
                    .body(Full::new(Bytes::new()))
                    .map_err(bench_error)?;
                let resp = client.request(req).await.map_err(bench_error)?;
                let mut body = resp.into_body();
                let mut seen = 0u64;
                while seen < want {
                    let Some(frame) = body.frame().await else {
                        return Err(bench_error("watch ended early"));
                    };
                    if let Ok(data) = frame.map_err(bench_error)?.into_data() {
                        seen += data.iter().filter(|b| **b == b'\n').count() as u64;
                    }
                }
                Ok(Instant::now())
            })
        })
        .collect()
}

/// Runs the benchmark against in-process servers: the load as the admin, then as a
/// ServiceAccount, then authentication and authorization alone.
pub async fn run(cfg: BenchConfig) -> Result<BenchReport> {
    let (admin, mib_per_10k_objects) = load(&cfg, Identity::Admin).await?;
    let (service_account, _) = load(&cfg, Identity::ServiceAccount).await?;
    let auth_micros = auth_cost().await?;
    Ok(BenchReport {
        objects: cfg.objects,
        creates_per_sec: admin.creates_per_sec,
        live_watch_events_per_sec: admin.live_watch_events_per_sec,
        replay_watch_events_per_sec: admin.replay_watch_events_per_sec,
        watchers: cfg.watchers,
        mib_per_10k_objects,
        service_account,
        auth_micros,
    })
}

/// Who the load runs as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Identity {
    /// The kubeconfig's token (`system:masters`: RBAC is not consulted).
    Admin,
    /// `system:serviceaccount:bench:writer`, allowed by a Role bound to it.
    ServiceAccount,
}

/// One run of the load: its rates and the resident memory it added per 10,000 objects.
async fn load(cfg: &BenchConfig, identity: Identity) -> Result<(Throughput, f64)> {
    let server =
        ApiServer::start(Config { history: cfg.objects + 1000, tls: false, ..Config::default() })
            .await?;
    let client: HttpClient = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(cfg.concurrency * 2)
        .build_http();
    let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "bench"}});
    post(&client, &server, "/api/v1/namespaces", ns.to_string()).await?;
    let token = match identity {
        Identity::Admin => server.token().to_owned(),
        Identity::ServiceAccount => service_account_token(&client, &server).await?,
    };
    let start_rv = server.state().store.read().rv();
    let want = cfg.objects as u64;
    let live = watchers(&client, &server, &token, cfg.watchers, start_rv, want);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let rss_before = rss_bytes();
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let writers: Vec<_> = (0..cfg.concurrency)
        .map(|_| {
            let (client, next, url, token) = (client.clone(), next.clone(), server.url(), token.clone());
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= want {
                        return Ok::<(), Error>(());
                    }
                    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap",
                        "metadata": {"name": format!("cm-{i}"), "labels": {"app": "bench", "shard": (i % 8).to_string()}},
                        "data": {"key": format!("value-{i}"), "config.yaml": "replicas: 3\nmodel: hf://org/model\n"}});
                    post_raw(&client, &url, &token, "/api/v1/namespaces/bench/configmaps", cm.to_string()).await?;
                }
            })
        })
        .collect();
    for w in writers {
        w.await.map_err(bench_error)??;
    }
    let create_secs = started.elapsed().as_secs_f64();
    let mut last = started;
    for w in live {
        last = last.max(w.await.map_err(bench_error)??);
    }
    let live_secs = (last - started).as_secs_f64();
    let rss_after = rss_bytes();
    let replay_start = Instant::now();
    let replay = watchers(&client, &server, &token, cfg.watchers, start_rv, want);
    let mut last = replay_start;
    for w in replay {
        last = last.max(w.await.map_err(bench_error)??);
    }
    let replay_secs = (last - replay_start).as_secs_f64();
    server.shutdown().await;
    let events = (want * cfg.watchers as u64) as f64;
    let rates = Throughput {
        creates_per_sec: want as f64 / create_secs,
        live_watch_events_per_sec: events / live_secs,
        replay_watch_events_per_sec: events / replay_secs,
    };
    let mib =
        rss_after.saturating_sub(rss_before) as f64 / 1048576.0 * 10_000.0 / want.max(1) as f64;
    Ok((rates, mib))
}

/// Makes ServiceAccount `bench/writer`, a Role that may create, get, list and watch the
/// namespace's ConfigMaps and a RoleBinding to it; returns a token of the account.
async fn service_account_token(client: &HttpClient, server: &ApiServer) -> Result<String> {
    let ns = "/api/v1/namespaces/bench";
    let sa = json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "writer"}});
    post(client, server, &format!("{ns}/serviceaccounts"), sa.to_string()).await?;
    let role = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
        "metadata": {"name": "configmap-writer"},
        "rules": [{"apiGroups": [""], "resources": ["configmaps"],
            "verbs": ["create", "get", "list", "watch"]}]});
    let rbac = "/apis/rbac.authorization.k8s.io/v1/namespaces/bench";
    post(client, server, &format!("{rbac}/roles"), role.to_string()).await?;
    let binding = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": "writer"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "configmap-writer"},
        "subjects": [{"kind": "ServiceAccount", "name": "writer", "namespace": "bench"}]});
    post(client, server, &format!("{rbac}/rolebindings"), binding.to_string()).await?;
    let request =
        json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {}});
    let path = format!("{ns}/serviceaccounts/writer/token");
    let answer =
        post_raw(client, &server.url(), server.token(), &path, request.to_string()).await?;
    let answer: serde_json::Value = serde_json::from_slice(&answer).map_err(bench_error)?;
    answer["status"]["token"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| bench_error("the TokenRequest answer has no token"))
}

/// Authentication and authorization of one ConfigMap create, in microseconds, for the admin
/// and for the ServiceAccount: the work the load above adds per request, measured alone.
async fn auth_cost() -> Result<(f64, f64)> {
    let server = ApiServer::start(Config { tls: false, ..Config::default() }).await?;
    let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();
    let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "bench"}});
    post(&client, &server, "/api/v1/namespaces", ns.to_string()).await?;
    let sa_token = service_account_token(&client, &server).await?;
    let st = server.state().clone();
    let path = "/api/v1/namespaces/bench/configmaps";
    let time = |token: &str| -> Result<f64> {
        let mut headers = http::HeaderMap::new();
        let value = http::HeaderValue::from_str(&format!("Bearer {token}")).map_err(bench_error)?;
        headers.insert(http::header::AUTHORIZATION, value);
        let query = crate::api::Query::parse(None);
        const ROUNDS: u32 = 20_000;
        let started = Instant::now();
        for _ in 0..ROUNDS {
            let attrs = crate::auth::Attributes::of_request(&http::Method::POST, path, &query);
            let user =
                crate::auth::authenticate(&st, &headers).map_err(|e| bench_error(e.message))?;
            crate::auth::check(&st, &user, &attrs).map_err(|e| bench_error(e.message))?;
        }
        Ok(started.elapsed().as_secs_f64() * 1e6 / f64::from(ROUNDS))
    };
    let out = (time(server.token())?, time(&sa_token)?);
    server.shutdown().await;
    Ok(out)
}

async fn post(client: &HttpClient, server: &ApiServer, path: &str, body: String) -> Result<()> {
    post_raw(client, &server.url(), server.token(), path, body).await.map(drop)
}

async fn post_raw(
    client: &HttpClient,
    url: &str,
    token: &str,
    path: &str,
    body: String,
) -> Result<Bytes> {
    let req = http::Request::post(format!("{url}{path}"))
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .map_err(bench_error)?;
    let resp = client.request(req).await.map_err(bench_error)?;
    let status = resp.status();
    let answer = resp.into_body().collect().await.map_err(bench_error)?.to_bytes();
    if !status.is_success() {
        return Err(bench_error(format!("POST {path}: {status}")));
    }
    Ok(answer)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The ServiceAccount run goes through RBAC: its Role must allow the whole load (a
    /// missing verb would be a `403` and fail the run).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_small_load_runs_as_admin_and_as_a_service_account() {
        let cfg = BenchConfig { objects: 200, concurrency: 4, watchers: 2 };
        let report = run(cfg).await.unwrap();
        assert!(report.creates_per_sec > 0.0 && report.service_account.creates_per_sec > 0.0);
        assert!(report.auth_micros.0 > 0.0 && report.auth_micros.1 > 0.0);
        let text = report.to_string();
        assert!(text.contains("as ServiceAccount bench/writer"), "{text}");
        let json: serde_json::Value = serde_json::from_str(&report.to_json()).unwrap();
        assert!(json["service_account"]["creates_per_sec"].as_f64().is_some(), "{json}");
    }
}
