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

/// Handle to the settlement thread. Dropping it waits for the thread to finish, so the
/// store (and its lock file) is released when the last handle goes.
pub(super) struct Writer {
    jobs: Option<mpsc::Sender<Job>>,
    thread: Option<std::thread::JoinHandle<()>>,
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
        let thread = std::thread::Builder::new().name("tollgate-ledger".into()).spawn(move || {
            while let Ok(first) = rx.recv() {
                let (settlements, waiters): (Vec<_>, Vec<_>) =
                    std::iter::once(first).chain(rx.try_iter().take(MAX_BATCH - 1)).map(|job| ((job.reservation, job.record), job.done)).unzip();
                let result = apply_settlements(&store, &counters, &settlements)
                    .map_err(|e| e.to_string())
                    .and_then(|()| store.flush_blocking().map_err(|e| e.to_string()));
                for done in waiters {
                    let _ = done.send(result.clone());
                }
            }
        })?;
        Ok(Self { jobs: Some(tx), thread: Some(thread) })
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
