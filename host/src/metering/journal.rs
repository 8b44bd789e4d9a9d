//! The ledger's journal: the settlements of each batch appended as one frame and made
//! durable with one `fdatasync`, beside (not instead of) the batch's sled transaction.
//!
//! The journal is what lets an answer wait for one sync of a small append instead of a
//! flush of sled's log: the transaction keeps every read (counters, usage, the ledger)
//! exact, and the journal keeps it durable. At start the frames left are applied again
//! (settling is idempotent: a request with a ledger record counts once), and a checkpoint
//! (sled flushed, then the journal emptied) bounds what a restart replays.
//!
//! A frame is `len: u32 LE | blake3(payload) | payload`, the payload the batch's
//! `(reservation, record)` pairs as JSON. A frame cut short or damaged ends the journal:
//! only a crash mid-append leaves one, and that batch was never answered.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use super::{LedgerRecord, Reservation};

/// The settlements of one batch, as journaled.
pub(super) type Batch = Vec<(Reservation, LedgerRecord)>;

/// The journal's file name, in the store's sled directory (a backup or a restore takes
/// the directory whole).
pub(super) const FILE_NAME: &str = "ledger.journal";

/// Bytes the journal may reach before the next checkpoint empties it: at about 500 bytes
/// a settlement, some 30,000 settlements to replay after a crash, a second or two.
pub(super) const CHECKPOINT_BYTES: u64 = 16 << 20;

const HASH_LEN: usize = 32;
const HEADER_LEN: usize = 4 + HASH_LEN;

/// One batch as a frame, ready to append.
pub(super) fn frame(batch: &[(Reservation, LedgerRecord)]) -> Vec<u8> {
    let payload = serde_json::to_vec(batch).unwrap_or_default();
    let mut frame = Vec::with_capacity(HEADER_LEN + payload.len());
    frame.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    frame.extend_from_slice(blake3::hash(&payload).as_bytes());
    frame.extend_from_slice(&payload);
    frame
}

/// The batches of every whole frame at the start of `bytes`, and how many bytes they span.
fn parse(bytes: &[u8]) -> (Vec<Batch>, usize) {
    let mut batches = Vec::new();
    let mut at = 0;
    while bytes.len() - at >= HEADER_LEN {
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap_or_default()) as usize;
        let Some(payload) = bytes.get(at + HEADER_LEN..at + HEADER_LEN + len) else { break };
        if blake3::hash(payload).as_bytes() != &bytes[at + 4..at + HEADER_LEN] {
            break;
        }
        let Ok(batch) = serde_json::from_slice::<Batch>(payload) else { break };
        batches.push(batch);
        at += HEADER_LEN + len;
    }
    (batches, at)
}

/// The journal file, open for appending.
pub(super) struct Journal {
    file: File,
    path: PathBuf,
    len: u64,
}

impl Journal {
    /// Opens (or creates) the journal at `path`, returning the batches it holds. A damaged
    /// tail is logged and left in place until the next checkpoint empties the file.
    pub(super) fn open(path: &Path) -> std::io::Result<(Self, Vec<Batch>)> {
        let mut file = OpenOptions::new().read(true).append(true).create(true).open(path)?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        let (batches, whole) = parse(&bytes);
        if whole < bytes.len() {
            tracing::warn!(journal = %path.display(), ignored_bytes = bytes.len() - whole, "the ledger journal ends in a frame cut short by a crash; it was never acknowledged and is ignored");
        }
        Ok((Self { file, path: path.to_path_buf(), len: bytes.len() as u64 }, batches))
    }

    /// Appends frames and waits until they are on disk. On failure the file is cut back
    /// to where it was, so a half-written frame never hides the frames after it.
    pub(super) fn append(&mut self, frames: &[u8]) -> std::io::Result<()> {
        if let Err(e) = self.file.write_all(frames).and_then(|()| self.file.sync_data()) {
            let _ = self.file.set_len(self.len);
            return Err(e);
        }
        self.len += frames.len() as u64;
        Ok(())
    }

    /// Bytes in the file.
    pub(super) fn len(&self) -> u64 {
        self.len
    }

    /// Empties the journal: only once every batch in it is in a flushed sled store.
    pub(super) fn truncate(&mut self) -> std::io::Result<()> {
        self.file.set_len(0)?;
        self.len = 0;
        self.file.sync_data()
    }

    /// Keeps a copy of the journal as it is (`ledger.journal.kept-<millis>`), for batches a
    /// replay could not apply: an operator can read them before the journal is emptied.
    pub(super) fn keep_copy(&self) -> std::io::Result<PathBuf> {
        let copy = self.path.with_extension(format!("journal.kept-{}", crate::clock::unix_millis()));
        std::fs::copy(&self.path, &copy)?;
        Ok(copy)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(request: &str) -> Batch {
        let reservation = Reservation {
            tenant_id: "t".into(), request_id: request.into(), period_id: "2026-12".into(), microdollars: 10,
            scopes: Vec::new(), unix_millis: 1, end_user: None, tags: Vec::new(),
        };
        let record = LedgerRecord {
            tenant_id: "t".into(), unix_millis: 1, request_id: request.into(), provider: "demo".into(), model: "m".into(),
            prompt_tokens: 1, completion_tokens: 1, cached_tokens: 0, cache_write_tokens: 0, cost_microdollars: 7, latency_ms: 1,
            outcome: "success".into(), end_user: None, tags: Vec::new(), policy_hash: String::new(),
        };
        vec![(reservation, record)]
    }

    #[test]
    fn frames_read_back_in_order_and_a_torn_or_damaged_tail_ends_the_journal() -> std::io::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join(FILE_NAME);
        {
            let (mut journal, batches) = Journal::open(&path)?;
            assert!(batches.is_empty());
            journal.append(&[frame(&batch("a")), frame(&batch("b"))].concat())?;
        }
        let (_, batches) = Journal::open(&path)?;
        assert_eq!(batches, vec![batch("a"), batch("b")]);

        // A third frame cut short, as a crash mid-append leaves it.
        let whole = std::fs::metadata(&path)?.len();
        let third = frame(&batch("c"));
        OpenOptions::new().append(true).open(&path)?.write_all(&third[..third.len() - 3])?;
        let (journal, batches) = Journal::open(&path)?;
        assert_eq!(batches, vec![batch("a"), batch("b")]);
        assert_eq!(journal.len(), whole + third.len() as u64 - 3);

        // A flipped byte in the second frame's payload ends the journal before it.
        let mut bytes = std::fs::read(&path)?;
        let second_payload = frame(&batch("a")).len() + HEADER_LEN + 2;
        bytes[second_payload] ^= 0x20;
        std::fs::write(&path, &bytes)?;
        let (mut journal, batches) = Journal::open(&path)?;
        assert_eq!(batches, vec![batch("a")]);

        journal.truncate()?;
        assert_eq!(std::fs::metadata(&path)?.len(), 0);
        journal.append(&frame(&batch("d")))?;
        assert_eq!(Journal::open(&path)?.1, vec![batch("d")]);
        Ok(())
    }
}
