//! Leader election: every replica serves SCIM, exactly one runs the controllers. Leadership is a
//! `coordination.k8s.io` Lease renewed by the leader; when the leader stops it releases the Lease,
//! when it dies the Lease expires and another replica takes over after at most its duration.

use std::{sync::Arc, time::Duration};

use futures::FutureExt;
use kube::Client;
use kube_lease_manager::{LeaseManager, LeaseManagerBuilder};
use tokio::sync::watch;

use super::{Caches, Context, Settings};
use crate::{backend::BackendRegistry, scope::Scope, telemetry::Metrics, tenant::TenantRegistry};

/// Where the Lease lives and how long it holds without renewal.
#[derive(Clone, Debug)]
pub struct LeaseSettings {
    pub namespace: String,
    pub name: String,
    /// This replica's identity in the Lease.
    pub identity: String,
    /// Seconds the Lease stays valid after the last renewal: the bound on a takeover after a crash.
    pub duration_seconds: u64,
}

/// What the controllers need, built afresh for each term of leadership.
pub struct Term {
    pub client: Client,
    pub tenants: TenantRegistry,
    pub default_backend: String,
    pub settings: Settings,
    pub metrics: Arc<Metrics>,
    pub scope: Scope,
    pub caches: Caches,
}

/// How long to wait before trying to set up the Lease again after the API server refused.
const RETRY: Duration = Duration::from_secs(5);

/// Runs the controllers whenever this replica holds the Lease, until `shutdown` resolves; then
/// stops them and releases the Lease so another replica takes over at once.
pub async fn run(term: Term, lease: LeaseSettings, shutdown: impl Future<Output = ()> + Send + 'static) {
    let shutdown = Box::pin(shutdown).shared();
    let manager = tokio::select! {
        manager = build_manager(&term.client, &lease) => manager,
        () = shutdown.clone() => return,
    };
    let (mut leading, renewer) = manager.watch().await;
    loop {
        tokio::select! {
            held = leading.wait_for(|held| *held) => if held.is_err() { break },
            () = shutdown.clone() => break,
        }
        tracing::info!(identity = %lease.identity, lease = %lease.name, "leading: starting the controllers");
        term.metrics.set_leader(true);
        let lost = until_lost(leading.clone());
        let stopping = futures::future::select(Box::pin(lost), shutdown.clone()).map(|_| ()).shared();
        // One set of controllers per watched partition, each with its own caches.
        let controllers = term.scope.partitions().into_iter().map(|partition| {
            let ctx = Arc::new(Context::new(
                term.client.clone(),
                term.tenants.clone(),
                BackendRegistry::new(&term.default_backend),
                lease.identity.clone(),
                term.metrics.clone(),
                term.settings.resync,
            ));
            let stopping = stopping.clone();
            super::run(ctx, partition, term.settings.clone(), term.caches.clone(), async move {
                stopping.await;
            })
        });
        futures::future::join_all(controllers).await;
        term.metrics.set_leader(false);
        if shutdown.clone().now_or_never().is_some() {
            break;
        }
        tracing::warn!(identity = %lease.identity, "lost the lease: controllers stopped");
    }
    // Dropping the last receiver makes the renewer release the Lease before it ends.
    drop(leading);
    match renewer.await {
        Ok(Ok(_)) => tracing::info!(identity = %lease.identity, "lease released"),
        Ok(Err(error)) => tracing::warn!(%error, "releasing the lease failed; it expires by itself"),
        Err(error) => tracing::warn!(%error, "the lease renewer panicked"),
    }
}

/// Retries until the API server lets this replica take part in the election.
async fn build_manager(client: &Client, lease: &LeaseSettings) -> LeaseManager {
    // Renewing a third of the duration before expiry leaves two tries per term.
    let grace = (lease.duration_seconds / 3).max(1);
    loop {
        let built = LeaseManagerBuilder::new(client.clone(), &lease.name)
            .with_namespace(&lease.namespace)
            .with_identity(&lease.identity)
            .with_duration(lease.duration_seconds)
            .with_grace(grace)
            .with_field_manager("cleanmail-leader-election")
            .build()
            .await;
        match built {
            Ok(manager) => return manager,
            Err(error) => {
                tracing::warn!(%error, namespace = %lease.namespace, lease = %lease.name, "cannot take part in leader election; retrying");
                tokio::time::sleep(RETRY).await;
            }
        }
    }
}

async fn until_lost(mut leading: watch::Receiver<bool>) {
    let _ = leading.wait_for(|held| !*held).await;
}
