//! Deleting a tenant, and finishing creations and deletions a crash interrupted.
//!
//! A delete marks the tenant `deleting` first (durably: from then on it is neither served
//! nor managed, and its id cannot be re-created), shreds its data key, revokes its tokens,
//! purges every record under its incarnation and only then removes its record. Requests
//! of that incarnation still in flight may write after the purge (a settlement, a session
//! turn); nothing can read those records, since a re-created tenant is a new incarnation,
//! and they are purged again from a tombstone (see [`crate::tenant_tombstones`]) kept until
//! the last pass of [`REPURGE_AFTER`].
//!
//! On the embedded store one process does everything: the deleting process runs the
//! passes itself, and its start purges every tombstone and finishes every unfinished
//! change. On the shared store requests of a dead incarnation may be in flight on any
//! replica and a replica may die mid-way, so the tombstones are in the database and every
//! replica runs the passes they are due, at start and every [`UPKEEP_EVERY`]; and a
//! creation or deletion is finished by another replica only once it has sat unchanged for
//! [`ABANDONED_AFTER`], since a younger one may be in progress on a live replica.

use std::sync::Arc;
use std::time::Duration;

use crate::app::App;
use crate::error::GatewayError;
use crate::store::{StoreError, TenantKey};
use crate::tenants::{Lifecycle, Tenant};

/// When the records of a deleted incarnation are purged again: in-flight requests end
/// within the upstream timeouts (a stream may run longer), so three passes cover every
/// write a request of the dead incarnation can make short of a restart, which purges too.
pub const REPURGE_AFTER: [Duration; 3] = [Duration::from_secs(60), Duration::from_secs(600), Duration::from_secs(3600)];

/// How long a creation or deletion may sit unfinished on the shared store before another
/// replica takes it for abandoned (its replica died) and finishes it. Either takes a few
/// writes and a purge, well under a second; this bound leaves room for a slow database
/// without ever taking one a live replica is still making.
pub const ABANDONED_AFTER: Duration = Duration::from_secs(300);

/// How often each replica on the shared store runs the purge passes that are due and
/// finishes abandoned changes: fine against [`REPURGE_AFTER`] and [`ABANDONED_AFTER`],
/// and a few cheap queries each time.
pub const UPKEEP_EVERY: Duration = Duration::from_secs(30);

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
    app.responses.purge_tenant(storage_id).await?;
    app.decision_inputs.purge_tenant(storage_id).await?;
    app.policy_logs.purge_tenant(storage_id).await
}

/// Deletes live tenant `id` and every record of it. Returns the tenant deleted and how
/// many records were removed.
pub async fn delete(app: &Arc<App>, id: &str) -> Result<(Arc<Tenant>, usize), GatewayError> {
    let tenant = app.tenants.mark_deleting(id).await?;
    app.tombstones.bury(tenant.storage_id()).await?;
    let removed = purge(app, &tenant).await?;
    app.tenants.remove(&tenant).await?;
    // Shared: every replica's upkeep runs the passes, from the tombstone in the database.
    if !app.shares_store() {
        schedule_repurge(app, tenant.clone());
    }
    Ok((tenant, removed))
}

/// Purges a dead incarnation again after each of [`REPURGE_AFTER`], then drops its
/// tombstone (embedded store). The task holds only a weak reference: a gateway shutting
/// down does not wait for it (the next start purges from the tombstone).
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
            let _ = app.tombstones.remove(tenant.storage_id()).await;
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

/// At start, before anything is served: purges every tombstoned incarnation again and
/// finishes the deletions and rolls back the creations no one else is finishing (a tenant
/// is created whole or not at all): on the embedded store every one a crash interrupted
/// (dropping every tombstone too: no request of a dead incarnation survived the restart);
/// on the shared store those abandoned for [`ABANDONED_AFTER`] (keeping each tombstone to
/// its last pass: other replicas' requests did survive). Returns how many tenants were
/// finished.
pub async fn finish_interrupted(app: &Arc<App>) -> Result<usize, GatewayError> {
    if app.shares_store() {
        run_due_passes(app, true).await?;
        return finish_abandoned(app, ABANDONED_AFTER).await;
    }
    for tombstone in app.tombstones.all().await? {
        repurge(app, &tombstone.storage_id).await?;
        app.tombstones.remove(&tombstone.storage_id).await?;
    }
    finish_abandoned(app, Duration::ZERO).await
}

/// What one round of [`upkeep`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Upkeep {
    /// Dead incarnations purged again.
    pub repurged: usize,
    /// Abandoned creations rolled back and deletions finished.
    pub finished: usize,
}

/// One round of what every replica on the shared store does every [`UPKEEP_EVERY`]:
/// purges again each dead incarnation whose next pass is due (dropping its tombstone after
/// the last), and finishes creations and deletions abandoned for [`ABANDONED_AFTER`]. On
/// the embedded store, nothing: the deleting process runs its passes, and the start
/// finishes what a crash left.
pub async fn upkeep(app: &Arc<App>) -> Result<Upkeep, GatewayError> {
    if !app.shares_store() {
        return Ok(Upkeep::default());
    }
    let repurged = run_due_passes(app, false).await?;
    let finished = finish_abandoned(app, ABANDONED_AFTER).await?;
    Ok(Upkeep { repurged, finished })
}

/// Runs [`upkeep`] every [`UPKEEP_EVERY`] for as long as the app lives (shared store).
/// A failed round is logged; the next one retries.
pub fn spawn_upkeep(app: &Arc<App>) {
    let app = Arc::downgrade(app);
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(UPKEEP_EVERY).await;
            let Some(app) = app.upgrade() else { return };
            if let Err(e) = upkeep(&app).await {
                tracing::error!(error = %e, "tenant upkeep failed; the next round retries");
            }
        }
    });
}

/// Purges each tombstoned incarnation whose next pass of [`REPURGE_AFTER`] is due (every
/// one with `every`), records the passes made and drops the tombstone after the last.
/// Two replicas may make one pass at once: purging is idempotent. Returns how many were
/// purged.
async fn run_due_passes(app: &App, every: bool) -> Result<usize, GatewayError> {
    let mut purged = 0;
    for tombstone in app.tombstones.all().await? {
        let age = tombstone.age.unwrap_or(Duration::ZERO);
        let due = REPURGE_AFTER.iter().filter(|after| age >= **after).count();
        if due <= tombstone.passes && !every {
            continue;
        }
        repurge(app, &tombstone.storage_id).await?;
        purged += 1;
        if due == REPURGE_AFTER.len() {
            app.tombstones.remove(&tombstone.storage_id).await?;
        } else if due > tombstone.passes {
            app.tombstones.passed(&tombstone.storage_id, due).await?;
        }
    }
    Ok(purged)
}

/// Finishes the deletions and rolls back the creations unchanged for `idle` that no one
/// else took meanwhile (see [`crate::tenants::Tenants::take_over`]). Returns how many.
async fn finish_abandoned(app: &App, idle: Duration) -> Result<usize, GatewayError> {
    let mut finished = 0;
    for found in app.tenants.unfinished() {
        let Some(tenant) = app.tenants.take_over(&found, idle).await? else { continue };
        match found.lifecycle {
            Lifecycle::Creating => tracing::warn!(tenant = %tenant.id, "rolling back a tenant creation a crash interrupted"),
            _ => tracing::warn!(tenant = %tenant.id, "finishing a tenant deletion a crash interrupted"),
        }
        // Shared: the replica that died may have had requests of it in flight.
        if app.shares_store() {
            app.tombstones.bury(tenant.storage_id()).await?;
        }
        purge(app, &tenant).await?;
        app.tenants.remove(&tenant).await?;
        finished += 1;
    }
    app.store.flush().await?;
    Ok(finished)
}
