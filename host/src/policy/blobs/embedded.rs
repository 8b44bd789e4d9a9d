//! Policy blobs and upload claims in sled, as they have always been on disk: the wasm in
//! the `policies` tree under its hash's hex, each owner's claim in the `tenant` tree under
//! the owner's key ([`Kind::Upload`], keyed by the hash's hex).

use super::{check_claim, Claim, ClaimError};
use crate::policy::uploads::{Owner, UploadRecord};
use crate::policy::{PolicyHash, PolicyLimits};
use crate::store::{decode, encode, Kind, Store, StoreError, TenantKey};

/// The sled blobs and claims.
#[derive(Clone)]
pub(super) struct Embedded {
    store: Store,
}

fn record_key(owner: Owner<'_>, hash: PolicyHash) -> Vec<u8> {
    TenantKey::of(owner.storage_id()).record(Kind::Upload, hash.to_string().as_bytes())
}

impl Embedded {
    pub(super) fn new(store: Store) -> Self {
        Self { store }
    }

    pub(super) fn wasm(&self, hash: PolicyHash) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.store.policies.get(hash.to_string())?.map(|bytes| bytes.to_vec()))
    }

    pub(super) fn contains(&self, hash: PolicyHash) -> Result<bool, StoreError> {
        Ok(self.store.policies.contains_key(hash.to_string())?)
    }

    /// See [`super::PolicyBlobs::claim`]; with `wasm`, stores the blob first if absent.
    pub(super) fn claim(&self, owner: Owner<'_>, hash: PolicyHash, bytes: u64, quota: Option<&PolicyLimits>, wasm: Option<&[u8]>) -> Result<Claim, ClaimError> {
        if self.find(owner, hash)?.is_some() {
            return Ok(Claim::AlreadyHeld);
        }
        check_claim(&self.list(owner)?, bytes, quota)?;
        if !self.contains(hash)? {
            let Some(wasm) = wasm else { return Ok(Claim::NoBlob) };
            self.store.policies.insert(hash.to_string(), wasm).map_err(StoreError::from)?;
        }
        let record = UploadRecord { hash: hash.to_string(), bytes, uploaded_millis: crate::clock::unix_millis() };
        self.store.tenant.insert(record_key(owner, hash), encode(&record)).map_err(StoreError::from)?;
        Ok(Claim::Recorded)
    }

    pub(super) fn find(&self, owner: Owner<'_>, hash: PolicyHash) -> Result<Option<UploadRecord>, StoreError> {
        self.store.tenant.get(record_key(owner, hash))?.map(|bytes| decode("tenant", &bytes)).transpose()
    }

    pub(super) fn list(&self, owner: Owner<'_>) -> Result<Vec<UploadRecord>, StoreError> {
        self.store.tenant.scan_prefix(TenantKey::of(owner.storage_id()).prefix(Kind::Upload)).values().map(|value| decode::<UploadRecord>("tenant", &value?)).collect()
    }

    pub(super) fn forget(&self, owner: Owner<'_>, hash: PolicyHash) -> Result<bool, StoreError> {
        Ok(self.store.tenant.remove(record_key(owner, hash))?.is_some())
    }

    pub(super) fn remove(&self, hash: PolicyHash) -> Result<bool, StoreError> {
        Ok(self.store.policies.remove(hash.to_string())?.is_some())
    }

    pub(super) async fn flush(&self) -> Result<(), StoreError> {
        self.store.flush().await
    }
}

#[cfg(test)]
mod tests {
    use super::super::PolicyBlobs;
    use super::*;
    use crate::policy::uploads::{QuotaExceeded, Usage};

    fn limits(uploads: usize, bytes: u64) -> PolicyLimits {
        PolicyLimits { max_uploads_per_tenant: uploads, max_upload_bytes_per_tenant: bytes, ..PolicyLimits::default() }
    }

    #[tokio::test]
    async fn claims_count_against_the_quota_and_forgetting_frees_it() -> Result<(), Box<dyn std::error::Error>> {
        let blobs = PolicyBlobs::embedded(Store::temporary()?);
        let tenant = Owner::Tenant("a#00112233445566778899aabbccddeeff");
        let quota = limits(2, 10_000);
        let (one, two, three) = (vec![1u8; 100], vec![2u8; 200], vec![3u8; 50]);
        assert_eq!(blobs.store(tenant, &one, &quota).await?, Claim::Recorded);
        assert_eq!(blobs.store(tenant, &two, &quota).await?, Claim::Recorded);
        assert_eq!(blobs.store(tenant, &one, &quota).await?, Claim::AlreadyHeld);
        assert_eq!(blobs.usage(tenant).await?, Usage { uploads: 2, bytes: 300 });
        let refused = blobs.store(tenant, &three, &quota).await;
        assert!(matches!(refused, Err(ClaimError::Quota(QuotaExceeded::Uploads { held: 2, bytes: 300, limit: 2 }))), "{refused:?}");
        assert!(!blobs.contains(PolicyHash::of(&three)).await?, "a refused upload stores nothing");
        assert!(blobs.forget(tenant, PolicyHash::of(&one)).await?);
        assert!(!blobs.forget(tenant, PolicyHash::of(&one)).await?, "forgetting twice finds nothing");
        assert_eq!(blobs.usage(tenant).await?, Usage { uploads: 1, bytes: 200 });
        assert_eq!(blobs.store(tenant, &three, &quota).await?, Claim::Recorded);
        assert_eq!(blobs.wasm(PolicyHash::of(&three)).await?, Some(three));
        Ok(())
    }

    #[tokio::test]
    async fn owners_see_only_their_own_uploads() -> Result<(), Box<dyn std::error::Error>> {
        let blobs = PolicyBlobs::embedded(Store::temporary()?);
        let (a, b) = (Owner::Tenant("a#00000000000000000000000000000000"), Owner::Tenant("b#00000000000000000000000000000000"));
        let shared = b"shared bytes".to_vec();
        let quota = PolicyLimits::default();
        blobs.store(a, &shared, &quota).await?;
        blobs.store(Owner::Operator, &[7u8; 20], &quota).await?;
        assert_eq!(blobs.list(a).await?.len(), 1);
        assert!(blobs.list(b).await?.is_empty());
        assert_eq!(blobs.find(b, PolicyHash::of(&shared)).await?, None);
        assert_eq!(blobs.list(Owner::Operator).await?.iter().map(|r| r.bytes).collect::<Vec<_>>(), [20]);
        assert_eq!(blobs.claim(b, PolicyHash::of(&shared), 12, &quota).await?, Claim::Recorded, "stored bytes are claimed without the wasm");
        assert_eq!(blobs.claim(b, PolicyHash::of(b"absent"), 6, &quota).await?, Claim::NoBlob);
        Ok(())
    }

    #[tokio::test]
    async fn wasm_that_does_not_hash_to_its_name_is_refused() -> Result<(), Box<dyn std::error::Error>> {
        let store = Store::temporary()?;
        let blobs = PolicyBlobs::embedded(store.clone());
        let hash = PolicyHash::of(b"honest");
        store.policies.insert(hash.to_string(), b"swapped".as_slice())?;
        assert!(matches!(blobs.wasm(hash).await, Err(StoreError::Corrupt { tree: "policies", .. })));
        Ok(())
    }
}
