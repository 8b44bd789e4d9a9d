//! The vault's keeper embedded in one process: sealed credentials and wrapped data keys in
//! sled's `tenant` tree (`Kind::Credential`, `Kind::DataKey`), the master-key version in
//! `meta`, and the master key in memory, staged through `master.key.next` during a
//! rotation when it lives in the data dir. In-process locks keep data-key creation, shred
//! and re-wrap apart. Opens and listings are served from [`VaultCache`] after the first
//! read; every write here evicts its tenant.

use std::path::PathBuf;
use std::sync::RwLock;

use serde::{Deserialize, Serialize};

use super::cache::VaultCache;
use super::{unwrap_data_key, wrap_data_key, write_private, CredentialMeta, CredentialRecord, Key, MasterKeys, SealError, Sealed, NEXT_MASTER_KEY_FILE};
use crate::store::{decode, encode, Kind, Store, StoreError, TenantKey};

/// A wrapped data key, with the tenant it belongs to (so rotation needs no lookup). The
/// on-disk form of `Kind::DataKey`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct DataKeyRecord {
    tenant_id: String,
    sealed: Sealed,
}

/// Whether a `tenant` tree key is a data key's (`tenant key | Kind::DataKey`).
fn is_data_key(key: &[u8]) -> bool {
    key.len() == 17 && key[16] == Kind::DataKey as u8
}

/// The version of the master key the store's data keys are wrapped under.
fn stored_master_version(store: &Store) -> Result<u32, StoreError> {
    Ok(store.meta.get("master-version")?.and_then(|v| <[u8; 4]>::try_from(v.as_ref()).ok()).map(u32::from_be_bytes).unwrap_or(1))
}

/// Credentials and data keys in sled, for one process.
pub(super) struct Embedded {
    store: Store,
    master: RwLock<(Key, u32)>,
    previous: RwLock<Option<Key>>,
    key_file: Option<PathBuf>,
    /// Held for a whole rotation (key file, re-wrap, flush, promotion): two interleaved
    /// rotations could leave `master.key` naming a key that wraps no data key.
    rotation: tokio::sync::Mutex<()>,
    /// The store's (see [`Store`]'s `vault_cache`).
    cache: std::sync::Arc<VaultCache>,
}

impl Embedded {
    /// The keeper over `store` with `keys`; finishes a rotation a crash interrupted, then
    /// checks the keys open the store's data keys.
    pub(super) fn with_keys(store: Store, keys: MasterKeys) -> Result<Self, SealError> {
        let version = stored_master_version(&store)?;
        store.vault_master_version.store(version, std::sync::atomic::Ordering::SeqCst);
        let pending = keys.previous.is_some() && keys.file.is_some();
        let cache = store.vault_cache.clone();
        let keeper = Self { store, master: RwLock::new((keys.primary.clone(), version)), previous: RwLock::new(keys.previous), key_file: keys.file, rotation: tokio::sync::Mutex::new(()), cache };
        if pending {
            keeper.rewrap(keys.primary)?;
            keeper.store.flush_blocking()?;
            keeper.promote_next_key_file()?;
        }
        keeper.check_keys()?;
        Ok(keeper)
    }

    /// Opens the first data key in the store (if any), so a wrong `TOLLGATE_MASTER_KEY`
    /// is refused at start instead of failing every credential, and instead of wrapping
    /// new tenants' keys under it, which would leave the store under two keys.
    fn check_keys(&self) -> Result<(), SealError> {
        let mut first = None;
        for item in self.store.tenant.iter() {
            let (key, value) = item.map_err(StoreError::from)?;
            if is_data_key(&key) {
                first = Some(value);
                break;
            }
        }
        let Some(value) = first else { return Ok(()) };
        let record: DataKeyRecord = decode("data keys", &value)?;
        let master = self.master.read().unwrap_or_else(|p| p.into_inner());
        self.unwrap_dek(&master.0, &record).map(drop).map_err(|_| SealError::WrongMasterKey { fingerprint: master.0.fingerprint() })
    }

    fn previous(&self) -> Option<Key> {
        self.previous.read().map(|p| p.clone()).unwrap_or_else(|p| p.into_inner().clone())
    }

    /// Opens a wrapped data key with the current master key, else the previous one.
    fn unwrap_dek(&self, master: &Key, record: &DataKeyRecord) -> Result<Key, SealError> {
        let previous = self.previous();
        let masters: Vec<&Key> = std::iter::once(master).chain(previous.as_ref()).collect();
        unwrap_data_key(&masters, &record.tenant_id, &record.sealed)
    }

    /// `master.key.next` -> `master.key`, once every DEK is wrapped by the next key.
    fn promote_next_key_file(&self) -> Result<(), SealError> {
        if let Some(file) = &self.key_file {
            let next = file.with_file_name(NEXT_MASTER_KEY_FILE);
            if next.exists() {
                std::fs::rename(&next, file).map_err(|e| SealError::KeyFile(e.to_string()))?;
            }
        }
        if let Ok(mut previous) = self.previous.write() {
            *previous = None;
        }
        Ok(())
    }

    /// The tenant's data key, created on first use. Reading and creating both hold the
    /// master-key lock for reading, so a re-wrap (which holds it for writing) never runs
    /// between wrapping a new data key and storing it: a key wrapped by a master key that
    /// is retired meanwhile would be unreadable once the rotation finishes.
    pub(super) fn data_key(&self, tenant_id: &str) -> Result<Key, SealError> {
        let master = self.master.read().unwrap_or_else(|p| p.into_inner());
        let (key, version) = &*master;
        let slot = TenantKey::of(tenant_id).prefix(Kind::DataKey);
        let stored = match self.store.tenant.get(&slot).map_err(StoreError::from)? {
            Some(bytes) => bytes,
            None => {
                let dek = Key::random();
                let record = DataKeyRecord { tenant_id: tenant_id.into(), sealed: wrap_data_key(key, tenant_id, *version, &dek) };
                // compare_and_swap so two first uses racing agree on one key.
                match self.store.tenant.compare_and_swap(&slot, None as Option<&[u8]>, Some(encode(&record))).map_err(StoreError::from)? {
                    Ok(()) => return Ok(dek),
                    Err(lost) => lost.current.ok_or(SealError::Tampered)?,
                }
            }
        };
        let record: DataKeyRecord = decode("data keys", &stored)?;
        self.unwrap_dek(key, &record)
    }

    /// Stores a sealed credential under its name and flushes.
    pub(super) async fn put(&self, tenant_id: &str, record: &CredentialRecord) -> Result<(), SealError> {
        let key = TenantKey::of(tenant_id).record(Kind::Credential, record.name.as_bytes());
        self.store.tenant.insert(key, encode(record)).map_err(StoreError::from)?;
        self.cache.evict(tenant_id);
        self.store.flush().await?;
        Ok(())
    }

    /// One credential's record and its tenant's data key (`None` once shredded).
    pub(super) fn credential(&self, tenant_id: &str, name: &str) -> Result<(CredentialRecord, Option<Key>), SealError> {
        // The cache is the store's, shared by every vault over it: one still holding a
        // master key a rotation retired must not open from it (tests open such vaults as
        // if they were replicas; in a gateway the one vault rotates its own key).
        if self.store.vault_master_version.load(std::sync::atomic::Ordering::SeqCst) == self.master.read().unwrap_or_else(|p| p.into_inner()).1 {
            if let Some((record, dek)) = self.cache.credential(tenant_id, name) {
                return Ok((record, Some(dek)));
            }
        }
        let start = self.cache.read_start();
        let tenant = TenantKey::of(tenant_id);
        let bytes = self.store.tenant.get(tenant.record(Kind::Credential, name.as_bytes())).map_err(StoreError::from)?.ok_or_else(|| SealError::NotFound(name.into()))?;
        let record: CredentialRecord = decode("credentials", &bytes)?;
        let master = self.master.read().unwrap_or_else(|p| p.into_inner());
        let dek = match self.store.tenant.get(tenant.prefix(Kind::DataKey)).map_err(StoreError::from)? {
            Some(stored) => Some(self.unwrap_dek(&master.0, &decode("data keys", &stored)?)?),
            None => None,
        };
        if let (Some(start), Some(dek)) = (start, &dek) {
            self.cache.keep_credential(start, tenant_id, &record, dek);
        }
        Ok((record, dek))
    }

    /// A tenant's credentials, by name.
    pub(super) fn list(&self, tenant_id: &str) -> Result<Vec<CredentialMeta>, SealError> {
        if let Some(listing) = self.cache.listing(tenant_id) {
            return Ok(listing);
        }
        let start = self.cache.read_start();
        let prefix = TenantKey::of(tenant_id).prefix(Kind::Credential);
        let listing = self
            .store
            .tenant
            .scan_prefix(prefix)
            .values()
            .map(|v| {
                let record: CredentialRecord = decode("credentials", &v.map_err(StoreError::from)?)?;
                Ok(CredentialMeta::from(&record))
            })
            .collect::<Result<Vec<_>, SealError>>()?;
        if let Some(start) = start {
            self.cache.keep_listing(start, tenant_id, &listing);
        }
        Ok(listing)
    }

    /// Opens and listings served from the cache, and those read from the store.
    pub(super) fn cache_counts(&self) -> (u64, u64) {
        self.cache.counts()
    }

    /// Forgets what is cached of a purged tenant (its records went with the store's purge).
    pub(super) fn forget_tenant(&self, tenant_id: &str) {
        self.cache.evict(tenant_id);
    }

    /// Deletes one credential; `false` if there was none.
    pub(super) async fn delete(&self, tenant_id: &str, name: &str) -> Result<bool, SealError> {
        let key = TenantKey::of(tenant_id).record(Kind::Credential, name.as_bytes());
        let existed = self.store.tenant.remove(key).map_err(StoreError::from)?.is_some();
        self.cache.evict(tenant_id);
        self.store.flush().await?;
        Ok(existed)
    }

    /// Removes the tenant's data key.
    pub(super) async fn shred(&self, tenant_id: &str) -> Result<(), SealError> {
        {
            // Not during a re-wrap, which would write back the key it had read.
            let _master = self.master.read().unwrap_or_else(|p| p.into_inner());
            self.store.tenant.remove(TenantKey::of(tenant_id).prefix(Kind::DataKey)).map_err(StoreError::from)?;
            self.cache.evict(tenant_id);
        }
        self.store.flush().await?;
        Ok(())
    }

    /// See [`super::Vault::rotate`].
    pub(super) async fn rotate(&self, new_master: Key) -> Result<usize, SealError> {
        let _rotation = self.rotation.try_lock().map_err(|_| SealError::RotationInProgress)?;
        let next = self.key_file.as_ref().map(|file| file.with_file_name(NEXT_MASTER_KEY_FILE));
        if let Some(next) = &next {
            write_private(next, new_master.to_hex().as_bytes())?;
        }
        let count = match self.rewrap(new_master) {
            Ok(count) => count,
            Err(e) => {
                // The re-wrap is one batch, so nothing changed: drop the staged key, or the
                // next start would try to finish a rotation that never began.
                if let Some(next) = &next {
                    let _ = std::fs::remove_file(next);
                }
                return Err(e);
            }
        };
        self.store.flush().await?;
        self.promote_next_key_file()?;
        Ok(count)
    }

    /// Whether the master key lives in the data dir (else the environment).
    pub(super) fn key_in_file(&self) -> bool {
        self.key_file.is_some()
    }

    /// Re-wraps every DEK in one atomic batch (a crash leaves all old or all new), then
    /// switches the in-memory key. Holds the key lock so no DEK is created meanwhile.
    fn rewrap(&self, new_master: Key) -> Result<usize, SealError> {
        let mut current = self.master.write().unwrap_or_else(|p| p.into_inner());
        let (old, old_version) = current.clone();
        let new_version = old_version + 1;
        let mut batch = sled::Batch::default();
        let mut count = 0;
        for item in self.store.tenant.iter() {
            let (key, value) = item.map_err(StoreError::from)?;
            if !is_data_key(&key) {
                continue;
            }
            let record: DataKeyRecord = decode("data keys", &value)?;
            let dek = self.unwrap_dek(&old, &record)?;
            let sealed = wrap_data_key(&new_master, &record.tenant_id, new_version, &dek);
            batch.insert(key, encode(&DataKeyRecord { tenant_id: record.tenant_id, sealed }));
            count += 1;
        }
        self.store.tenant.apply_batch(batch).map_err(StoreError::from)?;
        // The data keys themselves are unchanged, but nothing cached should outlive a
        // rotation's reasoning.
        self.cache.clear();
        self.store.meta.insert("master-version", &new_version.to_be_bytes()).map_err(StoreError::from)?;
        self.store.vault_master_version.store(new_version, std::sync::atomic::Ordering::SeqCst);
        *current = (new_master, new_version);
        Ok(count)
    }
}

#[cfg(test)]
mod tests {
    use super::super::{load_master_keys, Keeper, Vault, MASTER_KEY_FILE};
    use super::*;
    use crate::secret::Secret;

    fn vault() -> Result<(Store, Vault), SealError> {
        let store = Store::temporary()?;
        let vault = Vault::new(store.clone(), Key::random())?;
        Ok((store, vault))
    }

    fn embedded(vault: &Vault) -> &Embedded {
        match &vault.keeper {
            Keeper::Embedded(e) => e,
            Keeper::Shared(_) => unreachable!("these tests build embedded vaults"),
        }
    }

    #[tokio::test]
    async fn ciphertext_moved_to_another_tenant_or_name_fails() -> Result<(), Box<dyn std::error::Error>> {
        let (store, vault) = vault()?;
        vault.put("a", "main", "openai", &Secret::new("sk-canary-a".into())).await?;
        vault.put("b", "main", "openai", &Secret::new("sk-b".into())).await?;
        assert_eq!(vault.open("a", "main").await?.1.expose(), "sk-canary-a");
        let a_bytes = store.tenant.get(TenantKey::of("a").record(Kind::Credential, b"main"))?.ok_or("missing")?;
        store.tenant.insert(TenantKey::of("b").record(Kind::Credential, b"main"), a_bytes.clone())?;
        assert!(matches!(vault.open("b", "main").await, Err(SealError::Tampered)));
        store.tenant.insert(TenantKey::of("a").record(Kind::Credential, b"other"), a_bytes)?;
        assert!(matches!(vault.open("a", "other").await, Err(SealError::Tampered)));
        Ok(())
    }

    #[tokio::test]
    async fn flipped_byte_fails_and_rotation_keeps_secrets() -> Result<(), Box<dyn std::error::Error>> {
        let (store, vault) = vault()?;
        vault.put("a", "main", "openai", &Secret::new("sk-1".into())).await?;
        vault.put("a", "second", "openai", &Secret::new("sk-2".into())).await?;
        assert_eq!(vault.rotate(Key::random()).await?, 1);
        assert_eq!(vault.open("a", "second").await?.1.expose(), "sk-2");
        // `main` was not opened since the rotation, so its open reads the flipped bytes
        // (an opened credential is served from the cache until its tenant's next write).
        let key = TenantKey::of("a").record(Kind::Credential, b"main");
        let mut record: CredentialRecord = decode("t", &store.tenant.get(&key)?.ok_or("missing")?)?;
        record.sealed.ciphertext[0] ^= 1;
        store.tenant.insert(&key, encode(&record))?;
        assert!(matches!(vault.open("a", "main").await, Err(SealError::Tampered)));
        Ok(())
    }

    #[tokio::test]
    async fn rotation_interrupted_after_the_batch_finishes_on_the_next_start() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let store = Store::open(dir.path())?;
        let keys = load_master_keys(None, None, dir.path())?;
        let vault = Vault::with_keys(store.clone(), keys)?;
        vault.put("a", "main", "openai", &Secret::new("sk-1".into())).await?;
        // Simulate a crash after the re-wrap but before the key file was renamed.
        let next = Key::random();
        write_private(&dir.path().join(NEXT_MASTER_KEY_FILE), next.to_hex().as_bytes())?;
        embedded(&vault).rewrap(next.clone())?;
        store.flush_blocking()?;
        drop(vault);
        let reopened = Vault::with_keys(store, load_master_keys(None, None, dir.path())?)?;
        assert_eq!(reopened.open("a", "main").await?.1.expose(), "sk-1");
        assert!(!dir.path().join(NEXT_MASTER_KEY_FILE).exists());
        assert_eq!(Key::parse(&std::fs::read_to_string(dir.path().join(MASTER_KEY_FILE))?)?.fingerprint(), next.fingerprint());
        Ok(())
    }

    #[tokio::test]
    async fn rotation_persists_the_new_key_file() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let store = Store::open(dir.path())?;
        let vault = Vault::with_keys(store.clone(), load_master_keys(None, None, dir.path())?)?;
        vault.put("a", "main", "openai", &Secret::new("sk-2".into())).await?;
        vault.rotate(Key::random()).await?;
        drop(vault);
        let reopened = Vault::with_keys(store, load_master_keys(None, None, dir.path())?)?;
        assert_eq!(reopened.open("a", "main").await?.1.expose(), "sk-2");
        Ok(())
    }

    /// Rotations racing each other and new tenants' first credentials (each creates a data
    /// key), then a restart from disk: every credential written still opens.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_rotations_and_first_credentials_all_open_after_a_restart() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let vault = std::sync::Arc::new(Vault::with_keys(Store::open(dir.path())?, load_master_keys(None, None, dir.path())?)?);
        let mut tasks = tokio::task::JoinSet::new();
        for rotator in 0..4 {
            let vault = vault.clone();
            tasks.spawn(async move {
                for _ in 0..10 {
                    match vault.rotate(Key::random()).await {
                        Ok(_) | Err(SealError::RotationInProgress) => {}
                        Err(e) => return Err(format!("rotator {rotator}: {e}")),
                    }
                    tokio::task::yield_now().await;
                }
                Ok(())
            });
        }
        for writer in 0..4 {
            let vault = vault.clone();
            tasks.spawn(async move {
                for i in 0..60 {
                    let tenant = format!("t-{writer}-{i}");
                    vault.put(&tenant, "main", "openai", &Secret::new(format!("sk-{tenant}"))).await.map_err(|e| format!("{tenant}: {e}"))?;
                }
                Ok(())
            });
        }
        while let Some(done) = tasks.join_next().await {
            done??;
        }
        drop(vault);
        // The store's flusher thread lets go of the directory lock shortly after the drop.
        let mut store = Store::open(dir.path());
        for _ in 0..100 {
            if store.is_ok() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            store = Store::open(dir.path());
        }
        let reopened = Vault::with_keys(store?, load_master_keys(None, None, dir.path())?)?;
        for writer in 0..4 {
            for i in 0..60 {
                let tenant = format!("t-{writer}-{i}");
                assert_eq!(reopened.open(&tenant, "main").await.map(|(_, s)| s.expose().to_string()).ok(), Some(format!("sk-{tenant}")), "{tenant}");
            }
        }
        Ok(())
    }

    #[tokio::test]
    async fn a_second_rotation_while_one_runs_is_refused() -> Result<(), Box<dyn std::error::Error>> {
        let (_, vault) = vault()?;
        vault.put("a", "main", "openai", &Secret::new("sk-1".into())).await?;
        let running = embedded(&vault).rotation.try_lock()?;
        assert!(matches!(vault.rotate(Key::random()).await, Err(SealError::RotationInProgress)));
        drop(running);
        assert_eq!(vault.rotate(Key::random()).await?, 1);
        assert_eq!(vault.open("a", "main").await?.1.expose(), "sk-1");
        Ok(())
    }

    /// Opens are served from the cache after the first; every write through the vault is
    /// seen by the next open at once.
    #[tokio::test]
    async fn writes_are_seen_at_once_by_cached_opens() -> Result<(), Box<dyn std::error::Error>> {
        let (_store, vault) = vault()?;
        vault.put("a", "main", "openai", &Secret::new("sk-1".into())).await?;
        assert_eq!(vault.open("a", "main").await?.1.expose(), "sk-1");
        assert_eq!(vault.open("a", "main").await?.1.expose(), "sk-1");
        assert_eq!(vault.list("a").await?.len(), 1);
        assert_eq!(vault.list("a").await?.len(), 1);
        let (hits, misses) = vault.cache_counts().ok_or("no cache")?;
        assert_eq!((hits, misses), (2, 2), "the second open and listing come from the cache");

        vault.put("a", "main", "anthropic", &Secret::new("sk-replaced".into())).await?;
        let (provider, secret) = vault.open("a", "main").await?;
        assert_eq!((provider.as_str(), secret.expose()), ("anthropic", "sk-replaced"));
        vault.put("a", "extra", "openai", &Secret::new("sk-3".into())).await?;
        assert_eq!(vault.list("a").await?.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(), ["extra", "main"]);
        assert!(vault.delete("a", "main").await?);
        assert!(matches!(vault.open("a", "main").await, Err(SealError::NotFound(_))));
        assert_eq!(vault.list("a").await?.len(), 1);
        assert_eq!(vault.open("a", "extra").await?.1.expose(), "sk-3");
        vault.shred("a").await?;
        assert!(matches!(vault.open("a", "extra").await, Err(SealError::Tampered)), "a shredded tenant's cached key is gone");
        Ok(())
    }

    #[tokio::test]
    async fn shredded_tenant_cannot_open() -> Result<(), Box<dyn std::error::Error>> {
        let (store, vault) = vault()?;
        vault.put("a", "main", "openai", &Secret::new("sk-1".into())).await?;
        vault.shred("a").await?;
        assert!(matches!(vault.open("a", "main").await, Err(SealError::Tampered)));
        // Reading does not make up a new data key.
        assert!(store.tenant.get(TenantKey::of("a").prefix(Kind::DataKey))?.is_none());
        Ok(())
    }

    /// A master key that does not open the store's data keys is refused at start, naming
    /// its fingerprint, before it can wrap a new tenant's key.
    #[tokio::test]
    async fn a_wrong_master_key_is_refused_at_start() -> Result<(), Box<dyn std::error::Error>> {
        let (store, vault) = vault()?;
        vault.put("a", "main", "openai", &Secret::new("sk-1".into())).await?;
        let wrong = Key::random();
        match Vault::new(store.clone(), wrong.clone()) {
            Err(SealError::WrongMasterKey { fingerprint }) => assert_eq!(fingerprint, wrong.fingerprint()),
            other => panic!("expected WrongMasterKey, got {:?}", other.err()),
        }
        // An empty store takes any key.
        assert!(Vault::new(Store::temporary()?, wrong).is_ok());
        Ok(())
    }
}
