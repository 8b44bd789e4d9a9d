//! Group settlement in two stages, each on its own thread:
//!
//! 1. the committer takes every settlement waiting, hands the batch's journal frame to
//!    the syncer, then writes the batch in one sled transaction (the counters in memory
//!    follow) and tells the syncer how that went;
//! 2. the syncer appends every frame handed to it with one `fdatasync` (`journal.rs`),
//!    then answers each batch whose transaction has committed.
//!
//! A request is answered once its batch is both committed (every read sees it) and in
//! the synced journal (a crash cannot lose it), and the two happen at once: the
//! transaction runs while the frame syncs. sled is no longer flushed per batch, only at
//! a checkpoint, when the journal has grown past [`journal::CHECKPOINT_BYTES`] or a
//! tenant's deletion asks for one (the journal must not bring its records back).
//!
//! sled 0.34 rolls its log buffer twice per transaction and each roll starts an IO job;
//! batching makes that cost per batch instead of per request.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::oneshot;

use super::counters::Counters;
use super::embedded::apply_settlements;
use super::journal::{self, Journal};
use super::{LedgerRecord, Reservation};
use crate::metrics::{Histogram, STORE_BUCKETS};
use crate::store::Store;

/// The most settlements written in one transaction.
const MAX_BATCH: usize = 256;

type Answer = oneshot::Sender<Result<(), String>>;

struct Job {
    reservation: Reservation,
    record: LedgerRecord,
    done: Answer,
}

/// What the syncer is told, in order: a batch's frame always before its outcome.
enum ToSync {
    /// A batch's journal payload, sent before its transaction runs.
    Frame(Vec<u8>),
    /// How the batch's transaction went, and who waits for it.
    Committed { answers: Vec<Answer>, result: Result<(), String> },
    /// A checkpoint asked for: sled flushed and the journal emptied, then answered.
    Checkpoint(Answer),
}

/// What the settlement threads have done, for `/metrics`. Each batch's transaction holds
/// sled's process-wide write lock (every other sled read and write waits for it), so its
/// commit time is also how long the store stalls the rest of the gateway.
#[derive(Debug)]
pub struct LedgerStats {
    /// Batches committed.
    pub batches: AtomicU64,
    /// Settlements committed, over all batches.
    pub settlements: AtomicU64,
    /// Checkpoints: sled flushed and the journal emptied.
    pub checkpoints: AtomicU64,
    /// One batch's transaction.
    pub commit: Histogram,
    /// One journal append and its `fdatasync`, covering every frame handed over before it began.
    pub sync: Histogram,
}

impl Default for LedgerStats {
    fn default() -> Self {
        Self {
            batches: AtomicU64::new(0),
            settlements: AtomicU64::new(0),
            checkpoints: AtomicU64::new(0),
            commit: Histogram::with_bounds(STORE_BUCKETS),
            sync: Histogram::with_bounds(STORE_BUCKETS),
        }
    }
}

/// Handle to the settlement threads. Dropping it waits for both to finish (every batch
/// committed is synced and answered, then a last checkpoint), so the store (and its lock
/// file) is released when the last handle goes.
pub(super) struct Writer {
    jobs: Option<mpsc::Sender<Job>>,
    control: Option<mpsc::Sender<ToSync>>,
    threads: Vec<std::thread::JoinHandle<()>>,
    pub(super) stats: Arc<LedgerStats>,
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.jobs = None;
        self.control = None;
        // The committer first: its end closes the syncer's queue.
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

impl Writer {
    /// Starts the threads over `store`, appending to `journal`: `None` for a temporary
    /// store, or one whose journal another authority holds (tests open several over one
    /// store), where each sync is a flush of sled instead.
    pub(super) fn start(store: Store, counters: Arc<Counters>, journal: Option<Journal>) -> std::io::Result<Self> {
        let (jobs, queued) = mpsc::channel::<Job>();
        let (to_sync, inbox) = mpsc::channel::<ToSync>();
        let stats = Arc::new(LedgerStats::default());
        let journaled = journal.is_some();
        let committer = {
            let (store, stats, to_sync) = (store.clone(), stats.clone(), to_sync.clone());
            std::thread::Builder::new().name("tollgate-commit".into()).spawn(move || commit_batches(&store, &counters, &stats, journaled, &queued, &to_sync))?
        };
        let syncer = {
            let stats = stats.clone();
            std::thread::Builder::new().name("tollgate-sync".into()).spawn(move || Syncer { store, journal, stats, inbox, flush_owed: false }.run())?
        };
        Ok(Self { jobs: Some(jobs), control: Some(to_sync), threads: vec![committer, syncer], stats })
    }

    /// Settles and waits until the ledger record is committed and durable.
    pub(super) async fn settle(&self, reservation: Reservation, record: LedgerRecord) -> Result<(), String> {
        let (done, answer) = oneshot::channel();
        if self.jobs.as_ref().is_none_or(|jobs| jobs.send(Job { reservation, record, done }).is_err()) {
            return Err(STOPPED.into());
        }
        answer.await.unwrap_or_else(|_| Err(STOPPED.into()))
    }

    /// Flushes sled and empties the journal, once every batch already handed over has
    /// committed: afterwards nothing settled so far can be replayed.
    pub(super) async fn checkpoint(&self) -> Result<(), String> {
        let (done, answer) = oneshot::channel();
        if self.control.as_ref().is_none_or(|control| control.send(ToSync::Checkpoint(done)).is_err()) {
            return Err(STOPPED.into());
        }
        answer.await.unwrap_or_else(|_| Err(STOPPED.into()))
    }
}

const STOPPED: &str = "the ledger thread has stopped";
const SYNCER_STOPPED: &str = "the ledger's sync thread has stopped";

/// Stage 1: hands each batch's frame to the syncer, then writes the batch in one
/// transaction while the frame syncs.
fn commit_batches(store: &Store, counters: &Counters, stats: &LedgerStats, journaled: bool, queued: &mpsc::Receiver<Job>, to_sync: &mpsc::Sender<ToSync>) {
    while let Ok(first) = queued.recv() {
        let (settlements, answers): (Vec<_>, Vec<_>) =
            std::iter::once(first).chain(queued.try_iter().take(MAX_BATCH - 1)).map(|job| ((job.reservation, job.record), job.done)).unzip();
        if journaled && to_sync.send(ToSync::Frame(journal::payload(&settlements))).is_err() {
            answer_all(answers, &Err(SYNCER_STOPPED.into()));
            continue;
        }
        let started = Instant::now();
        let result = apply_settlements(store, counters, &settlements).map_err(|e| e.to_string());
        stats.commit.observe(started.elapsed().as_secs_f64());
        stats.batches.fetch_add(1, Ordering::Relaxed);
        stats.settlements.fetch_add(settlements.len() as u64, Ordering::Relaxed);
        if let Err(ToSync::Committed { answers, .. }) = to_sync.send(ToSync::Committed { answers, result }).map_err(|unsent| unsent.0) {
            answer_all(answers, &Err(SYNCER_STOPPED.into()));
        }
    }
}

/// Stage 2: one journal append and sync for every frame handed over by the time it
/// begins, then the answers of every batch committed by then.
struct Syncer {
    store: Store,
    journal: Option<Journal>,
    stats: Arc<LedgerStats>,
    inbox: mpsc::Receiver<ToSync>,
    /// A journal append failed: its batches are durable only once a flush of sled
    /// follows their commits.
    flush_owed: bool,
}

impl Syncer {
    fn run(mut self) {
        // Frames handed over (each in the journal once synced) and outcomes received:
        // equal exactly when every frame in the journal belongs to a committed batch.
        let (mut framed, mut settled) = (0u64, 0u64);
        let mut frames = Vec::new();
        let mut committed: Vec<Vec<Answer>> = Vec::new();
        let mut checkpoints: Vec<Answer> = Vec::new();
        // A batch whose transaction failed was answered with the error: its frame must not
        // be replayed, so the next checkpoint drops it.
        let mut failed = false;
        while let Ok(first) = self.inbox.recv() {
            for message in std::iter::once(first).chain(self.inbox.try_iter()) {
                match message {
                    ToSync::Frame(payload) => {
                        if let Some(journal) = &self.journal {
                            journal.frame(&payload, &mut frames);
                        }
                        framed += 1;
                    }
                    ToSync::Committed { answers, result } => {
                        settled += 1;
                        match result {
                            Ok(()) => committed.push(answers),
                            Err(e) => {
                                failed = true;
                                answer_all(answers, &Err(e));
                            }
                        }
                    }
                    ToSync::Checkpoint(done) => checkpoints.push(done),
                }
            }
            // Every outcome received had its frame received first, so after this sync each
            // committed batch is durable.
            let synced = self.sync(&frames, !committed.is_empty(), framed == settled);
            frames.clear();
            for answers in committed.drain(..) {
                answer_all(answers, &synced);
            }
            let due = failed || !checkpoints.is_empty() || self.journal.as_ref().is_some_and(|j| j.len() >= journal::CHECKPOINT_BYTES);
            // Without a journal no frames are counted, and a checkpoint is a flush alone.
            if due && (framed == settled || self.journal.is_none()) {
                let result = self.checkpoint();
                failed &= result.is_err();
                answer_all(std::mem::take(&mut checkpoints), &result);
            }
        }
        // Both senders are gone: every batch is committed and answered.
        if let Err(e) = self.checkpoint() {
            tracing::error!(error = %e, "the ledger's last checkpoint failed; the journal is replayed at the next start");
        }
        if self.journal.is_some() {
            self.store.release_journal();
        }
    }

    /// Makes the batches committed so far durable: appends `frames` and waits for the
    /// disk. Without a journal (a second authority over one store) a flush of sled does
    /// it instead, and so it does after the journal could not be written: that flush
    /// must come after the batches whose frames were lost have committed, so it is owed
    /// until every batch handed over has (`all_committed`).
    fn sync(&mut self, frames: &[u8], any_committed: bool, all_committed: bool) -> Result<(), String> {
        let started = Instant::now();
        let mut synced = false;
        if let Some(journal) = self.journal.as_mut().filter(|_| !frames.is_empty()) {
            match journal.append(frames) {
                Ok(()) => synced = true,
                Err(e) => {
                    tracing::error!(error = %e, "appending to the ledger journal failed; flushing the store instead");
                    self.flush_owed = true;
                }
            }
        }
        if any_committed && (self.journal.is_none() || self.flush_owed) {
            self.store.flush_blocking().map_err(|e| e.to_string())?;
            self.flush_owed &= !all_committed;
            synced = true;
        }
        if synced {
            self.stats.sync.observe(started.elapsed().as_secs_f64());
        }
        Ok(())
    }

    /// Flushes sled, then empties the journal: every frame in it is committed (the caller
    /// checks), so the flushed store holds all of it.
    fn checkpoint(&mut self) -> Result<(), String> {
        self.store.flush_blocking().map_err(|e| e.to_string())?;
        if let Some(journal) = self.journal.as_mut() {
            journal.restart().map_err(|e| format!("restarting the ledger journal: {e}"))?;
        }
        self.stats.checkpoints.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

fn answer_all(answers: Vec<Answer>, result: &Result<(), String>) {
    for done in answers {
        let _ = done.send(result.clone());
    }
}
