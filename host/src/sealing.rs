//! Envelope encryption of tenant credentials.
//!
//! A master key (KEK) wraps one random data key (DEK) per tenant; the DEK seals that
//! tenant's credentials with XChaCha20-Poly1305. Associated data binds every ciphertext to
//! its tenant, credential name and key version, so bytes copied to another tenant or name
//! fail to open. Deleting a tenant's DEK makes every sealed byte of it unreadable
//! (crypto-shredding). Rotating the master key re-wraps the DEKs online; credentials are
//! untouched.
//!
//! [`Vault`] is the one interface the gateway uses, over one of two keepers of the sealed
//! bytes: the embedded one (sled, one process; `sealing/embedded.rs`) or the shared one
//! (PostgreSQL, any number of replicas; `postgres/vault.rs`). The cryptography and the
//! record formats are here and shared; only persistence and the locking that keeps data-key
//! creation and rotation apart differ. Neither keeper ever stores plaintext or an unwrapped
//! key.

pub(crate) mod cache;
mod embedded;

use std::path::{Path, PathBuf};

use base64::Engine as _;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::postgres::vault::PgVault;
use crate::postgres::Pool;
use crate::secret::Secret;
use crate::store::{Store, StoreError};
use embedded::Embedded;

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
    /// The shared store was opened without `TOLLGATE_MASTER_KEY`. Every replica must
    /// hold the same master key, so none may generate its own.
    #[error("the shared store needs TOLLGATE_MASTER_KEY: every replica must be given the same master key, so none generates one")]
    MasterKeyRequired,
    /// The master key (and the previous one, if given) does not open the store's data
    /// keys: it is not the key they were wrapped under, or the store's key was rotated to
    /// one this process was not given.
    #[error("master key {fingerprint} does not open the store's data keys; start with the key the store is sealed under (TOLLGATE_MASTER_KEY, and TOLLGATE_MASTER_KEY_PREVIOUS during a rotation)")]
    WrongMasterKey {
        /// The fingerprint of the key given (see [`Key::fingerprint`]), never the key.
        fingerprint: String,
    },
    /// On the shared store, a rotation to a key this replica was not started with: the
    /// other replicas could not open a data key afterwards.
    #[error("on the shared store, rotate to the key every replica was started with: restart them all with the new key {fingerprint} as TOLLGATE_MASTER_KEY and the old one as TOLLGATE_MASTER_KEY_PREVIOUS, then rotate")]
    RotationKeyNotDeployed {
        /// The fingerprint of the key asked for.
        fingerprint: String,
    },
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

    /// Whether both are the same key (in constant time).
    pub(crate) fn same_as(&self, other: &Key) -> bool {
        self.0.as_ref().ct_eq(other.0.as_ref()).into()
    }

    /// A key from 32 opened bytes; anything else is [`SealError::Tampered`].
    fn from_plain(plain: &[u8]) -> Result<Self, SealError> {
        let bytes: [u8; 32] = plain.try_into().map_err(|_| SealError::Tampered)?;
        Ok(Key(Zeroizing::new(bytes)))
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

    /// The keys for the shared store, from `TOLLGATE_MASTER_KEY` (passed in as `primary`)
    /// and optionally `TOLLGATE_MASTER_KEY_PREVIOUS`. Never generates a key: without
    /// `primary` it fails with [`SealError::MasterKeyRequired`], since a replica making up
    /// its own key would wrap data keys no other replica can open.
    pub fn from_env(primary: Option<&str>, previous: Option<&str>) -> Result<Self, SealError> {
        let primary = primary.ok_or(SealError::MasterKeyRequired)?;
        Ok(Self { primary: Key::parse(primary)?, previous: previous.map(Key::parse).transpose()?, file: None })
    }

    /// The keys to try when opening a data key: the primary, then the previous one.
    pub(crate) fn all(&self) -> Vec<&Key> {
        std::iter::once(&self.primary).chain(self.previous.as_ref()).collect()
    }
}

/// Reads the master key from `TOLLGATE_MASTER_KEY` (passed in as `from_env`, with an
/// optional previous key), or from `master.key` in the data dir, generating that file
/// (mode 0600) on first start. A `master.key.next` left by an interrupted rotation becomes
/// the primary, with the old key as fallback; [`Vault::with_keys`] finishes the rotation.
/// For the embedded store only; the shared one takes [`MasterKeys::from_env`].
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
pub(crate) struct Sealed {
    /// The key version bound into the associated data (the master-key version for a data
    /// key, [`CREDENTIAL_VERSION`] for a credential).
    pub(crate) version: u32,
    nonce: Vec<u8>,
    ciphertext: Vec<u8>,
}

/// Length of an XChaCha20-Poly1305 nonce.
const NONCE_BYTES: usize = 24;

impl Sealed {
    /// `nonce || ciphertext`: the form the shared store keeps (the version has a column).
    pub(crate) fn to_bytes(&self) -> Vec<u8> {
        [self.nonce.as_slice(), self.ciphertext.as_slice()].concat()
    }

    /// The inverse of [`Sealed::to_bytes`]. Bytes too short for a nonce fail to open.
    pub(crate) fn from_bytes(version: u32, bytes: &[u8]) -> Self {
        let (nonce, ciphertext) = bytes.split_at(bytes.len().min(NONCE_BYTES));
        Sealed { version, nonce: nonce.to_vec(), ciphertext: ciphertext.to_vec() }
    }
}

fn seal(key: &Key, plaintext: &[u8], aad: &[u8], version: u32) -> Sealed {
    let mut nonce = [0u8; NONCE_BYTES];
    rand::rng().fill_bytes(&mut nonce);
    // Encryption with a valid key and nonce cannot fail; an empty ciphertext would fail to
    // open later rather than silently succeed.
    let ciphertext = key.cipher().encrypt(XNonce::from_slice(&nonce), Payload { msg: plaintext, aad }).unwrap_or_default();
    Sealed { version, nonce: nonce.to_vec(), ciphertext }
}

fn open(key: &Key, sealed: &Sealed, aad: &[u8]) -> Result<Zeroizing<Vec<u8>>, SealError> {
    if sealed.nonce.len() != NONCE_BYTES {
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

fn master_check_aad(version: u32) -> Vec<u8> {
    format!("tollgate/master-check/v1\0{version}").into_bytes()
}

/// The version every credential is sealed at (bound into its associated data).
const CREDENTIAL_VERSION: u32 = 1;

/// Wraps `dek`, the data key of `tenant_id`, under `master` at master-key `version`.
pub(crate) fn wrap_data_key(master: &Key, tenant_id: &str, version: u32, dek: &Key) -> Sealed {
    seal(master, dek.0.as_ref(), &dek_aad(tenant_id, version), version)
}

/// Opens the wrapped data key of `tenant_id` with the first of `masters` that opens it.
pub(crate) fn unwrap_data_key(masters: &[&Key], tenant_id: &str, sealed: &Sealed) -> Result<Key, SealError> {
    let aad = dek_aad(tenant_id, sealed.version);
    let plain = masters.iter().find_map(|master| open(master, sealed, &aad).ok()).ok_or(SealError::Tampered)?;
    Key::from_plain(&plain)
}

/// A value sealed under the store's current master key, so a process can tell at start,
/// before any data key exists, whether it holds that key (the shared store keeps one).
pub(crate) fn seal_master_check(master: &Key, version: u32) -> Sealed {
    seal(master, &[], &master_check_aad(version), version)
}

/// Whether `master` opens the check value.
pub(crate) fn opens_master_check(master: &Key, check: &Sealed) -> bool {
    open(master, check, &master_check_aad(check.version)).is_ok()
}

/// A stored credential: public metadata plus the sealed secret. The embedded store keeps
/// it as this JSON; the shared one as a row.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct CredentialRecord {
    pub(crate) name: String,
    pub(crate) provider: String,
    pub(crate) created_millis: u64,
    pub(crate) sealed: Sealed,
}

/// What may be shown of a credential: never the secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct CredentialMeta {
    /// Name.
    pub name: String,
    /// Provider.
    pub provider: String,
    /// Creation time, milliseconds since the Unix epoch.
    pub created_millis: u64,
}

impl From<&CredentialRecord> for CredentialMeta {
    fn from(record: &CredentialRecord) -> Self {
        CredentialMeta { name: record.name.clone(), provider: record.provider.clone(), created_millis: record.created_millis }
    }
}

/// Longest credential name.
pub const MAX_CREDENTIAL_NAME_BYTES: usize = 64;
/// Largest secret accepted.
pub const MAX_SECRET_BYTES: usize = 8192;

/// Seals, opens, lists and deletes credentials; rotates the master key. Over the embedded
/// store or the shared one; every method means the same on both.
pub struct Vault {
    keeper: Keeper,
}

enum Keeper {
    Embedded(Embedded),
    Shared(PgVault),
}

impl Vault {
    /// A vault over the embedded `store` with the master key `master` (version from the
    /// store). Fails with [`SealError::WrongMasterKey`] when the store holds data keys
    /// `master` does not open.
    pub fn new(store: Store, master: Key) -> Result<Self, SealError> {
        Self::with_keys(store, MasterKeys::single(master))
    }

    /// A vault over the embedded `store` with `keys`; finishes a rotation a crash
    /// interrupted. Fails with [`SealError::WrongMasterKey`] when the store holds data
    /// keys neither key opens.
    pub fn with_keys(store: Store, keys: MasterKeys) -> Result<Self, SealError> {
        Ok(Self { keeper: Keeper::Embedded(Embedded::with_keys(store, keys)?) })
    }

    /// A vault over the shared store (PostgreSQL, migrated), for one of several replicas.
    /// `keys` must come from the environment ([`MasterKeys::from_env`]), never a key file;
    /// else [`SealError::MasterKeyRequired`]. Checks the keys against the store before
    /// returning: [`SealError::WrongMasterKey`] when they do not open its data keys.
    pub async fn shared(pool: Pool, keys: MasterKeys) -> Result<Self, SealError> {
        Ok(Self { keeper: Keeper::Shared(PgVault::open(pool, keys).await?) })
    }

    /// On the shared store, starts serving `open` and `list` from this replica's cache,
    /// kept current by `changes` (a subscription to the change feed taken now): another
    /// replica's put, delete, shred or rotation takes effect here within a second, this
    /// one's at once. Until then, and on the embedded store, every read goes to the store.
    pub fn follow(&self, changes: tokio::sync::broadcast::Receiver<crate::postgres::changes::Change>) {
        if let Keeper::Shared(p) = &self.keeper {
            p.follow(changes);
        }
    }

    /// How many opens and listings this process served from its cache (`sealing/cache.rs`)
    /// and how many it read from the store.
    pub fn cache_counts(&self) -> Option<(u64, u64)> {
        match &self.keeper {
            Keeper::Embedded(e) => Some(e.cache_counts()),
            Keeper::Shared(p) => Some(p.cache_counts()),
        }
    }

    /// The tenant's data key, created on first use.
    async fn data_key(&self, tenant_id: &str) -> Result<Key, SealError> {
        match &self.keeper {
            Keeper::Embedded(e) => e.data_key(tenant_id),
            Keeper::Shared(p) => p.data_key(tenant_id).await,
        }
    }

    /// Seals and stores a credential, replacing one of the same name. Durable (flushed,
    /// or committed) when this returns.
    pub async fn put(&self, tenant_id: &str, name: &str, provider: &str, secret: &Secret) -> Result<CredentialMeta, SealError> {
        let dek = self.data_key(tenant_id).await?;
        let sealed = seal(&dek, secret.expose().as_bytes(), &credential_aad(tenant_id, name, CREDENTIAL_VERSION), CREDENTIAL_VERSION);
        let record = CredentialRecord { name: name.into(), provider: provider.into(), created_millis: crate::clock::unix_millis(), sealed };
        match &self.keeper {
            Keeper::Embedded(e) => e.put(tenant_id, &record).await?,
            Keeper::Shared(p) => p.put(tenant_id, &record).await?,
        }
        Ok(CredentialMeta::from(&record))
    }

    /// Opens one credential, returning its provider and secret. The plaintext lives only
    /// in the returned [`Secret`]. [`SealError::NotFound`] without one of that name;
    /// [`SealError::Tampered`] when it does not open (moved, altered, or its tenant's data
    /// key shredded). Never creates a data key.
    pub async fn open(&self, tenant_id: &str, name: &str) -> Result<(String, Secret), SealError> {
        let (record, dek) = match &self.keeper {
            Keeper::Embedded(e) => e.credential(tenant_id, name)?,
            Keeper::Shared(p) => p.credential(tenant_id, name).await?,
        };
        let dek = dek.ok_or(SealError::Tampered)?;
        let plain = open(&dek, &record.sealed, &credential_aad(tenant_id, name, record.sealed.version))?;
        let text = String::from_utf8(plain.to_vec()).map_err(|_| SealError::Tampered)?;
        Ok((record.provider, Secret::new(text)))
    }

    /// Names, providers and creation times of a tenant's credentials, by name (bytewise).
    pub async fn list(&self, tenant_id: &str) -> Result<Vec<CredentialMeta>, SealError> {
        match &self.keeper {
            Keeper::Embedded(e) => e.list(tenant_id),
            Keeper::Shared(p) => p.list(tenant_id).await,
        }
    }

    /// Deletes one credential; `false` if there was none.
    pub async fn delete(&self, tenant_id: &str, name: &str) -> Result<bool, SealError> {
        match &self.keeper {
            Keeper::Embedded(e) => e.delete(tenant_id, name).await,
            Keeper::Shared(p) => p.delete(tenant_id, name).await,
        }
    }

    /// Forgets a tenant's data key: every credential sealed under it becomes unreadable
    /// (the sealed bytes stay until [`Vault::forget_tenant`] or the embedded store's purge).
    pub async fn shred(&self, tenant_id: &str) -> Result<(), SealError> {
        match &self.keeper {
            Keeper::Embedded(e) => e.shred(tenant_id).await,
            Keeper::Shared(p) => p.shred(tenant_id).await,
        }
    }

    /// Removes what is left of a deleted tenant: embedded, what is cached of it (its
    /// records go with the store's purge of the tenant); shared, its credential rows and
    /// data key.
    pub async fn forget_tenant(&self, tenant_id: &str) -> Result<(), SealError> {
        match &self.keeper {
            Keeper::Embedded(e) => {
                e.forget_tenant(tenant_id);
                Ok(())
            }
            Keeper::Shared(p) => p.forget_tenant(tenant_id).await,
        }
    }

    /// Re-wraps every tenant data key under `new_master`, online, all or nothing. Returns
    /// how many keys were re-wrapped. Requests keep working throughout: a data key is
    /// readable under the old key until its re-wrapped copy is written, and under the new
    /// one after.
    ///
    /// Embedded, with a key file, the new key is written to `master.key.next` first and
    /// renamed over `master.key` only after every data key is re-wrapped and flushed, so a
    /// crash at any point leaves a key that opens every data key (finished on the next
    /// start). With `TOLLGATE_MASTER_KEY`, the operator sets the new key there (and may
    /// keep the old one in `TOLLGATE_MASTER_KEY_PREVIOUS`) before the next restart.
    ///
    /// Shared, the rotation is the middle step of a rollout: every replica is first
    /// restarted with the new key as `TOLLGATE_MASTER_KEY` and the old one as
    /// `TOLLGATE_MASTER_KEY_PREVIOUS`; then one of them rotates to its primary key (any
    /// other is [`SealError::RotationKeyNotDeployed`]); then the old key is dropped.
    ///
    /// One rotation runs at a time (across every replica on the shared store): a second
    /// one meanwhile fails with [`SealError::RotationInProgress`] and changes nothing.
    pub async fn rotate(&self, new_master: Key) -> Result<usize, SealError> {
        match &self.keeper {
            Keeper::Embedded(e) => e.rotate(new_master).await,
            Keeper::Shared(p) => p.rotate(&new_master).await,
        }
    }

    /// Whether the master key lives in the data dir (else the environment).
    pub fn key_in_file(&self) -> bool {
        match &self.keeper {
            Keeper::Embedded(e) => e.key_in_file(),
            Keeper::Shared(_) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_secrets() {
        assert_eq!(format!("{:?} {}", Secret::new("sk-x".into()), Secret::new("sk-x".into())), "[redacted] [redacted]");
        assert_eq!(format!("{:?}", Key::random()), "Key([redacted])");
    }

    #[test]
    fn the_shared_store_never_generates_a_master_key() -> Result<(), SealError> {
        assert!(matches!(MasterKeys::from_env(None, None), Err(SealError::MasterKeyRequired)));
        assert!(matches!(MasterKeys::from_env(None, Some(&"11".repeat(32))), Err(SealError::MasterKeyRequired)));
        let keys = MasterKeys::from_env(Some(&"22".repeat(32)), Some(&"11".repeat(32)))?;
        assert_eq!(keys.all().len(), 2);
        assert!(keys.file.is_none());
        Ok(())
    }

    #[test]
    fn sealed_bytes_round_trip_and_short_bytes_fail_to_open() {
        let key = Key::random();
        let sealed = seal(&key, b"secret", b"aad", 7);
        let again = Sealed::from_bytes(7, &sealed.to_bytes());
        assert_eq!(open(&key, &again, b"aad").map(|p| p.to_vec()).ok(), Some(b"secret".to_vec()));
        assert!(matches!(open(&key, &Sealed::from_bytes(7, &[1, 2, 3]), b"aad"), Err(SealError::Tampered)));
    }
}
