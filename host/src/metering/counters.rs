//! The budget counters in memory: the authority for reservations.
//!
//! A counter cell is one (tenant, scope, period): its settled spend and what requests in
//! flight hold. Spend is persisted (sled counter keys, written with each settlement);
//! the reserved amount is not: it is the sum of the tenant's reservation records, which a
//! restart charges in full, so a cell loads it from those records. Keeping the check in
//! memory means a reservation costs one plain insert instead of a sled transaction,
//! whose log-buffer roll woke sled's whole IO thread pool on every request.
//!
//! Cells are sharded by tenant, so one tenant's work (or flood of new cells) serialises
//! only the tenants of its shard. A shard past [`MAX_CELLS_PER_SHARD`] drops its idle
//! cells (no reservation held): their figures are all in the store, and they reload from
//! it when next needed. Read-only lookups of a cell not in memory read the store and
//! create nothing, so a policy asking for the spend of endless end-user names costs no
//! host memory.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use super::embedded::{counter_key, read_u64};
use super::Reservation;
use crate::store::{decode, Kind, Store, StoreError, TenantKey};

/// Shards of the cells. A power of two well above the cores, so two busy tenants rarely
/// share one.
const SHARDS: usize = 16;

/// Cells a shard keeps before it drops the idle ones. Bounds host memory against a
/// stream of distinct scopes (end users, tags) while keeping every active tenant's
/// `total` cell resident: 16 shards of 4,096 is about 64k cells, a few MiB.
pub(super) const MAX_CELLS_PER_SHARD: usize = 4096;

/// One (tenant, scope, period).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Cell {
    /// Settled spend, micro-dollars.
    pub spent: u64,
    /// Held by requests in flight, micro-dollars.
    pub reserved: u64,
}

type Shard = HashMap<Vec<u8>, Cell>;

/// The cells in memory, keyed by their spend counter key, in shards by tenant.
pub(super) struct Counters {
    shards: [Mutex<Shard>; SHARDS],
}

impl Default for Counters {
    fn default() -> Self {
        Self { shards: std::array::from_fn(|_| Mutex::new(HashMap::new())) }
    }
}

/// The locked cells: every shard ([`Counters::lock`]) or one tenant's
/// ([`Counters::lock_tenant`]). Loads and settlements both happen under the lock, so a
/// cell is never loaded from the store halfway through a settlement that also updates it.
pub(super) struct Locked<'a> {
    /// By shard index; `None` for shards this lock does not hold.
    shards: Vec<Option<MutexGuard<'a, Shard>>>,
    store: &'a Store,
}

fn shard_of(tenant: &TenantKey) -> usize {
    usize::from(tenant.0[0]) % SHARDS
}

fn lock_shard(shard: &Mutex<Shard>) -> MutexGuard<'_, Shard> {
    // A panic while holding the lock leaves plain numbers behind: still usable.
    shard.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Counters {
    /// Locks every shard, in order (settlements span tenants).
    pub(super) fn lock<'a>(&'a self, store: &'a Store) -> Locked<'a> {
        Locked { shards: self.shards.iter().map(|s| Some(lock_shard(s))).collect(), store }
    }

    /// Locks the shard of one tenant: enough for anything touching only its cells.
    pub(super) fn lock_tenant<'a>(&'a self, store: &'a Store, tenant: &TenantKey) -> Locked<'a> {
        let index = shard_of(tenant);
        let shards = self.shards.iter().enumerate().map(|(i, s)| (i == index).then(|| lock_shard(s))).collect();
        Locked { shards, store }
    }

    /// Cells held in memory.
    pub(super) fn cells_len(&self) -> usize {
        self.shards.iter().map(|s| lock_shard(s).len()).sum()
    }
}

impl Locked<'_> {
    fn shard(&mut self, tenant: &TenantKey) -> Result<&mut Shard, StoreError> {
        self.shards
            .get_mut(shard_of(tenant))
            .and_then(Option::as_mut)
            .map(|guard| &mut **guard)
            .ok_or_else(|| StoreError::Aborted("budget counters: this tenant's shard is not locked".into()))
    }

    /// The cell of `scope` (`total`, `user:alice`, `tag:x`), loaded from the store on
    /// first use.
    pub(super) fn cell(&mut self, tenant: &TenantKey, scope: &str, period_id: &str) -> Result<&mut Cell, StoreError> {
        let key = counter_key(tenant, scope, period_id);
        let store = self.store;
        let shard = self.shard(tenant)?;
        if !shard.contains_key(&key) {
            let loaded = load(store, tenant, scope, period_id, &key)?;
            if shard.len() >= MAX_CELLS_PER_SHARD {
                // Idle cells hold nothing the store lacks.
                shard.retain(|_, cell| cell.reserved > 0);
            }
            shard.insert(key.clone(), loaded);
        }
        // Inserted just above when missing.
        Ok(shard.entry(key).or_default())
    }

    /// The settled spend of `scope`: the cell's if it is in memory, else the store's,
    /// without creating a cell.
    pub(super) fn spent(&mut self, tenant: &TenantKey, scope: &str, period_id: &str) -> Result<u64, StoreError> {
        let key = counter_key(tenant, scope, period_id);
        let store = self.store;
        match self.shard(tenant)?.get(&key) {
            Some(cell) => Ok(cell.spent),
            None => read_u64(store.tenant.get(&key)?),
        }
    }

    /// The cell of `scope` if it is in memory; a cell not in memory loads the store's
    /// (already updated) figures when first needed.
    pub(super) fn loaded(&mut self, tenant: &TenantKey, scope: &str, period_id: &str) -> Option<&mut Cell> {
        let key = counter_key(tenant, scope, period_id);
        self.shard(tenant).ok()?.get_mut(&key)
    }

    /// Drops every cell of a tenant (it was deleted; a tenant created again under the
    /// same id starts from the store, which no longer has its records).
    pub(super) fn forget(&mut self, tenant: &TenantKey) {
        if let Ok(shard) = self.shard(tenant) {
            shard.retain(|key, _| !key.starts_with(&tenant.0));
        }
    }
}

fn load(store: &Store, tenant: &TenantKey, scope: &str, period_id: &str, key: &[u8]) -> Result<Cell, StoreError> {
    let spent = read_u64(store.tenant.get(key)?)?;
    let mut reserved = 0u64;
    for value in store.tenant.scan_prefix(tenant.prefix(Kind::Reservation)).values() {
        let reservation: Reservation = decode("reservations", &value?)?;
        if reservation.period_ids().iter().any(|p| p == period_id) && (scope == "total" || reservation.scopes.iter().any(|s| s == scope)) {
            reserved = reserved.saturating_add(reservation.microdollars);
        }
    }
    Ok(Cell { spent, reserved })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_shard_drops_idle_cells_and_keeps_those_holding_reservations() -> Result<(), Box<dyn std::error::Error>> {
        let store = Store::temporary()?;
        let counters = Counters::default();
        let tenant = TenantKey::of("t");
        let mut cells = counters.lock_tenant(&store, &tenant);
        cells.cell(&tenant, "user:busy", "2026-11")?.reserved = 7;
        for i in 0..MAX_CELLS_PER_SHARD * 2 {
            cells.cell(&tenant, &format!("user:{i}"), "2026-11")?;
        }
        drop(cells);
        assert!(counters.cells_len() <= MAX_CELLS_PER_SHARD, "{}", counters.cells_len());
        let mut cells = counters.lock_tenant(&store, &tenant);
        assert_eq!(cells.loaded(&tenant, "user:busy", "2026-11").map(|c| c.reserved), Some(7), "a cell holding a reservation stays");
        Ok(())
    }

    #[test]
    fn a_tenant_lock_holds_only_its_shard() -> Result<(), Box<dyn std::error::Error>> {
        let store = Store::temporary()?;
        let counters = Counters::default();
        let a = TenantKey::of("alpha");
        let b = (0..).map(|i| TenantKey::of(&format!("beta{i}"))).find(|k| shard_of(k) != shard_of(&a)).ok_or("no other shard")?;
        let mut locked = counters.lock_tenant(&store, &a);
        locked.cell(&a, "total", "2026-11")?;
        assert!(locked.cell(&b, "total", "2026-11").is_err(), "another shard's cell is refused, not raced");
        // Another tenant's shard can be locked at the same time.
        counters.lock_tenant(&store, &b).cell(&b, "total", "2026-11")?;
        Ok(())
    }
}
