//! Policy memory on PostgreSQL, shared by every replica: the same rule as the embedded
//! [`crate::memory::EmbeddedMemory`] (keys plus values, session turns included, stay within
//! the quota; shrinking is always allowed), held in the database.
//!
//! A write is one call of `tg_memory_put`: one round trip, one transaction. It locks the
//! tenant's `memory_usage` row first, so every quota-counted write of one tenant, from any
//! replica, serialises there and reads the size it replaces under that lock; then one
//! conditional update of the usage row and the upsert (or delete) of the value. Reads take
//! no lock.

use deadpool_postgres::Pool;

use super::{db, from_db, pool_error, to_db};
use crate::store::StoreError;

/// The `memory` and `memory_usage` tables.
#[derive(Clone)]
pub struct PgMemory {
    pool: Pool,
}

impl PgMemory {
    /// Over a migrated pool.
    pub fn new(pool: Pool) -> Self {
        Self { pool }
    }

    /// Bytes in use by the tenant stored as `tenant_id`.
    pub async fn used_bytes(&self, tenant_id: &str) -> Result<u64, StoreError> {
        let client = self.pool.get().await.map_err(pool_error)?;
        let statement = client.prepare_cached("SELECT used_bytes FROM memory_usage WHERE tenant_id = $1").await.map_err(db("preparing a memory read"))?;
        let row = client.query_opt(&statement, &[&tenant_id]).await.map_err(db("reading memory usage"))?;
        Ok(row.map(|r| from_db(r.get(0))).unwrap_or(0))
    }

    /// One value.
    pub async fn get(&self, tenant_id: &str, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let client = self.pool.get().await.map_err(pool_error)?;
        let statement = client.prepare_cached("SELECT value FROM memory WHERE tenant_id = $1 AND key = $2").await.map_err(db("preparing a memory read"))?;
        let row = client.query_opt(&statement, &[&tenant_id, &key.as_bytes()]).await.map_err(db("reading memory"))?;
        Ok(row.map(|r| r.get(0)))
    }

    /// Writes `value` under `key` (deletes it with `None`) if the tenant's total stays
    /// within `quota_bytes` or shrinks; `false`, writing nothing, if it would not.
    pub async fn put(&self, tenant_id: &str, key: &str, value: Option<&[u8]>, quota_bytes: u64) -> Result<bool, StoreError> {
        let client = self.pool.get().await.map_err(pool_error)?;
        let statement = client.prepare_cached("SELECT tg_memory_put($1, $2, $3, $4)").await.map_err(db("preparing a memory write"))?;
        let row = client.query_one(&statement, &[&tenant_id, &key.as_bytes(), &value, &to_db(quota_bytes)]).await.map_err(db("writing memory"))?;
        Ok(row.get(0))
    }

    /// Keys starting with `prefix`, in byte order, at most `limit`.
    pub async fn list(&self, tenant_id: &str, prefix: &str, limit: u32) -> Result<Vec<String>, StoreError> {
        let client = self.pool.get().await.map_err(pool_error)?;
        let statement = client
            .prepare_cached("SELECT key FROM memory WHERE tenant_id = $1 AND key >= $2::bytea AND substring(key FROM 1 FOR octet_length($2::bytea)) = $2::bytea ORDER BY key LIMIT $3")
            .await
            .map_err(db("preparing a memory listing"))?;
        let rows = client.query(&statement, &[&tenant_id, &prefix.as_bytes(), &i64::from(limit)]).await.map_err(db("listing memory"))?;
        Ok(rows.iter().map(|r| String::from_utf8_lossy(r.get::<_, &[u8]>(0)).into_owned()).collect())
    }

    /// Every key and value, in key order, at most `limit`.
    pub async fn entries(&self, tenant_id: &str, limit: usize) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let client = self.pool.get().await.map_err(pool_error)?;
        let rows = client
            .query("SELECT key, value FROM memory WHERE tenant_id = $1 ORDER BY key LIMIT $2", &[&tenant_id, &to_db(limit as u64)])
            .await
            .map_err(db("reading memory entries"))?;
        Ok(rows.iter().map(|r| (String::from_utf8_lossy(r.get::<_, &[u8]>(0)).into_owned(), r.get(1))).collect())
    }

    /// Removes every value and the usage count of a tenant incarnation (deleted: nothing
    /// reads them again). Its session turns go with [`super::sessions::PgSessions::purge_tenant`].
    pub async fn purge_tenant(&self, tenant_id: &str) -> Result<(), StoreError> {
        let mut client = self.pool.get().await.map_err(pool_error)?;
        let tx = client.transaction().await.map_err(db("starting a memory purge"))?;
        // The usage row first, as every write locks it: a write racing the purge waits
        // instead of deadlocking with it.
        tx.execute("SELECT 1 FROM memory_usage WHERE tenant_id = $1 FOR UPDATE", &[&tenant_id]).await.map_err(db("locking memory usage"))?;
        tx.execute("DELETE FROM memory WHERE tenant_id = $1", &[&tenant_id]).await.map_err(db("purging memory"))?;
        tx.execute("DELETE FROM memory_usage WHERE tenant_id = $1", &[&tenant_id]).await.map_err(db("purging memory usage"))?;
        tx.commit().await.map_err(db("committing a memory purge"))
    }
}
