//! Leader election through a `coordination.k8s.io` Lease, so two operator replicas never both
//! act: controllers start once this replica holds the Lease, and the process stops if it is
//! lost (its pod restarts and stands by), which is simpler and safer than stopping
//! controllers half-way.

use std::time::Duration;

use kube::Client;
use kube_lease_manager::{LeaseManagerBuilder, LeaseManagerError};
use tokio::sync::watch;

/// Name of the Lease.
pub(crate) const LEASE_NAME: &str = "blaze-operator-leader";
/// Seconds a holder's lock lasts without renewal.
pub(crate) const LEASE_SECONDS: u64 = 15;
/// Seconds before expiry the holder renews.
pub(crate) const GRACE_SECONDS: u64 = 5;

/// The task that holds or waits for the Lease.
pub type LeaseTask =
    tokio::task::JoinHandle<Result<kube_lease_manager::LeaseManager, LeaseManagerError>>;

/// Starts contending for the Lease in `namespace` as `identity`; the channel says whether
/// this replica leads. Dropping the receiver makes the task release the Lease and end, so a
/// stand-by replica takes over at once instead of after the Lease expires.
pub async fn contend(
    client: Client,
    namespace: &str,
    identity: &str,
) -> Result<(watch::Receiver<bool>, LeaseTask), LeaseManagerError> {
    let manager = LeaseManagerBuilder::new(client, LEASE_NAME)
        .with_namespace(namespace)
        .with_identity(identity)
        .with_duration(LEASE_SECONDS)
        .with_grace(GRACE_SECONDS)
        .with_field_manager("blaze-operator/leader")
        .build()
        .await?;
    Ok(manager.watch().await)
}

/// Waits until `rx` says this replica leads; `false` if the channel closed first.
pub async fn wait_leading(rx: &mut watch::Receiver<bool>) -> bool {
    rx.wait_for(|l| *l).await.is_ok()
}

/// After the receiver is dropped, waits (a little) for the task to release the Lease.
pub async fn release(task: LeaseTask) {
    match tokio::time::timeout(Duration::from_secs(5), task).await {
        Ok(Ok(Ok(_))) => tracing::info!("released the leader Lease"),
        Ok(Ok(Err(e))) => tracing::warn!(error = %e, "could not release the leader Lease"),
        Ok(Err(e)) => tracing::warn!(error = %e, "leader election task failed"),
        Err(_) => tracing::warn!("timed out releasing the leader Lease; it expires by itself"),
    }
}

/// Resolves when leadership is lost (or the channel closes).
pub async fn lost(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|l| !*l).await;
    // Let in-flight API calls see the cancellation before the process goes.
    tokio::time::sleep(Duration::from_millis(100)).await;
}
