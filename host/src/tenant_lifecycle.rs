//! Deleting a tenant, and finishing creations and deletions a crash interrupted.
//!
//! A delete marks the tenant `deleting` first (durably: from then on it is neither served
//! nor managed, and its id cannot be re-created), shreds its data key, revokes its tokens,
//! purges every record under its incarnation and only then removes its record. Requests
//! of that incarnation still in flight may write after the purge (a settlement, a session
//! turn); nothing can read those records, since a re-created tenant is a new incarnation,
//! and they are purged again: on a schedule after the delete (see [`REPURGE_AFTER`]) and at
//! every start, from a tombstone kept until then.

use std::sync::Arc;
use std::time::Duration;

use crate::app::App;
use crate::error::GatewayError;
use crate::store::{StoreError, TenantKey};
use crate::tenants::{Lifecycle, Tenant, TenantError};

/// When the records of a deleted incarnation are purged again: in-flight requests end
/// within the upstream timeouts (a stream may run longer), so three passes cover every
/// write a request of the dead incarnation can make short of a restart, which purges too.
pub const REPURGE_AFTER: [Duration; 3] = [Duration::from_secs(60), Duration::from_secs(600), Duration::from_secs(3600)];

/// Prefix of tombstone keys in the `meta` tree: `dead-tenant:` + storage id.
const TOMBSTONE: &[u8] = b"dead-tenant:";

fn tombstone_key(storage_id: &str) -> Vec<u8> {
    [TOMBSTONE, storage_id.as_bytes()].concat()
}

/// Removes every record of one incarnation: data key first (so sealed bytes left in old
/// pages can no longer be opened), tokens, then every per-tenant record. Returns how many
/// per-tenant records were removed.
async fn purge(app: &App, tenant: &Tenant) -> Result<usize, GatewayError> {
    app.vault.shred(tenant.storage_id()).await?;
    app.tokens.revoke_all(tenant).await?;
    let removed = app.store.purge_tenant(&tenant.key())?;
    purge_shared(app, tenant.storage_id()).await?;
    app.store.flush().await?;
    Ok(removed)
}

/// Forgets an incarnation's spend, and on the shared store removes its rows of every
/// domain kept there (on the embedded store the purge of its records did).
async fn purge_shared(app: &App, storage_id: &str) -> Result<(), StoreError> {
    app.metering.forget_tenant(storage_id).await?;
    app.vault.forget_tenant(storage_id).await.map_err(|e| StoreError::Aborted(format!("forgetting sealed credentials: {e}")))?;
    app.policies.blobs().forget_owner(storage_id).await?;
    app.memory.purge_tenant(storage_id).await?;
    app.sessions.purge_tenant(storage_id).await?;
    app.policy_logs.purge_tenant(storage_id).await
}

/// Deletes live tenant `id` and every record of it. Returns the tenant deleted and how
/// many records were removed.
pub async fn delete(app: &Arc<App>, id: &str) -> Result<(Arc<Tenant>, usize), GatewayError> {
    let tenant = app.tenants.mark_deleting(id).await?;
    app.store.meta.insert(tombstone_key(tenant.storage_id()), tenant.storage_id().as_bytes()).map_err(StoreError::from)?;
    let removed = purge(app, &tenant).await?;
    app.tenants.remove(&tenant).await?;
    schedule_repurge(app, tenant.clone());
    Ok((tenant, removed))
}

/// Purges a dead incarnation again after each of [`REPURGE_AFTER`], then drops its
/// tombstone. The task holds only a weak reference: a gateway shutting down does not wait
/// for it (the next start purges from the tombstone).
fn schedule_repurge(app: &Arc<App>, tenant: Arc<Tenant>) {
    let app = Arc::downgrade(app);
    tokio::spawn(async move {
        for delay in REPURGE_AFTER {
            tokio::time::sleep(delay).await;
            let Some(app) = app.upgrade() else { return };
            if let Err(e) = repurge(&app, tenant.storage_id()).await {
                tracing::error!(tenant = %tenant.id, error = %e, "purging a deleted tenant's late records failed; the next start retries");
                return;
            }
        }
        if let Some(app) = app.upgrade() {
            let _ = app.store.meta.remove(tombstone_key(tenant.storage_id()));
        }
    });
}

/// Removes records written under a dead incarnation after its purge.
async fn repurge(app: &App, storage_id: &str) -> Result<usize, StoreError> {
    let key = TenantKey::of(storage_id);
    let removed = app.store.purge_tenant(&key)?;
    purge_shared(app, storage_id).await?;
    if removed > 0 {
        tracing::info!(removed, "purged records a deleted tenant's in-flight requests wrote late");
    }
    Ok(removed)
}

/// At start, before anything is served: purges every tombstoned incarnation, finishes
/// deletions a crash interrupted and rolls back creations it interrupted (a tenant is
/// created whole or not at all). Returns how many tenants were finished.
pub async fn finish_interrupted(app: &Arc<App>) -> Result<usize, GatewayError> {
    let mut tombstones = Vec::new();
    for item in app.store.meta.scan_prefix(TOMBSTONE) {
        let (key, value) = item.map_err(StoreError::from)?;
        tombstones.push((key, String::from_utf8_lossy(&value).into_owned()));
    }
    for (key, storage_id) in tombstones {
        repurge(app, &storage_id).await?;
        app.store.meta.remove(key).map_err(StoreError::from)?;
    }
    let unfinished = app.tenants.unfinished();
    for tenant in &unfinished {
        match tenant.lifecycle {
            Lifecycle::Creating => tracing::warn!(tenant = %tenant.id, "rolling back a tenant creation a crash interrupted"),
            _ => tracing::warn!(tenant = %tenant.id, "finishing a tenant deletion a crash interrupted"),
        }
        let tenant = match app.tenants.mark_deleting(&tenant.id).await {
            Ok(t) => t,
            Err(TenantError::NotFound(_)) => continue,
            Err(e) => return Err(e.into()),
        };
        purge(app, &tenant).await?;
        app.tenants.remove(&tenant).await?;
    }
    app.store.flush().await?;
    Ok(unfinished.len())
}
