//! Deleting an uploaded policy. Blobs are shared by content, so a tenant's delete drops
//! only its own claim and takes the blob when nothing else holds it; the operator's takes
//! the blob and every claim, once no tenant runs it.
//!
//! A blob is held while the operator or any tenant has a claim on it (see
//! `policy/uploads.rs`), any tenant has it assigned, or it is the stock default policy. A
//! previous assignment does not hold one: rolling back to a deleted policy is refused.
//! Everything is decided under the runtime's blob lock, which uploads and assignments take
//! too, so neither can race a delete into a tenant assigned to a missing blob.

use crate::app::App;
use crate::error::GatewayError;
use crate::policy::{BlobsLock, Owner, PolicyHash};
use crate::tenants::Tenant;

/// A delete the gateway refuses.
#[derive(Debug, thiserror::Error)]
pub enum DeleteRefused {
    /// The tenant holds no upload of this hash (404 `not_found`).
    #[error("this tenant holds no uploaded policy {0}")]
    NotHeld(PolicyHash),
    /// Nothing is stored under this hash (404 `not_found`).
    #[error("policy {0} is not uploaded")]
    NotFound(PolicyHash),
    /// It is the deleting tenant's current policy (409 `policy_assigned`).
    #[error("policy {0} is this tenant's current policy; assign another before deleting it")]
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

/// Drops `tenant`'s claim on `hash`, and the blob if nothing else holds it. Refused when
/// the tenant holds no such upload or has it assigned.
pub async fn delete_for_tenant(app: &App, tenant: &Tenant, hash: PolicyHash) -> Result<Deleted, GatewayError> {
    let blobs = app.policies.lock_blobs().await;
    let owner = Owner::Tenant(tenant.storage_id());
    if app.policies.uploads().find(owner, hash)?.is_none() {
        return Err(DeleteRefused::NotHeld(hash).into());
    }
    // The record as it is now: an assignment made since the request was authenticated
    // has finished (it holds the blob lock while it checks and writes).
    let current = app.tenants.get(&tenant.id).filter(|t| t.incarnation == tenant.incarnation);
    if current.as_deref().unwrap_or(tenant).policy_hash() == Some(hash) {
        return Err(DeleteRefused::AssignedHere(hash).into());
    }
    app.policies.uploads().forget(owner, hash)?;
    let blob_removed = !held(app, &blobs, hash)? && app.policies.remove(&blobs, hash)?;
    app.store.flush().await?;
    Ok(Deleted { claims: 1, blob_removed })
}

/// Removes `hash` for the operator: every claim on it and the blob. Refused while any
/// tenant has it assigned, and for the stock default policy.
pub async fn delete_for_operator(app: &App, hash: PolicyHash) -> Result<Deleted, GatewayError> {
    let blobs = app.policies.lock_blobs().await;
    if hash == app.default_policy {
        return Err(DeleteRefused::Stock(hash).into());
    }
    let tenants = app.tenants.all();
    let assigned = tenants.iter().filter(|t| t.policy_hash() == Some(hash)).count();
    if assigned > 0 {
        return Err(DeleteRefused::AssignedTo { hash, tenants: assigned }.into());
    }
    let uploads = app.policies.uploads();
    let mut claims = usize::from(uploads.forget(Owner::Operator, hash)?);
    for tenant in &tenants {
        claims += usize::from(uploads.forget(Owner::Tenant(tenant.storage_id()), hash)?);
    }
    let blob_removed = app.policies.remove(&blobs, hash)?;
    if claims == 0 && !blob_removed {
        return Err(DeleteRefused::NotFound(hash).into());
    }
    app.store.flush().await?;
    Ok(Deleted { claims, blob_removed })
}

/// Whether anything still holds blob `hash`, decided under `_held`. One lookup per
/// tenant: deletes are rare, and this keeps no index to go stale.
fn held(app: &App, _held: &BlobsLock<'_>, hash: PolicyHash) -> Result<bool, GatewayError> {
    if hash == app.default_policy {
        return Ok(true);
    }
    let tenants = app.tenants.all();
    if tenants.iter().any(|t| t.policy_hash() == Some(hash)) {
        return Ok(true);
    }
    let uploads = app.policies.uploads();
    if uploads.find(Owner::Operator, hash)?.is_some() {
        return Ok(true);
    }
    for tenant in &tenants {
        if uploads.find(Owner::Tenant(tenant.storage_id()), hash)?.is_some() {
            return Ok(true);
        }
    }
    Ok(false)
}

