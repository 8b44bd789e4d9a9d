//! Who uploaded which policy, and the per-tenant upload quota.
//!
//! Policy blobs are global and content-addressed (the `policies` and `compiled` trees).
//! Each uploader's claim on one is a record under its own prefix in the `tenant` tree
//! ([`Kind::Upload`], keyed by the hash's hex), so deleting a tenant purges its claims with
//! the rest of its data. The operator's claims are recorded under [`OPERATOR_OWNER`].
//! Usage is summed from the records each time (a tenant holds at most
//! `max_uploads_per_tenant` of them), so there is no running total to drift.

use serde::{Deserialize, Serialize};

use super::{PolicyHash, PolicyLimits};
use crate::store::{decode, encode, Kind, Store, StoreError, TenantKey};

/// The storage id the operator's uploads are recorded under. No tenant can have it: a
/// tenant's storage id is either its id (letters, digits, `-`, `_` and `.`, never `#`) or
/// an incarnation, a non-empty id followed by `#` and 32 hex digits.
pub const OPERATOR_OWNER: &str = "#operator";

/// Who holds an upload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner<'a> {
    /// The operator: no quota.
    Operator,
    /// A tenant, by storage id (its incarnation).
    Tenant(&'a str),
}

impl Owner<'_> {
    fn key(self) -> TenantKey {
        TenantKey::of(match self {
            Owner::Operator => OPERATOR_OWNER,
            Owner::Tenant(storage_id) => storage_id,
        })
    }
}

/// One upload an owner holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadRecord {
    /// blake3 of the wasm, hex.
    pub hash: String,
    /// Size of the wasm (the compiled artifact stored beside it is larger).
    pub bytes: u64,
    /// When this owner first uploaded it, milliseconds since the Unix epoch.
    pub uploaded_millis: u64,
}

/// What an owner's uploads add up to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Uploads held.
    pub uploads: usize,
    /// Their wasm bytes.
    pub bytes: u64,
}

impl Usage {
    /// What `records` add up to.
    pub fn of(records: &[UploadRecord]) -> Self {
        Usage { uploads: records.len(), bytes: records.iter().map(|r| r.bytes).fold(0, u64::saturating_add) }
    }
}

/// A tenant upload past its quota (409 `upload_quota_exceeded`), refused before compiling.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuotaExceeded {
    /// One more upload would pass `policy.max_uploads_per_tenant`.
    #[error("this tenant holds {held} uploaded policies ({bytes} bytes), the most policy.max_uploads_per_tenant ({limit}) allows; delete an unassigned upload with DELETE /v1/tenant/policies/{{hash}} (GET /v1/tenant/policies lists them)")]
    Uploads {
        /// Uploads held.
        held: usize,
        /// Their bytes.
        bytes: u64,
        /// The limit.
        limit: usize,
    },
    /// This upload's bytes would pass `policy.max_upload_bytes_per_tenant`.
    #[error("this upload of {size} bytes would bring this tenant's uploaded policies to {total} bytes, past policy.max_upload_bytes_per_tenant ({limit}); it holds {held} uploads of {bytes} bytes; delete an unassigned upload with DELETE /v1/tenant/policies/{{hash}} (GET /v1/tenant/policies lists them)")]
    Bytes {
        /// This upload's size.
        size: u64,
        /// Held bytes plus this upload.
        total: u64,
        /// The limit.
        limit: u64,
        /// Uploads held.
        held: usize,
        /// Their bytes.
        bytes: u64,
    },
}

/// Whether `usage` leaves room for one more upload of `size` bytes.
pub fn check_quota(usage: Usage, size: u64, limits: &PolicyLimits) -> Result<(), QuotaExceeded> {
    if usage.uploads >= limits.max_uploads_per_tenant {
        return Err(QuotaExceeded::Uploads { held: usage.uploads, bytes: usage.bytes, limit: limits.max_uploads_per_tenant });
    }
    let total = usage.bytes.saturating_add(size);
    if total > limits.max_upload_bytes_per_tenant {
        return Err(QuotaExceeded::Bytes { size, total, limit: limits.max_upload_bytes_per_tenant, held: usage.uploads, bytes: usage.bytes });
    }
    Ok(())
}

/// The upload records, read and written by owner.
#[derive(Clone)]
pub struct UploadRecords {
    store: Store,
}

impl UploadRecords {
    /// The records in `store`.
    pub fn new(store: Store) -> Self {
        Self { store }
    }

    fn key(owner: Owner<'_>, hash: PolicyHash) -> Vec<u8> {
        owner.key().record(Kind::Upload, hash.to_string().as_bytes())
    }

    /// `owner`'s record of `hash`, if it holds one.
    pub fn find(&self, owner: Owner<'_>, hash: PolicyHash) -> Result<Option<UploadRecord>, StoreError> {
        self.store.tenant.get(Self::key(owner, hash))?.map(|bytes| decode("tenant", &bytes)).transpose()
    }

    /// Every upload `owner` holds, oldest first.
    pub fn list(&self, owner: Owner<'_>) -> Result<Vec<UploadRecord>, StoreError> {
        let mut records = self
            .store
            .tenant
            .scan_prefix(owner.key().prefix(Kind::Upload))
            .values()
            .map(|value| decode::<UploadRecord>("tenant", &value?))
            .collect::<Result<Vec<_>, _>>()?;
        records.sort_by(|a, b| (a.uploaded_millis, &a.hash).cmp(&(b.uploaded_millis, &b.hash)));
        Ok(records)
    }

    /// What `owner`'s uploads add up to.
    pub fn usage(&self, owner: Owner<'_>) -> Result<Usage, StoreError> {
        Ok(Usage::of(&self.list(owner)?))
    }

    /// Records that `owner` holds `hash` (`bytes` long), now. Not durable until the store
    /// is flushed.
    pub fn record(&self, owner: Owner<'_>, hash: PolicyHash, bytes: u64) -> Result<(), StoreError> {
        let record = UploadRecord { hash: hash.to_string(), bytes, uploaded_millis: crate::clock::unix_millis() };
        self.store.tenant.insert(Self::key(owner, hash), encode(&record))?;
        Ok(())
    }

    /// Drops `owner`'s record of `hash`; whether it held one. Not durable until the store
    /// is flushed.
    pub fn forget(&self, owner: Owner<'_>, hash: PolicyHash) -> Result<bool, StoreError> {
        Ok(self.store.tenant.remove(Self::key(owner, hash))?.is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(uploads: usize, bytes: u64) -> PolicyLimits {
        PolicyLimits { max_uploads_per_tenant: uploads, max_upload_bytes_per_tenant: bytes, ..PolicyLimits::default() }
    }

    #[test]
    fn quota_counts_uploads_and_bytes_and_forgetting_frees_it() -> Result<(), StoreError> {
        let records = UploadRecords::new(Store::temporary()?);
        let tenant = Owner::Tenant("a#00112233445566778899aabbccddeeff");
        let (one, two, three) = (PolicyHash::of(b"one"), PolicyHash::of(b"two"), PolicyHash::of(b"three"));
        records.record(tenant, one, 100)?;
        records.record(tenant, two, 200)?;
        let usage = records.usage(tenant)?;
        assert_eq!(usage, Usage { uploads: 2, bytes: 300 });
        assert_eq!(check_quota(usage, 1, &limits(2, 10_000)), Err(QuotaExceeded::Uploads { held: 2, bytes: 300, limit: 2 }));
        assert_eq!(check_quota(usage, 701, &limits(3, 1000)), Err(QuotaExceeded::Bytes { size: 701, total: 1001, limit: 1000, held: 2, bytes: 300 }));
        assert_eq!(check_quota(usage, 700, &limits(3, 1000)), Ok(()));
        assert!(records.forget(tenant, one)?);
        assert!(!records.forget(tenant, one)?, "forgetting twice finds nothing");
        assert_eq!(records.usage(tenant)?, Usage { uploads: 1, bytes: 200 });
        assert_eq!(check_quota(records.usage(tenant)?, 1, &limits(2, 10_000)), Ok(()));
        assert_eq!(records.find(tenant, three)?, None);
        Ok(())
    }

    #[test]
    fn owners_see_only_their_own_uploads() -> Result<(), StoreError> {
        let records = UploadRecords::new(Store::temporary()?);
        let (a, b) = (Owner::Tenant("a#00000000000000000000000000000000"), Owner::Tenant("b#00000000000000000000000000000000"));
        let hash = PolicyHash::of(b"shared bytes");
        records.record(a, hash, 10)?;
        records.record(Owner::Operator, PolicyHash::of(b"stock"), 20)?;
        assert_eq!(records.list(a)?.len(), 1);
        assert!(records.list(b)?.is_empty());
        assert_eq!(records.find(b, hash)?, None);
        assert_eq!(records.list(Owner::Operator)?.iter().map(|r| r.bytes).collect::<Vec<_>>(), [20]);
        Ok(())
    }

    #[test]
    fn the_operator_owner_is_no_tenants_storage_id() {
        assert!(crate::tenants::validate_id(OPERATOR_OWNER).is_err());
        // An incarnation has a non-empty id before its `#`; the operator's has none.
        let incarnation = crate::tenants::new_incarnation("x");
        assert!(!incarnation.starts_with('#') && OPERATOR_OWNER.starts_with('#'));
    }
}
