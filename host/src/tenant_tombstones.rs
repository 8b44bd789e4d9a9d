//! Tombstones of deleted tenant incarnations: what is still to be purged again, because
//! requests of a dead incarnation that were in flight at its delete may write after the
//! purge (see [`crate::tenant_lifecycle`]).
//!
//! [`Tombstones`] is the one interface the lifecycle uses, over the embedded store
//! ([`EmbeddedTombstones`], keys in this process's `meta` tree: only this process can
//! write late records there) or the shared one ([`PgTombstones`], a table every replica
//! reads: requests of a dead incarnation may be in flight on any replica, and whichever
//! replica is alive carries the schedule on).

mod embedded;

use std::time::Duration;

pub use embedded::EmbeddedTombstones;

use crate::postgres::tombstones::PgTombstones;
use crate::store::{Store, StoreError};

/// One dead incarnation still to be purged again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tombstone {
    /// Its storage id.
    pub storage_id: String,
    /// How long ago it died; `None` on the embedded store, which keeps no time (the
    /// deleting process runs its own schedule, and a start purges every tombstone).
    pub age: Option<Duration>,
    /// Purge passes already made after the delete (always 0 on the embedded store).
    pub passes: usize,
}

/// The tombstones of one store. Clones share it.
#[derive(Clone)]
pub struct Tombstones {
    place: Place,
}

#[derive(Clone)]
enum Place {
    Embedded(EmbeddedTombstones),
    Shared(PgTombstones),
}

impl Tombstones {
    /// In the embedded store.
    pub fn embedded(store: Store) -> Self {
        Self { place: Place::Embedded(EmbeddedTombstones::new(store)) }
    }

    /// In the shared store (PostgreSQL).
    pub fn shared(table: PgTombstones) -> Self {
        Self { place: Place::Shared(table) }
    }

    /// Records that incarnation `storage_id` died now (again: a no-op). Embedded: durable
    /// at the store's next flush.
    pub async fn bury(&self, storage_id: &str) -> Result<(), StoreError> {
        match &self.place {
            Place::Embedded(e) => e.bury(storage_id),
            Place::Shared(t) => t.bury(storage_id).await,
        }
    }

    /// Every tombstone.
    pub async fn all(&self) -> Result<Vec<Tombstone>, StoreError> {
        match &self.place {
            Place::Embedded(e) => e.all(),
            Place::Shared(t) => t.all().await,
        }
    }

    /// Records that `passes` purge passes of `storage_id` were made. Embedded: nothing is
    /// kept (the deleting process counts its own passes).
    pub async fn passed(&self, storage_id: &str, passes: usize) -> Result<(), StoreError> {
        match &self.place {
            Place::Embedded(_) => Ok(()),
            Place::Shared(t) => t.passed(storage_id, passes).await,
        }
    }

    /// Removes the tombstone of `storage_id`, after its last pass.
    pub async fn remove(&self, storage_id: &str) -> Result<(), StoreError> {
        match &self.place {
            Place::Embedded(e) => e.remove(storage_id),
            Place::Shared(t) => t.remove(storage_id).await,
        }
    }
}
