//! Conversation sessions on PostgreSQL, shared by every replica, charged to the same
//! `memory_usage` row as policy memory (see [`super::memory`]).
//!
//! Turns are numbered by an identity column, not by reading the last number and adding
//! one, so appends from two replicas never collide. An append is one call of
//! `tg_session_append`, which locks the tenant's usage row before it charges and inserts:
//! appends of one tenant serialise there, so each append's turns take consecutive numbers
//! and stay adjacent in the session, as on the embedded store.

use deadpool_postgres::Pool;

use super::{db, from_db, pool_error, to_db};
use crate::sessions::{turn_bytes, SessionInfo, Turn};
use crate::store::StoreError;

/// The `session_turns` table.
#[derive(Clone)]
pub struct PgSessions {
    pool: Pool,
}

impl PgSessions {
    /// Over a migrated pool.
    pub fn new(pool: Pool) -> Self {
        Self { pool }
    }

    /// A session's turns, oldest first, at most the newest `limit`.
    pub async fn history(&self, tenant_id: &str, session: &str, limit: usize) -> Result<Vec<Turn>, StoreError> {
        let client = self.pool.get().await.map_err(pool_error)?;
        let statement = client
            .prepare_cached("SELECT role, content, unix_millis, request_id FROM session_turns WHERE tenant_id = $1 AND session_id = $2 ORDER BY seq DESC LIMIT $3")
            .await
            .map_err(db("preparing a session read"))?;
        let rows = client.query(&statement, &[&tenant_id, &session, &to_db(limit as u64)]).await.map_err(db("reading a session"))?;
        let mut turns: Vec<Turn> = rows
            .iter()
            .map(|r| Turn { role: r.get(0), content: String::from_utf8_lossy(r.get::<_, &[u8]>(1)).into_owned(), unix_millis: from_db(r.get(2)), request_id: r.get(3) })
            .collect();
        turns.reverse();
        Ok(turns)
    }

    /// Appends turns, all or none, if the tenant's memory stays within `quota_bytes`;
    /// `false`, writing nothing, if it would not.
    pub async fn append(&self, tenant_id: &str, session: &str, turns: &[Turn], quota_bytes: u64) -> Result<bool, StoreError> {
        let roles: Vec<&str> = turns.iter().map(|t| t.role.as_str()).collect();
        let contents: Vec<&[u8]> = turns.iter().map(|t| t.content.as_bytes()).collect();
        let millis: Vec<i64> = turns.iter().map(|t| to_db(t.unix_millis)).collect();
        let request_ids: Vec<&str> = turns.iter().map(|t| t.request_id.as_str()).collect();
        let bytes: Vec<i64> = turns.iter().map(|t| to_db(turn_bytes(session, t))).collect();
        let client = self.pool.get().await.map_err(pool_error)?;
        let statement = client.prepare_cached("SELECT tg_session_append($1, $2, $3, $4, $5, $6, $7, $8)").await.map_err(db("preparing a session append"))?;
        let row = client
            .query_one(&statement, &[&tenant_id, &session, &roles, &contents, &millis, &request_ids, &bytes, &to_db(quota_bytes)])
            .await
            .map_err(db("appending to a session"))?;
        Ok(row.get(0))
    }

    /// The tenant's sessions with their turn counts, in session id (byte) order, at most
    /// `limit`.
    pub async fn list(&self, tenant_id: &str, limit: usize) -> Result<Vec<SessionInfo>, StoreError> {
        let client = self.pool.get().await.map_err(pool_error)?;
        let rows = client
            .query("SELECT session_id, count(*) FROM session_turns WHERE tenant_id = $1 GROUP BY session_id ORDER BY session_id LIMIT $2", &[&tenant_id, &to_db(limit as u64)])
            .await
            .map_err(db("listing sessions"))?;
        Ok(rows.iter().map(|r| SessionInfo { id: r.get(0), turns: from_db(r.get(1)) as usize }).collect())
    }

    /// Deletes a session and gives its bytes back to the quota; `false` if it had no turns.
    pub async fn delete(&self, tenant_id: &str, session: &str) -> Result<bool, StoreError> {
        let client = self.pool.get().await.map_err(pool_error)?;
        let row = client.query_one("SELECT tg_session_delete($1, $2)", &[&tenant_id, &session]).await.map_err(db("deleting a session"))?;
        Ok(row.get::<_, i64>(0) > 0)
    }

    /// Removes every turn of a tenant incarnation (deleted: nothing reads them again). The
    /// usage count goes with [`super::memory::PgMemory::purge_tenant`].
    pub async fn purge_tenant(&self, tenant_id: &str) -> Result<(), StoreError> {
        let client = self.pool.get().await.map_err(pool_error)?;
        client.execute("DELETE FROM session_turns WHERE tenant_id = $1", &[&tenant_id]).await.map_err(db("purging sessions"))?;
        Ok(())
    }
}
