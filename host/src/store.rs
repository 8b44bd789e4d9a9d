//! Typed facade over sled. The key layout lives here and nowhere else.
//!
//! Trees:
//! - `tenants`:   tenant id -> tenant record (JSON)
//! - `tokens`:    blake3(token) -> token record (JSON)
//! - `policies`:  blake3(wasm) hex -> wasm bytes (uploads)
//! - `compiled`:  blake3(wasm) hex -> the host's own compiled artifact
//! - `meta`:      gateway-wide settings (master key version)
//! - `audit`:     sequence number -> chained audit record (JSON)
//! - `tenant`:    tenant key (16 bytes) + kind tag + rest -> per-tenant data (also the
//!   operator's upload records, under an owner no tenant can have)
//!
//! Every per-tenant key starts with a fixed-width tenant key (the first 16 bytes of
//! blake3 of the tenant id), so no prefix scan of one tenant can reach another
//! (`ab` vs `abc`).

mod durable;

use std::path::Path;
use std::sync::Arc;

use durable::DurableFiles;
pub(crate) use durable::sync_dir;
use serde::{de::DeserializeOwned, Serialize};

/// A store operation failed. The message names the operation, never the data.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// sled reported an error (I/O, corruption).
    #[error("storage failure: {0}")]
    Sled(#[from] sled::Error),
    /// A stored record did not decode.
    #[error("corrupt record in {tree}: {reason}")]
    Corrupt {
        /// The tree the record is in.
        tree: &'static str,
        /// Why it did not decode.
        reason: String,
    },
    /// The shared database (PostgreSQL) failed.
    #[error(transparent)]
    Database(#[from] crate::postgres::DbError),
    /// A transaction aborted on purpose, e.g. a quota check.
    #[error("{0}")]
    Aborted(String),
    /// sled flushed, but its files could not be synced to the disk: the writes are not
    /// known to be durable.
    #[error("syncing the store's files to disk: {0}")]
    Sync(std::io::Error),
}

/// Fixed-width key that prefixes every per-tenant record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TenantKey(pub [u8; 16]);

impl TenantKey {
    /// The key of `tenant_id`.
    pub fn of(tenant_id: &str) -> Self {
        let hash = blake3::hash(tenant_id.as_bytes());
        let mut key = [0u8; 16];
        key.copy_from_slice(&hash.as_bytes()[..16]);
        TenantKey(key)
    }

    /// `tenant key | kind | rest`: the full store key of one per-tenant record.
    pub fn record(&self, kind: Kind, rest: &[u8]) -> Vec<u8> {
        let mut key = Vec::with_capacity(17 + rest.len());
        key.extend_from_slice(&self.0);
        key.push(kind as u8);
        key.extend_from_slice(rest);
        key
    }

    /// The prefix of every record of one kind of this tenant.
    pub fn prefix(&self, kind: Kind) -> Vec<u8> {
        self.record(kind, &[])
    }
}

/// What a per-tenant record is. The byte values are part of the on-disk format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// Policy memory values, keyed by the guest's key.
    Memory = b'm',
    /// The running byte total of policy memory (quota accounting).
    MemoryUsage = b'q',
    /// Sealed credentials, keyed by name.
    Credential = b'c',
    /// The tenant's wrapped data key.
    DataKey = b'k',
    /// Policy log lines, keyed by a big-endian sequence number.
    PolicyLog = b'l',
    /// Settled spend counters, keyed by scope and period id.
    Spend = b's',
    /// In-flight reservations, keyed by request id.
    Reservation = b'r',
    /// Usage ledger records, keyed by time and request id.
    Ledger = b'u',
    /// Session turns, keyed by session id and sequence.
    Session = b'h',
    /// Daily usage rollups, keyed by day, dimension and value.
    Rollup = b'd',
    /// Policies this owner uploaded, keyed by the policy hash's hex (see
    /// `policy/uploads.rs`; the operator's are under a reserved owner).
    Upload = b'p',
    /// Stored Responses API answers (`previous_response_id`), keyed by response id.
    Response = b'o',
    /// What the policy decided each recent request on (for replays), keyed by a
    /// big-endian sequence number like the policy log.
    DecisionInput = b'i',
}

/// Group commit: one flushing thread serves every waiting writer. Each batch of waiters
/// shares one `sled::Db::flush` and the `fsync`s that make it durable
/// (`store/durable.rs`). (sled 0.34's own `flush_async` deadlocks when called
/// concurrently — spacejam/sled#1308 — which hung the gateway under load.)
struct Flusher {
    requests: std::sync::Mutex<Option<std::sync::mpsc::Sender<tokio::sync::oneshot::Sender<Result<(), String>>>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Waits for the flush thread, so the database (and its lock file) is closed when the
/// last `Store` goes: a restart in the same process can open it at once.
impl Drop for Flusher {
    fn drop(&mut self) {
        if let Ok(mut requests) = self.requests.lock() {
            *requests = None;
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// sled's flush, then the `fsync`s that make it survive a power cut (none for a
/// temporary store).
fn flush_durably(db: &sled::Db, files: Option<&DurableFiles>) -> Result<(), StoreError> {
    db.flush()?;
    if let Some(files) = files {
        files.sync().map_err(StoreError::Sync)?;
    }
    Ok(())
}

/// Syncs the files of a closed or flushed sled database in `dir` (a restore's, before it
/// is moved into place), as a durable flush does for an open store.
pub(crate) fn sync_files_in(dir: &Path) -> std::io::Result<()> {
    DurableFiles::in_dir(dir.to_path_buf()).sync()
}

impl Flusher {
    fn start(db: sled::Db, files: Option<Arc<DurableFiles>>) -> Result<Self, StoreError> {
        let (tx, rx) = std::sync::mpsc::channel::<tokio::sync::oneshot::Sender<Result<(), String>>>();
        let thread = std::thread::Builder::new()
            .name("tollgate-flush".into())
            .spawn(move || {
                // Ends when every Store clone (and so the sender) is gone.
                while let Ok(first) = rx.recv() {
                    let mut waiters = vec![first];
                    waiters.extend(rx.try_iter());
                    let result = flush_durably(&db, files.as_deref()).map_err(|e| e.to_string());
                    for waiter in waiters {
                        let _ = waiter.send(result.clone());
                    }
                }
            })
            .map_err(|e| StoreError::Aborted(format!("starting the flush thread: {e}")))?;
        Ok(Self { requests: std::sync::Mutex::new(Some(tx)), thread: Some(thread) })
    }

    async fn flush(&self) -> Result<(), StoreError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let sent = self.requests.lock().map(|requests| requests.as_ref().is_some_and(|r| r.send(tx).is_ok())).unwrap_or(false);
        if !sent {
            return Err(StoreError::Aborted("the flush thread has stopped".into()));
        }
        match rx.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(StoreError::Aborted(format!("flush failed: {e}"))),
            Err(_) => Err(StoreError::Aborted("the flush thread has stopped".into())),
        }
    }
}

/// sled's page cache. Its default (1 GiB) let resident memory grow with the ledger for
/// as long as the process ran; the hot records (tenants, tokens, counters, recent ledger
/// pages) fit in far less, and older pages are read back from the OS page cache.
pub const STORE_CACHE_BYTES: u64 = 64 << 20;
/// How long opening waits for a lock a just-dropped store's threads still hold.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(2);
const LOCK_RETRY: std::time::Duration = std::time::Duration::from_millis(20);

/// The `tenant` tree, whose multi-record writes a backup sees whole or not at all.
///
/// sled runs transactions one at a time, but a backup iterates tree by tree while writes
/// go on, so on its own it could hold a ledger record without the spend counter updated in
/// the same transaction. Every transaction and batch on this tree holds the read side of a
/// gate that [`Store::snapshot`] holds exclusively while a backup copies the store. Other
/// operations pass through to the sled tree unchanged.
#[derive(Clone)]
pub struct TenantTree {
    tree: sled::Tree,
    gate: std::sync::Arc<std::sync::RwLock<()>>,
}

impl std::ops::Deref for TenantTree {
    type Target = sled::Tree;

    fn deref(&self) -> &sled::Tree {
        &self.tree
    }
}

impl TenantTree {
    /// [`sled::Tree::transaction`], waiting while a backup copies the store.
    pub fn transaction<F, A, E>(&self, f: F) -> sled::transaction::TransactionResult<A, E>
    where
        F: Fn(&sled::transaction::TransactionalTree) -> sled::transaction::ConflictableTransactionResult<A, E>,
    {
        let _gate = self.gate.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        self.tree.transaction(f)
    }

    /// [`sled::Tree::apply_batch`], waiting while a backup copies the store.
    pub fn apply_batch(&self, batch: sled::Batch) -> sled::Result<()> {
        let _gate = self.gate.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        self.tree.apply_batch(batch)
    }
}

/// The gateway's store.
#[derive(Clone)]
pub struct Store {
    db: sled::Db,
    flusher: std::sync::Arc<Flusher>,
    /// Tenant records.
    pub tenants: sled::Tree,
    /// Token hash to token record.
    pub tokens: sled::Tree,
    /// Uploaded policy wasm by hash.
    pub policies: sled::Tree,
    /// Compiled policy artifacts by hash.
    pub compiled: sled::Tree,
    /// Per-tenant records (see [`Kind`]).
    pub tenant: TenantTree,
    /// Gateway-wide settings.
    pub meta: sled::Tree,
    /// The audit chain.
    pub audit: sled::Tree,
    /// The vault's cache of this store's credentials and data keys, shared by every vault
    /// over it (one per process, but tests open several as if they were replicas): one
    /// vault's write evicts what another cached.
    pub(crate) vault_cache: std::sync::Arc<crate::sealing::cache::VaultCache>,
    /// The master-key version `meta` records, as the vault last read or wrote it, so a
    /// cached open need not read `meta` (0 until a vault opens the store).
    pub(crate) vault_master_version: std::sync::Arc<std::sync::atomic::AtomicU32>,
    /// sled's directory; `None` for a temporary store.
    dir: Option<std::path::PathBuf>,
    /// sled's files, synced after each flush; `None` for a temporary store.
    files: Option<Arc<DurableFiles>>,
    /// Whether a ledger writer holds the journal beside this store (one at a time).
    journal_claimed: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Store {
    /// Opens (or creates) the store in `dir`.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let config = sled::Config::new().path(dir.join("db")).mode(sled::Mode::HighThroughput).cache_capacity(STORE_CACHE_BYTES);
        // sled's background threads hold its lock file for a moment after the last handle
        // of a store is dropped: a restart in the same process (or one racing its
        // predecessor's exit) waits that out, briefly; a store another live process holds
        // still fails.
        let mut waited = std::time::Duration::ZERO;
        loop {
            match config.open() {
                Err(sled::Error::Io(e)) if e.to_string().contains("could not acquire lock") && waited < LOCK_WAIT => {
                    std::thread::sleep(LOCK_RETRY);
                    waited += LOCK_RETRY;
                }
                opened => return Self::from_db(opened?, Some(dir.join("db"))),
            }
        }
    }

    /// A throwaway in-memory store, for tests and benchmarks.
    pub fn temporary() -> Result<Self, StoreError> {
        Self::from_db(sled::Config::new().temporary(true).open()?, None)
    }

    /// Over `db`, whose files are in `dir` (`None` for a temporary store).
    fn from_db(db: sled::Db, dir: Option<std::path::PathBuf>) -> Result<Self, StoreError> {
        let files = dir.clone().map(|dir| Arc::new(DurableFiles::in_dir(dir)));
        Ok(Self {
            tenants: db.open_tree("tenants")?,
            tokens: db.open_tree("tokens")?,
            policies: db.open_tree("policies")?,
            compiled: db.open_tree("compiled")?,
            tenant: TenantTree { tree: db.open_tree("tenant")?, gate: std::sync::Arc::default() },
            meta: db.open_tree("meta")?,
            audit: db.open_tree("audit")?,
            flusher: std::sync::Arc::new(Flusher::start(db.clone(), files.clone())?),
            files,
            vault_cache: std::sync::Arc::new(crate::sealing::cache::VaultCache::in_process()),
            vault_master_version: std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0)),
            dir,
            journal_claimed: std::sync::Arc::default(),
            db,
        })
    }

    /// The path of a file kept beside sled's own in its directory (so a backup of the
    /// data dir or a restore takes it along); `None` for a temporary store.
    pub(crate) fn file_beside(&self, name: &str) -> Option<std::path::PathBuf> {
        self.dir.as_ref().map(|dir| dir.join(name))
    }

    /// Claims the ledger journal for one writer: false if another holds it.
    pub(crate) fn claim_journal(&self) -> bool {
        !self.journal_claimed.swap(true, std::sync::atomic::Ordering::AcqRel)
    }

    /// Gives the ledger journal back (its writer has stopped and emptied it).
    pub(crate) fn release_journal(&self) {
        self.journal_claimed.store(false, std::sync::atomic::Ordering::Release);
    }

    /// Names of every tree (including sled's default one).
    pub fn tree_names(&self) -> Vec<sled::IVec> {
        self.db.tree_names()
    }

    /// Holds off every transaction and batch on per-tenant records until dropped, so what
    /// is read meanwhile is one consistent state (see [`TenantTree`]). Single-record
    /// writes still proceed; each is whole by itself.
    pub fn snapshot(&self) -> std::sync::RwLockWriteGuard<'_, ()> {
        self.tenant.gate.write().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Opens a tree by name.
    pub fn open_tree(&self, name: &[u8]) -> Result<sled::Tree, StoreError> {
        Ok(self.db.open_tree(name)?)
    }

    /// Removes every per-tenant record of `tenant` (one prefix scan: every kind shares the
    /// tenant key). Returns how many records were removed.
    pub fn purge_tenant(&self, tenant: &TenantKey) -> Result<usize, StoreError> {
        let mut batch = sled::Batch::default();
        let mut count = 0;
        for key in self.tenant.scan_prefix(tenant.0).keys() {
            batch.remove(key?);
            count += 1;
        }
        self.tenant.apply_batch(batch)?;
        Ok(count)
    }

    /// Makes every write so far durable. Concurrent callers share one flush (group commit).
    pub async fn flush(&self) -> Result<(), StoreError> {
        self.flusher.flush().await
    }

    /// Flushes synchronously (startup, shutdown, a ledger checkpoint, tests).
    pub fn flush_blocking(&self) -> Result<(), StoreError> {
        flush_durably(&self.db, self.files.as_deref())
    }

    /// How many durable flushes have completed (`None` for a temporary store, which has
    /// no files to sync).
    pub fn durable_syncs(&self) -> Option<u64> {
        self.files.as_ref().map(|files| files.syncs())
    }
}

/// Encodes a record as JSON.
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // Serializing our own plain structs cannot fail; an empty record would be caught on read.
    serde_json::to_vec(value).unwrap_or_default()
}

/// Decodes a JSON record, naming the tree on failure.
pub fn decode<T: DeserializeOwned>(tree: &'static str, bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt { tree, reason: e.to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_prefixes_never_overlap() {
        let ab = TenantKey::of("ab").prefix(Kind::Memory);
        let abc = TenantKey::of("abc").prefix(Kind::Memory);
        assert_eq!(ab.len(), abc.len());
        assert!(!abc.starts_with(&ab) && !ab.starts_with(&abc));
    }

    /// A store reopened as soon as its predecessor is dropped opens; one a live store
    /// holds is refused once the short wait is over.
    #[test]
    fn reopening_waits_briefly_for_the_lock_but_a_held_store_is_refused() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        for _ in 0..20 {
            drop(Store::open(dir.path())?);
        }
        let held = Store::open(dir.path())?;
        let started = std::time::Instant::now();
        let refused = Store::open(dir.path()).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(refused.contains("could not acquire lock"), "{refused}");
        assert!(started.elapsed() >= LOCK_WAIT, "refused after {:?}", started.elapsed());
        drop(held);
        Ok(())
    }
}

#[cfg(test)]
mod flush_tests {
    use super::*;

    /// Hundreds of concurrent flushes all complete (sled's `flush_async` deadlocks here).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_flushes_complete() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let store = Store::open(dir.path())?;
        let mut tasks = Vec::new();
        for i in 0..300u32 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                store.tenant.insert(i.to_be_bytes(), vec![0u8; 64])?;
                store.flush().await
            }));
        }
        for task in tasks {
            tokio::time::timeout(std::time::Duration::from_secs(30), task).await??.map_err(|e| e.to_string())?;
        }
        Ok(())
    }
}
