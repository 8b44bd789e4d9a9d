//! The budget authority on PostgreSQL, shared by every replica: the same rule as the
//! embedded [`crate::metering::Metering`] (spent + reserved + this request ≤ limit, checked
//! and held atomically), held in the database instead of one process's memory.
//!
//! - A reserve is one call of `tg_reserve`: one round trip, one commit. The tenant's
//!   counters are locked for that transaction only, so replicas admit against one truth
//!   and the overshoot bound across replicas is zero, as on one node.
//! - Settlements are batched per replica, like the embedded ledger writer: every request
//!   waiting shares one `tg_settle_batch` call (one commit, one disk sync); the answer
//!   waits for that commit.
//! - Each reservation names its owner replica and a lease. A live replica renews the
//!   leases of the reservations it has in flight ([`PgBudgets::renew_leases`]); once one
//!   expires, any replica's sweep ([`PgBudgets::recover_expired`]) charges it at its
//!   reserved amount, exactly once (`crash_recovered`), and a late settlement from the
//!   replica that owned it is a no-op. So a reservation its replica lost track of (the
//!   database failed over with the reserve's answer or the settlement in flight) is charged
//!   like a dead replica's, instead of held for as long as its replica lives.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use deadpool_postgres::Pool;
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot};

use super::{db, from_db, pool_error, to_db};
use crate::metering::{day_of, describe_scope, spend_scopes, Budget, BudgetError, GroupBy, Hold, LedgerRecord, Reservation, Rollup};
use crate::policy::BudgetStatus;
use crate::store::StoreError;

/// The most settlements sent in one statement.
const MAX_BATCH: usize = 256;
/// The most expired reservations one sweep charges (the next sweep takes the rest).
const SWEEP_BATCH: i32 = 1000;

/// How this replica holds reservations.
#[derive(Debug, Clone)]
pub struct ReplicaSettings {
    /// Names the replica as the owner of its reservations (unique per process).
    pub replica_id: String,
    /// How long a reservation outlives its replica's last renewal before another replica
    /// charges it. Renewals run every third of it.
    pub lease: Duration,
}

impl ReplicaSettings {
    /// A fresh random replica id and a 30 s lease.
    pub fn new() -> Self {
        Self { replica_id: format!("replica-{:016x}", rand::random::<u64>()), lease: Duration::from_secs(30) }
    }
}

impl Default for ReplicaSettings {
    fn default() -> Self {
        Self::new()
    }
}

struct Job {
    item: Value,
    /// The reservation's request id, no longer in flight once this job is done.
    request_id: String,
    done: oneshot::Sender<Result<bool, String>>,
}

/// Budgets, reservations and the ledger in PostgreSQL. Clones share one pool, one
/// settlement task and one set of reservations in flight.
#[derive(Clone)]
pub struct PgBudgets {
    pool: Pool,
    settings: ReplicaSettings,
    settlements: mpsc::UnboundedSender<Job>,
    in_flight: InFlight,
}

/// Request ids of the reservations a replica holds and has not settled yet: the leases it
/// renews.
#[derive(Clone, Default)]
struct InFlight(Arc<Mutex<HashSet<String>>>);

impl InFlight {
    /// The set (a poisoned lock only means a panic elsewhere mid-update).
    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl PgBudgets {
    /// The authority over `pool` (migrated), with its settlement task. Call from a tokio
    /// runtime; the task ends when the last clone is dropped.
    pub fn start(pool: Pool, settings: ReplicaSettings) -> Self {
        let (settlements, jobs) = mpsc::unbounded_channel();
        let in_flight = InFlight::default();
        tokio::spawn(settle_batches(pool.clone(), jobs, in_flight.clone()));
        Self { pool, settings, settlements, in_flight }
    }

    /// This replica's settings.
    pub fn settings(&self) -> &ReplicaSettings {
        &self.settings
    }

    /// Holds `hold.microdollars` in every (scope, period) counter if the tenant's budget
    /// and each sub-budget have room in the budget's period; see
    /// [`crate::metering::Metering::reserve_for`], whose semantics this keeps. The
    /// reservation row is committed before this returns.
    pub async fn reserve(&self, hold: Hold<'_>) -> Result<Reservation, BudgetError> {
        let reservation = hold.reservation();
        let Hold { budget, sub_budgets, microdollars, now_millis, caps, .. } = hold;
        let period = budget.map(|b| b.period).unwrap_or_default();
        let scopes: Vec<String> = std::iter::once("total".to_string()).chain(reservation.scopes.iter().cloned()).collect();
        let limits: Vec<Option<i64>> = std::iter::once(budget.map(|b| to_db(b.limit_microdollars))).chain(sub_budgets.iter().map(|(_, limit)| Some(to_db(*limit)))).collect();
        let client = self.pool.get().await.map_err(pool_error)?;
        let statement = client.prepare_cached("SELECT * FROM tg_reserve($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)").await.map_err(db("preparing a reserve"))?;
        let (cap_names, cap_limits): (Vec<String>, Vec<i64>) = caps.into_iter().map(|(name, limit)| (name, i64::from(limit))).unzip();
        let lease_ms = i64::try_from(self.settings.lease.as_millis()).unwrap_or(i64::MAX);
        let row = client
            .query_one(
                &statement,
                &[
                    &reservation.tenant_id,
                    &reservation.request_id,
                    &to_db(now_millis),
                    &reservation.period_id,
                    &reservation.period_ids(),
                    &to_db(microdollars),
                    &scopes,
                    &limits,
                    &reservation.end_user,
                    &reservation.tags,
                    &self.settings.replica_id,
                    &lease_ms,
                    &cap_names,
                    &cap_limits,
                ],
            )
            .await
            .map_err(db("reserving"))?;
        if row.get::<_, bool>("ok") {
            self.in_flight.lock().insert(reservation.request_id.clone());
            return Ok(reservation);
        }
        let refused: String = row.get("refused_scope");
        if let Some(cap) = refused.strip_prefix("cap:") {
            return Err(BudgetError::TooManyInFlight { cap: cap.to_string(), in_flight: from_db(row.get("spent")), limit: from_db(row.get("limit_micro")) });
        }
        Err(BudgetError::Exceeded {
            scope: describe_scope(&refused),
            spent: from_db(row.get("spent")),
            reserved: from_db(row.get("reserved")),
            limit: from_db(row.get("limit_micro")),
            needed: microdollars,
            period: period.as_str(),
        })
    }

    /// Replaces the reservation with the record's cost and writes the ledger record,
    /// batched with this replica's other settlements; returns once committed. `false`:
    /// the reservation was already settled or charged by crash recovery, and nothing
    /// changed.
    pub async fn settle(&self, reservation: &Reservation, record: &LedgerRecord) -> Result<bool, String> {
        let item = json!({
            "tenant_id": reservation.tenant_id,
            "request_id": reservation.request_id,
            "spend_scopes": spend_scopes(record),
            "day": day_of(record.unix_millis),
            "record": record,
        });
        let (done, answer) = oneshot::channel();
        if self.settlements.send(Job { item, request_id: reservation.request_id.clone(), done }).is_err() {
            self.in_flight.lock().remove(&reservation.request_id);
            return Err("the settlement task has stopped".into());
        }
        answer.await.unwrap_or_else(|_| Err("the settlement task has stopped".into()))
    }

    /// Extends the lease of every reservation this replica has in flight. Returns how
    /// many. One it owns but lost track of (a reserve whose answer, or a settlement whose
    /// commit, the database's failure cut off) is left to expire and be swept.
    pub async fn renew_leases(&self) -> Result<u64, StoreError> {
        let request_ids: Vec<String> = self.in_flight.lock().iter().cloned().collect();
        if request_ids.is_empty() {
            return Ok(0);
        }
        let client = self.pool.get().await.map_err(pool_error)?;
        let lease_ms = i64::try_from(self.settings.lease.as_millis()).unwrap_or(i64::MAX);
        // Not `tg_renew_leases`, which renews every reservation of the replica; it stays
        // for replicas of the previous version during a rolling upgrade. A row another
        // transaction holds is being settled or charged: skipping it, instead of waiting in
        // whatever order the rows come, cannot deadlock with a settlement batch (if that
        // settlement rolls back, the next renewal, a third of a lease later, takes it).
        let renewed = client
            .execute(
                "UPDATE reservations SET expires_at = now() + $2::bigint * interval '1 millisecond' \
                 WHERE (tenant_id, request_id) IN (SELECT tenant_id, request_id FROM reservations \
                   WHERE replica_id = $1 AND request_id = ANY($3::text[]) FOR UPDATE SKIP LOCKED)",
                &[&self.settings.replica_id, &lease_ms, &request_ids],
            )
            .await
            .map_err(db("renewing leases"))?;
        Ok(renewed)
    }

    /// Charges reservations whose lease expired at their reserved amount (any replica
    /// may run this at any time; each is charged once). Returns how many it charged.
    pub async fn recover_expired(&self) -> Result<usize, StoreError> {
        let client = self.pool.get().await.map_err(pool_error)?;
        let row = client.query_one("SELECT tg_recover_expired($1)", &[&SWEEP_BATCH]).await.map_err(db("recovering expired reservations"))?;
        Ok(usize::try_from(row.get::<_, i32>(0)).unwrap_or(0))
    }

    /// Renews this replica's leases every third of the lease and sweeps expired ones every
    /// half lease, until the returned guard is dropped.
    pub fn spawn_maintenance(&self) -> MaintenanceGuard {
        let budgets = self.clone();
        let task = tokio::spawn(async move {
            let mut renew = tokio::time::interval(budgets.settings.lease / 3);
            let mut sweep = tokio::time::interval(budgets.settings.lease / 2);
            loop {
                tokio::select! {
                    _ = renew.tick() => if let Err(e) = budgets.renew_leases().await {
                        tracing::error!(error = %e, "renewing this replica's reservation leases failed");
                    },
                    _ = sweep.tick() => match budgets.recover_expired().await {
                        Ok(0) => {}
                        Ok(n) => tracing::warn!(charged = n, "charged reservations whose replica stopped renewing them"),
                        Err(e) => tracing::error!(error = %e, "sweeping expired reservations failed"),
                    },
                }
            }
        });
        MaintenanceGuard(Arc::new(task.abort_handle()))
    }

    /// Budget and spend of the period containing `now_millis`.
    pub async fn status(&self, tenant_id: &str, budget: Option<Budget>, now_millis: u64) -> Result<BudgetStatus, StoreError> {
        let period = budget.map(|b| b.period).unwrap_or_default();
        let period_id = period.id_at(now_millis);
        let client = self.pool.get().await.map_err(pool_error)?;
        let row = client
            .query_opt("SELECT spent, reserved FROM budget_counters WHERE tenant_id = $1 AND scope = 'total' AND period_id = $2", &[&tenant_id, &period_id])
            .await
            .map_err(db("reading a budget"))?;
        let (spent, reserved) = row.map(|r| (from_db(r.get(0)), from_db(r.get(1)))).unwrap_or_default();
        Ok(BudgetStatus { period: period.as_str().into(), limit_microdollars: budget.map(|b| b.limit_microdollars), spent_microdollars: spent, reserved_microdollars: reserved, period_id })
    }

    /// Settled spend of one scope (`user:alice`, `tag:x`) in a period.
    pub async fn scope_spend(&self, tenant_id: &str, scope: &str, period_id: &str) -> Result<u64, StoreError> {
        let client = self.pool.get().await.map_err(pool_error)?;
        let row = client
            .query_opt("SELECT spent FROM budget_counters WHERE tenant_id = $1 AND scope = $2 AND period_id = $3", &[&tenant_id, &scope, &period_id])
            .await
            .map_err(db("reading a scope's spend"))?;
        Ok(row.map(|r| from_db(r.get(0))).unwrap_or(0))
    }

    /// Deletes every budget, reservation, ledger and rollup row of a tenant (it was
    /// deleted), in one transaction.
    pub async fn purge_tenant(&self, tenant_id: &str) -> Result<(), StoreError> {
        let mut client = self.pool.get().await.map_err(pool_error)?;
        let tx = client.transaction().await.map_err(db("starting a purge"))?;
        tx.execute("SELECT tg_lock_tenant($1)", &[&tenant_id]).await.map_err(db("locking a tenant"))?;
        for table in ["reservations", "budget_counters", "ledger", "rollups"] {
            tx.execute(format!("DELETE FROM {table} WHERE tenant_id = $1").as_str(), &[&tenant_id]).await.map_err(db("purging a tenant"))?;
        }
        tx.commit().await.map_err(db("committing a purge"))
    }

    /// Reservations in flight for a tenant (all replicas).
    pub async fn open_reservations(&self, tenant_id: &str) -> Result<u64, StoreError> {
        let client = self.pool.get().await.map_err(pool_error)?;
        let row = client.query_one("SELECT count(*) FROM reservations WHERE tenant_id = $1", &[&tenant_id]).await.map_err(db("counting reservations"))?;
        Ok(from_db(row.get(0)))
    }

    /// Ledger records of a tenant between two times (inclusive start, exclusive end), in
    /// time order.
    pub async fn ledger(&self, tenant_id: &str, from_millis: u64, to_millis: u64, limit: usize) -> Result<Vec<LedgerRecord>, StoreError> {
        let client = self.pool.get().await.map_err(pool_error)?;
        let rows = client
            .query(
                "SELECT public_id, unix_millis, request_id, provider, model, prompt_tokens, completion_tokens, cached_tokens, cache_write_tokens, cost_micro, latency_ms, outcome, end_user, tags, policy_hash \
                 FROM ledger WHERE tenant_id = $1 AND unix_millis >= $2 AND unix_millis < $3 ORDER BY unix_millis, request_id LIMIT $4",
                &[&tenant_id, &to_db(from_millis), &to_db(to_millis), &i64::try_from(limit).unwrap_or(i64::MAX)],
            )
            .await
            .map_err(db("reading the ledger"))?;
        Ok(rows
            .iter()
            .map(|r| LedgerRecord {
                tenant_id: r.get(0),
                unix_millis: from_db(r.get(1)),
                request_id: r.get(2),
                provider: r.get(3),
                model: r.get(4),
                prompt_tokens: from_db(r.get(5)),
                completion_tokens: from_db(r.get(6)),
                cached_tokens: from_db(r.get(7)),
                cache_write_tokens: from_db(r.get(8)),
                cost_microdollars: from_db(r.get(9)),
                latency_ms: from_db(r.get(10)),
                outcome: r.get(11),
                end_user: r.get(12),
                tags: r.get(13),
                policy_hash: r.get(14),
            })
            .collect())
    }

    /// Usage between two UTC days (inclusive) per day and value of `group_by`'s
    /// dimension, as [`crate::metering::Metering::usage_daily`] answers.
    pub async fn usage_daily(&self, tenant_id: &str, first_day: &str, last_day: &str, group_by: GroupBy) -> Result<Vec<(String, String, Rollup)>, StoreError> {
        let client = self.pool.get().await.map_err(pool_error)?;
        let rows = client
            .query(
                "SELECT day, value, sum(requests)::bigint, sum(prompt_tokens)::bigint, sum(completion_tokens)::bigint, sum(cached_tokens)::bigint, sum(cost_micro)::bigint \
                 FROM rollups WHERE tenant_id = $1 AND day >= $2 AND day <= $3 AND dimension = $4 GROUP BY 1, 2 ORDER BY 1, 2",
                &[&tenant_id, &first_day, &last_day, &group_by.dimension()],
            )
            .await
            .map_err(db("reading daily usage"))?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1), rollup_at(r, 2))).collect())
    }

    /// Spend between two UTC days (inclusive) of each of `tenant_ids` that spent
    /// anything, most first, at most `limit`.
    pub async fn top_spenders(&self, tenant_ids: &[String], first_day: &str, last_day: &str, limit: usize) -> Result<Vec<(String, Rollup)>, StoreError> {
        let client = self.pool.get().await.map_err(pool_error)?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = client
            .query(
                "SELECT tenant_id, sum(requests)::bigint, sum(prompt_tokens)::bigint, sum(completion_tokens)::bigint, sum(cached_tokens)::bigint, sum(cost_micro)::bigint \
                 FROM rollups WHERE tenant_id = ANY($1) AND day >= $2 AND day <= $3 AND dimension = 'all' GROUP BY 1 ORDER BY 6 DESC, 1 LIMIT $4",
                &[&tenant_ids, &first_day, &last_day, &limit],
            )
            .await
            .map_err(db("reading top spenders"))?;
        Ok(rows.iter().map(|r| (r.get(0), rollup_at(r, 1))).collect())
    }

    /// Usage between two UTC days (inclusive), grouped, from the daily rollups; rows
    /// sorted by key, as [`crate::metering::Metering::usage`] answers.
    pub async fn usage(&self, tenant_id: &str, first_day: &str, last_day: &str, group_by: GroupBy) -> Result<Vec<(String, Rollup)>, StoreError> {
        let key = if group_by == GroupBy::Day { "day" } else { "value" };
        let sql = format!(
            "SELECT {key}, sum(requests)::bigint, sum(prompt_tokens)::bigint, sum(completion_tokens)::bigint, sum(cached_tokens)::bigint, sum(cost_micro)::bigint \
             FROM rollups WHERE tenant_id = $1 AND day >= $2 AND day <= $3 AND dimension = $4 GROUP BY 1 ORDER BY 1"
        );
        let client = self.pool.get().await.map_err(pool_error)?;
        let rows = client.query(sql.as_str(), &[&tenant_id, &first_day, &last_day, &group_by.dimension()]).await.map_err(db("reading usage"))?;
        Ok(rows
            .iter()
            .map(|r| (r.get(0), rollup_at(r, 1)))
            .collect())
    }
}

/// Stops a replica's lease renewal and sweeping when dropped (a replica shutting down, or
/// a test standing in for one that died).
#[derive(Clone)]
pub struct MaintenanceGuard(Arc<tokio::task::AbortHandle>);

impl Drop for MaintenanceGuard {
    fn drop(&mut self) {
        if Arc::strong_count(&self.0) == 1 {
            self.0.abort();
        }
    }
}

/// The settlement task: takes every settlement waiting (up to [`MAX_BATCH`]) into one
/// `tg_settle_batch` call, then answers each with its own outcome. Settled or failed, a
/// reservation is no longer in flight (here, not in the caller, whose future may be
/// dropped meanwhile): a failed settlement's reservation is charged by a sweep once its
/// lease runs out.
async fn settle_batches(pool: Pool, mut jobs: mpsc::UnboundedReceiver<Job>, in_flight: InFlight) {
    while let Some(first) = jobs.recv().await {
        let batch = super::take_waiting(first, MAX_BATCH, || jobs.try_recv().ok());
        let items = Value::Array(batch.iter().map(|j| j.item.clone()).collect());
        let result = settle_batch(&pool, &items).await.map_err(|e| e.to_string());
        {
            let mut in_flight = in_flight.lock();
            for job in &batch {
                in_flight.remove(&job.request_id);
            }
        }
        for (i, job) in batch.into_iter().enumerate() {
            let outcome = result.as_ref().map(|applied| applied.get(i).copied().unwrap_or(false)).map_err(Clone::clone);
            let _ = job.done.send(outcome);
        }
    }
}

async fn settle_batch(pool: &Pool, items: &Value) -> Result<Vec<bool>, StoreError> {
    let client = pool.get().await.map_err(pool_error)?;
    let statement = client.prepare_cached("SELECT tg_settle_batch($1)").await.map_err(db("preparing a settlement"))?;
    let row = client.query_one(&statement, &[items]).await.map_err(db("settling"))?;
    Ok(row.get(0))
}

/// The five summed rollup columns of a row, starting at column `first`.
fn rollup_at(row: &tokio_postgres::Row, first: usize) -> Rollup {
    Rollup {
        requests: from_db(row.get(first)),
        prompt_tokens: from_db(row.get(first + 1)),
        completion_tokens: from_db(row.get(first + 2)),
        cached_tokens: from_db(row.get(first + 3)),
        cost_microdollars: from_db(row.get(first + 4)),
    }
}
