//! Tombstones in the embedded store (sled): `dead-tenant:` + storage id in the `meta`
//! tree, the storage id again as the value.

use super::Tombstone;
use crate::store::{Store, StoreError};

/// Prefix of tombstone keys in the `meta` tree.
const TOMBSTONE: &[u8] = b"dead-tenant:";

fn key(storage_id: &str) -> Vec<u8> {
    [TOMBSTONE, storage_id.as_bytes()].concat()
}

/// The tombstones in one embedded store.
#[derive(Clone)]
pub struct EmbeddedTombstones {
    store: Store,
}

impl EmbeddedTombstones {
    /// Over `store`'s `meta` tree.
    pub fn new(store: Store) -> Self {
        Self { store }
    }

    /// Records a tombstone for `storage_id`.
    pub fn bury(&self, storage_id: &str) -> Result<(), StoreError> {
        self.store.meta.insert(key(storage_id), storage_id.as_bytes())?;
        Ok(())
    }

    /// Every tombstone.
    pub fn all(&self) -> Result<Vec<Tombstone>, StoreError> {
        let mut tombstones = Vec::new();
        for item in self.store.meta.scan_prefix(TOMBSTONE) {
            let (_, value) = item?;
            tombstones.push(Tombstone { storage_id: String::from_utf8_lossy(&value).into_owned(), age: None, passes: 0 });
        }
        Ok(tombstones)
    }

    /// Removes the tombstone of `storage_id`.
    pub fn remove(&self, storage_id: &str) -> Result<(), StoreError> {
        self.store.meta.remove(key(storage_id))?;
        Ok(())
    }
}
