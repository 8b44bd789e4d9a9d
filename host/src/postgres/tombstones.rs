//! Deleted tenant incarnations on PostgreSQL (`tenant_tombstones`), so every replica, not
//! only the one that deleted, purges their late writes (see [`crate::tenant_tombstones`]).
//! Ages are measured by the database's clock.

use std::time::Duration;

use deadpool_postgres::Pool;

use super::{db, from_db, pool_error};
use crate::store::StoreError;
use crate::tenant_tombstones::Tombstone;

/// The `tenant_tombstones` table.
#[derive(Clone)]
pub struct PgTombstones {
    pool: Pool,
}

impl PgTombstones {
    /// Over a migrated pool.
    pub fn new(pool: Pool) -> Self {
        Self { pool }
    }

    /// Records that incarnation `storage_id` died now; one already recorded keeps its
    /// time of death and passes.
    pub async fn bury(&self, storage_id: &str) -> Result<(), StoreError> {
        let client = self.pool.get().await.map_err(pool_error)?;
        client.execute("INSERT INTO tenant_tombstones (tenant_id) VALUES ($1) ON CONFLICT DO NOTHING", &[&storage_id]).await.map_err(db("recording a tombstone"))?;
        Ok(())
    }

    /// Every tombstone, with its age and the purge passes made.
    pub async fn all(&self) -> Result<Vec<Tombstone>, StoreError> {
        let client = self.pool.get().await.map_err(pool_error)?;
        let rows = client
            .query("SELECT tenant_id, (extract(epoch FROM now() - died_at) * 1000)::bigint, passes FROM tenant_tombstones", &[])
            .await
            .map_err(db("reading tombstones"))?;
        Ok(rows
            .iter()
            .map(|r| Tombstone { storage_id: r.get(0), age: Some(Duration::from_millis(from_db(r.get(1)))), passes: usize::try_from(r.get::<_, i32>(2)).unwrap_or(0) })
            .collect())
    }

    /// Records that `passes` purge passes were made (never fewer than recorded before:
    /// two replicas may make one pass at once).
    pub async fn passed(&self, storage_id: &str, passes: usize) -> Result<(), StoreError> {
        let client = self.pool.get().await.map_err(pool_error)?;
        let passes = i32::try_from(passes).unwrap_or(i32::MAX);
        client
            .execute("UPDATE tenant_tombstones SET passes = greatest(passes, $2) WHERE tenant_id = $1", &[&storage_id, &passes])
            .await
            .map_err(db("counting a tombstone's passes"))?;
        Ok(())
    }

    /// Removes the tombstone of `storage_id`.
    pub async fn remove(&self, storage_id: &str) -> Result<(), StoreError> {
        let client = self.pool.get().await.map_err(pool_error)?;
        client.execute("DELETE FROM tenant_tombstones WHERE tenant_id = $1", &[&storage_id]).await.map_err(db("removing a tombstone"))?;
        Ok(())
    }
}
