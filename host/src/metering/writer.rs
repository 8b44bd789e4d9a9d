//! Group settlement: one thread writes the settlements of every request waiting, in one
//! sled transaction, then makes them durable with one flush, then answers them all.
//!
//! sled 0.34 rolls its log buffer twice per transaction and once per flush, and each roll
//! wakes every thread of its IO pool; per request that was most of the gateway's CPU.
//! Batching makes the cost per batch instead of per request.

use std::sync::mpsc;
use std::sync::Arc;

use tokio::sync::oneshot;

use super::counters::Counters;
use crate::metrics::{Histogram, STORE_BUCKETS};
use super::embedded::apply_settlements;
use super::{LedgerRecord, Reservation};
use crate::store::Store;

/// The most settlements written in one transaction.
const MAX_BATCH: usize = 256;

struct Job {
    reservation: Reservation,
    record: LedgerRecord,
    done: oneshot::Sender<Result<(), String>>,
}

/// What the settlement thread has done, for `/metrics`. Each batch's transaction holds
/// sled's process-wide write lock (every other sled read and write waits for it), so its
/// commit time is also how long the store stalls the rest of the gateway.
#[derive(Debug)]
pub struct LedgerStats {
    /// Batches written.
    pub batches: std::sync::atomic::AtomicU64,
    /// Settlements written, over all batches.
    pub settlements: std::sync::atomic::AtomicU64,
    /// One batch's transaction.
    pub commit: Histogram,
    /// One batch's disk sync (sled's flush), after its transaction.
    pub sync: Histogram,
}

impl Default for LedgerStats {
    fn default() -> Self {
        Self { batches: Default::default(), settlements: Default::default(), commit: Histogram::with_bounds(STORE_BUCKETS), sync: Histogram::with_bounds(STORE_BUCKETS) }
    }
}

/// Handle to the settlement thread. Dropping it waits for the thread to finish, so the
/// store (and its lock file) is released when the last handle goes.
pub(super) struct Writer {
    jobs: Option<mpsc::Sender<Job>>,
    thread: Option<std::thread::JoinHandle<()>>,
    pub(super) stats: Arc<LedgerStats>,
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.jobs = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Writer {
    pub(super) fn start(store: Store, counters: Arc<Counters>) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::channel::<Job>();
        let stats = Arc::new(LedgerStats::default());
        let counted = stats.clone();
        let thread = std::thread::Builder::new().name("tollgate-ledger".into()).spawn(move || {
            while let Ok(first) = rx.recv() {
                let (settlements, waiters): (Vec<_>, Vec<_>) =
                    std::iter::once(first).chain(rx.try_iter().take(MAX_BATCH - 1)).map(|job| ((job.reservation, job.record), job.done)).unzip();
                let started = std::time::Instant::now();
                let committed = apply_settlements(&store, &counters, &settlements).map_err(|e| e.to_string());
                let commit_time = started.elapsed();
                counted.commit.observe(commit_time.as_secs_f64());
                let result = committed.and_then(|()| {
                    store.flush_blocking().map_err(|e| e.to_string())?;
                    counted.sync.observe((started.elapsed() - commit_time).as_secs_f64());
                    Ok(())
                });
                counted.batches.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                counted.settlements.fetch_add(settlements.len() as u64, std::sync::atomic::Ordering::Relaxed);
                for done in waiters {
                    let _ = done.send(result.clone());
                }
            }
        })?;
        Ok(Self { jobs: Some(tx), thread: Some(thread), stats })
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
