//! Envelope encryption of tenant credentials.
//!
//! A master key (KEK) wraps one random data key (DEK) per tenant; the DEK seals that
//! tenant's credentials with XChaCha20-Poly1305. Associated data binds every ciphertext to
//! its tenant, credential name and key version, so bytes copied to another tenant or name
//! fail to open. Deleting a tenant's DEK makes every sealed byte of it unreadable
//! (crypto-shredding). Rotating the master key re-wraps the DEKs online; credentials are
//! untouched.

use std::path::{Path, PathBuf};
use std::sync::RwLock;

use base64::Engine as _;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::secret::Secret;
use crate::store::{decode, encode, Kind, Store, StoreError, TenantKey};

/// Name of the generated master key file in the data dir.
pub const MASTER_KEY_FILE: &str = "master.key";

/// Sealing failed. Messages never contain key material or plaintext.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    /// The master key is malformed.
    #[error("master key must be 32 bytes, given as 64 hex digits or base64")]
    BadMasterKey,
    /// The master key file could not be read or written.
    #[error("master key file: {0}")]
    KeyFile(String),
    /// A ciphertext did not open: wrong tenant, wrong name, wrong key or tampered bytes.
    #[error("sealed data failed authentication")]
    Tampered,
    /// No credential with that name.
    #[error("no credential named '{0}'")]
    NotFound(String),
    /// Another master-key rotation is running; only one runs at a time.
    #[error("a master-key rotation is already running; retry when it has finished")]
    RotationInProgress,
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A 32-byte key, zeroized on drop.
#[derive(Clone)]
pub struct Key(Zeroizing<[u8; 32]>);

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Key([redacted])")
    }
}

impl Key {
    /// A fresh random key.
    pub fn random() -> Self {
        let mut bytes = Zeroizing::new([0u8; 32]);
        rand::rng().fill_bytes(bytes.as_mut());
        Key(bytes)
    }

    /// Parses 64 hex digits or standard base64 of 32 bytes.
    pub fn parse(text: &str) -> Result<Self, SealError> {
        let text = text.trim();
        let decoded = Zeroizing::new(if text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
            (0..32).map(|i| u8::from_str_radix(&text[i * 2..i * 2 + 2], 16)).collect::<Result<Vec<u8>, _>>().map_err(|_| SealError::BadMasterKey)?
        } else {
            base64::engine::general_purpose::STANDARD.decode(text).map_err(|_| SealError::BadMasterKey)?
        });
        let bytes: [u8; 32] = decoded.as_slice().try_into().map_err(|_| SealError::BadMasterKey)?;
        Ok(Key(Zeroizing::new(bytes)))
    }

    /// Hex encoding, for writing a generated key file.
    pub fn to_hex(&self) -> Zeroizing<String> {
        Zeroizing::new(self.0.iter().map(|b| format!("{b:02x}")).collect())
    }

    /// A short, non-secret identifier of the key (first 8 hex digits of its blake3).
    pub fn fingerprint(&self) -> String {
        blake3::hash(self.0.as_ref()).to_hex()[..8].to_string()
    }

    fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new(self.0.as_ref().into())
    }
}

/// Name of the key a rotation in progress is moving to.
pub const NEXT_MASTER_KEY_FILE: &str = "master.key.next";

/// The master keys a vault opens with.
#[derive(Debug)]
pub struct MasterKeys {
    /// Wraps new data keys; tried first.
    pub primary: Key,
    /// Tried when the primary does not open a data key (a rotation in progress, or
    /// `TOLLGATE_MASTER_KEY_PREVIOUS` after an operator-driven rotation).
    pub previous: Option<Key>,
    /// The key file, when the key lives in the data dir.
    pub file: Option<PathBuf>,
}

impl MasterKeys {
    /// One key, no file (tests, embedders).
    pub fn single(key: Key) -> Self {
        Self { primary: key, previous: None, file: None }
    }
}

/// Reads the master key from `TOLLGATE_MASTER_KEY` (passed in as `from_env`, with an
/// optional previous key), or from `master.key` in the data dir, generating that file
/// (mode 0600) on first start. A `master.key.next` left by an interrupted rotation becomes
/// the primary, with the old key as fallback; [`Vault::with_keys`] finishes the rotation.
pub fn load_master_keys(from_env: Option<&str>, previous_env: Option<&str>, data_dir: &Path) -> Result<MasterKeys, SealError> {
    if let Some(text) = from_env {
        return Ok(MasterKeys { primary: Key::parse(text)?, previous: previous_env.map(Key::parse).transpose()?, file: None });
    }
    let path = data_dir.join(MASTER_KEY_FILE);
    let current = match std::fs::read_to_string(&path) {
        Ok(text) => Key::parse(&text)?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = Key::random();
            write_private(&path, key.to_hex().as_bytes())?;
            key
        }
        Err(e) => return Err(SealError::KeyFile(format!("{}: {e}", path.display()))),
    };
    match std::fs::read_to_string(data_dir.join(NEXT_MASTER_KEY_FILE)) {
        Ok(text) => Ok(MasterKeys { primary: Key::parse(&text)?, previous: Some(current), file: Some(path) }),
        Err(_) => Ok(MasterKeys { primary: current, previous: None, file: Some(path) }),
    }
}

/// Writes a file readable by its owner only.
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<(), SealError> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    options.mode(0o600);
    let mut file = options.open(&tmp).map_err(|e| SealError::KeyFile(format!("{}: {e}", tmp.display())))?;
    file.write_all(bytes).and_then(|_| file.sync_all()).map_err(|e| SealError::KeyFile(e.to_string()))?;
    std::fs::rename(&tmp, path).map_err(|e| SealError::KeyFile(e.to_string()))
}

/// What is stored for a sealed value.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Sealed {
    version: u32,
    nonce: Vec<u8>,
    ciphertext: Vec<u8>,
}

fn seal(key: &Key, plaintext: &[u8], aad: &[u8], version: u32) -> Sealed {
    let mut nonce = [0u8; 24];
    rand::rng().fill_bytes(&mut nonce);
    // Encryption with a valid key and nonce cannot fail; an empty ciphertext would fail to
    // open later rather than silently succeed.
    let ciphertext = key.cipher().encrypt(XNonce::from_slice(&nonce), Payload { msg: plaintext, aad }).unwrap_or_default();
    Sealed { version, nonce: nonce.to_vec(), ciphertext }
}

fn open(key: &Key, sealed: &Sealed, aad: &[u8]) -> Result<Zeroizing<Vec<u8>>, SealError> {
    if sealed.nonce.len() != 24 {
        return Err(SealError::Tampered);
    }
    key.cipher()
        .decrypt(XNonce::from_slice(&sealed.nonce), Payload { msg: &sealed.ciphertext, aad })
        .map(Zeroizing::new)
        .map_err(|_| SealError::Tampered)
}

fn dek_aad(tenant_id: &str, version: u32) -> Vec<u8> {
    format!("tollgate/dek/v1\0{tenant_id}\0{version}").into_bytes()
}

fn credential_aad(tenant_id: &str, name: &str, version: u32) -> Vec<u8> {
    format!("tollgate/credential/v1\0{tenant_id}\0{name}\0{version}").into_bytes()
}

/// A wrapped data key, with the tenant it belongs to (so rotation needs no lookup).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct DataKeyRecord {
    tenant_id: String,
    sealed: Sealed,
}

/// A stored credential: public metadata plus the sealed secret.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct CredentialRecord {
    name: String,
    provider: String,
    created_millis: u64,
    sealed: Sealed,
}

/// What may be shown of a credential: never the secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CredentialMeta {
    /// Name.
    pub name: String,
    /// Provider.
    pub provider: String,
    /// Creation time, milliseconds since the Unix epoch.
    pub created_millis: u64,
}

/// Seals, opens, lists and deletes credentials; rotates the master key.
pub struct Vault {
    store: Store,
    master: RwLock<(Key, u32)>,
    previous: RwLock<Option<Key>>,
    key_file: Option<PathBuf>,
    /// Held for a whole rotation (key file, re-wrap, flush, promotion): two interleaved
    /// rotations could leave `master.key` naming a key that wraps no data key.
    rotation: tokio::sync::Mutex<()>,
}

/// Longest credential name.
pub const MAX_CREDENTIAL_NAME_BYTES: usize = 64;
/// Largest secret accepted.
pub const MAX_SECRET_BYTES: usize = 8192;

impl Vault {
    /// A vault over `store` with the master key `master` (version from the store).
    pub fn new(store: Store, master: Key) -> Result<Self, SealError> {
        Self::with_keys(store, MasterKeys::single(master))
    }

    /// A vault over `store` with `keys`; finishes a rotation a crash interrupted.
    pub fn with_keys(store: Store, keys: MasterKeys) -> Result<Self, SealError> {
        let version = store.meta.get("master-version").map_err(StoreError::from)?.and_then(|v| <[u8; 4]>::try_from(v.as_ref()).ok()).map(u32::from_be_bytes).unwrap_or(1);
        let pending = keys.previous.is_some() && keys.file.is_some();
        let vault = Self { store, master: RwLock::new((keys.primary.clone(), version)), previous: RwLock::new(keys.previous), key_file: keys.file, rotation: tokio::sync::Mutex::new(()) };
        if pending {
            vault.rewrap(keys.primary)?;
            vault.store.flush_blocking()?;
            vault.promote_next_key_file()?;
        }
        Ok(vault)
    }

    fn previous(&self) -> Option<Key> {
        self.previous.read().map(|p| p.clone()).unwrap_or_else(|p| p.into_inner().clone())
    }

    /// Opens a wrapped data key with the current master key, else the previous one.
    fn unwrap_dek(&self, master: &Key, record: &DataKeyRecord) -> Result<Zeroizing<Vec<u8>>, SealError> {
        let aad = dek_aad(&record.tenant_id, record.sealed.version);
        match open(master, &record.sealed, &aad) {
            Ok(plain) => Ok(plain),
            Err(e) => match self.previous() {
                Some(previous) => open(&previous, &record.sealed, &aad),
                None => Err(e),
            },
        }
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
    fn data_key(&self, tenant_id: &str) -> Result<Key, SealError> {
        let master = self.master.read().unwrap_or_else(|p| p.into_inner());
        let (key, version) = &*master;
        let slot = TenantKey::of(tenant_id).prefix(Kind::DataKey);
        let stored = match self.store.tenant.get(&slot).map_err(StoreError::from)? {
            Some(bytes) => bytes,
            None => {
                let dek = Key::random();
                let sealed = seal(key, dek.0.as_ref(), &dek_aad(tenant_id, *version), *version);
                let record = DataKeyRecord { tenant_id: tenant_id.into(), sealed };
                // compare_and_swap so two first uses racing agree on one key.
                match self.store.tenant.compare_and_swap(&slot, None as Option<&[u8]>, Some(encode(&record))).map_err(StoreError::from)? {
                    Ok(()) => return Ok(dek),
                    Err(lost) => lost.current.ok_or(SealError::Tampered)?,
                }
            }
        };
        let record: DataKeyRecord = decode("data keys", &stored)?;
        let plain = self.unwrap_dek(key, &record)?;
        let bytes: [u8; 32] = plain.as_slice().try_into().map_err(|_| SealError::Tampered)?;
        Ok(Key(Zeroizing::new(bytes)))
    }

    /// Seals and stores a credential, replacing one of the same name.
    pub async fn put(&self, tenant_id: &str, name: &str, provider: &str, secret: &Secret) -> Result<CredentialMeta, SealError> {
        let dek = self.data_key(tenant_id)?;
        let sealed = seal(&dek, secret.expose().as_bytes(), &credential_aad(tenant_id, name, 1), 1);
        let record = CredentialRecord { name: name.into(), provider: provider.into(), created_millis: crate::clock::unix_millis(), sealed };
        let key = TenantKey::of(tenant_id).record(Kind::Credential, name.as_bytes());
        self.store.tenant.insert(key, encode(&record)).map_err(StoreError::from)?;
        self.store.flush().await?;
        Ok(CredentialMeta { name: record.name, provider: record.provider, created_millis: record.created_millis })
    }

    /// Opens one credential. The plaintext lives only in the returned [`Secret`].
    pub fn open(&self, tenant_id: &str, name: &str) -> Result<(String, Secret), SealError> {
        let key = TenantKey::of(tenant_id).record(Kind::Credential, name.as_bytes());
        let bytes = self.store.tenant.get(key).map_err(StoreError::from)?.ok_or_else(|| SealError::NotFound(name.into()))?;
        let record: CredentialRecord = decode("credentials", &bytes)?;
        let dek = self.data_key(tenant_id)?;
        let plain = open(&dek, &record.sealed, &credential_aad(tenant_id, name, record.sealed.version))?;
        let text = String::from_utf8(plain.to_vec()).map_err(|_| SealError::Tampered)?;
        Ok((record.provider, Secret::new(text)))
    }

    /// Names, providers and creation times of a tenant's credentials.
    pub fn list(&self, tenant_id: &str) -> Result<Vec<CredentialMeta>, SealError> {
        let prefix = TenantKey::of(tenant_id).prefix(Kind::Credential);
        self.store
            .tenant
            .scan_prefix(prefix)
            .values()
            .map(|v| {
                let record: CredentialRecord = decode("credentials", &v.map_err(StoreError::from)?)?;
                Ok(CredentialMeta { name: record.name, provider: record.provider, created_millis: record.created_millis })
            })
            .collect()
    }

    /// Deletes one credential; `false` if there was none.
    pub async fn delete(&self, tenant_id: &str, name: &str) -> Result<bool, SealError> {
        let key = TenantKey::of(tenant_id).record(Kind::Credential, name.as_bytes());
        let existed = self.store.tenant.remove(key).map_err(StoreError::from)?.is_some();
        self.store.flush().await?;
        Ok(existed)
    }

    /// Forgets a tenant's data key: every credential sealed under it becomes unreadable.
    pub async fn shred(&self, tenant_id: &str) -> Result<(), SealError> {
        {
            // Not during a re-wrap, which would write back the key it had read.
            let _master = self.master.read().unwrap_or_else(|p| p.into_inner());
            self.store.tenant.remove(TenantKey::of(tenant_id).prefix(Kind::DataKey)).map_err(StoreError::from)?;
        }
        self.store.flush().await?;
        Ok(())
    }

    /// Re-wraps every tenant data key under `new_master`, online. Returns how many keys
    /// were re-wrapped. Requests keep working throughout: a DEK is readable under the old
    /// key until its re-wrapped copy is written, and under the new one after.
    /// With a key file, the new key is written to `master.key.next` first and renamed over
    /// `master.key` only after every DEK is re-wrapped and flushed, so a crash at any point
    /// leaves a key that opens every DEK (finished on the next start). With
    /// `TOLLGATE_MASTER_KEY`, the operator sets the new key there (and may keep the old one
    /// in `TOLLGATE_MASTER_KEY_PREVIOUS`) before the next restart.
    ///
    /// One rotation runs at a time: a second one meanwhile fails with
    /// [`SealError::RotationInProgress`] (and changes nothing).
    pub async fn rotate(&self, new_master: Key) -> Result<usize, SealError> {
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
    pub fn key_in_file(&self) -> bool {
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
            if key.len() != 17 || key[16] != Kind::DataKey as u8 {
                continue;
            }
            let record: DataKeyRecord = decode("data keys", &value)?;
            let plain = self.unwrap_dek(&old, &record)?;
            let sealed = seal(&new_master, &plain, &dek_aad(&record.tenant_id, new_version), new_version);
            batch.insert(key, encode(&DataKeyRecord { tenant_id: record.tenant_id, sealed }));
            count += 1;
        }
        self.store.tenant.apply_batch(batch).map_err(StoreError::from)?;
        self.store.meta.insert("master-version", &new_version.to_be_bytes()).map_err(StoreError::from)?;
        *current = (new_master, new_version);
        Ok(count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vault() -> Result<(Store, Vault), SealError> {
        let store = Store::temporary()?;
        let vault = Vault::new(store.clone(), Key::random())?;
        Ok((store, vault))
    }

    #[tokio::test]
    async fn ciphertext_moved_to_another_tenant_or_name_fails() -> Result<(), Box<dyn std::error::Error>> {
        let (store, vault) = vault()?;
        vault.put("a", "main", "openai", &Secret::new("sk-canary-a".into())).await?;
        vault.put("b", "main", "openai", &Secret::new("sk-b".into())).await?;
        assert_eq!(vault.open("a", "main")?.1.expose(), "sk-canary-a");
        let a_bytes = store.tenant.get(TenantKey::of("a").record(Kind::Credential, b"main"))?.ok_or("missing")?;
        store.tenant.insert(TenantKey::of("b").record(Kind::Credential, b"main"), a_bytes.clone())?;
        assert!(matches!(vault.open("b", "main"), Err(SealError::Tampered)));
        store.tenant.insert(TenantKey::of("a").record(Kind::Credential, b"other"), a_bytes)?;
        assert!(matches!(vault.open("a", "other"), Err(SealError::Tampered)));
        Ok(())
    }

    #[tokio::test]
    async fn flipped_byte_fails_and_rotation_keeps_secrets() -> Result<(), Box<dyn std::error::Error>> {
        let (store, vault) = vault()?;
        vault.put("a", "main", "openai", &Secret::new("sk-1".into())).await?;
        assert_eq!(vault.rotate(Key::random()).await?, 1);
        assert_eq!(vault.open("a", "main")?.1.expose(), "sk-1");
        let key = TenantKey::of("a").record(Kind::Credential, b"main");
        let mut record: CredentialRecord = decode("t", &store.tenant.get(&key)?.ok_or("missing")?)?;
        record.sealed.ciphertext[0] ^= 1;
        store.tenant.insert(&key, encode(&record))?;
        assert!(matches!(vault.open("a", "main"), Err(SealError::Tampered)));
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
        vault.rewrap(next.clone())?;
        store.flush_blocking()?;
        drop(vault);
        let reopened = Vault::with_keys(store, load_master_keys(None, None, dir.path())?)?;
        assert_eq!(reopened.open("a", "main")?.1.expose(), "sk-1");
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
        assert_eq!(reopened.open("a", "main")?.1.expose(), "sk-2");
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
                assert_eq!(reopened.open(&tenant, "main").map(|(_, s)| s.expose().to_string()).ok(), Some(format!("sk-{tenant}")), "{tenant}");
            }
        }
        Ok(())
    }

    #[tokio::test]
    async fn a_second_rotation_while_one_runs_is_refused() -> Result<(), Box<dyn std::error::Error>> {
        let (_, vault) = vault()?;
        vault.put("a", "main", "openai", &Secret::new("sk-1".into())).await?;
        let running = vault.rotation.try_lock()?;
        assert!(matches!(vault.rotate(Key::random()).await, Err(SealError::RotationInProgress)));
        drop(running);
        assert_eq!(vault.rotate(Key::random()).await?, 1);
        assert_eq!(vault.open("a", "main")?.1.expose(), "sk-1");
        Ok(())
    }

    #[tokio::test]
    async fn shredded_tenant_cannot_open() -> Result<(), Box<dyn std::error::Error>> {
        let (_, vault) = vault()?;
        vault.put("a", "main", "openai", &Secret::new("sk-1".into())).await?;
        vault.shred("a").await?;
        assert!(matches!(vault.open("a", "main"), Err(SealError::Tampered)));
        Ok(())
    }

    #[test]
    fn debug_never_shows_secrets() {
        assert_eq!(format!("{:?} {}", Secret::new("sk-x".into()), Secret::new("sk-x".into())), "[redacted] [redacted]");
        assert_eq!(format!("{:?}", Key::random()), "Key([redacted])");
    }
}
