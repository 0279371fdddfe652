//! Exposing a Service on a port of this machine, as `kubectl port-forward svc/NAME` does, but
//! spread over every ready endpoint instead of one pod: each accepted connection goes to the
//! next ready endpoint of the Service port (round robin over the EndpointSlices read when the
//! connection arrives, so scaling and readiness changes apply to the next connection).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::Client;
use kube::api::{Api, ListParams};
use tokio::net::{TcpListener, TcpStream};

use crate::error::{Error, Result};

/// A Service port to forward to.
#[derive(Debug, Clone)]
pub struct ServiceTarget {
    /// Namespace of the Service.
    pub namespace: String,
    /// Service name.
    pub name: String,
    /// The Service port, by name or number.
    pub port: IntOrString,
}

/// Accepts connections on `listener` until the task is dropped, forwarding each to a ready
/// endpoint of `target`. A connection that finds no ready endpoint is closed at once.
pub async fn forward(client: Client, target: ServiceTarget, listener: TcpListener) {
    let next = Arc::new(AtomicUsize::new(0));
    loop {
        let Ok((inbound, _)) = listener.accept().await else { continue };
        let (client, target, next) = (client.clone(), target.clone(), next.clone());
        tokio::spawn(async move {
            let pick = next.fetch_add(1, Ordering::Relaxed);
            match ready_endpoints(&client, &target).await {
                Ok(eps) if !eps.is_empty() => {
                    let addr = eps[pick % eps.len()];
                    if let Err(e) = pipe(inbound, addr).await {
                        tracing::debug!(%addr, error = %e, "forwarded connection ended");
                    }
                }
                Ok(_) => tracing::warn!(service = %target.name, "no ready endpoint"),
                Err(e) => tracing::warn!(service = %target.name, error = %e, "cannot resolve"),
            }
        });
    }
}

async fn pipe(mut inbound: TcpStream, addr: SocketAddr) -> std::io::Result<()> {
    let mut outbound = TcpStream::connect(addr).await?;
    let _ = inbound.set_nodelay(true);
    let _ = outbound.set_nodelay(true);
    tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await?;
    Ok(())
}

/// The addresses of the ready endpoints of the target port, in a stable order.
pub async fn ready_endpoints(client: &Client, target: &ServiceTarget) -> Result<Vec<SocketAddr>> {
    let services: Api<Service> = Api::namespaced(client.clone(), &target.namespace);
    let service = services.get(&target.name).await?;
    let ports = service.spec.and_then(|s| s.ports).unwrap_or_default();
    let port = ports
        .iter()
        .find(|p| match &target.port {
            IntOrString::Int(n) => p.port == *n,
            IntOrString::String(s) => p.name.as_deref() == Some(s),
        })
        .ok_or_else(|| {
            Error::Unsupported(format!("service {} has no port {:?}", target.name, target.port))
        })?;
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), &target.namespace);
    let selector = format!("kubernetes.io/service-name={}", target.name);
    let mut out = Vec::new();
    for slice in slices.list(&ListParams::default().labels(&selector)).await? {
        let Some(number) = slice
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref().unwrap_or("") == port.name.as_deref().unwrap_or(""))
            .and_then(|p| p.port)
        else {
            continue;
        };
        for ep in slice.endpoints.iter().flatten() {
            let ready = ep.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true);
            if !ready {
                continue;
            }
            for a in &ep.addresses {
                if let Ok(ip) = a.parse() {
                    out.push(SocketAddr::new(ip, number as u16));
                }
            }
        }
    }
    out.sort();
    Ok(out)
}
