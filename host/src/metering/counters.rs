//! The budget counters in memory: the authority for reservations.
//!
//! A counter cell is one (tenant, scope, period): its settled spend and what requests in
//! flight hold. Spend is persisted (sled counter keys, written with each settlement);
//! the reserved amount is not: it is the sum of the tenant's reservation records, which a
//! restart charges in full, so a cell loads it from those records. Keeping the check in
//! memory means a reservation costs one plain insert instead of a sled transaction,
//! whose log-buffer roll woke sled's whole IO thread pool on every request.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use super::{counter_key, read_u64, Reservation};
use crate::store::{decode, Kind, Store, StoreError, TenantKey};

/// One (tenant, scope, period).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Cell {
    /// Settled spend, micro-dollars.
    pub spent: u64,
    /// Held by requests in flight, micro-dollars.
    pub reserved: u64,
}

/// Every cell touched since start, keyed by its spend counter key.
#[derive(Default)]
pub(super) struct Counters {
    cells: Mutex<HashMap<Vec<u8>, Cell>>,
}

/// The locked cells. Loads and settlements both happen under this lock, so a cell is
/// never loaded from the store halfway through a settlement that also updates it.
pub(super) struct Locked<'a> {
    cells: MutexGuard<'a, HashMap<Vec<u8>, Cell>>,
    store: &'a Store,
}

impl Counters {
    pub(super) fn lock<'a>(&'a self, store: &'a Store) -> Locked<'a> {
        // A panic while holding the lock leaves plain numbers behind: still usable.
        let cells = self.cells.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        Locked { cells, store }
    }
}

impl Locked<'_> {
    /// The cell of `scope` (`total`, `user:alice`, `tag:x`), loaded from the store on
    /// first use.
    pub(super) fn cell(&mut self, tenant: &TenantKey, scope: &str, period_id: &str) -> Result<&mut Cell, StoreError> {
        let key = counter_key(tenant, scope, period_id);
        if !self.cells.contains_key(&key) {
            let loaded = load(self.store, tenant, scope, period_id, &key)?;
            self.cells.insert(key.clone(), loaded);
        }
        // Inserted just above when missing.
        Ok(self.cells.entry(key).or_default())
    }

    /// The cell of `scope` if it is in memory; a cell not in memory loads the store's
    /// (already updated) figures when first needed.
    pub(super) fn loaded(&mut self, tenant: &TenantKey, scope: &str, period_id: &str) -> Option<&mut Cell> {
        self.cells.get_mut(&counter_key(tenant, scope, period_id))
    }

    /// Drops every cell of a tenant (it was deleted; a tenant created again under the
    /// same id starts from the store, which no longer has its records).
    pub(super) fn forget(&mut self, tenant: &TenantKey) {
        self.cells.retain(|key, _| !key.starts_with(&tenant.0));
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
