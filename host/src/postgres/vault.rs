//! The vault's keeper on PostgreSQL, shared by every replica: the same records as the
//! embedded keeper (`sealing/embedded.rs`) as rows (`migrations/0003_vault.sql`), with the
//! locking in the database instead of one process.
//!
//! - A data key is created in a transaction holding `vault_meta`'s row `FOR SHARE`, wrapped
//!   under the master key the store's check value names; a rotation re-wraps every data
//!   key in one transaction holding that row `FOR UPDATE`. So no replica ever wraps a data
//!   key under a master key a rotation is retiring, and a crash leaves all old or all new.
//! - One rotation at a time across replicas: a transaction-scoped advisory lock, tried
//!   without waiting, so a second rotation is refused rather than queued. A crashed
//!   replica's lock goes with its connection.
//! - A replica starts only with a key from the environment, and only if it opens the
//!   store's check value and a stored data key.
//! - Opening and listing are served from this replica's [`VaultCache`] once it follows the
//!   change feed; every write here evicts its tenant before it returns, and reaches the
//!   other replicas through the feed (the triggers of `migrations/0008_credential_changes.sql`).
//!
//! The database sees ciphertext only: wrapping, sealing and opening happen in the replica.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use deadpool_postgres::Pool;
use tokio_postgres::Row;

use super::changes::Change;
use crate::sealing::cache::VaultCache;
use super::DbError;
use crate::sealing::{opens_master_check, seal_master_check, unwrap_data_key, wrap_data_key, CredentialMeta, CredentialRecord, Key, MasterKeys, SealError, Sealed};
use crate::store::StoreError;

/// The advisory lock a rotation holds (an arbitrary constant: "tg-vault" in ASCII).
const ROTATION_LOCK: i64 = 0x7467_2d76_6175_6c74;

fn db(context: &'static str) -> impl FnOnce(tokio_postgres::Error) -> SealError {
    move |e| SealError::Store(StoreError::Database(DbError::new(context, e)))
}

fn pool_error(e: deadpool_postgres::PoolError) -> SealError {
    SealError::Store(StoreError::Database(DbError::new("connecting", e)))
}

/// Key versions are u32 here and int in the database; one out of range fails to open.
fn version_to_db(version: u32) -> i32 {
    i32::try_from(version).unwrap_or(i32::MAX)
}

fn version_from_db(version: i32) -> u32 {
    u32::try_from(version).unwrap_or(0)
}

fn time_of(millis: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(millis)
}

fn millis_of(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)).unwrap_or(0)
}

/// Credentials and data keys in PostgreSQL, with this replica's master keys and cache in
/// memory.
pub(crate) struct PgVault {
    pool: Pool,
    keys: MasterKeys,
    cache: Arc<VaultCache>,
}

impl PgVault {
    /// The keeper over `pool` (migrated). Refuses keys from a key file
    /// ([`SealError::MasterKeyRequired`]) and keys that do not open the store's check value
    /// or its data keys ([`SealError::WrongMasterKey`]). The first replica on a fresh store
    /// seals the check value under its key.
    pub(crate) async fn open(pool: Pool, keys: MasterKeys) -> Result<Self, SealError> {
        if keys.file.is_some() {
            return Err(SealError::MasterKeyRequired);
        }
        let vault = Self { pool, keys, cache: Arc::new(VaultCache::standard()) };
        vault.check_keys().await?;
        Ok(vault)
    }

    /// Starts caching what `open` and `list` read, kept current by `changes` (this
    /// replica's subscription to the change feed). Until then every read goes to the
    /// database.
    pub(crate) fn follow(&self, changes: tokio::sync::broadcast::Receiver<Change>) {
        self.cache.follow(changes);
    }

    /// Opens and listings served from the cache, and those read from the database.
    pub(crate) fn cache_counts(&self) -> (u64, u64) {
        self.cache.counts()
    }

    /// Runs a write of `tenant_id`'s vault rows, then evicts the tenant from this replica's
    /// cache whatever the outcome (a write that failed may still have committed).
    async fn evicting<T>(&self, tenant_id: &str, write: impl Future<Output = Result<T, SealError>>) -> Result<T, SealError> {
        let outcome = write.await;
        self.cache.evict(tenant_id);
        outcome
    }

    fn wrong_key(&self) -> SealError {
        SealError::WrongMasterKey { fingerprint: self.keys.primary.fingerprint() }
    }

    /// Which of this replica's keys is the store's current master key: the one that opens
    /// the check value (the primary on a store that has none yet).
    fn current(&self, version: u32, check: Option<&[u8]>) -> Result<&Key, SealError> {
        let Some(bytes) = check else { return Ok(&self.keys.primary) };
        let check = Sealed::from_bytes(version, bytes);
        self.keys.all().into_iter().find(|key| opens_master_check(key, &check)).ok_or_else(|| self.wrong_key())
    }

    /// Opens a `(sealed, key_version)` data-key row of `tenant_id` with the primary key,
    /// else the previous one.
    fn unwrap_row(&self, tenant_id: &str, row: &Row) -> Result<Key, SealError> {
        unwrap_data_key(&self.keys.all(), tenant_id, &Sealed::from_bytes(version_from_db(row.get("key_version")), row.get("sealed")))
    }

    /// The start check: the keys must open the check value and one stored data key. On a
    /// store without a check value, seals one under the key that opened the data key (the
    /// primary when there is none).
    async fn check_keys(&self) -> Result<(), SealError> {
        let mut client = self.pool.get().await.map_err(pool_error)?;
        let tx = client.transaction().await.map_err(db("starting the master-key check"))?;
        // FOR UPDATE: two replicas starting on a fresh store must not both seal a check
        // value, each under its own key. Waits for a rotation in progress.
        let meta = tx.query_one("SELECT master_version, master_check FROM vault_meta FOR UPDATE", &[]).await.map_err(db("reading the master-key state"))?;
        let version = version_from_db(meta.get("master_version"));
        let check: Option<&[u8]> = meta.get("master_check");
        let current = self.current(version, check)?;
        let sample = tx.query_opt("SELECT tenant_id, sealed, key_version FROM data_keys LIMIT 1", &[]).await.map_err(db("reading a data key"))?;
        let opener = match &sample {
            Some(row) => {
                let tenant_id: &str = row.get("tenant_id");
                let sealed = Sealed::from_bytes(version_from_db(row.get("key_version")), row.get("sealed"));
                self.keys.all().into_iter().find(|key| unwrap_data_key(&[key], tenant_id, &sealed).is_ok()).ok_or_else(|| self.wrong_key())?
            }
            None => current,
        };
        if check.is_none() {
            let sealed = seal_master_check(opener, version).to_bytes();
            tx.execute("UPDATE vault_meta SET master_check = $1", &[&sealed]).await.map_err(db("sealing the master-key check"))?;
        }
        tx.commit().await.map_err(db("committing the master-key check"))
    }

    /// The tenant's data key, created on first use (by whichever replica asks first; a
    /// replica losing that race uses the winner's).
    pub(crate) async fn data_key(&self, tenant_id: &str) -> Result<Key, SealError> {
        let mut client = self.pool.get().await.map_err(pool_error)?;
        let read = client.prepare_cached("SELECT sealed, key_version FROM data_keys WHERE tenant_id = $1").await.map_err(db("preparing a data-key read"))?;
        if let Some(row) = client.query_opt(&read, &[&tenant_id]).await.map_err(db("reading a data key"))? {
            return self.unwrap_row(tenant_id, &row);
        }
        let tx = client.transaction().await.map_err(db("starting a data-key creation"))?;
        // FOR SHARE: creations run side by side, but never during a rotation's re-wrap.
        let meta = tx.query_one("SELECT master_version, master_check FROM vault_meta FOR SHARE", &[]).await.map_err(db("reading the master-key state"))?;
        let version = version_from_db(meta.get("master_version"));
        let master = self.current(version, meta.get("master_check"))?;
        let dek = Key::random();
        let sealed = wrap_data_key(master, tenant_id, version, &dek).to_bytes();
        let inserted = tx
            .execute("INSERT INTO data_keys (tenant_id, sealed, key_version) VALUES ($1, $2, $3) ON CONFLICT (tenant_id) DO NOTHING", &[&tenant_id, &sealed, &version_to_db(version)])
            .await
            .map_err(db("storing a data key"))?;
        let key = if inserted == 1 {
            dek
        } else {
            let row = tx.query_one(&read, &[&tenant_id]).await.map_err(db("reading a data key"))?;
            self.unwrap_row(tenant_id, &row)?
        };
        tx.commit().await.map_err(db("committing a data key"))?;
        Ok(key)
    }

    /// Stores a sealed credential, replacing one of the same name.
    pub(crate) async fn put(&self, tenant_id: &str, record: &CredentialRecord) -> Result<(), SealError> {
        self.evicting(tenant_id, async {
            let client = self.pool.get().await.map_err(pool_error)?;
            client
                .execute(
                    "INSERT INTO credentials (tenant_id, name, provider, sealed, key_version, created_at) VALUES ($1, $2, $3, $4, $5, $6) \
                     ON CONFLICT (tenant_id, name) DO UPDATE SET provider = EXCLUDED.provider, sealed = EXCLUDED.sealed, key_version = EXCLUDED.key_version, created_at = EXCLUDED.created_at",
                    &[&tenant_id, &record.name, &record.provider, &record.sealed.to_bytes(), &version_to_db(record.sealed.version), &time_of(record.created_millis)],
                )
                .await
                .map_err(db("storing a credential"))?;
            Ok(())
        })
        .await
    }

    /// One credential's record and its tenant's data key (`None` once shredded): from the
    /// cache, else in one round trip (and cached when the data key is there).
    pub(crate) async fn credential(&self, tenant_id: &str, name: &str) -> Result<(CredentialRecord, Option<Key>), SealError> {
        if let Some((record, dek)) = self.cache.credential(tenant_id, name) {
            return Ok((record, Some(dek)));
        }
        let start = self.cache.read_start();
        let client = self.pool.get().await.map_err(pool_error)?;
        let statement = client
            .prepare_cached(
                "SELECT c.provider, c.sealed, c.key_version, c.created_at, d.sealed AS dek_sealed, d.key_version AS dek_version \
                 FROM credentials c LEFT JOIN data_keys d ON d.tenant_id = c.tenant_id WHERE c.tenant_id = $1 AND c.name = $2",
            )
            .await
            .map_err(db("preparing a credential read"))?;
        let row = client.query_opt(&statement, &[&tenant_id, &name]).await.map_err(db("reading a credential"))?.ok_or_else(|| SealError::NotFound(name.into()))?;
        let record = CredentialRecord {
            name: name.into(),
            provider: row.get("provider"),
            created_millis: millis_of(row.get("created_at")),
            sealed: Sealed::from_bytes(version_from_db(row.get("key_version")), row.get("sealed")),
        };
        let dek = match row.get::<_, Option<&[u8]>>("dek_sealed") {
            Some(bytes) => {
                let version: Option<i32> = row.get("dek_version");
                Some(unwrap_data_key(&self.keys.all(), tenant_id, &Sealed::from_bytes(version_from_db(version.unwrap_or(0)), bytes))?)
            }
            None => None,
        };
        if let (Some(start), Some(dek)) = (start, &dek) {
            self.cache.keep_credential(start, tenant_id, &record, dek);
        }
        Ok((record, dek))
    }

    /// A tenant's credentials, by name (bytewise, as the embedded store orders them,
    /// whatever the database's collation).
    pub(crate) async fn list(&self, tenant_id: &str) -> Result<Vec<CredentialMeta>, SealError> {
        if let Some(listing) = self.cache.listing(tenant_id) {
            return Ok(listing);
        }
        let start = self.cache.read_start();
        let client = self.pool.get().await.map_err(pool_error)?;
        let statement = client
            .prepare_cached("SELECT name, provider, created_at FROM credentials WHERE tenant_id = $1 ORDER BY name COLLATE \"C\"")
            .await
            .map_err(db("preparing a credential listing"))?;
        let rows = client.query(&statement, &[&tenant_id]).await.map_err(db("listing credentials"))?;
        let listing: Vec<CredentialMeta> = rows.iter().map(|row| CredentialMeta { name: row.get("name"), provider: row.get("provider"), created_millis: millis_of(row.get("created_at")) }).collect();
        if let Some(start) = start {
            self.cache.keep_listing(start, tenant_id, &listing);
        }
        Ok(listing)
    }

    /// Deletes one credential; `false` if there was none.
    pub(crate) async fn delete(&self, tenant_id: &str, name: &str) -> Result<bool, SealError> {
        self.evicting(tenant_id, async {
            let client = self.pool.get().await.map_err(pool_error)?;
            let removed = client.execute("DELETE FROM credentials WHERE tenant_id = $1 AND name = $2", &[&tenant_id, &name]).await.map_err(db("deleting a credential"))?;
            Ok(removed > 0)
        })
        .await
    }

    /// Deletes the tenant's data key. A rotation running meanwhile updates rows, so it
    /// cannot write the key back.
    pub(crate) async fn shred(&self, tenant_id: &str) -> Result<(), SealError> {
        self.evicting(tenant_id, async {
            let client = self.pool.get().await.map_err(pool_error)?;
            client.execute("DELETE FROM data_keys WHERE tenant_id = $1", &[&tenant_id]).await.map_err(db("shredding a data key"))?;
            Ok(())
        })
        .await
    }

    /// Deletes a deleted tenant's data key and credential rows, in one transaction.
    pub(crate) async fn forget_tenant(&self, tenant_id: &str) -> Result<(), SealError> {
        self.evicting(tenant_id, async {
            let mut client = self.pool.get().await.map_err(pool_error)?;
            let tx = client.transaction().await.map_err(db("starting a tenant's vault purge"))?;
            tx.execute("DELETE FROM data_keys WHERE tenant_id = $1", &[&tenant_id]).await.map_err(db("shredding a data key"))?;
            tx.execute("DELETE FROM credentials WHERE tenant_id = $1", &[&tenant_id]).await.map_err(db("deleting credentials"))?;
            tx.commit().await.map_err(db("committing a tenant's vault purge"))
        })
        .await
    }

    /// Re-wraps every data key under `new_master`, which must be this replica's primary
    /// key (see [`crate::sealing::Vault::rotate`]), and bumps the master-key version, in
    /// one transaction. Returns how many data keys it re-wrapped.
    pub(crate) async fn rotate(&self, new_master: &Key) -> Result<usize, SealError> {
        if !new_master.same_as(&self.keys.primary) {
            return Err(SealError::RotationKeyNotDeployed { fingerprint: new_master.fingerprint() });
        }
        let mut client = self.pool.get().await.map_err(pool_error)?;
        let tx = client.transaction().await.map_err(db("starting a rotation"))?;
        let free: bool = tx.query_one("SELECT pg_try_advisory_xact_lock($1)", &[&ROTATION_LOCK]).await.map_err(db("taking the rotation lock"))?.get(0);
        if !free {
            return Err(SealError::RotationInProgress);
        }
        // Waits for data-key creations in flight, and holds off new ones until commit.
        let meta = tx.query_one("SELECT master_version FROM vault_meta FOR UPDATE", &[]).await.map_err(db("locking the master-key state"))?;
        let version = version_from_db(meta.get("master_version")).saturating_add(1);
        let rows = tx.query("SELECT tenant_id, sealed, key_version FROM data_keys", &[]).await.map_err(db("reading data keys"))?;
        let (mut tenants, mut sealed) = (Vec::with_capacity(rows.len()), Vec::with_capacity(rows.len()));
        for row in &rows {
            let tenant_id: String = row.get("tenant_id");
            let dek = self.unwrap_row(&tenant_id, row)?;
            sealed.push(wrap_data_key(new_master, &tenant_id, version, &dek).to_bytes());
            tenants.push(tenant_id);
        }
        // A key shredded since the read has no row left to update: it stays shredded.
        let rewrapped = tx
            .execute(
                "UPDATE data_keys AS d SET sealed = u.sealed, key_version = $3 FROM unnest($1::text[], $2::bytea[]) AS u(tenant_id, sealed) WHERE d.tenant_id = u.tenant_id",
                &[&tenants, &sealed, &version_to_db(version)],
            )
            .await
            .map_err(db("re-wrapping data keys"))?;
        tx.execute("UPDATE vault_meta SET master_version = $1, master_check = $2", &[&version_to_db(version), &seal_master_check(new_master, version).to_bytes()])
            .await
            .map_err(db("recording the master-key version"))?;
        let committed = tx.commit().await.map_err(db("committing a rotation"));
        // The unwrapped keys are the same, but every row changed: dropped here as the feed
        // drops them on the other replicas.
        self.cache.clear();
        committed?;
        Ok(usize::try_from(rewrapped).unwrap_or(usize::MAX))
    }
}
