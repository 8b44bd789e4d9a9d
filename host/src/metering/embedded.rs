//! The budget authority embedded in one process: counters in memory (`counters.rs`) over
//! sled, a reservation record per request, settlements batched into one sled transaction
//! and one journal sync (`writer.rs`, `journal.rs`). The key layout of spend counters,
//! reservations, the ledger and rollups is here.

use std::sync::Arc;

use sled::transaction::{ConflictableTransactionError, TransactionError, TransactionalTree};

use super::counters::Counters;
use super::journal::{self, Journal};
use super::writer::Writer;
use super::{day_of, describe_scope, spend_scopes, Budget, BudgetError, GroupBy, Hold, LedgerRecord, Reservation, Rollup};
use crate::policy::BudgetStatus;
use crate::store::{decode, encode, Kind, Store, StoreError, TenantKey};

fn rollup_key(tenant: &TenantKey, day: &str, dimension: &str, value: &str) -> Vec<u8> {
    tenant.record(Kind::Rollup, format!("{day}\0{dimension}\0{value}").as_bytes())
}


/// The rollup cells one ledger record adds to, and what it adds.
fn rollup_cells(record: &LedgerRecord) -> (Vec<(&'static str, String)>, Rollup) {
    let mut cells = vec![("all", String::new()), ("model", format!("{}/{}", record.provider, record.model)), ("provider", record.provider.clone())];
    if let Some(user) = &record.end_user {
        cells.push(("user", user.clone()));
    }
    cells.extend(record.tags.iter().map(|t| ("tag", t.clone())));
    let delta = Rollup {
        requests: 1,
        prompt_tokens: record.prompt_tokens,
        completion_tokens: record.completion_tokens,
        cached_tokens: record.cached_tokens,
        cost_microdollars: record.cost_microdollars,
    };
    (cells, delta)
}

/// The rollup cells a group of ledger records adds to, summed per cell, so a batch of
/// settlements reads and writes each cell once however many of its requests share it.
#[derive(Default)]
struct RollupDeltas {
    cells: std::collections::BTreeMap<Vec<u8>, (TenantKey, u64, Rollup)>,
}

impl RollupDeltas {
    fn add(&mut self, tenant: &TenantKey, record: &LedgerRecord) {
        let day = day_of(record.unix_millis);
        let (cells, delta) = rollup_cells(record);
        for (dimension, value) in cells {
            let key = rollup_key(tenant, &day, dimension, &value);
            self.cells.entry(key).or_insert_with(|| (*tenant, record.unix_millis, Rollup::default())).2.add(&delta);
        }
    }

    /// Adds every cell's sum to its stored rollup. Returns the (tenant, time) of each
    /// rollup that did not decode: it is left alone and the caller rebuilds that day from
    /// the ledger (never restarted at zero).
    fn write(&self, tx: &TransactionalTree) -> TxResult<Vec<(TenantKey, u64)>> {
        let mut broken = Vec::new();
        for (key, (tenant, unix_millis, delta)) in &self.cells {
            let mut rollup: Rollup = match tx.get(key)? {
                Some(bytes) => match serde_json::from_slice(&bytes) {
                    Ok(rollup) => rollup,
                    Err(_) => {
                        broken.push((*tenant, *unix_millis));
                        continue;
                    }
                },
                None => Rollup::default(),
            };
            rollup.add(delta);
            tx.insert(key.as_slice(), encode(&rollup))?;
        }
        Ok(broken)
    }
}

/// Rebuilds each day whose rollup did not decode, once per tenant and day.
fn rebuild_broken_rollups(store: &Store, mut broken: Vec<(TenantKey, u64)>) -> Result<(), StoreError> {
    broken.sort_by_key(|(tenant, unix_millis)| (tenant.0, unix_millis / DAY_MILLIS));
    broken.dedup_by_key(|(tenant, unix_millis)| (tenant.0, *unix_millis / DAY_MILLIS));
    for (tenant, unix_millis) in broken {
        rebuild_rollups(store, &tenant, unix_millis)?;
    }
    Ok(())
}

const DAY_MILLIS: u64 = 86_400_000;

/// Recomputes every rollup of one tenant's UTC day from its ledger records (the source of
/// truth), replacing whatever was there: the repair for a rollup that did not decode.
fn rebuild_rollups(store: &Store, tenant: &TenantKey, unix_millis: u64) -> Result<(), StoreError> {
    let day_start = unix_millis - unix_millis % DAY_MILLIS;
    let day = day_of(day_start);
    let mut rows: std::collections::BTreeMap<Vec<u8>, Rollup> = std::collections::BTreeMap::new();
    let start = tenant.record(Kind::Ledger, &day_start.to_be_bytes());
    let end = tenant.record(Kind::Ledger, &(day_start + DAY_MILLIS).to_be_bytes());
    for value in store.tenant.range(start..end).values() {
        let record: LedgerRecord = decode("ledger", &value?)?;
        let (cells, delta) = rollup_cells(&record);
        for (dimension, name) in cells {
            rows.entry(rollup_key(tenant, &day, dimension, &name)).or_default().add(&delta);
        }
    }
    let mut batch = sled::Batch::default();
    let mut day_prefix = tenant.record(Kind::Rollup, day.as_bytes());
    day_prefix.push(0);
    for key in store.tenant.scan_prefix(&day_prefix).keys() {
        batch.remove(key?);
    }
    for (key, rollup) in rows {
        batch.insert(key, encode(&rollup));
    }
    store.tenant.apply_batch(batch)?;
    tracing::error!(day = %day, "a usage rollup did not decode; that day's rollups were rebuilt from the ledger");
    Ok(())
}

pub(super) fn counter_key(tenant: &TenantKey, scope: &str, period_id: &str) -> Vec<u8> {
    tenant.record(Kind::Spend, format!("{scope}\0{period_id}").as_bytes())
}

/// A spend counter: absent is zero; anything but 8 bytes is corruption, refused rather
/// than read as zero (which would let a budget fail open).
pub(super) fn read_u64(bytes: Option<sled::IVec>) -> Result<u64, StoreError> {
    match bytes {
        None => Ok(0),
        Some(b) => <[u8; 8]>::try_from(b.as_ref()).map(u64::from_be_bytes).map_err(|_| StoreError::Corrupt { tree: "spend", reason: format!("a counter holds {} bytes, not 8", b.len()) }),
    }
}

type TxResult<T> = Result<T, ConflictableTransactionError<BudgetError>>;

fn tx_add(tx: &TransactionalTree, key: &[u8], delta: i128) -> TxResult<u64> {
    let current = read_u64(tx.get(key)?).map_err(|e| ConflictableTransactionError::Abort(BudgetError::Store(e)))? as i128;
    let next = (current + delta).clamp(0, u64::MAX as i128) as u64;
    tx.insert(key, &next.to_be_bytes())?;
    Ok(next)
}

fn from_tx<T>(result: Result<T, TransactionError<BudgetError>>) -> Result<T, BudgetError> {
    result.map_err(|e| match e {
        TransactionError::Abort(e) => e,
        TransactionError::Storage(e) => BudgetError::Store(e.into()),
    })
}

/// The embedded authority over one sled store. Clones share one set of counters and one
/// settlement thread.
#[derive(Clone)]
pub struct Embedded {
    store: Store,
    counters: Arc<Counters>,
    writer: Arc<Writer>,
}
/// Writes settlements in one transaction and then brings the counters in memory up to
/// date, all under the counters' lock. Settling twice (a retry after a crash, or the same
/// request twice in one batch) counts once: a request with a ledger record is settled.
/// Spend counters and rollups shared by several settlements of the batch are summed first
/// and written once each.
pub(super) fn apply_settlements(store: &Store, counters: &Counters, settlements: &[(Reservation, LedgerRecord)]) -> Result<(), BudgetError> {
    struct Keys {
        tenant: TenantKey,
        record: Vec<u8>,
        ledger: Vec<u8>,
        spend: Vec<Vec<u8>>,
        /// The (scope, period) of each key in `spend`, for the counters in memory.
        spend_cells: Vec<(String, String)>,
        encoded: Vec<u8>,
    }
    let keys: Vec<Keys> = settlements
        .iter()
        .map(|(reservation, record)| {
            let tenant = TenantKey::of(&reservation.tenant_id);
            let periods = reservation.period_ids();
            let spend_cells: Vec<(String, String)> = spend_scopes(record).into_iter().flat_map(|s| periods.iter().map(move |p| (s.clone(), p.clone()))).collect();
            Keys {
                tenant,
                record: tenant.record(Kind::Reservation, reservation.request_id.as_bytes()),
                ledger: ledger_key(&tenant, record.unix_millis, &record.request_id),
                spend: spend_cells.iter().map(|(s, p)| counter_key(&tenant, s, p)).collect(),
                spend_cells,
                encoded: encode(record),
            }
        })
        .collect();
    let mut cells = counters.lock(store);
    let (applied, broken) = from_tx(store.tenant.transaction(|tx| {
        let mut applied = Vec::with_capacity(settlements.len());
        let mut spend: std::collections::BTreeMap<&[u8], u64> = std::collections::BTreeMap::new();
        let mut rollups = RollupDeltas::default();
        for ((_, record), keys) in settlements.iter().zip(&keys) {
            // A transaction reads its own writes: the same request twice in a batch is seen.
            if tx.get(&keys.ledger)?.is_some() {
                applied.push(false);
                continue;
            }
            for key in &keys.spend {
                let sum = spend.entry(key.as_slice()).or_default();
                *sum = sum.saturating_add(record.cost_microdollars);
            }
            tx.remove(keys.record.as_slice())?;
            tx.insert(keys.ledger.as_slice(), keys.encoded.as_slice())?;
            rollups.add(&keys.tenant, record);
            applied.push(true);
        }
        for (key, sum) in spend {
            tx_add(tx, key, sum as i128)?;
        }
        Ok((applied, rollups.write(tx)?))
    }))?;
    rebuild_broken_rollups(store, broken)?;
    for (((reservation, record), keys), applied) in settlements.iter().zip(&keys).zip(applied) {
        if !applied {
            continue;
        }
        let tenant = keys.tenant;
        for (scope, period) in reservation.held_cells() {
            if let Some(cell) = cells.loaded(&tenant, scope, &period) {
                cell.reserved = cell.reserved.saturating_sub(reservation.microdollars);
            }
        }
        for (scope, period) in &keys.spend_cells {
            if let Some(cell) = cells.loaded(&tenant, scope, period) {
                cell.spent = cell.spent.saturating_add(record.cost_microdollars);
            }
        }
    }
    Ok(())
}

impl Embedded {
    /// The embedded authority over `store`, with its settlement threads. Settlements the
    /// journal holds from before a crash are applied first.
    pub fn new(store: Store) -> Result<Self, StoreError> {
        let counters = Arc::new(Counters::default());
        let journal = match store.file_beside(journal::FILE_NAME).filter(|_| store.claim_journal()) {
            Some(path) => Some(replay_journal(&store, &counters, &path).inspect_err(|_| store.release_journal())?),
            None => None,
        };
        let writer = Writer::start(store.clone(), counters.clone(), journal).map_err(|e| StoreError::Aborted(format!("starting the ledger threads: {e}")))?;
        Ok(Self { store, counters, writer: Arc::new(writer) })
    }

    /// Budget and spend of the period containing `now_millis`.
    pub fn status(&self, tenant: &TenantKey, budget: Option<Budget>, now_millis: u64) -> Result<BudgetStatus, StoreError> {
        let period = budget.map(|b| b.period).unwrap_or_default();
        let period_id = period.id_at(now_millis);
        let cell = *self.counters.lock_tenant(&self.store, tenant).cell(tenant, "total", &period_id)?;
        Ok(BudgetStatus {
            period: period.as_str().into(),
            limit_microdollars: budget.map(|b| b.limit_microdollars),
            spent_microdollars: cell.spent,
            reserved_microdollars: cell.reserved,
            period_id,
        })
    }

    /// Settled spend of one scope (`user:alice`, `tag:x`) in a period.
    pub fn scope_spend(&self, tenant: &TenantKey, scope: &str, period_id: &str) -> Result<u64, StoreError> {
        self.counters.lock_tenant(&self.store, tenant).spent(tenant, scope, period_id)
    }

    /// Holds `microdollars` for a request if the budget allows it; with no budget the
    /// reservation is still recorded so in-flight spend is visible.
    pub fn reserve(&self, tenant_id: &str, budget: Option<Budget>, request_id: &str, microdollars: u64, now_millis: u64) -> Result<Reservation, BudgetError> {
        self.reserve_scoped(tenant_id, budget, &[], request_id, microdollars, now_millis)
    }

    /// Like [`Embedded::reserve`], also holding the amount against sub-budgets.
    pub fn reserve_scoped(&self, tenant_id: &str, budget: Option<Budget>, sub_budgets: &[(String, u64)], request_id: &str, microdollars: u64, now_millis: u64) -> Result<Reservation, BudgetError> {
        self.reserve_for(Hold { tenant_id, budget, sub_budgets, request_id, microdollars, now_millis, end_user: None, tags: Vec::new(), caps: Vec::new() })
    }

    /// Holds `hold.microdollars` for a request if the tenant's budget and each
    /// `(scope, limit)` sub-budget (`user:alice`, `tag:x`) have room, checked and held
    /// under one lock, in every period's counter (day, month, all time) so that whichever
    /// period a budget names sees it. The reservation record is written before this
    /// returns, so a crash from here on charges it.
    pub fn reserve_for(&self, hold: Hold<'_>) -> Result<Reservation, BudgetError> {
        // `caps` are the in-process limiter's to enforce: it sees every request of this process.
        let reservation = hold.reservation();
        let Hold { tenant_id, budget, sub_budgets, request_id, microdollars, .. } = hold;
        let tenant = TenantKey::of(tenant_id);
        let period = budget.map(|b| b.period).unwrap_or_default();
        let limits = std::iter::once(("total", budget.map(|b| b.limit_microdollars))).chain(sub_budgets.iter().map(|(scope, limit)| (scope.as_str(), Some(*limit))));
        {
            let mut cells = self.counters.lock_tenant(&self.store, &tenant);
            for (scope, limit) in limits {
                let cell = cells.cell(&tenant, scope, &reservation.period_id)?;
                if let Some(limit) = limit
                    && cell.spent.saturating_add(cell.reserved).saturating_add(microdollars) > limit
                {
                    return Err(BudgetError::Exceeded { scope: describe_scope(scope), spent: cell.spent, reserved: cell.reserved, limit, needed: microdollars, period: period.as_str() });
                }
            }
            for (scope, period_id) in reservation.held_cells() {
                let cell = cells.cell(&tenant, scope, &period_id)?;
                cell.reserved = cell.reserved.saturating_add(microdollars);
            }
        }
        let record_key = tenant.record(Kind::Reservation, request_id.as_bytes());
        if let Err(e) = self.store.tenant.insert(record_key, encode(&reservation)) {
            self.release(&reservation);
            return Err(StoreError::from(e).into());
        }
        Ok(reservation)
    }

    /// Gives back a reservation whose record could not be written.
    fn release(&self, reservation: &Reservation) {
        let tenant = TenantKey::of(&reservation.tenant_id);
        let mut cells = self.counters.lock_tenant(&self.store, &tenant);
        for (scope, period) in reservation.held_cells() {
            if let Some(cell) = cells.loaded(&tenant, scope, &period) {
                cell.reserved = cell.reserved.saturating_sub(reservation.microdollars);
            }
        }
    }

    /// Replaces a reservation with the actual cost and writes the ledger record, in one
    /// transaction: the record exists exactly when the spend was counted.
    pub fn settle(&self, reservation: &Reservation, record: &LedgerRecord) -> Result<(), BudgetError> {
        apply_settlements(&self.store, &self.counters, &[(reservation.clone(), record.clone())])
    }

    /// [`Embedded::settle`] through the settlement threads, returning once the ledger
    /// record is on disk. Concurrent requests share one transaction and one flush.
    pub async fn settle_durably(&self, reservation: Reservation, record: LedgerRecord) -> Result<(), String> {
        self.writer.settle(reservation, record).await
    }

    /// What the settlement threads have done (batches, their commit and sync times).
    pub fn ledger_stats(&self) -> &super::LedgerStats {
        &self.writer.stats
    }

    /// Counter cells held in memory (bounded; see `metering/counters.rs`).
    pub fn cells_len(&self) -> usize {
        self.counters.cells_len()
    }

    /// Forgets a deleted tenant's counters (its records were purged from the store), after
    /// a checkpoint: the journal would otherwise bring its settlements back at a restart.
    pub async fn forget_tenant(&self, tenant_id: &str) -> Result<(), StoreError> {
        self.writer.checkpoint().await.map_err(|e| StoreError::Aborted(format!("ledger checkpoint: {e}")))?;
        let tenant = TenantKey::of(tenant_id);
        self.counters.lock_tenant(&self.store, &tenant).forget(&tenant);
        Ok(())
    }

    /// Writes a ledger record for a request that reserved nothing (rejected, failed early),
    /// under the tenant's storage id (its incarnation; `record.tenant_id` is the public id).
    pub fn record(&self, storage_id: &str, record: &LedgerRecord) -> Result<(), BudgetError> {
        let tenant = TenantKey::of(storage_id);
        let key = ledger_key(&tenant, record.unix_millis, &record.request_id);
        let encoded = encode(record);
        let mut rollups = RollupDeltas::default();
        rollups.add(&tenant, record);
        let broken = from_tx(self.store.tenant.transaction(|tx| {
            tx.insert(key.as_slice(), encoded.as_slice())?;
            rollups.write(tx)
        }))?;
        rebuild_broken_rollups(&self.store, broken)?;
        Ok(())
    }

    /// Usage between two UTC days (inclusive), grouped, read from the daily rollups (a
    /// month is ~30 reads per group, not one per request). Rows are sorted by key.
    pub fn usage(&self, tenant_id: &str, first_day: &str, last_day: &str, group_by: GroupBy) -> Result<Vec<(String, Rollup)>, StoreError> {
        let mut rows: std::collections::BTreeMap<String, Rollup> = std::collections::BTreeMap::new();
        for (day, value, rollup) in self.usage_daily(tenant_id, first_day, last_day, group_by)? {
            rows.entry(if group_by == GroupBy::Day { day } else { value }).or_default().add(&rollup);
        }
        Ok(rows.into_iter().collect())
    }

    /// Usage between two UTC days (inclusive) per day and value of `group_by`'s
    /// dimension, as `(day, value, rollup)` sorted by day, then value.
    pub fn usage_daily(&self, tenant_id: &str, first_day: &str, last_day: &str, group_by: GroupBy) -> Result<Vec<(String, String, Rollup)>, StoreError> {
        let tenant = TenantKey::of(tenant_id);
        let start = tenant.record(Kind::Rollup, first_day.as_bytes());
        let mut end = tenant.record(Kind::Rollup, last_day.as_bytes());
        end.push(0xff);
        let skip = tenant.prefix(Kind::Rollup).len();
        let mut rows = Vec::new();
        for item in self.store.tenant.range(start..end) {
            let (key, value) = item?;
            let text = String::from_utf8_lossy(&key[skip..]).into_owned();
            let mut parts = text.splitn(3, '\0');
            let (Some(day), Some(dimension), Some(value_name)) = (parts.next(), parts.next(), parts.next()) else { continue };
            if dimension != group_by.dimension() {
                continue;
            }
            rows.push((day.to_string(), value_name.to_string(), decode("rollups", &value)?));
        }
        Ok(rows)
    }

    /// Totals between two UTC days (inclusive).
    pub fn totals(&self, tenant_id: &str, first_day: &str, last_day: &str) -> Result<Rollup, StoreError> {
        let mut total = Rollup::default();
        for (_, rollup) in self.usage(tenant_id, first_day, last_day, GroupBy::Day)? {
            total.add(&rollup);
        }
        Ok(total)
    }

    /// Ledger records of a tenant between two times (inclusive start, exclusive end).
    pub fn ledger(&self, tenant_id: &str, from_millis: u64, to_millis: u64, limit: usize) -> Result<Vec<LedgerRecord>, StoreError> {
        let tenant = TenantKey::of(tenant_id);
        let start = tenant.record(Kind::Ledger, &from_millis.to_be_bytes());
        let end = tenant.record(Kind::Ledger, &to_millis.to_be_bytes());
        self.store.tenant.range(start..end).values().take(limit).map(|v| decode("ledger", &v?)).collect()
    }

    /// Charges every reservation left by a crash at its reserved amount (never dropped),
    /// with a `crash_recovered` ledger record. Returns how many were settled.
    pub fn recover_reservations(&self) -> Result<usize, BudgetError> {
        let mut pending = Vec::new();
        for item in self.store.tenant.iter() {
            let (key, value) = item.map_err(StoreError::from)?;
            if key.len() > 16 && key[16] == Kind::Reservation as u8 {
                pending.push(decode::<Reservation>("reservations", &value)?);
            }
        }
        let settlements: Vec<(Reservation, LedgerRecord)> = pending
            .into_iter()
            .map(|reservation| {
                // The request's own time, so a settlement of the same request (restored
                // from a backup, or late) finds this record and counts once.
                let unix_millis = if reservation.unix_millis == 0 { crate::clock::unix_millis() } else { reservation.unix_millis };
                let record = LedgerRecord {
                    // The id, not the incarnation (`id#...`) the reservation is stored under.
                    tenant_id: reservation.tenant_id.split('#').next().unwrap_or_default().to_string(),
                    unix_millis,
                    request_id: reservation.request_id.clone(),
                    provider: String::new(),
                    model: String::new(),
                    prompt_tokens: 0,
                    completion_tokens: 0,
                    cached_tokens: 0,
                    cache_write_tokens: 0,
                    cost_microdollars: reservation.microdollars,
                    latency_ms: 0,
                    outcome: "crash_recovered".into(),
                    end_user: reservation.end_user.clone(),
                    tags: reservation.tags.clone(),
                    policy_hash: String::new(),
                };
                (reservation, record)
            })
            .collect();
        apply_settlements(&self.store, &self.counters, &settlements)?;
        Ok(settlements.len())
    }
}

/// Opens the ledger journal and applies every batch it holds (settling counts once, so a
/// batch already in the store changes nothing), then flushes the store and starts the
/// journal's next generation. A batch that will not apply is applied settlement by
/// settlement; any that still fail are logged and kept in a copy of the journal, never
/// silently dropped.
fn replay_journal(store: &Store, counters: &Counters, path: &std::path::Path) -> Result<Journal, StoreError> {
    let opening = |e: std::io::Error| StoreError::Aborted(format!("opening the ledger journal {}: {e}", path.display()));
    let (mut journal, batches) = Journal::open(path).map_err(opening)?;
    if journal.len() == 0 {
        return Ok(journal);
    }
    let mut failed = 0;
    for batch in &batches {
        if apply_settlements(store, counters, batch).is_ok() {
            continue;
        }
        for settlement in batch {
            if let Err(e) = apply_settlements(store, counters, std::slice::from_ref(settlement)) {
                failed += 1;
                tracing::error!(tenant = %settlement.1.tenant_id, request_id = %settlement.1.request_id, error = %e, "a journaled settlement could not be applied at start");
            }
        }
    }
    if failed > 0 {
        let copy = journal.keep_copy().map_err(opening)?;
        tracing::error!(failed, copy = %copy.display(), "journaled settlements that could not be applied are kept in a copy of the ledger journal");
    }
    store.flush_blocking()?;
    journal.restart().map_err(opening)?;
    tracing::info!(batches = batches.len(), "the ledger journal was replayed into the store");
    Ok(journal)
}

fn ledger_key(tenant: &TenantKey, unix_millis: u64, request_id: &str) -> Vec<u8> {
    let mut rest = unix_millis.to_be_bytes().to_vec();
    rest.extend_from_slice(request_id.as_bytes());
    tenant.record(Kind::Ledger, &rest)
}
#[cfg(test)]
mod tests {
    use super::*;
    use crate::metering::Period;

    fn record(tenant: &str, request: &str, cost: u64) -> LedgerRecord {
        LedgerRecord {
            tenant_id: tenant.into(), unix_millis: 1, request_id: request.into(), provider: "demo".into(), model: "m".into(),
            prompt_tokens: 1, completion_tokens: 1, cached_tokens: 0, cache_write_tokens: 0, cost_microdollars: cost, latency_ms: 1,
            outcome: "success".into(), end_user: Some("alice".into()), tags: vec!["x".into()], policy_hash: String::new(),
        }
    }

    #[test]
    fn reserve_refuses_past_budget_and_settle_counts_once() -> Result<(), Box<dyn std::error::Error>> {
        let metering = Embedded::new(Store::temporary()?)?;
        let budget = Some(Budget { limit_microdollars: 100, period: Period::Month });
        let now = 1_764_460_800_000; // 2025-11-30
        let a = metering.reserve("t", budget, "r1", 60, now)?;
        assert!(matches!(metering.reserve("t", budget, "r2", 41, now), Err(BudgetError::Exceeded { spent: 0, reserved: 60, .. })));
        metering.settle(&a, &record("t", "r1", 30))?;
        metering.settle(&a, &record("t", "r1", 30))?;
        let status = metering.status(&TenantKey::of("t"), budget, now)?;
        assert_eq!((status.spent_microdollars, status.reserved_microdollars), (30, 0));
        assert_eq!(metering.scope_spend(&TenantKey::of("t"), "user:alice", &a.period_id)?, 30);
        assert_eq!(metering.ledger("t", 0, u64::MAX, 10)?.len(), 1);
        metering.reserve("t", budget, "r3", 70, now)?;
        Ok(())
    }

    #[test]
    fn rollups_group_by_each_dimension() -> Result<(), Box<dyn std::error::Error>> {
        let metering = Embedded::new(Store::temporary()?)?;
        let day_ms = 86_400_000;
        for (i, (user, cost)) in [("alice", 10), ("bob", 5), ("alice", 1)].into_iter().enumerate() {
            let mut r = record("t", &format!("r{i}"), cost);
            r.unix_millis = 1 + (i as u64) * day_ms;
            r.end_user = Some(user.into());
            metering.record("t", &r)?;
        }
        let by_user = metering.usage("t", "1970-01-01", "1970-01-03", GroupBy::User)?;
        assert_eq!(by_user.iter().map(|(k, r)| (k.as_str(), r.cost_microdollars, r.requests)).collect::<Vec<_>>(), vec![("alice", 11, 2), ("bob", 5, 1)]);
        let by_day = metering.usage("t", "1970-01-02", "1970-01-03", GroupBy::Day)?;
        assert_eq!(by_day.iter().map(|(k, r)| (k.as_str(), r.cost_microdollars)).collect::<Vec<_>>(), vec![("1970-01-02", 5), ("1970-01-03", 1)]);
        assert_eq!(metering.usage("t", "1970-01-01", "1970-01-03", GroupBy::Model)?[0].0, "demo/m");
        assert_eq!(metering.usage("t", "1970-01-01", "1970-01-03", GroupBy::Tag)?[0].1.requests, 3);
        assert_eq!(metering.totals("other", "1970-01-01", "1970-01-03")?, Rollup::default());
        Ok(())
    }

    #[test]
    fn end_user_and_tag_budgets_are_checked_and_held_together() -> Result<(), Box<dyn std::error::Error>> {
        let metering = Embedded::new(Store::temporary()?)?;
        let now = 1_764_460_800_000;
        let subs = vec![("user:alice".to_string(), 50)];
        let a = metering.reserve_scoped("t", None, &subs, "r1", 40, now)?;
        match metering.reserve_scoped("t", None, &subs, "r2", 20, now) {
            Err(BudgetError::Exceeded { scope, .. }) => assert_eq!(scope, "end user 'alice'"),
            other => panic!("{other:?}"),
        }
        metering.reserve_scoped("t", None, &[("user:bob".to_string(), 50)], "r3", 20, now)?;
        metering.settle(&a, &record("t", "r1", 10))?;
        metering.reserve_scoped("t", None, &subs, "r4", 40, now)?;
        Ok(())
    }

    #[test]
    fn crash_left_reservations_are_charged() -> Result<(), Box<dyn std::error::Error>> {
        let metering = Embedded::new(Store::temporary()?)?;
        let now = crate::clock::unix_millis();
        metering.reserve("t", None, "lost", 42, now)?;
        assert_eq!(metering.recover_reservations()?, 1);
        let status = metering.status(&TenantKey::of("t"), None, now)?;
        assert_eq!((status.spent_microdollars, status.reserved_microdollars), (42, 0));
        assert_eq!(metering.ledger("t", 0, u64::MAX, 10)?[0].outcome, "crash_recovered");
        Ok(())
    }

    fn hold<'a>(request_id: &'a str, budget: Option<Budget>, microdollars: u64, now_millis: u64) -> Hold<'a> {
        Hold { tenant_id: "t", budget, sub_budgets: &[], request_id, microdollars, now_millis, end_user: Some("alice".into()), tags: vec!["x".into()], caps: Vec::new() }
    }

    #[test]
    fn spend_counts_under_every_period_so_changing_or_adding_a_budget_keeps_it() -> Result<(), Box<dyn std::error::Error>> {
        let metering = Embedded::new(Store::temporary()?)?;
        let now = 1_764_460_800_000; // 2025-11-30
        let month = Some(Budget { limit_microdollars: 1_000, period: Period::Month });
        let r = metering.reserve_for(hold("r1", month, 600, now))?;
        let mut rec = record("t", "r1", 600);
        rec.unix_millis = now;
        metering.settle(&r, &rec)?;
        let tenant = TenantKey::of("t");
        for period in [Period::Day, Period::Month, Period::Total] {
            let budget = Some(Budget { limit_microdollars: 1_000, period });
            assert_eq!(metering.status(&tenant, budget, now)?.spent_microdollars, 600, "{period:?}");
            assert!(metering.reserve_for(hold("r2", budget, 500, now)).is_err(), "{period:?} budget forgot earlier spend");
        }
        // A tenant with no budget yet: its spend is counted too, for a budget added later.
        let r = metering.reserve_for(hold("r3", None, 50, now))?;
        let mut rec = record("t", "r3", 50);
        rec.unix_millis = now;
        metering.settle(&r, &rec)?;
        assert_eq!(metering.status(&tenant, Some(Budget { limit_microdollars: 1, period: Period::Total }), now)?.spent_microdollars, 650);
        // In-flight holds are seen by every period too.
        metering.reserve_for(hold("r4", month, 100, now))?;
        assert_eq!(metering.status(&tenant, Some(Budget { limit_microdollars: 1, period: Period::Day }), now)?.reserved_microdollars, 100);
        Ok(())
    }

    #[test]
    fn crash_recovery_charges_the_end_user_and_tags_and_a_late_settle_counts_once() -> Result<(), Box<dyn std::error::Error>> {
        let store = Store::temporary()?;
        let metering = Embedded::new(store.clone())?;
        let now = crate::clock::unix_millis() - 5_000;
        let r = metering.reserve_for(hold("lost", None, 42, now))?;
        let restarted = Embedded::new(store)?;
        assert_eq!(restarted.recover_reservations()?, 1);
        let tenant = TenantKey::of("t");
        let month = Period::Month.id_at(now);
        assert_eq!(restarted.scope_spend(&tenant, "user:alice", &month)?, 42);
        assert_eq!(restarted.scope_spend(&tenant, "tag:x", &month)?, 42);
        // The request's own settlement arrives after all (a restored backup replaying it):
        // it finds the recovered record and is not charged again.
        let mut late = record("t", "lost", 30);
        late.unix_millis = now;
        restarted.settle(&r, &late)?;
        assert_eq!(restarted.status(&tenant, None, now)?.spent_microdollars, 42);
        assert_eq!(restarted.ledger("t", 0, u64::MAX, 10)?.len(), 1);
        Ok(())
    }

    #[test]
    fn a_corrupt_rollup_is_rebuilt_from_the_ledger_not_reset() -> Result<(), Box<dyn std::error::Error>> {
        let store = Store::temporary()?;
        let metering = Embedded::new(store.clone())?;
        for (i, cost) in [10u64, 20, 30].into_iter().enumerate() {
            if i == 2 {
                let key = rollup_key(&TenantKey::of("t"), "1970-01-01", "all", "");
                store.tenant.insert(key, b"{not a rollup".to_vec())?;
            }
            metering.record("t", &record("t", &format!("r{i}"), cost))?;
        }
        let total = metering.totals("t", "1970-01-01", "1970-01-01")?;
        assert_eq!((total.requests, total.cost_microdollars), (3, 60));
        assert_eq!(metering.usage("t", "1970-01-01", "1970-01-01", GroupBy::User)?[0].1.cost_microdollars, 60);
        Ok(())
    }

    #[test]
    fn a_corrupt_spend_counter_refuses_reservations_instead_of_reading_zero() -> Result<(), Box<dyn std::error::Error>> {
        let store = Store::temporary()?;
        let now = 1_764_460_800_000;
        store.tenant.insert(counter_key(&TenantKey::of("t"), "total", &Period::Month.id_at(now)), b"xyz".to_vec())?;
        let metering = Embedded::new(store)?;
        let budget = Some(Budget { limit_microdollars: 1_000, period: Period::Month });
        assert!(matches!(metering.reserve("t", budget, "r", 1, now), Err(BudgetError::Store(StoreError::Corrupt { .. }))));
        Ok(())
    }

    #[test]
    fn one_batch_sums_shared_cells_and_counts_a_repeated_request_once() -> Result<(), Box<dyn std::error::Error>> {
        let store = Store::temporary()?;
        let metering = Embedded::new(store.clone())?;
        let now = 1_764_460_800_000; // 2025-11-30
        let month = Period::Month.id_at(now);
        let settle_at = |tenant: &str, request: &str, cost: u64, user: &str| -> Result<(Reservation, LedgerRecord), BudgetError> {
            let reservation = metering.reserve_for(Hold { tenant_id: tenant, end_user: Some(user.into()), ..hold(request, None, 100, now) })?;
            let mut r = record(tenant, request, cost);
            r.unix_millis = now;
            r.end_user = Some(user.into());
            Ok((reservation, r))
        };
        let earlier = settle_at("a", "a0", 1, "alice")?;
        metering.settle(&earlier.0, &earlier.1)?;
        let a1 = settle_at("a", "a1", 10, "alice")?;
        let a2 = settle_at("a", "a2", 20, "bob")?;
        let b1 = settle_at("b", "b1", 300, "alice")?;
        // a1 twice in one batch, and a0 again after it was settled: each counts once.
        apply_settlements(&store, &metering.counters, &[a1.clone(), a2, b1, a1, earlier])?;
        for fresh in [false, true] {
            let m = if fresh { Embedded::new(store.clone())? } else { metering.clone() };
            let (a, b) = (TenantKey::of("a"), TenantKey::of("b"));
            assert_eq!(m.status(&a, None, now)?.spent_microdollars, 31, "fresh start: {fresh}");
            assert_eq!(m.status(&a, None, now)?.reserved_microdollars, 0, "fresh start: {fresh}");
            assert_eq!(m.status(&b, None, now)?.spent_microdollars, 300, "fresh start: {fresh}");
            assert_eq!(m.scope_spend(&a, "user:alice", &month)?, 11);
            assert_eq!(m.scope_spend(&a, "user:bob", &month)?, 20);
            assert_eq!(m.scope_spend(&a, "tag:x", &month)?, 31);
            assert_eq!(m.scope_spend(&b, "user:alice", &month)?, 300);
        }
        let day = day_of(now);
        let by_user = metering.usage("a", &day, &day, GroupBy::User)?;
        assert_eq!(by_user.iter().map(|(k, r)| (k.as_str(), r.requests, r.cost_microdollars)).collect::<Vec<_>>(), vec![("alice", 2, 11), ("bob", 1, 20)]);
        assert_eq!(metering.totals("b", &day, &day)?.requests, 1);
        assert_eq!(metering.ledger("a", 0, u64::MAX, 10)?.len(), 3);
        Ok(())
    }

    #[test]
    fn a_corrupt_rollup_met_in_a_batch_is_rebuilt_with_the_whole_batch() -> Result<(), Box<dyn std::error::Error>> {
        let store = Store::temporary()?;
        let metering = Embedded::new(store.clone())?;
        metering.record("t", &record("t", "r0", 5))?;
        store.tenant.insert(rollup_key(&TenantKey::of("t"), "1970-01-01", "user", "alice"), b"{not a rollup".to_vec())?;
        let batch: Vec<_> = (1..4).map(|i| Ok::<_, BudgetError>((metering.reserve("t", None, &format!("r{i}"), 1, 1)?, record("t", &format!("r{i}"), 10)))).collect::<Result<_, _>>()?;
        apply_settlements(&store, &metering.counters, &batch)?;
        let by_user = metering.usage("t", "1970-01-01", "1970-01-01", GroupBy::User)?;
        assert_eq!(by_user.iter().map(|(k, r)| (k.as_str(), r.requests, r.cost_microdollars)).collect::<Vec<_>>(), vec![("alice", 4, 35)]);
        assert_eq!(metering.totals("t", "1970-01-01", "1970-01-01")?.requests, 4);
        Ok(())
    }

    #[tokio::test]
    async fn batched_settlements_count_once_and_a_fresh_start_agrees() -> Result<(), Box<dyn std::error::Error>> {
        let store = Store::temporary()?;
        let metering = Embedded::new(store.clone())?;
        let budget = Some(Budget { limit_microdollars: 10_000, period: Period::Month });
        let now = crate::clock::unix_millis();
        let mut settles = Vec::new();
        for i in 0..50 {
            let reservation = metering.reserve("t", budget, &format!("r{i}"), 100, now)?;
            let mut r = record("t", &format!("r{i}"), 7);
            r.unix_millis = now;
            let metering = metering.clone();
            settles.push(tokio::spawn(async move { metering.settle_durably(reservation, r).await }));
        }
        let held = metering.reserve("t", budget, "in-flight", 300, now)?;
        for settle in settles {
            settle.await??;
        }
        let status = metering.status(&TenantKey::of("t"), budget, now)?;
        assert_eq!((status.spent_microdollars, status.reserved_microdollars), (350, 300));
        assert_eq!(metering.ledger("t", 0, u64::MAX, 100)?.len(), 50);
        // A second process over the same store loads the same figures: spend from its
        // counter, reserved from the reservation record still there.
        let fresh = Embedded::new(store)?;
        let status = fresh.status(&TenantKey::of("t"), budget, now)?;
        assert_eq!((status.spent_microdollars, status.reserved_microdollars), (350, 300));
        assert_eq!(fresh.scope_spend(&TenantKey::of("t"), "tag:x", &held.period_id)?, 350);
        Ok(())
    }

    #[tokio::test]
    async fn an_answer_waits_for_its_journaled_frame_and_a_start_replays_what_the_store_lost() -> Result<(), Box<dyn std::error::Error>> {
        let (dir, lost) = (tempfile::tempdir()?, tempfile::tempdir()?);
        let journal_in = |dir: &tempfile::TempDir| dir.path().join("db").join(journal::FILE_NAME);
        let now = crate::clock::unix_millis();
        let mut settled = record("t", "r1", 7);
        settled.unix_millis = now;
        let frame = {
            let metering = Embedded::new(Store::open(dir.path())?)?;
            let reservation = metering.reserve("t", None, "r1", 100, now)?;
            metering.settle_durably(reservation.clone(), settled.clone()).await?;
            // Answered only once the frame was in the journal.
            let (_, batches) = Journal::open(&journal_in(&dir))?;
            assert_eq!(batches, vec![vec![(reservation, settled.clone())]]);
            std::fs::read(journal_in(&dir))?
        };
        // A clean stop ends with a checkpoint: nothing left to replay.
        assert!(Journal::open(&journal_in(&dir))?.1.is_empty());

        let spend = |metering: &Embedded| metering.status(&TenantKey::of("t"), None, now).map(|s| (s.spent_microdollars, s.reserved_microdollars));
        // A store that lost the batch (a crash before sled's flush): the journal brings it back.
        drop(Store::open(lost.path())?);
        std::fs::write(journal_in(&lost), &frame)?;
        {
            let metering = Embedded::new(Store::open(lost.path())?)?;
            assert_eq!(metering.ledger("t", 0, u64::MAX, 10)?, vec![settled.clone()]);
            assert_eq!(spend(&metering)?, (7, 0));
            assert_eq!(metering.totals("t", &day_of(now), &day_of(now))?.cost_microdollars, 7);
        }
        assert!(Journal::open(&journal_in(&lost))?.1.is_empty(), "a replayed journal starts again");
        // A store that already has it: the replay counts it once.
        std::fs::write(journal_in(&dir), &frame)?;
        let metering = Embedded::new(Store::open(dir.path())?)?;
        assert_eq!(metering.ledger("t", 0, u64::MAX, 10)?.len(), 1);
        assert_eq!(spend(&metering)?, (7, 0));
        assert_eq!(metering.totals("t", &day_of(now), &day_of(now))?.requests, 1);
        Ok(())
    }

    #[tokio::test]
    async fn forgetting_a_tenant_after_settlements_on_a_store_without_a_journal_returns() -> Result<(), Box<dyn std::error::Error>> {
        let metering = Embedded::new(Store::temporary()?)?;
        let reservation = metering.reserve("gone", None, "r1", 10, 1)?;
        metering.settle_durably(reservation, record("gone", "r1", 5)).await?;
        tokio::time::timeout(std::time::Duration::from_secs(10), metering.forget_tenant("gone")).await??;
        Ok(())
    }

    #[tokio::test]
    async fn forgetting_a_deleted_tenant_empties_the_journal_so_nothing_of_it_comes_back() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let journal_path = dir.path().join("db").join(journal::FILE_NAME);
        let store = Store::open(dir.path())?;
        let metering = Embedded::new(store.clone())?;
        let reservation = metering.reserve("gone", None, "r1", 10, 1)?;
        metering.settle_durably(reservation, record("gone", "r1", 5)).await?;
        assert_eq!(Journal::open(&journal_path)?.1.len(), 1);
        store.purge_tenant(&TenantKey::of("gone"))?;
        metering.forget_tenant("gone").await?;
        assert!(Journal::open(&journal_path)?.1.is_empty());
        assert_eq!(metering.ledger_stats().checkpoints.load(std::sync::atomic::Ordering::Relaxed), 1);
        drop((metering, store));
        let restarted = Embedded::new(Store::open(dir.path())?)?;
        assert!(restarted.ledger("gone", 0, u64::MAX, 10)?.is_empty());
        Ok(())
    }
}
