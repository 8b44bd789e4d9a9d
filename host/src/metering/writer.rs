//! Group settlement in two stages, each on its own thread:
//!
//! 1. the committer writes the settlements of every request waiting in one sled
//!    transaction (the counters in memory follow), then hands the batch on;
//! 2. the syncer makes every batch handed to it durable with one flush, then answers
//!    their requests.
//!
//! A request is answered only after the flush that began after its batch committed, so
//! its ledger record is on disk first. The stages overlap: the next batch commits while
//! the previous one syncs, so a request arriving during a sync waits for one commit and
//! one sync, not for the tail of a whole cycle before its own.
//!
//! sled 0.34 rolls its log buffer twice per transaction and once per flush, and each roll
//! starts an IO job; batching makes that cost per batch instead of per request.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::oneshot;

use super::counters::Counters;
use super::embedded::apply_settlements;
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

/// What the settlement threads have done, for `/metrics`. Each batch's transaction holds
/// sled's process-wide write lock (every other sled read and write waits for it), so its
/// commit time is also how long the store stalls the rest of the gateway.
#[derive(Debug)]
pub struct LedgerStats {
    /// Batches committed.
    pub batches: AtomicU64,
    /// Settlements committed, over all batches.
    pub settlements: AtomicU64,
    /// One batch's transaction.
    pub commit: Histogram,
    /// One disk sync (sled's flush), covering every batch committed before it began.
    pub sync: Histogram,
}

impl Default for LedgerStats {
    fn default() -> Self {
        Self { batches: AtomicU64::new(0), settlements: AtomicU64::new(0), commit: Histogram::with_bounds(STORE_BUCKETS), sync: Histogram::with_bounds(STORE_BUCKETS) }
    }
}

/// Handle to the settlement threads. Dropping it waits for both to finish (every batch
/// committed is synced and answered first), so the store (and its lock file) is released
/// when the last handle goes.
pub(super) struct Writer {
    jobs: Option<mpsc::Sender<Job>>,
    threads: Vec<std::thread::JoinHandle<()>>,
    pub(super) stats: Arc<LedgerStats>,
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.jobs = None;
        // The committer first: its end closes the syncer's queue.
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

impl Writer {
    pub(super) fn start(store: Store, counters: Arc<Counters>) -> std::io::Result<Self> {
        let (jobs, queued) = mpsc::channel::<Job>();
        let (committed, to_sync) = mpsc::channel::<Vec<Answer>>();
        let stats = Arc::new(LedgerStats::default());
        let committer = {
            let (store, stats) = (store.clone(), stats.clone());
            std::thread::Builder::new().name("tollgate-commit".into()).spawn(move || commit_batches(&store, &counters, &stats, &queued, &committed))?
        };
        let syncer = {
            let stats = stats.clone();
            std::thread::Builder::new().name("tollgate-sync".into()).spawn(move || sync_batches(&store, &stats, &to_sync))?
        };
        Ok(Self { jobs: Some(jobs), threads: vec![committer, syncer], stats })
    }

    /// Settles and waits until the ledger record is on disk.
    pub(super) async fn settle(&self, reservation: Reservation, record: LedgerRecord) -> Result<(), String> {
        let (done, answer) = oneshot::channel();
        if self.jobs.as_ref().is_none_or(|jobs| jobs.send(Job { reservation, record, done }).is_err()) {
            return Err("the ledger thread has stopped".into());
        }
        answer.await.unwrap_or_else(|_| Err("the ledger thread has stopped".into()))
    }
}

/// Stage 1: one transaction per batch of waiting settlements. A batch that fails is
/// answered at once; one that commits goes to the syncer.
fn commit_batches(store: &Store, counters: &Counters, stats: &LedgerStats, queued: &mpsc::Receiver<Job>, committed: &mpsc::Sender<Vec<Answer>>) {
    while let Ok(first) = queued.recv() {
        let (settlements, answers): (Vec<_>, Vec<_>) =
            std::iter::once(first).chain(queued.try_iter().take(MAX_BATCH - 1)).map(|job| ((job.reservation, job.record), job.done)).unzip();
        let started = Instant::now();
        let result = apply_settlements(store, counters, &settlements);
        stats.commit.observe(started.elapsed().as_secs_f64());
        stats.batches.fetch_add(1, Ordering::Relaxed);
        stats.settlements.fetch_add(settlements.len() as u64, Ordering::Relaxed);
        match result {
            Ok(()) => {
                if let Err(unsent) = committed.send(answers) {
                    answer_all(unsent.0, &Err("the ledger's sync thread has stopped".into()));
                }
            }
            Err(e) => answer_all(answers, &Err(e.to_string())),
        }
    }
}

/// Stage 2: one flush for every batch committed by the time it begins.
fn sync_batches(store: &Store, stats: &LedgerStats, to_sync: &mpsc::Receiver<Vec<Answer>>) {
    while let Ok(first) = to_sync.recv() {
        let batches: Vec<Vec<Answer>> = std::iter::once(first).chain(to_sync.try_iter()).collect();
        let started = Instant::now();
        let result = store.flush_blocking().map_err(|e| e.to_string());
        if result.is_ok() {
            stats.sync.observe(started.elapsed().as_secs_f64());
        }
        for answers in batches {
            answer_all(answers, &result);
        }
    }
}

fn answer_all(answers: Vec<Answer>, result: &Result<(), String>) {
    for done in answers {
        let _ = done.send(result.clone());
    }
}
