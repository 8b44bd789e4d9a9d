//! What makes a flush of sled durable. sled 0.34's `Db::flush` writes its log and waits
//! for the writes to reach the device (`sync_file_range`), but on Linux it never calls
//! `fsync`: the device's write cache, the log file's new size and the files sled creates
//! for large values (`blobs/`, a policy's component or its compiled code, which it never
//! syncs at all) could all be lost to a power cut after a flush had returned. Every write
//! Tollgate answers as stored (a tenant, a token, a credential, a policy) and every ledger
//! checkpoint (which then empties the journal) relies on that flush, so each one is
//! followed by the `fsync`s here: new blob files first, then their directory, then the
//! log, then sled's directory.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// sled's directory and which of its blob files have been synced.
pub(super) struct DurableFiles {
    dir: PathBuf,
    /// Each blob file synced (sled names them by the log position they were written at)
    /// and its length then. Blobs are written once, front to back; one a writer was still
    /// filling when it was synced has grown since, and is synced again.
    synced_blobs: Mutex<HashMap<u64, u64>>,
    /// Completed syncs, for `/metrics`.
    syncs: AtomicU64,
}

impl DurableFiles {
    /// The files of the sled database in `dir`.
    pub(super) fn in_dir(dir: PathBuf) -> Self {
        Self { dir, synced_blobs: Mutex::new(HashMap::new()), syncs: AtomicU64::new(0) }
    }

    /// Makes everything sled has written so far durable; call it after `Db::flush`.
    pub(super) fn sync(&self) -> io::Result<()> {
        let mut synced = self.synced_blobs.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let blobs = self.dir.join("blobs");
        let present = blob_files(&blobs)?;
        for (lsn, len, path) in &present {
            if synced.get(lsn) != Some(len) {
                // A blob sled has dropped since the listing is gone: nothing to keep.
                if let Err(e) = File::open(path).and_then(|f| f.sync_all())
                    && e.kind() != io::ErrorKind::NotFound
                {
                    return Err(e);
                }
            }
        }
        // Every blob listed is now synced at its listed length, or gone.
        *synced = present.iter().map(|(lsn, len, _)| (*lsn, *len)).collect();
        if blobs.is_dir() {
            sync_dir(&blobs)?;
        }
        File::open(self.dir.join("db"))?.sync_all()?;
        sync_dir(&self.dir)?;
        self.syncs.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Syncs completed since the store opened.
    pub(super) fn syncs(&self) -> u64 {
        self.syncs.load(Ordering::Relaxed)
    }
}

/// Every blob file in `blobs`: the LSN its name gives, its length and path (none if the
/// directory is not there yet).
fn blob_files(blobs: &Path) -> io::Result<Vec<(u64, u64, PathBuf)>> {
    let entries = match std::fs::read_dir(blobs) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry?;
        let Some(lsn) = entry.file_name().to_str().and_then(|name| name.parse::<u64>().ok()) else { continue };
        match entry.metadata() {
            Ok(meta) => files.push((lsn, meta.len(), entry.path())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(files)
}

/// Syncs a directory's entries (the files created or renamed in it).
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_blob_is_synced_until_it_stops_growing_and_forgotten_once_gone() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        std::fs::create_dir(dir.path().join("blobs"))?;
        std::fs::write(dir.path().join("db"), b"log")?;
        std::fs::write(dir.path().join("blobs/17"), b"big value")?;
        std::fs::write(dir.path().join("blobs/not-a-blob"), b"")?;
        let files = DurableFiles::in_dir(dir.path().to_path_buf());
        let synced = |files: &DurableFiles| {
            let mut blobs: Vec<(u64, u64)> = files.synced_blobs.lock().unwrap().iter().map(|(l, n)| (*l, *n)).collect();
            blobs.sort();
            blobs
        };
        files.sync()?;
        assert_eq!((files.syncs(), synced(&files)), (1, vec![(17, 9)]));

        // A blob still being written when it was synced is synced again once longer.
        std::fs::write(dir.path().join("blobs/40"), b"an")?;
        files.sync()?;
        std::fs::write(dir.path().join("blobs/40"), b"another")?;
        std::fs::remove_file(dir.path().join("blobs/17"))?;
        files.sync()?;
        assert_eq!((files.syncs(), synced(&files)), (3, vec![(40, 7)]));
        Ok(())
    }

    #[test]
    fn a_missing_log_file_is_an_error_not_a_silent_success() {
        let dir = tempfile::tempdir().expect("dir");
        let files = DurableFiles::in_dir(dir.path().to_path_buf());
        assert!(files.sync().is_err());
        assert_eq!(files.syncs(), 0);
    }
}
