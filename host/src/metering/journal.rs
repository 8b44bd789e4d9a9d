//! The ledger's journal: the settlements of each batch appended as one frame and made
//! durable with one `fdatasync`, beside (not instead of) the batch's sled transaction.
//!
//! The journal is what lets an answer wait for one sync of a small append instead of a
//! flush of sled's log: the transaction keeps every read (counters, usage, the ledger)
//! exact, and the journal keeps it durable. At start the frames left are applied again
//! (settling is idempotent: a request with a ledger record counts once), and a checkpoint
//! (sled flushed, then the journal emptied) bounds what a restart replays.
//!
//! The file starts with a header, `TGLEDGR1 | generation: u64 LE`, then frames of
//! `len: u32 LE | blake3(generation LE ‖ payload) | payload`, the payload the batch's
//! `(reservation, record)` pairs as JSON. The file is written ahead in zeros and the frames
//! overwrite them, so each sync is of data alone: an append that grew the file would
//! also sync its size, an ext4 journal commit each time. A checkpoint starts the next
//! generation in the header instead of cutting the file, and the frames of the last one
//! left behind no longer hash. The first frame that is cut short, damaged, or of another
//! generation ends the journal: only a crash mid-append leaves one, and that batch was
//! never answered.

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::{LedgerRecord, Reservation};

/// The settlements of one batch, as journaled.
pub(super) type Batch = Vec<(Reservation, LedgerRecord)>;

/// The journal's file name, in the store's sled directory (a backup or a restore takes
/// the directory whole).
pub(super) const FILE_NAME: &str = "ledger.journal";

/// Bytes of frames the journal may hold before the next checkpoint starts it again: at
/// about 500 bytes a settlement, some 30,000 settlements to replay after a crash, a
/// second or two.
pub(super) const CHECKPOINT_BYTES: u64 = 16 << 20;

/// The file's size as written at creation, and the least it grows by: a data dir that
/// settles little keeps a small file, a busy one grows it a few times up to a
/// checkpoint's worth and then only overwrites.
const GROW_BYTES: u64 = 1 << 20;

const MAGIC: &[u8; 8] = b"TGLEDGR1";
const FILE_HEADER_LEN: u64 = 16;
const HASH_LEN: usize = 32;
const FRAME_HEADER_LEN: usize = 4 + HASH_LEN;

/// A batch's payload, encoded on the committer's thread; [`Journal::frame`] frames it.
pub(super) fn payload(batch: &[(Reservation, LedgerRecord)]) -> Vec<u8> {
    crate::store::encode(&batch)
}

fn frame_hash(generation: u64, payload: &[u8]) -> blake3::Hash {
    let mut hasher = blake3::Hasher::new();
    hasher.update(&generation.to_le_bytes());
    hasher.update(payload);
    hasher.finalize()
}

/// The batches of every whole frame of `generation` at the start of `bytes`, and how many
/// bytes they span.
fn parse(bytes: &[u8], generation: u64) -> (Vec<Batch>, usize) {
    let mut batches = Vec::new();
    let mut at = 0;
    while bytes.len() - at >= FRAME_HEADER_LEN {
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap_or_default()) as usize;
        let Some(payload) = bytes.get(at + FRAME_HEADER_LEN..at + FRAME_HEADER_LEN + len) else { break };
        if frame_hash(generation, payload).as_bytes() != &bytes[at + 4..at + FRAME_HEADER_LEN] {
            break;
        }
        let Ok(batch) = serde_json::from_slice::<Batch>(payload) else { break };
        batches.push(batch);
        at += FRAME_HEADER_LEN + len;
    }
    (batches, at)
}

/// The journal file, open for writing at the end of its frames.
pub(super) struct Journal {
    file: File,
    path: PathBuf,
    generation: u64,
    /// Where the next frame goes: the header and every frame of this generation.
    end: u64,
    /// The file's size, zeros past the frames.
    size: u64,
}

impl Journal {
    /// Opens the journal at `path`, creating it (`GROW_BYTES` of zeros after the header)
    /// if it is new, and returns the batches it holds.
    pub(super) fn open(path: &Path) -> std::io::Result<(Self, Vec<Batch>)> {
        let mut file = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(path)?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        if bytes.is_empty() {
            let mut journal = Self { file, path: path.to_path_buf(), generation: 0, end: FILE_HEADER_LEN, size: 0 };
            journal.grow(GROW_BYTES)?;
            journal.restart()?;
            // The new file's name, so a power cut cannot take the file with its frames.
            if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
                crate::store::sync_dir(dir)?;
            }
            return Ok((journal, Vec::new()));
        }
        let header = bytes.get(..FILE_HEADER_LEN as usize).filter(|h| h.starts_with(MAGIC));
        let Some(generation) = header.map(|h| u64::from_le_bytes(h[8..16].try_into().unwrap_or_default())) else {
            return Err(std::io::Error::other(format!("{} is not a Tollgate ledger journal (its header is not {MAGIC:?}); move it aside", path.display())));
        };
        let (batches, span) = parse(&bytes[FILE_HEADER_LEN as usize..], generation);
        Ok((Self { file, path: path.to_path_buf(), generation, end: FILE_HEADER_LEN + span as u64, size: bytes.len() as u64 }, batches))
    }

    /// Frames a batch's payload for this generation, onto the end of `frames`.
    pub(super) fn frame(&self, payload: &[u8], frames: &mut Vec<u8>) {
        frames.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        frames.extend_from_slice(frame_hash(self.generation, payload).as_bytes());
        frames.extend_from_slice(payload);
    }

    /// Writes frames after the last and waits until they are on disk. A write that fails
    /// leaves the end where it was, so the next one overwrites whatever part landed.
    pub(super) fn append(&mut self, frames: &[u8]) -> std::io::Result<()> {
        let needed = self.end + frames.len() as u64;
        if needed > self.size {
            self.grow((needed - self.size).max(self.size).max(GROW_BYTES))?;
        }
        self.file.write_all_at(frames, self.end)?;
        self.file.sync_data()?;
        self.end += frames.len() as u64;
        Ok(())
    }

    /// Adds `bytes` of zeros at the end of the file and syncs its new size, so the writes
    /// that land there later sync data alone.
    fn grow(&mut self, bytes: u64) -> std::io::Result<()> {
        self.file.write_all_at(&vec![0; bytes as usize], self.size)?;
        self.file.sync_all()?;
        self.size += bytes;
        Ok(())
    }

    /// Bytes of frames held.
    pub(super) fn len(&self) -> u64 {
        self.end - FILE_HEADER_LEN
    }

    /// Starts the next generation: every frame written so far stops counting. Only once
    /// every batch in it is in a flushed sled store.
    pub(super) fn restart(&mut self) -> std::io::Result<()> {
        let generation = self.generation + 1;
        let mut header = MAGIC.to_vec();
        header.extend_from_slice(&generation.to_le_bytes());
        self.file.write_all_at(&header, 0)?;
        self.file.sync_data()?;
        self.generation = generation;
        self.end = FILE_HEADER_LEN;
        Ok(())
    }

    /// Keeps a copy of the journal as it is (`ledger.journal.kept-<millis>`), for batches a
    /// replay could not apply: an operator can read them before the journal restarts.
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

    fn frames(journal: &Journal, batches: &[Batch]) -> Vec<u8> {
        let mut frames = Vec::new();
        for b in batches {
            journal.frame(&payload(b), &mut frames);
        }
        frames
    }

    #[test]
    fn frames_read_back_in_order_and_a_torn_damaged_or_older_frame_ends_the_journal() -> std::io::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join(FILE_NAME);
        {
            let (mut journal, batches) = Journal::open(&path)?;
            assert!(batches.is_empty());
            assert_eq!(std::fs::metadata(&path)?.len(), GROW_BYTES, "written ahead, in zeros");
            let both = frames(&journal, &[batch("a"), batch("b")]);
            journal.append(&both)?;
        }
        let (journal, batches) = Journal::open(&path)?;
        assert_eq!(batches, vec![batch("a"), batch("b")]);
        let first_len = frames(&journal, &[batch("a")]).len();

        // A third frame cut short, as a crash mid-write leaves it.
        let third = frames(&journal, &[batch("c")]);
        journal.file.write_all_at(&third[..third.len() - 3], journal.end)?;
        let (journal, batches) = Journal::open(&path)?;
        assert_eq!(batches, vec![batch("a"), batch("b")]);

        // A flipped byte in the second frame's payload ends the journal before it.
        journal.file.write_all_at(b"X", FILE_HEADER_LEN + (first_len + FRAME_HEADER_LEN + 2) as u64)?;
        let (mut journal, batches) = Journal::open(&path)?;
        assert_eq!(batches, vec![batch("a")]);

        // A restart leaves the old frames in place, but they no longer count.
        journal.restart()?;
        assert!(Journal::open(&path)?.1.is_empty());
        assert_eq!(std::fs::metadata(&path)?.len(), GROW_BYTES);
        let next = frames(&journal, &[batch("d")]);
        journal.append(&next)?;
        assert_eq!(Journal::open(&path)?.1, vec![batch("d")]);

        // Frames past the end grow the file ahead of them.
        let big: Batch = std::iter::repeat_n(batch("e"), 4000).flatten().collect();
        let big_frame = frames(&journal, std::slice::from_ref(&big));
        assert!(big_frame.len() as u64 > GROW_BYTES);
        journal.append(&big_frame)?;
        assert!(std::fs::metadata(&path)?.len() >= journal.end);
        assert_eq!(Journal::open(&path)?.1, vec![batch("d"), big]);

        std::fs::write(&path, b"something else")?;
        assert!(Journal::open(&path).is_err(), "a file that is not a journal is refused, not overwritten");
        Ok(())
    }
}
