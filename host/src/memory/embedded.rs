//! One tenant's memory in the embedded store (sled), with a byte quota that is checked and
//! charged in the same sled transaction as the write, so concurrent calls of one tenant can
//! never together pass it. Session turns are written through it too (they share the quota).

use sled::transaction::{ConflictableTransactionError, TransactionError};

use super::check_key;
use crate::policy::MemoryError;
use crate::store::{Kind, Store, TenantKey};

/// One tenant's memory in the embedded store.
#[derive(Clone)]
pub struct EmbeddedMemory {
    store: Store,
    tenant: TenantKey,
    quota_bytes: u64,
}

fn unavailable(e: impl std::fmt::Display) -> MemoryError {
    MemoryError::Unavailable(e.to_string())
}

fn read_u64(bytes: Option<sled::IVec>) -> u64 {
    bytes.and_then(|b| <[u8; 8]>::try_from(b.as_ref()).ok()).map(u64::from_be_bytes).unwrap_or(0)
}

impl EmbeddedMemory {
    /// The memory of `tenant`, limited to `quota_bytes` of keys plus values.
    pub fn new(store: Store, tenant: TenantKey, quota_bytes: u64) -> Self {
        Self { store, tenant, quota_bytes }
    }

    /// Bytes of keys plus values in use.
    pub fn used_bytes(&self) -> Result<u64, MemoryError> {
        Ok(read_u64(self.store.tenant.get(self.tenant.prefix(Kind::MemoryUsage)).map_err(unavailable)?))
    }

    /// Reads a value.
    pub fn get(&self, key: &str) -> Result<Option<Vec<u8>>, MemoryError> {
        check_key(key)?;
        let record = self.tenant.record(Kind::Memory, key.as_bytes());
        Ok(self.store.tenant.get(record).map_err(unavailable)?.map(|v| v.to_vec()))
    }

    /// Writes a value if the tenant's total stays within its quota.
    pub fn set(&self, key: &str, value: &[u8]) -> Result<(), MemoryError> {
        check_key(key)?;
        self.write(key, Some(value))
    }

    /// Deletes a value and gives its bytes back to the quota.
    pub fn delete(&self, key: &str) -> Result<(), MemoryError> {
        check_key(key)?;
        self.write(key, None)
    }

    fn write(&self, key: &str, value: Option<&[u8]>) -> Result<(), MemoryError> {
        self.put_record(Kind::Memory, key.as_bytes(), value)
    }

    /// Writes (or with `None` deletes) any quota-counted record of this tenant, e.g. a
    /// session turn: policy memory and sessions share one quota.
    pub fn put_record(&self, kind: Kind, key: &[u8], value: Option<&[u8]>) -> Result<(), MemoryError> {
        let record = self.tenant.record(kind, key);
        let usage_key = self.tenant.prefix(Kind::MemoryUsage);
        let quota = self.quota_bytes;
        let result = self.store.tenant.transaction(|tx| {
            let old = tx.get(&record)?.map(|v| (key.len() + v.len()) as u64).unwrap_or(0);
            let new = value.map(|v| (key.len() + v.len()) as u64).unwrap_or(0);
            let used = read_u64(tx.get(&usage_key)?);
            let next = used.saturating_sub(old).saturating_add(new);
            if new > old && next > quota {
                return Err(ConflictableTransactionError::Abort(()));
            }
            match value {
                Some(v) => tx.insert(record.as_slice(), v)?,
                None => tx.remove(record.as_slice())?,
            };
            tx.insert(usage_key.as_slice(), &next.to_be_bytes())?;
            Ok(())
        });
        match result {
            Ok(()) => Ok(()),
            Err(TransactionError::Abort(())) => Err(MemoryError::QuotaExceeded),
            Err(TransactionError::Storage(e)) => Err(unavailable(e)),
        }
    }

    /// Writes new quota-counted records in one transaction, all or none. Returns `false`
    /// (writing nothing) if any key already exists, so a caller that picked the keys from
    /// a read can pick again instead of overwriting a concurrent writer's records.
    pub fn insert_new_records(&self, kind: Kind, records: &[(Vec<u8>, Vec<u8>)]) -> Result<bool, MemoryError> {
        enum Refused {
            Quota,
            Taken,
        }
        let full: Vec<Vec<u8>> = records.iter().map(|(key, _)| self.tenant.record(kind, key)).collect();
        let added: u64 = records.iter().map(|(key, value)| (key.len() + value.len()) as u64).sum();
        let usage_key = self.tenant.prefix(Kind::MemoryUsage);
        let quota = self.quota_bytes;
        let result = self.store.tenant.transaction(|tx| {
            for record in &full {
                if tx.get(record)?.is_some() {
                    return Err(ConflictableTransactionError::Abort(Refused::Taken));
                }
            }
            let next = read_u64(tx.get(&usage_key)?).saturating_add(added);
            if next > quota {
                return Err(ConflictableTransactionError::Abort(Refused::Quota));
            }
            for (record, (_, value)) in full.iter().zip(records) {
                tx.insert(record.as_slice(), value.as_slice())?;
            }
            tx.insert(usage_key.as_slice(), &next.to_be_bytes())?;
            Ok(())
        });
        match result {
            Ok(()) => Ok(true),
            Err(TransactionError::Abort(Refused::Taken)) => Ok(false),
            Err(TransactionError::Abort(Refused::Quota)) => Err(MemoryError::QuotaExceeded),
            Err(TransactionError::Storage(e)) => Err(unavailable(e)),
        }
    }

    /// Keys starting with `prefix`, in byte order, at most `limit`.
    pub fn list(&self, prefix: &str, limit: u32) -> Result<Vec<String>, MemoryError> {
        let scan = self.tenant.record(Kind::Memory, prefix.as_bytes());
        let skip = self.tenant.prefix(Kind::Memory).len();
        self.store
            .tenant
            .scan_prefix(scan)
            .keys()
            .take(limit as usize)
            .map(|k| k.map(|k| String::from_utf8_lossy(&k[skip..]).into_owned()).map_err(unavailable))
            .collect()
    }

    /// Every key and value, for the admin API (values as stored).
    pub fn entries(&self, limit: usize) -> Result<Vec<(String, Vec<u8>)>, MemoryError> {
        let skip = self.tenant.prefix(Kind::Memory).len();
        self.store
            .tenant
            .scan_prefix(self.tenant.prefix(Kind::Memory))
            .take(limit)
            .map(|kv| kv.map(|(k, v)| (String::from_utf8_lossy(&k[skip..]).into_owned(), v.to_vec())).map_err(unavailable))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quota_counts_keys_and_values_and_frees_on_delete() -> Result<(), Box<dyn std::error::Error>> {
        let store = Store::temporary()?;
        let memory = EmbeddedMemory::new(store, TenantKey::of("t"), 20);
        memory.set("k1", &[0; 8])?; // 10 bytes
        memory.set("k2", &[0; 8])?; // 20 bytes
        assert!(matches!(memory.set("k3", &[0; 1]), Err(MemoryError::QuotaExceeded)));
        memory.set("k1", &[0; 2])?; // shrinking is always allowed
        assert_eq!(memory.used_bytes()?, 14);
        memory.delete("k2")?;
        assert_eq!(memory.used_bytes()?, 4);
        assert_eq!(memory.list("k", 10)?, vec!["k1".to_string()]);
        Ok(())
    }

    #[test]
    fn tenants_do_not_see_each_other() -> Result<(), Box<dyn std::error::Error>> {
        let store = Store::temporary()?;
        let ab = EmbeddedMemory::new(store.clone(), TenantKey::of("ab"), 1000);
        let abc = EmbeddedMemory::new(store, TenantKey::of("abc"), 1000);
        ab.set("secret", b"ab's")?;
        assert_eq!(abc.get("secret")?, None);
        assert!(abc.list("", 100)?.is_empty());
        Ok(())
    }
}
