//! Where uploaded policy wasm and the upload claims on it are kept, over one of two
//! stores: the embedded one (sled, one process; `blobs/embedded.rs`) or the shared one
//! ([`crate::postgres::policies::PgPolicies`]), where a policy uploaded through one
//! replica is loadable by every other.
//!
//! Only the wasm is kept here, by its blake3 hash. Compiled artifacts are specific to the
//! engine and the CPU, so each replica keeps its own in its local store (the `compiled`
//! tree) and compiles from the wasm on a miss. Validating and compiling stay in
//! `policy.rs`; the quota rule in `uploads.rs`.

mod embedded;

use super::uploads::{check_quota, Owner, QuotaExceeded, UploadRecord, Usage};
use super::{PolicyHash, PolicyLimits};
use crate::postgres::policies::{PgBlobLock, PgPolicies};
use crate::store::{Store, StoreError};

/// What a claim on a blob found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// The owner already held it; nothing changed.
    AlreadyHeld,
    /// The blob is stored and the owner's claim on it is now recorded.
    Recorded,
    /// No blob with this hash is stored: the upload must be validated, compiled and
    /// stored with [`PolicyBlobs::store`].
    NoBlob,
}

/// A claim was refused.
#[derive(Debug, thiserror::Error)]
pub enum ClaimError {
    /// The tenant's uploads are at their quota.
    #[error(transparent)]
    Quota(#[from] QuotaExceeded),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Policy wasm and upload claims, in the embedded or the shared store. Clones share one
/// store.
#[derive(Clone)]
pub struct PolicyBlobs {
    arm: Arm,
}

#[derive(Clone)]
enum Arm {
    Embedded(embedded::Embedded),
    Shared(PgPolicies),
}

/// The quota a claim by `owner` must fit, `None` for the operator.
fn quota_of<'a>(owner: Owner<'_>, limits: &'a PolicyLimits) -> Option<&'a PolicyLimits> {
    matches!(owner, Owner::Tenant(_)).then_some(limits)
}

impl PolicyBlobs {
    /// The embedded store: the `policies` tree and upload records in the `tenant` tree.
    pub fn embedded(store: Store) -> Self {
        Self { arm: Arm::Embedded(embedded::Embedded::new(store)) }
    }

    /// The shared store (PostgreSQL).
    pub fn shared(policies: PgPolicies) -> Self {
        Self { arm: Arm::Shared(policies) }
    }

    /// The wasm of policy `hash`, if stored. Bytes that do not hash to `hash` (a damaged
    /// or edited store) are an error, never run under that name.
    pub async fn wasm(&self, hash: PolicyHash) -> Result<Option<Vec<u8>>, StoreError> {
        let wasm = match &self.arm {
            Arm::Embedded(e) => e.wasm(hash)?,
            Arm::Shared(p) => p.wasm(hash).await?,
        };
        match wasm {
            Some(bytes) if PolicyHash::of(&bytes) != hash => Err(StoreError::Corrupt { tree: "policies", reason: format!("the wasm stored as {hash} has another hash") }),
            other => Ok(other),
        }
    }

    /// Whether policy `hash` is stored.
    pub async fn contains(&self, hash: PolicyHash) -> Result<bool, StoreError> {
        match &self.arm {
            Arm::Embedded(e) => e.contains(hash),
            Arm::Shared(p) => p.contains(hash).await,
        }
    }

    /// Records that `owner` holds the stored blob `hash` (`bytes` long), if it is stored
    /// and, for a tenant, within its quota (`limits`). Embedded: not durable until
    /// [`PolicyBlobs::flush`]; the caller runs one tenant's uploads one at a time. Shared:
    /// committed, with the owner's claims locked from the quota check to the record, so
    /// uploads through several replicas at once cannot pass the quota together.
    pub async fn claim(&self, owner: Owner<'_>, hash: PolicyHash, bytes: u64, limits: &PolicyLimits) -> Result<Claim, ClaimError> {
        match &self.arm {
            Arm::Embedded(e) => e.claim(owner, hash, bytes, quota_of(owner, limits), None),
            Arm::Shared(p) => p.claim(owner, hash, bytes, quota_of(owner, limits), None).await,
        }
    }

    /// Stores `wasm` (validated by the caller) under its hash, unless it is already, and
    /// records `owner`'s claim on it, as [`PolicyBlobs::claim`] does; shared, both in one
    /// transaction.
    pub async fn store(&self, owner: Owner<'_>, wasm: &[u8], limits: &PolicyLimits) -> Result<Claim, ClaimError> {
        let hash = PolicyHash::of(wasm);
        let bytes = wasm.len() as u64;
        match &self.arm {
            Arm::Embedded(e) => e.claim(owner, hash, bytes, quota_of(owner, limits), Some(wasm)),
            Arm::Shared(p) => p.claim(owner, hash, bytes, quota_of(owner, limits), Some(wasm)).await,
        }
    }

    /// `owner`'s record of `hash`, if it holds one.
    pub async fn find(&self, owner: Owner<'_>, hash: PolicyHash) -> Result<Option<UploadRecord>, StoreError> {
        match &self.arm {
            Arm::Embedded(e) => e.find(owner, hash),
            Arm::Shared(p) => p.find(owner, hash).await,
        }
    }

    /// Every upload `owner` holds, oldest first.
    pub async fn list(&self, owner: Owner<'_>) -> Result<Vec<UploadRecord>, StoreError> {
        let mut records = match &self.arm {
            Arm::Embedded(e) => e.list(owner)?,
            Arm::Shared(p) => p.list(owner).await?,
        };
        records.sort_by(|a, b| (a.uploaded_millis, &a.hash).cmp(&(b.uploaded_millis, &b.hash)));
        Ok(records)
    }

    /// What `owner`'s uploads add up to.
    pub async fn usage(&self, owner: Owner<'_>) -> Result<Usage, StoreError> {
        Ok(Usage::of(&self.list(owner).await?))
    }

    /// Drops `owner`'s claim on `hash`; whether it held one. Embedded: not durable until
    /// [`PolicyBlobs::flush`].
    pub async fn forget(&self, owner: Owner<'_>, hash: PolicyHash) -> Result<bool, StoreError> {
        match &self.arm {
            Arm::Embedded(e) => e.forget(owner, hash),
            Arm::Shared(p) => p.forget(owner, hash).await,
        }
    }

    /// Drops every claim of a deleted tenant incarnation; how many. Embedded: none left,
    /// they were purged with the tenant's other records (they share its key prefix).
    pub async fn forget_owner(&self, storage_id: &str) -> Result<u64, StoreError> {
        match &self.arm {
            Arm::Embedded(_) => Ok(0),
            Arm::Shared(p) => p.forget_owner(storage_id).await,
        }
    }

    /// Removes blob `hash`; whether it was removed. The caller decided nothing holds it.
    /// Shared: a blob some owner still claims stays (the schema refuses it), so a claim
    /// another replica recorded meanwhile keeps it. Embedded: not durable until
    /// [`PolicyBlobs::flush`].
    pub async fn remove(&self, hash: PolicyHash) -> Result<bool, StoreError> {
        match &self.arm {
            Arm::Embedded(e) => e.remove(hash),
            Arm::Shared(p) => p.remove(hash).await,
        }
    }

    /// Waits for and takes blob `hash`'s lock across replicas, held until dropped: shared,
    /// a database lock; embedded, none (one process uses the store, and the runtime's own
    /// lock serialises it).
    pub async fn lock_across_replicas(&self, hash: PolicyHash) -> Result<Option<PgBlobLock>, StoreError> {
        match &self.arm {
            Arm::Embedded(_) => Ok(None),
            Arm::Shared(p) => p.lock(hash).await.map(Some),
        }
    }

    /// Makes every write so far durable: embedded, a flush of the store; shared, nothing
    /// (each write committed).
    pub async fn flush(&self) -> Result<(), StoreError> {
        match &self.arm {
            Arm::Embedded(e) => e.flush().await,
            Arm::Shared(_) => Ok(()),
        }
    }
}

/// The quota check both stores run before recording a claim, on the owner's records as
/// they are at that moment.
pub(crate) fn check_claim(held: &[UploadRecord], bytes: u64, quota: Option<&PolicyLimits>) -> Result<(), QuotaExceeded> {
    match quota {
        Some(limits) => check_quota(Usage::of(held), bytes, limits),
        None => Ok(()),
    }
}
