//! Stored Responses API answers on PostgreSQL (`stored_responses`, migration 0010), shared
//! by every replica and charged to the same `memory_usage` row as policy memory and
//! sessions (see [`super::memory`]). A conversation is read back in one query that follows
//! the `previous_id` links.

use deadpool_postgres::Pool;
use serde_json::Value;

use super::{db, pool_error, to_db};
use crate::stored_responses::{record_bytes, StoredResponse};
use crate::store::StoreError;

/// The `stored_responses` table.
#[derive(Clone)]
pub struct PgResponses {
    pool: Pool,
}

impl PgResponses {
    /// Over a migrated pool.
    pub fn new(pool: Pool) -> Self {
        Self { pool }
    }

    /// The messages of response `id` and the responses it continued, newest link first, at
    /// most `max_links`; empty if the tenant stored no response `id`.
    pub async fn chain(&self, tenant_id: &str, id: &str, max_links: usize) -> Result<Vec<Vec<Value>>, StoreError> {
        let client = self.pool.get().await.map_err(pool_error)?;
        let statement = client
            .prepare_cached(
                "WITH RECURSIVE chain (previous_id, messages, depth) AS (
                     SELECT previous_id, messages, 1 FROM stored_responses WHERE tenant_id = $1 AND response_id = $2
                     UNION ALL
                     SELECT r.previous_id, r.messages, c.depth + 1 FROM stored_responses r JOIN chain c
                         ON r.tenant_id = $1 AND r.response_id = c.previous_id WHERE c.depth < $3)
                 SELECT messages FROM chain ORDER BY depth",
            )
            .await
            .map_err(db("preparing a stored response read"))?;
        let max = i32::try_from(max_links).unwrap_or(i32::MAX);
        let rows = client.query(&statement, &[&tenant_id, &id, &max]).await.map_err(db("reading a stored response"))?;
        rows.iter().map(|r| crate::store::decode::<Vec<Value>>("stored_responses", r.get::<_, &[u8]>(0))).collect()
    }

    /// Stores a response if the tenant's memory stays within `quota_bytes`; `false`,
    /// writing nothing, if it would not. `encoded` is the record as the embedded store
    /// keeps it, which is what it is charged.
    pub async fn put(&self, tenant_id: &str, id: &str, response: &StoredResponse, encoded: &[u8], quota_bytes: u64) -> Result<bool, StoreError> {
        let messages = crate::store::encode(&response.messages);
        let client = self.pool.get().await.map_err(pool_error)?;
        let statement = client.prepare_cached("SELECT tg_response_put($1, $2, $3, $4, $5, $6, $7)").await.map_err(db("preparing a response store"))?;
        let row = client
            .query_one(&statement, &[&tenant_id, &id, &response.previous, &messages, &to_db(response.unix_millis), &to_db(record_bytes(id, encoded)), &to_db(quota_bytes)])
            .await
            .map_err(db("storing a response"))?;
        Ok(row.get(0))
    }

    /// Deletes a stored response and gives its bytes back to the quota; `false` if the
    /// tenant stored no response `id`.
    pub async fn delete(&self, tenant_id: &str, id: &str) -> Result<bool, StoreError> {
        let client = self.pool.get().await.map_err(pool_error)?;
        let row = client.query_one("SELECT tg_response_delete($1, $2)", &[&tenant_id, &id]).await.map_err(db("deleting a stored response"))?;
        Ok(row.get(0))
    }

    /// Removes every stored response of a tenant incarnation (deleted: nothing reads them
    /// again). The usage count goes with [`super::memory::PgMemory::purge_tenant`].
    pub async fn purge_tenant(&self, tenant_id: &str) -> Result<(), StoreError> {
        let client = self.pool.get().await.map_err(pool_error)?;
        client.execute("DELETE FROM stored_responses WHERE tenant_id = $1", &[&tenant_id]).await.map_err(db("purging stored responses"))?;
        Ok(())
    }
}
