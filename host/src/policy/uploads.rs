//! Who uploaded which policy, and the per-tenant upload quota.
//!
//! Policy blobs are global and content-addressed. Each uploader's claim on one is an
//! [`UploadRecord`] kept per owner (see `policy/blobs.rs` for where each store keeps
//! them), so deleting a tenant purges its claims with the rest of its data. The
//! operator's claims are recorded under [`OPERATOR_OWNER`]. Usage is summed from the
//! records each time (a tenant holds at most `max_uploads_per_tenant` of them), so there
//! is no running total to drift.

use serde::{Deserialize, Serialize};

use super::PolicyLimits;

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

impl<'a> Owner<'a> {
    /// The storage id its records are kept under.
    pub fn storage_id(self) -> &'a str {
        match self {
            Owner::Operator => OPERATOR_OWNER,
            Owner::Tenant(storage_id) => storage_id,
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::PolicyHash;

    fn limits(uploads: usize, bytes: u64) -> PolicyLimits {
        PolicyLimits { max_uploads_per_tenant: uploads, max_upload_bytes_per_tenant: bytes, ..PolicyLimits::default() }
    }

    #[test]
    fn quota_counts_uploads_and_bytes() {
        let usage = Usage::of(&[
            UploadRecord { hash: PolicyHash::of(b"one").to_string(), bytes: 100, uploaded_millis: 1 },
            UploadRecord { hash: PolicyHash::of(b"two").to_string(), bytes: 200, uploaded_millis: 2 },
        ]);
        assert_eq!(usage, Usage { uploads: 2, bytes: 300 });
        assert_eq!(check_quota(usage, 1, &limits(2, 10_000)), Err(QuotaExceeded::Uploads { held: 2, bytes: 300, limit: 2 }));
        assert_eq!(check_quota(usage, 701, &limits(3, 1000)), Err(QuotaExceeded::Bytes { size: 701, total: 1001, limit: 1000, held: 2, bytes: 300 }));
        assert_eq!(check_quota(usage, 700, &limits(3, 1000)), Ok(()));
    }

    #[test]
    fn the_operator_owner_is_no_tenants_storage_id() {
        assert!(crate::tenants::validate_id(OPERATOR_OWNER).is_err());
        // An incarnation has a non-empty id before its `#`; the operator's has none.
        let incarnation = crate::tenants::new_incarnation("x");
        assert!(!incarnation.starts_with('#') && OPERATOR_OWNER.starts_with('#'));
    }
}
