//! Tenant records and tokens on PostgreSQL. Every write records a change in its own
//! transaction (see [`super::changes`]), so the other replicas' caches follow within a
//! second. Concurrent writers on any replicas serialise on the tenant's row
//! (`SELECT ... FOR UPDATE`), as writers in one process do on its update lock.

use std::time::Duration;

use deadpool_postgres::Pool;

use super::{changes, db, pool_error};
use crate::store::StoreError;
use crate::tenants::{Lifecycle, Tenant, TenantError};
use crate::tokens::TokenRecord;

fn decode<T: serde::de::DeserializeOwned>(what: &'static str, value: serde_json::Value) -> Result<T, StoreError> {
    serde_json::from_value(value).map_err(|e| StoreError::Corrupt { tree: what, reason: e.to_string() })
}

fn encode<T: serde::Serialize>(value: &T) -> serde_json::Value {
    // Tenant and token records are plain data: serialising them cannot fail.
    serde_json::to_value(value).unwrap_or(serde_json::Value::Null)
}

/// The `tenants` table.
#[derive(Clone)]
pub struct PgTenants {
    pool: Pool,
}

impl PgTenants {
    /// Over a migrated pool.
    pub fn new(pool: Pool) -> Self {
        Self { pool }
    }

    /// Every tenant record.
    pub async fn load_all(&self) -> Result<Vec<Tenant>, StoreError> {
        let client = self.pool.get().await.map_err(pool_error)?;
        let rows = client.query("SELECT record FROM tenants", &[]).await.map_err(db("loading tenants"))?;
        rows.into_iter().map(|r| decode("tenants", r.get(0))).collect()
    }

    /// One tenant record, in any state.
    pub async fn get(&self, id: &str) -> Result<Option<Tenant>, StoreError> {
        let client = self.pool.get().await.map_err(pool_error)?;
        let row = client.query_opt("SELECT record FROM tenants WHERE tenant_id = $1", &[&id]).await.map_err(db("reading a tenant"))?;
        row.map(|r| decode("tenants", r.get(0))).transpose()
    }

    /// Inserts `tenant` unless its id is taken; `false` if it was.
    pub async fn insert_if_absent(&self, tenant: &Tenant) -> Result<bool, StoreError> {
        let mut client = self.pool.get().await.map_err(pool_error)?;
        let tx = client.transaction().await.map_err(db("starting a tenant insert"))?;
        let inserted = tx
            .execute("INSERT INTO tenants (tenant_id, incarnation, record) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING", &[&tenant.id, &tenant.incarnation, &encode(tenant)])
            .await
            .map_err(db("inserting a tenant"))?;
        if inserted == 1 {
            changes::record(&tx, "tenant", &tenant.id).await?;
        }
        tx.commit().await.map_err(db("committing a tenant insert"))?;
        Ok(inserted == 1)
    }

    /// Applies `change` to the current record of `id` (or `None`) with its row locked
    /// across replicas, and stores the result.
    pub async fn update<F>(&self, id: &str, change: F) -> Result<Tenant, TenantError>
    where
        F: FnOnce(Option<Tenant>) -> Result<Tenant, TenantError>,
    {
        let mut client = self.pool.get().await.map_err(pool_error)?;
        let tx = client.transaction().await.map_err(db("starting a tenant update"))?;
        let row = tx.query_opt("SELECT record FROM tenants WHERE tenant_id = $1 FOR UPDATE", &[&id]).await.map_err(db("locking a tenant"))?;
        let current = row.map(|r| decode("tenants", r.get(0))).transpose()?;
        let updated = change(current)?;
        tx.execute("UPDATE tenants SET record = $2, incarnation = $3, updated_at = now() WHERE tenant_id = $1", &[&id, &encode(&updated), &updated.incarnation])
            .await
            .map_err(db("updating a tenant"))?;
        changes::record(&tx, "tenant", id).await.map_err(StoreError::from)?;
        tx.commit().await.map_err(db("committing a tenant update"))?;
        Ok(updated)
    }

    /// Marks incarnation `tenant` deleting if its record is still in the state `tenant`
    /// shows and has not changed for `idle` (by the database's clock), with its row locked
    /// across replicas; the record marked, or `None` when it moved on or is younger.
    pub async fn take_over(&self, tenant: &Tenant, idle: Duration) -> Result<Option<Tenant>, StoreError> {
        let mut client = self.pool.get().await.map_err(pool_error)?;
        let tx = client.transaction().await.map_err(db("starting a tenant take-over"))?;
        // A row another replica changes meanwhile is read again after its commit, and
        // no longer matches: its updated_at is new.
        let row = tx
            .query_opt(
                "SELECT record FROM tenants WHERE tenant_id = $1 AND incarnation = $2 AND updated_at <= now() - make_interval(secs => $3) FOR UPDATE",
                &[&tenant.id, &tenant.incarnation, &idle.as_secs_f64()],
            )
            .await
            .map_err(db("locking an idle tenant"))?;
        let Some(current) = row.map(|r| decode::<Tenant>("tenants", r.get(0))).transpose()? else { return Ok(None) };
        if current.lifecycle != tenant.lifecycle || current.lifecycle == Lifecycle::Live {
            return Ok(None);
        }
        let marked = Tenant { lifecycle: Lifecycle::Deleting, ..current };
        tx.execute("UPDATE tenants SET record = $2, updated_at = now() WHERE tenant_id = $1", &[&marked.id, &encode(&marked)]).await.map_err(db("taking over a tenant"))?;
        changes::record(&tx, "tenant", &marked.id).await?;
        tx.commit().await.map_err(db("committing a tenant take-over"))?;
        Ok(Some(marked))
    }

    /// Removes incarnation `incarnation` of `id`; `false` if it is not the stored one.
    pub async fn remove(&self, id: &str, incarnation: &str) -> Result<bool, StoreError> {
        let mut client = self.pool.get().await.map_err(pool_error)?;
        let tx = client.transaction().await.map_err(db("starting a tenant removal"))?;
        let removed = tx.execute("DELETE FROM tenants WHERE tenant_id = $1 AND incarnation = $2", &[&id, &incarnation]).await.map_err(db("removing a tenant"))?;
        if removed == 1 {
            changes::record(&tx, "tenant", id).await?;
        }
        tx.commit().await.map_err(db("committing a tenant removal"))?;
        Ok(removed == 1)
    }
}

/// The `tokens` table.
#[derive(Clone)]
pub struct PgTokens {
    pool: Pool,
}

impl PgTokens {
    /// Over a migrated pool.
    pub fn new(pool: Pool) -> Self {
        Self { pool }
    }

    /// Stores a token record under its hash for the tenant stored as `storage_id`.
    pub async fn insert(&self, digest: &[u8; 32], storage_id: &str, record: &TokenRecord) -> Result<(), StoreError> {
        let client = self.pool.get().await.map_err(pool_error)?;
        client
            .execute("INSERT INTO tokens (token_hash, tenant_id, record) VALUES ($1, $2, $3)", &[&digest.as_slice(), &storage_id, &encode(record)])
            .await
            .map_err(db("storing a token"))?;
        Ok(())
    }

    /// The record stored under a token hash.
    pub async fn get(&self, digest: &[u8; 32]) -> Result<Option<TokenRecord>, StoreError> {
        let client = self.pool.get().await.map_err(pool_error)?;
        let row = client.query_opt("SELECT record FROM tokens WHERE token_hash = $1", &[&digest.as_slice()]).await.map_err(db("looking up a token"))?;
        row.map(|r| decode("tokens", r.get(0))).transpose()
    }

    /// A tenant incarnation's token records.
    pub async fn list(&self, storage_id: &str) -> Result<Vec<TokenRecord>, StoreError> {
        let client = self.pool.get().await.map_err(pool_error)?;
        let rows = client.query("SELECT record FROM tokens WHERE tenant_id = $1 ORDER BY record->>'created_millis'", &[&storage_id]).await.map_err(db("listing tokens"))?;
        rows.into_iter().map(|r| decode("tokens", r.get(0))).collect()
    }

    /// Deletes a tenant's tokens with id `id` (every one with `None`); returns the hashes
    /// deleted, each recorded as a change so every replica drops it from its cache.
    pub async fn delete(&self, storage_id: &str, id: Option<&str>) -> Result<Vec<Vec<u8>>, StoreError> {
        let mut client = self.pool.get().await.map_err(pool_error)?;
        let tx = client.transaction().await.map_err(db("starting a revocation"))?;
        let rows = tx
            .query("DELETE FROM tokens WHERE tenant_id = $1 AND ($2::text IS NULL OR record->>'id' = $2) RETURNING token_hash", &[&storage_id, &id])
            .await
            .map_err(db("revoking tokens"))?;
        let hashes: Vec<Vec<u8>> = rows.iter().map(|r| r.get(0)).collect();
        for hash in &hashes {
            changes::record(&tx, "token", &blake3::Hash::from_bytes(hash.as_slice().try_into().unwrap_or([0; 32])).to_hex()).await?;
        }
        tx.commit().await.map_err(db("committing a revocation"))?;
        Ok(hashes)
    }
}
