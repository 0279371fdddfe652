//! Startup, readiness and liveness probes, run as the kubelet runs them.
//!
//! A probe runs every `periodSeconds` (10) after `initialDelaySeconds` (0), each try bounded by
//! `timeoutSeconds` (1). Its result flips to success after `successThreshold` (1) consecutive
//! successes and to failure after `failureThreshold` (3) consecutive failures. Readiness starts
//! out failed; startup and liveness start out unknown. HTTP probes count 200 to 399 as success
//! (plain HTTP only); gRPC probes ask `grpc.health.v1.Health/Check` and need `SERVING`.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::api::core::v1::{ContainerPort, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};

use crate::env::Env;

/// Which probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeKind {
    /// Holds back the other probes until the container has started.
    Startup,
    /// Gates traffic.
    Readiness,
    /// Restarts a stuck container.
    Liveness,
}

impl ProbeKind {
    /// The name used in events: `Readiness probe failed: ...`.
    pub fn label(self) -> &'static str {
        match self {
            ProbeKind::Startup => "Startup",
            ProbeKind::Readiness => "Readiness",
            ProbeKind::Liveness => "Liveness",
        }
    }
}

/// A probe's current verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Not decided yet.
    Unknown,
    /// Passed its success threshold.
    Success,
    /// Hit its failure threshold; carries the last failure.
    Failure(String),
}

/// Where and how to reach a container.
#[derive(Debug, Clone)]
pub struct ProbeTarget {
    /// The pod's address.
    pub pod_ip: Ipv4Addr,
    /// Named container ports.
    pub ports: BTreeMap<String, i32>,
    /// Environment and working directory for exec probes.
    pub env: Env,
    /// Working directory for exec probes.
    pub cwd: PathBuf,
}

impl ProbeTarget {
    /// Collects the named ports of a container.
    pub fn named_ports(ports: &[ContainerPort]) -> BTreeMap<String, i32> {
        ports.iter().filter_map(|p| Some((p.name.clone()?, p.container_port))).collect()
    }

    fn port(&self, port: &IntOrString) -> Result<u16, String> {
        let n = match port {
            IntOrString::Int(n) => *n,
            IntOrString::String(name) => match name.parse::<i32>() {
                Ok(n) => n,
                Err(_) => *self.ports.get(name).ok_or_else(|| format!("no port named {name:?}"))?,
            },
        };
        u16::try_from(n).map_err(|_| format!("port {n} out of range"))
    }
}

/// Runs one try of `probe`. `Err` carries the failure message the kubelet would show.
pub async fn check(probe: &Probe, target: &ProbeTarget) -> Result<(), String> {
    let timeout = Duration::from_secs(probe.timeout_seconds.unwrap_or(1).max(1) as u64);
    match tokio::time::timeout(timeout, check_untimed(probe, target)).await {
        Ok(result) => result,
        Err(_) => Err(format!("timeout after {}s", timeout.as_secs())),
    }
}

async fn check_untimed(probe: &Probe, target: &ProbeTarget) -> Result<(), String> {
    if let Some(http) = &probe.http_get {
        let host = http.host.clone().unwrap_or_else(|| target.pod_ip.to_string());
        let port = target.port(&http.port)?;
        let path = http.path.clone().unwrap_or_else(|| "/".into());
        if http.scheme.as_deref().is_some_and(|s| s.eq_ignore_ascii_case("https")) {
            return Err("HTTPS probes are not supported by the development kubelet".into());
        }
        let headers: Vec<(String, String)> =
            http.http_headers.iter().flatten().map(|h| (h.name.clone(), h.value.clone())).collect();
        return http_get(&host, port, &path, &headers).await;
    }
    if let Some(tcp) = &probe.tcp_socket {
        let host = tcp.host.clone().unwrap_or_else(|| target.pod_ip.to_string());
        let port = target.port(&tcp.port)?;
        return TcpStream::connect((host.as_str(), port))
            .await
            .map(drop)
            .map_err(|e| format!("dial tcp {host}:{port}: {e}"));
    }
    if let Some(exec) = &probe.exec {
        return exec_probe(exec.command.as_deref().unwrap_or_default(), target).await;
    }
    if let Some(grpc) = &probe.grpc {
        let port = u16::try_from(grpc.port).map_err(|_| "port out of range".to_string())?;
        let service = grpc.service.clone().unwrap_or_default();
        return grpc_check(SocketAddr::from((target.pod_ip, port)), service).await;
    }
    Err("probe has no handler".into())
}

async fn http_get(
    host: &str,
    port: u16,
    path: &str,
    headers: &[(String, String)],
) -> Result<(), String> {
    let url = format!("http://{host}:{port}{path}");
    let mut stream =
        TcpStream::connect((host, port)).await.map_err(|e| format!("Get \"{url}\": {e}"))?;
    let mut request = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: kube-probe/1.33\r\nAccept: */*\r\nConnection: close\r\n"
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).await.map_err(|e| format!("Get \"{url}\": {e}"))?;
    let mut head = Vec::with_capacity(256);
    let mut buf = [0u8; 256];
    while !head.windows(2).any(|w| w == b"\r\n") && head.len() < 4096 {
        let n = stream.read(&mut buf).await.map_err(|e| format!("Get \"{url}\": {e}"))?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = String::from_utf8_lossy(&head);
    let code: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("Get \"{url}\": malformed HTTP response"))?;
    if (200..400).contains(&code) {
        Ok(())
    } else {
        Err(format!("HTTP probe failed with statuscode: {code}"))
    }
}

async fn exec_probe(command: &[String], target: &ProbeTarget) -> Result<(), String> {
    let (program, args) = command.split_first().ok_or("exec probe without a command")?;
    let output = tokio::process::Command::new(program)
        .args(args)
        .env_clear()
        .envs(target.env.iter())
        .current_dir(&target.cwd)
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| format!("exec {program}: {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        let out = String::from_utf8_lossy(&output.stdout).trim().to_string();
        Err(format!("command {command:?} exited with {}: {out}", output.status))
    }
}

async fn grpc_check(addr: SocketAddr, service: String) -> Result<(), String> {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| e.to_string())?
        .connect()
        .await
        .map_err(|e| format!("failed to connect service {addr:?}: {e}"))?;
    let response = HealthClient::new(channel)
        .check(HealthCheckRequest { service })
        .await
        .map_err(|e| format!("health rpc failed: {}", e.message()))?;
    let status = response.into_inner().status;
    if status == ServingStatus::Serving as i32 {
        Ok(())
    } else {
        let name = ServingStatus::try_from(status).map(|s| s.as_str_name()).unwrap_or("UNKNOWN");
        Err(format!("service unhealthy (responded with \"{name}\")"))
    }
}

/// A failed try, reported so the kubelet can record an `Unhealthy` event.
#[derive(Debug, Clone)]
pub struct ProbeFailure {
    /// Which probe.
    pub kind: ProbeKind,
    /// What went wrong.
    pub message: String,
}

/// Runs `probe` until the returned sender side is dropped, publishing verdicts.
pub fn spawn_worker(
    kind: ProbeKind,
    probe: Probe,
    target: ProbeTarget,
    failures: mpsc::UnboundedSender<ProbeFailure>,
) -> (watch::Receiver<Verdict>, tokio::task::JoinHandle<()>) {
    let initial = match kind {
        ProbeKind::Readiness => Verdict::Failure("not yet probed".into()),
        _ => Verdict::Unknown,
    };
    let (tx, rx) = watch::channel(initial);
    let handle = tokio::spawn(async move {
        let delay = Duration::from_secs(probe.initial_delay_seconds.unwrap_or(0).max(0) as u64);
        let period = Duration::from_secs(probe.period_seconds.unwrap_or(10).max(1) as u64);
        let success_threshold = probe.success_threshold.unwrap_or(1).max(1);
        let failure_threshold = probe.failure_threshold.unwrap_or(3).max(1);
        tokio::time::sleep(delay).await;
        let (mut successes, mut failed) = (0, 0);
        let mut ticker = tokio::time::interval(period);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            match check(&probe, &target).await {
                Ok(()) => {
                    (successes, failed) = (successes + 1, 0);
                    if successes >= success_threshold {
                        tx.send_if_modified(|v| replace(v, Verdict::Success));
                    }
                }
                Err(message) => {
                    (successes, failed) = (0, failed + 1);
                    let _ = failures.send(ProbeFailure { kind, message: message.clone() });
                    if failed >= failure_threshold {
                        tx.send_if_modified(|v| replace(v, Verdict::Failure(message)));
                    }
                }
            }
            if tx.is_closed() {
                return;
            }
        }
    });
    (rx, handle)
}

fn replace(slot: &mut Verdict, new: Verdict) -> bool {
    let changed = std::mem::discriminant(slot) != std::mem::discriminant(&new);
    *slot = new;
    changed
}

#[cfg(test)]
mod tests;
