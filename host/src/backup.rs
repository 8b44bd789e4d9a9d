//! Backup and restore of the store, while serving.
//!
//! A backup is every record of every tree, written as length-prefixed frames and closed by
//! a blake3 checksum of everything before it:
//!
//! ```text
//! "TOLLGATE-BACKUP-1\n"
//! frames: [kind: u8][len: u32 BE][bytes]   kind 1 = tree name, 2 = key, 3 = value
//! trailer: [kind 0][len 32][blake3 of all preceding bytes]
//! ```
//!
//! It is taken while serving, and is a snapshot: while it is written, every transaction on
//! per-tenant records waits ([`Store::snapshot`]), so a settlement's spend counters,
//! ledger record and rollups, or a memory write and its quota counter, are in it together
//! or not at all. Requests keep running meanwhile and wait only at those writes, for as
//! long as it takes to write the store to a local file ([`spool`]; about the time to copy
//! the data dir), never on a slow reader. The master key is not included (it is a secret):
//! keep `master.key` (or `TOLLGATE_MASTER_KEY`) separately, or the restored credentials
//! cannot be opened.

use std::io::{Read, Write};
use std::path::Path;

use crate::store::{Store, StoreError};

const MAGIC: &[u8] = b"TOLLGATE-BACKUP-1\n";
const TREE: u8 = 1;
const KEY: u8 = 2;
const VALUE: u8 = 3;
const END: u8 = 0;
/// Largest frame accepted on restore (a sled value is far smaller).
const MAX_FRAME_BYTES: usize = 64 << 20;

/// Backup or restore failed.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// Reading or writing the backup stream failed.
    #[error("backup i/o: {0}")]
    Io(#[from] std::io::Error),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The file is not a complete, intact backup.
    #[error("not a valid backup: {0}")]
    Invalid(&'static str),
    /// Restore refuses to overwrite an existing store.
    #[error("the data dir already holds a store; restore into an empty directory")]
    NotEmpty,
}

/// What a backup or restore moved.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct BackupStats {
    /// Trees.
    pub trees: u64,
    /// Records.
    pub records: u64,
    /// Bytes of the backup stream.
    pub bytes: u64,
}

struct Hashing<W: Write> {
    inner: W,
    hasher: blake3::Hasher,
    bytes: u64,
}

impl<W: Write> Hashing<W> {
    fn frame(&mut self, kind: u8, bytes: &[u8]) -> std::io::Result<()> {
        let len = u32::try_from(bytes.len()).map_err(|_| std::io::Error::other("record too large"))?;
        let mut head = [0u8; 5];
        head[0] = kind;
        head[1..].copy_from_slice(&len.to_be_bytes());
        self.raw(&head)?;
        self.raw(bytes)
    }

    fn raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.hasher.update(bytes);
        self.bytes += bytes.len() as u64;
        self.inner.write_all(bytes)
    }
}

/// Writes a backup of `store` to `out`, holding off transactions on per-tenant records
/// until it is done (so write to something fast: see [`spool`]).
pub fn export(store: &Store, out: impl Write) -> Result<BackupStats, BackupError> {
    let _snapshot = store.snapshot();
    let mut writer = Hashing { inner: out, hasher: blake3::Hasher::new(), bytes: 0 };
    let mut stats = BackupStats::default();
    writer.raw(MAGIC)?;
    for name in store.tree_names() {
        let tree = store.open_tree(&name)?;
        writer.frame(TREE, &name)?;
        stats.trees += 1;
        for item in tree.iter() {
            let (key, value) = item.map_err(StoreError::from)?;
            writer.frame(KEY, &key)?;
            writer.frame(VALUE, &value)?;
            stats.records += 1;
        }
    }
    let checksum = *writer.hasher.finalize().as_bytes();
    let mut head = [0u8; 5];
    head[0] = END;
    head[1..].copy_from_slice(&32u32.to_be_bytes());
    writer.inner.write_all(&head)?;
    writer.inner.write_all(&checksum)?;
    writer.inner.flush()?;
    stats.bytes = writer.bytes + 37;
    Ok(stats)
}

/// Exports a backup into an anonymous file in `dir` (created mode 0600 and unlinked at
/// once, so nothing is left behind), rewound for reading: the snapshot lasts as long as
/// the local write, and the file is then streamed to the client at its own pace.
pub fn spool(store: &Store, dir: &Path) -> Result<(std::fs::File, BackupStats), BackupError> {
    use std::io::Seek;
    let mut suffix = [0u8; 8];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut suffix);
    let path = dir.join(format!(".backup-{}.partial", suffix.iter().map(|b| format!("{b:02x}")).collect::<String>()));
    let mut options = std::fs::OpenOptions::new();
    options.read(true).write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let file = options.open(&path)?;
    let _ = std::fs::remove_file(&path);
    let mut out = std::io::BufWriter::with_capacity(256 << 10, file);
    let stats = export(store, &mut out)?;
    let mut file = out.into_inner().map_err(|e| e.into_error())?;
    file.rewind()?;
    Ok((file, stats))
}

fn read_frame(input: &mut impl Read, hasher: &mut blake3::Hasher) -> Result<(u8, Vec<u8>), BackupError> {
    let mut head = [0u8; 5];
    input.read_exact(&mut head).map_err(|_| BackupError::Invalid("truncated"))?;
    let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
    if len > MAX_FRAME_BYTES {
        return Err(BackupError::Invalid("frame too large"));
    }
    let mut bytes = vec![0u8; len];
    input.read_exact(&mut bytes).map_err(|_| BackupError::Invalid("truncated"))?;
    if head[0] != END {
        hasher.update(&head);
        hasher.update(&bytes);
    }
    Ok((head[0], bytes))
}

/// Restores a backup into a new store in `data_dir` (which must not hold one). The
/// checksum is verified before anything is kept: a damaged backup leaves no store behind.
pub fn restore(data_dir: &Path, mut input: impl Read) -> Result<BackupStats, BackupError> {
    if data_dir.join("db").exists() {
        return Err(BackupError::NotEmpty);
    }
    let mut magic = vec![0u8; MAGIC.len()];
    input.read_exact(&mut magic).map_err(|_| BackupError::Invalid("truncated"))?;
    if magic != MAGIC {
        return Err(BackupError::Invalid("missing the TOLLGATE-BACKUP-1 header"));
    }
    let mut hasher = blake3::Hasher::new();
    hasher.update(MAGIC);
    let staging = data_dir.join("db.restoring");
    let _ = std::fs::remove_dir_all(&staging);
    let db = sled::open(&staging).map_err(StoreError::from)?;
    let mut stats = BackupStats::default();
    let mut tree: Option<sled::Tree> = None;
    let mut pending_key: Option<Vec<u8>> = None;
    let result = loop {
        let (kind, bytes) = match read_frame(&mut input, &mut hasher) {
            Ok(frame) => frame,
            Err(e) => break Err(e),
        };
        match kind {
            TREE => {
                tree = Some(db.open_tree(&bytes).map_err(StoreError::from)?);
                stats.trees += 1;
            }
            KEY => pending_key = Some(bytes),
            VALUE => match (&tree, pending_key.take()) {
                (Some(tree), Some(key)) => {
                    tree.insert(key, bytes).map_err(StoreError::from)?;
                    stats.records += 1;
                }
                _ => break Err(BackupError::Invalid("value without a tree and key")),
            },
            END => {
                break if bytes.as_slice() == hasher.finalize().as_bytes() { Ok(()) } else { Err(BackupError::Invalid("checksum mismatch")) };
            }
            _ => break Err(BackupError::Invalid("unknown frame")),
        }
    };
    match result {
        Ok(()) => {
            db.flush().map_err(StoreError::from)?;
            drop((tree, db));
            wait_until_closed(&staging)?;
            // On disk before it takes the store's place, and the move itself too: sled's
            // flush alone does not survive a power cut (`store/durable.rs`).
            crate::store::sync_files_in(&staging)?;
            std::fs::rename(&staging, data_dir.join("db"))?;
            crate::store::sync_dir(data_dir)?;
            Ok(stats)
        }
        Err(e) => {
            drop((tree, db));
            let _ = std::fs::remove_dir_all(&staging);
            Err(e)
        }
    }
}

/// Waits (up to 5 s) for sled's background threads to let go of a closed database: they
/// hold its file lock a little after the last handle drops, and whoever opens the restored
/// store right after `restore` returns would otherwise be refused the lock.
fn wait_until_closed(dir: &Path) -> Result<(), BackupError> {
    let file = std::fs::File::open(dir.join("db"))?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(file.unlock()?),
            Err(std::fs::TryLockError::WouldBlock) if std::time::Instant::now() < deadline => std::thread::sleep(std::time::Duration::from_millis(5)),
            Err(std::fs::TryLockError::WouldBlock) => return Err(BackupError::Io(std::io::Error::other("the restored database is still open after 5 s"))),
            Err(std::fs::TryLockError::Error(e)) => return Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_damage_detection() -> Result<(), Box<dyn std::error::Error>> {
        let source = tempfile::tempdir()?;
        let store = Store::open(source.path())?;
        store.tenants.insert("t1", b"{\"id\":\"t1\"}".to_vec())?;
        store.tenant.insert(b"k".to_vec(), b"v".to_vec())?;
        let mut bytes = Vec::new();
        let stats = export(&store, &mut bytes)?;
        assert_eq!(stats.bytes, bytes.len() as u64);
        let target = tempfile::tempdir()?;
        assert_eq!(restore(target.path(), bytes.as_slice())?.records, stats.records);
        let restored = Store::open(target.path())?;
        assert_eq!(restored.tenants.get("t1")?.as_deref(), Some(&b"{\"id\":\"t1\"}"[..]));
        assert!(matches!(restore(target.path(), bytes.as_slice()), Err(BackupError::NotEmpty)));
        let mut damaged = bytes.clone();
        let middle = damaged.len() / 2;
        damaged[middle] ^= 0xff;
        let other = tempfile::tempdir()?;
        assert!(restore(other.path(), damaged.as_slice()).is_err());
        assert!(!other.path().join("db").exists(), "a damaged backup leaves no store");
        assert!(matches!(restore(other.path(), &bytes[..bytes.len() - 10]), Err(BackupError::Invalid("truncated"))));
        Ok(())
    }
}
