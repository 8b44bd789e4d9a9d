//! Deleting an uploaded policy. Blobs are shared by content, so a tenant's delete drops
//! only its own claim and takes the blob when nothing else holds it; the operator's takes
//! the blob and every claim, once no tenant runs it.
//!
//! A blob is held while the operator or any tenant has a claim on it (see
//! `policy/uploads.rs`), any tenant has it assigned, or it is the stock default policy. A
//! previous assignment does not hold one: rolling back to a deleted policy is refused.
//! Everything is decided under the blob's lock, which uploads and assignments take too, so
//! neither can race a delete into a tenant assigned to a missing blob. On the shared store
//! that lock is the database's, held across replicas, and the tenants are read from the
//! database under it ([`Holders::now`]): an assignment another replica has just committed
//! is not yet in this replica's cache.
//!
//! The rules are decided by [`delete_claim`] and [`delete_everywhere`] on a runtime and
//! the [`Holders`] read under its lock; the gateway's routes call them through
//! [`delete_for_tenant`] and [`delete_for_operator`].

use std::sync::Arc;

use crate::app::App;
use crate::error::GatewayError;
use crate::policy::{BlobLock, Owner, PolicyHash};
use crate::tenants::Tenant;
use crate::PolicyRuntime;

/// A delete the gateway refuses.
#[derive(Debug, thiserror::Error)]
pub enum DeleteRefused {
    /// The tenant holds no upload of this hash (404 `not_found`).
    #[error("this tenant holds no uploaded policy {0}")]
    NotHeld(PolicyHash),
    /// Nothing is stored under this hash (404 `not_found`).
    #[error("policy {0} is not uploaded")]
    NotFound(PolicyHash),
    /// It is the deleting tenant's current or candidate policy (409 `policy_assigned`).
    #[error("policy {0} is this tenant's current or candidate policy; assign another (or drop the candidate) before deleting it")]
    AssignedHere(PolicyHash),
    /// Tenants run it (409 `policy_assigned`).
    #[error("policy {hash} is assigned to {tenants} tenant(s); each must assign another before it can be deleted")]
    AssignedTo {
        /// The policy.
        hash: PolicyHash,
        /// How many tenants have it assigned.
        tenants: usize,
    },
    /// The gateway runs it for every tenant without an assignment (409 `policy_assigned`).
    #[error("policy {0} is the gateway's stock default policy, which every tenant without an assignment runs")]
    Stock(PolicyHash),
}

/// What a delete removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deleted {
    /// Claims dropped (the tenant's own; or every owner's for the operator).
    pub claims: usize,
    /// Whether the blob itself went.
    pub blob_removed: bool,
}

/// What holds a blob besides upload claims: the stock default policy and tenants'
/// current assignments. Read under the blob's lock, so no assignment of it changes
/// meanwhile.
#[derive(Debug, Clone)]
pub struct Holders {
    /// The stock default policy, which every tenant without an assignment runs.
    pub default_policy: PolicyHash,
    /// Every tenant, as it is now.
    pub tenants: Vec<Arc<Tenant>>,
}

impl Holders {
    /// The gateway's, as the store holds them now (see [`crate::tenants::Tenants::all_stored`]).
    pub async fn now(app: &App) -> Result<Self, crate::store::StoreError> {
        Ok(Self { default_policy: app.default_policy, tenants: app.tenants.all_stored().await? })
    }
}

/// Drops `tenant`'s claim on `hash`, and the blob if nothing else holds it. Refused when
/// the tenant holds no such upload or has it assigned.
pub async fn delete_for_tenant(app: &App, tenant: &Tenant, hash: PolicyHash) -> Result<Deleted, GatewayError> {
    let blob = app.policies.lock_blob(hash).await?;
    delete_claim(&app.policies, &blob, &Holders::now(app).await?, tenant, hash).await
}

/// Removes `hash` for the operator: every claim on it and the blob. Refused while any
/// tenant has it assigned, and for the stock default policy.
pub async fn delete_for_operator(app: &App, hash: PolicyHash) -> Result<Deleted, GatewayError> {
    let blob = app.policies.lock_blob(hash).await?;
    delete_everywhere(&app.policies, &blob, &Holders::now(app).await?, hash).await
}

/// [`delete_for_tenant`] on `policies`, decided under `held_lock` against `holders`.
pub async fn delete_claim(policies: &PolicyRuntime, held_lock: &BlobLock<'_>, holders: &Holders, tenant: &Tenant, hash: PolicyHash) -> Result<Deleted, GatewayError> {
    let blobs = policies.blobs();
    let owner = Owner::Tenant(tenant.storage_id());
    if blobs.find(owner, hash).await?.is_none() {
        return Err(DeleteRefused::NotHeld(hash).into());
    }
    // The record as it is now: an assignment made since the request was authenticated
    // has finished (it holds the blob's lock while it checks and writes).
    let current = holders.tenants.iter().find(|t| t.id == tenant.id && t.incarnation == tenant.incarnation);
    if current.map_or(tenant, |t| t.as_ref()).runs(hash) {
        return Err(DeleteRefused::AssignedHere(hash).into());
    }
    blobs.forget(owner, hash).await?;
    let blob_removed = !held(policies, held_lock, holders, hash).await? && policies.remove(held_lock, hash).await?;
    blobs.flush().await?;
    Ok(Deleted { claims: 1, blob_removed })
}

/// [`delete_for_operator`] on `policies`, decided under `held_lock` against `holders`.
pub async fn delete_everywhere(policies: &PolicyRuntime, held_lock: &BlobLock<'_>, holders: &Holders, hash: PolicyHash) -> Result<Deleted, GatewayError> {
    if hash == holders.default_policy {
        return Err(DeleteRefused::Stock(hash).into());
    }
    let assigned = holders.tenants.iter().filter(|t| t.runs(hash)).count();
    if assigned > 0 {
        return Err(DeleteRefused::AssignedTo { hash, tenants: assigned }.into());
    }
    let blobs = policies.blobs();
    let mut claims = usize::from(blobs.forget(Owner::Operator, hash).await?);
    for tenant in &holders.tenants {
        claims += usize::from(blobs.forget(Owner::Tenant(tenant.storage_id()), hash).await?);
    }
    let blob_removed = policies.remove(held_lock, hash).await?;
    if claims == 0 && !blob_removed {
        return Err(DeleteRefused::NotFound(hash).into());
    }
    blobs.flush().await?;
    Ok(Deleted { claims, blob_removed })
}

/// Whether anything still holds blob `hash`, decided under `_held`. One lookup per
/// tenant: deletes are rare, and this keeps no index to go stale.
async fn held(policies: &PolicyRuntime, _held: &BlobLock<'_>, holders: &Holders, hash: PolicyHash) -> Result<bool, GatewayError> {
    if hash == holders.default_policy || holders.tenants.iter().any(|t| t.runs(hash)) {
        return Ok(true);
    }
    let blobs = policies.blobs();
    if blobs.find(Owner::Operator, hash).await?.is_some() {
        return Ok(true);
    }
    for tenant in &holders.tenants {
        if blobs.find(Owner::Tenant(tenant.storage_id()), hash).await?.is_some() {
            return Ok(true);
        }
    }
    Ok(false)
}
