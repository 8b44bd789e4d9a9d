//! Policy wasm and upload claims on PostgreSQL, shared by every replica: a policy
//! uploaded through one replica is loadable by all (each compiles it into its own local
//! cache). The wasm is one global, content-addressed table (`policies`); claims are per
//! owner (`policy_uploads`, keyed `(tenant_id, hash)`), with a foreign key to the blob.
//!
//! A claim runs in one transaction under the owner's upload lock (`tg_lock_uploads`):
//! read the owner's claims, check the quota, lock the blob row against removal (or store
//! it), record the claim. So one owner's uploads through several replicas at once cannot
//! together pass its quota, and a blob cannot be removed from under a claim being made.
//!
//! What the schema cannot see is a tenant's assignment (in its record, `tenants`): an
//! assignment checks the blob is stored and then writes the tenant, and a delete decides
//! no tenant runs the blob and then removes it. Both run under [`PgBlobLock`], one lock
//! per blob across replicas, so neither falls between the other's check and write.

use deadpool_postgres::{Object, Pool};
use tokio_postgres::Row;

use super::{db, from_db, pool_error, to_db};
use crate::policy::blobs::{check_claim, Claim, ClaimError};
use crate::policy::{Owner, PolicyHash, PolicyLimits, UploadRecord};
use crate::store::StoreError;

/// Policy blobs and claims in PostgreSQL. Clones share one pool.
#[derive(Clone)]
pub struct PgPolicies {
    pool: Pool,
}

fn record_of(row: &Row) -> UploadRecord {
    let hash: &[u8] = row.get(0);
    let hash = <[u8; 32]>::try_from(hash).map(|h| PolicyHash(h).to_string()).unwrap_or_default();
    UploadRecord { hash, bytes: from_db(row.get(1)), uploaded_millis: from_db(row.get(2)) }
}

/// Blob `hash`'s lock across replicas (`tg_lock_policy_blob`), held until dropped. It is
/// a session lock on a connection of its own, since the work it guards runs on others;
/// that connection goes back to the pool once it has unlocked, or is closed (which ends
/// the lock too) when it cannot, so no pooled connection ever holds a stale lock.
pub struct PgBlobLock {
    session: Option<LockSession>,
}

/// The connection holding a blob lock. Dropped with it still inside, it is closed rather
/// than pooled.
struct LockSession(Option<Object>);

impl Drop for LockSession {
    fn drop(&mut self) {
        if let Some(connection) = self.0.take() {
            drop(Object::take(connection));
        }
    }
}

impl Drop for PgBlobLock {
    fn drop(&mut self) {
        let Some(mut session) = self.session.take() else { return };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        // Unlocked after the guard is gone: the next holder waits a round trip longer,
        // never on a lock left behind.
        runtime.spawn(async move {
            let unlocked = match &session.0 {
                Some(connection) => connection.execute("SELECT pg_advisory_unlock_all()", &[]).await.is_ok(),
                None => false,
            };
            if unlocked {
                drop(session.0.take());
            }
        });
    }
}

impl PgPolicies {
    /// The blobs and claims in `pool`'s database (migrated).
    pub fn new(pool: Pool) -> Self {
        Self { pool }
    }

    /// Waits for and takes blob `hash`'s lock across replicas.
    pub(crate) async fn lock(&self, hash: PolicyHash) -> Result<PgBlobLock, StoreError> {
        let session = LockSession(Some(self.pool.get().await.map_err(pool_error)?));
        if let Some(connection) = &session.0 {
            connection.execute("SELECT tg_lock_policy_blob($1)", &[&hash.0.as_slice()]).await.map_err(db("locking a policy blob"))?;
        }
        Ok(PgBlobLock { session: Some(session) })
    }

    pub(crate) async fn wasm(&self, hash: PolicyHash) -> Result<Option<Vec<u8>>, StoreError> {
        let client = self.pool.get().await.map_err(pool_error)?;
        let row = client.query_opt("SELECT wasm FROM policies WHERE hash = $1", &[&hash.0.as_slice()]).await.map_err(db("reading a policy"))?;
        Ok(row.map(|r| r.get(0)))
    }

    pub(crate) async fn contains(&self, hash: PolicyHash) -> Result<bool, StoreError> {
        let client = self.pool.get().await.map_err(pool_error)?;
        let row = client.query_one("SELECT EXISTS (SELECT 1 FROM policies WHERE hash = $1)", &[&hash.0.as_slice()]).await.map_err(db("looking up a policy"))?;
        Ok(row.get(0))
    }

    /// See [`crate::policy::blobs::PolicyBlobs::claim`]; with `wasm`, stores the blob
    /// first if absent, in the same transaction.
    pub(crate) async fn claim(&self, owner: Owner<'_>, hash: PolicyHash, bytes: u64, quota: Option<&PolicyLimits>, wasm: Option<&[u8]>) -> Result<Claim, ClaimError> {
        let owner_id = owner.storage_id();
        let key = hash.0.as_slice();
        let mut client = self.pool.get().await.map_err(pool_error)?;
        let tx = client.transaction().await.map_err(db("starting an upload claim"))?;
        tx.execute("SELECT tg_lock_uploads($1)", &[&owner_id]).await.map_err(db("locking an owner's uploads"))?;
        let held: Vec<UploadRecord> = tx
            .query("SELECT hash, bytes, uploaded_millis FROM policy_uploads WHERE tenant_id = $1", &[&owner_id])
            .await
            .map_err(db("reading an owner's uploads"))?
            .iter()
            .map(record_of)
            .collect();
        let hex = hash.to_string();
        if held.iter().any(|r| r.hash == hex) {
            return Ok(Claim::AlreadyHeld);
        }
        check_claim(&held, bytes, quota)?;
        let now = to_db(crate::clock::unix_millis());
        match wasm {
            Some(wasm) => {
                tx.execute("INSERT INTO policies (hash, wasm, uploaded_millis) VALUES ($1, $2, $3) ON CONFLICT (hash) DO NOTHING", &[&key, &wasm, &now])
                    .await
                    .map_err(db("storing a policy"))?;
            }
            None => {
                // Held until commit: a removal on any replica waits, then finds the claim.
                let stored = tx.query_opt("SELECT 1 FROM policies WHERE hash = $1 FOR KEY SHARE", &[&key]).await.map_err(db("locking a policy"))?;
                if stored.is_none() {
                    return Ok(Claim::NoBlob);
                }
            }
        }
        tx.execute("INSERT INTO policy_uploads (tenant_id, hash, bytes, uploaded_millis) VALUES ($1, $2, $3, $4)", &[&owner_id, &key, &to_db(bytes), &now])
            .await
            .map_err(db("recording an upload"))?;
        tx.commit().await.map_err(db("committing an upload claim"))?;
        Ok(Claim::Recorded)
    }

    pub(crate) async fn find(&self, owner: Owner<'_>, hash: PolicyHash) -> Result<Option<UploadRecord>, StoreError> {
        let client = self.pool.get().await.map_err(pool_error)?;
        let row = client
            .query_opt("SELECT hash, bytes, uploaded_millis FROM policy_uploads WHERE tenant_id = $1 AND hash = $2", &[&owner.storage_id(), &hash.0.as_slice()])
            .await
            .map_err(db("reading an upload"))?;
        Ok(row.as_ref().map(record_of))
    }

    pub(crate) async fn list(&self, owner: Owner<'_>) -> Result<Vec<UploadRecord>, StoreError> {
        let client = self.pool.get().await.map_err(pool_error)?;
        let rows = client
            .query("SELECT hash, bytes, uploaded_millis FROM policy_uploads WHERE tenant_id = $1", &[&owner.storage_id()])
            .await
            .map_err(db("listing uploads"))?;
        Ok(rows.iter().map(record_of).collect())
    }

    pub(crate) async fn forget(&self, owner: Owner<'_>, hash: PolicyHash) -> Result<bool, StoreError> {
        let client = self.pool.get().await.map_err(pool_error)?;
        let removed = client
            .execute("DELETE FROM policy_uploads WHERE tenant_id = $1 AND hash = $2", &[&owner.storage_id(), &hash.0.as_slice()])
            .await
            .map_err(db("forgetting an upload"))?;
        Ok(removed > 0)
    }

    pub(crate) async fn forget_owner(&self, storage_id: &str) -> Result<u64, StoreError> {
        let client = self.pool.get().await.map_err(pool_error)?;
        client.execute("DELETE FROM policy_uploads WHERE tenant_id = $1", &[&storage_id]).await.map_err(db("forgetting a tenant's uploads"))
    }

    /// Removes the blob unless a claim on it remains. A claim committed by another
    /// replica after this statement's snapshot is caught by the foreign key, which
    /// refuses the delete: that too is "still held".
    pub(crate) async fn remove(&self, hash: PolicyHash) -> Result<bool, StoreError> {
        let client = self.pool.get().await.map_err(pool_error)?;
        let key = hash.0.as_slice();
        match client.execute("DELETE FROM policies WHERE hash = $1 AND NOT EXISTS (SELECT 1 FROM policy_uploads WHERE hash = $1)", &[&key]).await {
            Ok(removed) => Ok(removed > 0),
            Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::FOREIGN_KEY_VIOLATION) => Ok(false),
            Err(e) => Err(db("removing a policy")(e)),
        }
    }
}
