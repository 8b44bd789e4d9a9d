//! The policy log on PostgreSQL, shared by every replica: each tenant's newest lines, at
//! most the number kept, whichever replica ran the call that wrote them.
//!
//! Lines are written off the request path: every append goes to this replica's writer
//! task, which sends whatever is waiting (up to [`MAX_BATCH`] appends, any tenants) in one
//! call of `tg_log_append`: one round trip, one commit. That function takes each tenant's
//! log lock in tenant order before it inserts and trims, so a tenant's log never holds more
//! than it keeps, and two replicas' batches cannot deadlock.

use deadpool_postgres::Pool;
use tokio::sync::{mpsc, oneshot};

use super::{db, from_db, pool_error, to_db};
use crate::policy::LogLine;
use crate::store::StoreError;

/// Appends waiting for the writer. Past it, appends made without waiting
/// ([`PgPolicyLog::append_detached`]) are dropped with a warning: the log is best effort,
/// and a slow or unreachable database must not grow the gateway's memory without bound.
const QUEUE: usize = 4096;
/// The most appends written in one transaction.
const MAX_BATCH: usize = 256;

struct Job {
    tenant_id: String,
    lines: Vec<LogLine>,
    keep: usize,
    done: Option<oneshot::Sender<Result<(), String>>>,
}

/// The `policy_log` table and this replica's writer. Clones share one writer task, which
/// ends when the last clone is dropped (appends still queued then are written first).
#[derive(Clone)]
pub struct PgPolicyLog {
    pool: Pool,
    queue: mpsc::Sender<Job>,
}

impl PgPolicyLog {
    /// Over a migrated pool, with its writer task. Call from a tokio runtime.
    pub fn start(pool: Pool) -> Self {
        let (queue, jobs) = mpsc::channel(QUEUE);
        tokio::spawn(write_batches(pool.clone(), jobs));
        Self { pool, queue }
    }

    /// Appends lines to a tenant's log, then trims it to its newest `keep`; returns once
    /// they are committed.
    pub async fn append(&self, tenant_id: &str, lines: Vec<LogLine>, keep: usize) -> Result<(), StoreError> {
        let (done, written) = oneshot::channel();
        let job = Job { tenant_id: tenant_id.into(), lines, keep, done: Some(done) };
        let writer_gone = || StoreError::Aborted("the policy log writer has stopped".into());
        self.queue.send(job).await.map_err(|_| writer_gone())?;
        match written.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(StoreError::Aborted(format!("writing the policy log: {e}"))),
            Err(_) => Err(writer_gone()),
        }
    }

    /// Queues lines for the writer without waiting; `false` if they were dropped (the
    /// queue is full or the writer stopped). A failed write is logged by the writer.
    pub fn append_detached(&self, tenant_id: &str, lines: Vec<LogLine>, keep: usize) -> bool {
        self.queue.try_send(Job { tenant_id: tenant_id.into(), lines, keep, done: None }).is_ok()
    }

    /// A tenant's newest `limit` lines, oldest first.
    pub async fn read(&self, tenant_id: &str, limit: usize) -> Result<Vec<LogLine>, StoreError> {
        let client = self.pool.get().await.map_err(pool_error)?;
        let rows = client
            .query("SELECT unix_millis, level, message, request_id FROM policy_log WHERE tenant_id = $1 ORDER BY seq DESC LIMIT $2", &[&tenant_id, &to_db(limit as u64)])
            .await
            .map_err(db("reading the policy log"))?;
        let mut lines: Vec<LogLine> = rows
            .iter()
            .map(|r| LogLine { unix_millis: from_db(r.get(0)), level: r.get(1), message: String::from_utf8_lossy(r.get::<_, &[u8]>(2)).into_owned(), request_id: r.get(3) })
            .collect();
        lines.reverse();
        Ok(lines)
    }

    /// Removes every line of a tenant incarnation (deleted: nothing reads them again).
    pub async fn purge_tenant(&self, tenant_id: &str) -> Result<(), StoreError> {
        let client = self.pool.get().await.map_err(pool_error)?;
        client.execute("DELETE FROM policy_log WHERE tenant_id = $1", &[&tenant_id]).await.map_err(db("purging the policy log"))?;
        Ok(())
    }
}

/// The writer: one transaction per batch of whatever appends are waiting.
async fn write_batches(pool: Pool, mut jobs: mpsc::Receiver<Job>) {
    while let Some(first) = jobs.recv().await {
        let batch = super::take_waiting(first, MAX_BATCH, || jobs.try_recv().ok());
        let result = write(&pool, &batch).await.map_err(|e| e.to_string());
        for job in batch {
            match job.done {
                Some(done) => {
                    let _ = done.send(result.clone());
                }
                None => {
                    if let Err(e) = &result {
                        tracing::warn!(tenant = %job.tenant_id, lines = job.lines.len(), error = %e, "policy log lines not stored");
                    }
                }
            }
        }
    }
}

async fn write(pool: &Pool, batch: &[Job]) -> Result<(), StoreError> {
    let lines = batch.iter().flat_map(|job| job.lines.iter().map(move |line| (job, line)));
    let (mut tenants, mut keeps, mut millis, mut levels, mut messages, mut request_ids) = (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (job, line) in lines {
        tenants.push(job.tenant_id.as_str());
        keeps.push(i32::try_from(job.keep).unwrap_or(i32::MAX));
        millis.push(to_db(line.unix_millis));
        levels.push(line.level.as_str());
        messages.push(line.message.as_bytes());
        request_ids.push(line.request_id.as_str());
    }
    if tenants.is_empty() {
        return Ok(());
    }
    let client = pool.get().await.map_err(pool_error)?;
    let statement = client.prepare_cached("SELECT tg_log_append($1, $2, $3, $4, $5, $6)").await.map_err(db("preparing a policy log append"))?;
    client.execute(&statement, &[&tenants, &keeps, &millis, &levels, &messages, &request_ids]).await.map_err(db("appending to the policy log"))?;
    Ok(())
}
