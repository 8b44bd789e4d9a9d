//! Each tenant's key-value memory (the policy `memory` interface), with a byte quota on
//! keys plus values that session turns count against too. The quota is checked and charged
//! atomically with the write, so concurrent calls of one tenant (on one replica or several)
//! can never together pass it.
//!
//! [`Memory`] is the one interface the gateway uses, over the embedded store
//! ([`EmbeddedMemory`], sled) or the shared one ([`PgMemory`], PostgreSQL). It hands out
//! [`TenantMemory`]s, each of which can reach one tenant's records only.

mod embedded;

pub use embedded::EmbeddedMemory;

use crate::policy::MemoryError;
use crate::postgres::memory::PgMemory;
use crate::store::{Store, StoreError, TenantKey};

/// Longest key a policy may use, in bytes.
pub const MAX_KEY_BYTES: usize = 256;

fn check_key(key: &str) -> Result<(), MemoryError> {
    if key.is_empty() || key.len() > MAX_KEY_BYTES {
        return Err(MemoryError::InvalidKey);
    }
    Ok(())
}

/// A store failure, as the policy sees it (the message names the operation, never data).
pub(crate) fn unavailable(e: impl std::fmt::Display) -> MemoryError {
    MemoryError::Unavailable(e.to_string())
}

/// Every tenant's memory, in one store, each limited to `quota_bytes`. Clones share it.
#[derive(Clone)]
pub struct Memory {
    place: Place,
    quota_bytes: u64,
}

#[derive(Clone)]
enum Place {
    Embedded(Store),
    Shared(PgMemory),
}

impl Memory {
    /// In the embedded store.
    pub fn embedded(store: Store, quota_bytes: u64) -> Self {
        Self { place: Place::Embedded(store), quota_bytes }
    }

    /// In the shared store (PostgreSQL).
    pub fn shared(table: PgMemory, quota_bytes: u64) -> Self {
        Self { place: Place::Shared(table), quota_bytes }
    }

    /// Each tenant's quota, in bytes of keys plus values.
    pub fn quota_bytes(&self) -> u64 {
        self.quota_bytes
    }

    /// The memory of the tenant stored under `storage_id` (its incarnation).
    pub fn tenant(&self, storage_id: &str) -> TenantMemory {
        let arm = match &self.place {
            Place::Embedded(store) => Arm::Embedded(EmbeddedMemory::new(store.clone(), TenantKey::of(storage_id), self.quota_bytes)),
            Place::Shared(table) => Arm::Shared { table: table.clone(), tenant_id: storage_id.into(), quota_bytes: self.quota_bytes },
        };
        TenantMemory { arm }
    }

    /// Removes every memory record and the usage count of a deleted tenant: shared, its
    /// rows; embedded, nothing (its records go with the store's purge of the tenant).
    pub async fn purge_tenant(&self, storage_id: &str) -> Result<(), StoreError> {
        match &self.place {
            Place::Embedded(_) => Ok(()),
            Place::Shared(table) => table.purge_tenant(storage_id).await,
        }
    }
}

/// One tenant's memory. Clones share it.
#[derive(Clone)]
pub struct TenantMemory {
    arm: Arm,
}

#[derive(Clone)]
enum Arm {
    Embedded(EmbeddedMemory),
    Shared { table: PgMemory, tenant_id: String, quota_bytes: u64 },
}

impl TenantMemory {
    /// Bytes in use: keys plus values, session turns included.
    pub async fn used_bytes(&self) -> Result<u64, MemoryError> {
        match &self.arm {
            Arm::Embedded(e) => e.used_bytes(),
            Arm::Shared { table, tenant_id, .. } => table.used_bytes(tenant_id).await.map_err(unavailable),
        }
    }

    /// Reads a value. `InvalidKey` for an empty key or one over [`MAX_KEY_BYTES`].
    pub async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, MemoryError> {
        check_key(key)?;
        match &self.arm {
            Arm::Embedded(e) => e.get(key),
            Arm::Shared { table, tenant_id, .. } => table.get(tenant_id, key).await.map_err(unavailable),
        }
    }

    /// Writes a value if the tenant's total stays within its quota (`QuotaExceeded`,
    /// writing nothing, if not); a write that shrinks the total is always allowed.
    pub async fn set(&self, key: &str, value: &[u8]) -> Result<(), MemoryError> {
        check_key(key)?;
        self.write(key, Some(value)).await
    }

    /// Deletes a value and gives its bytes back to the quota; an absent key is no error.
    pub async fn delete(&self, key: &str) -> Result<(), MemoryError> {
        check_key(key)?;
        self.write(key, None).await
    }

    async fn write(&self, key: &str, value: Option<&[u8]>) -> Result<(), MemoryError> {
        match &self.arm {
            Arm::Embedded(e) => match value {
                Some(value) => e.set(key, value),
                None => e.delete(key),
            },
            Arm::Shared { table, tenant_id, quota_bytes } => match table.put(tenant_id, key, value, *quota_bytes).await {
                Ok(true) => Ok(()),
                Ok(false) => Err(MemoryError::QuotaExceeded),
                Err(e) => Err(unavailable(e)),
            },
        }
    }

    /// Keys starting with `prefix`, in byte order, at most `limit`.
    pub async fn list(&self, prefix: &str, limit: u32) -> Result<Vec<String>, MemoryError> {
        match &self.arm {
            Arm::Embedded(e) => e.list(prefix, limit),
            Arm::Shared { table, tenant_id, .. } => table.list(tenant_id, prefix, limit).await.map_err(unavailable),
        }
    }

    /// Every key and value (values as stored), in key order, at most `limit`: for the
    /// tenant API.
    pub async fn entries(&self, limit: usize) -> Result<Vec<(String, Vec<u8>)>, MemoryError> {
        match &self.arm {
            Arm::Embedded(e) => e.entries(limit),
            Arm::Shared { table, tenant_id, .. } => table.entries(tenant_id, limit).await.map_err(unavailable),
        }
    }
}
