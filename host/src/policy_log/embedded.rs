//! One tenant's bounded policy log in the embedded store (sled): a ring of the newest
//! lines, keyed by a time-based sequence number.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::policy::LogLine;
use crate::store::{decode, encode, Kind, Store, StoreError, TenantKey};

/// Appends and reads one tenant's policy log in the embedded store.
#[derive(Clone)]
pub struct EmbeddedLog {
    store: Store,
    tenant: TenantKey,
    keep: usize,
    /// Which of the tenant's journals: the policy log or the decision inputs.
    kind: Kind,
}

/// Sequence numbers only need to be increasing within one process run and across
/// restarts; time in microseconds plus a counter gives both.
static SEQUENCE: AtomicU64 = AtomicU64::new(0);

fn next_sequence() -> u64 {
    let now = crate::clock::unix_millis() * 1000;
    let mut current = SEQUENCE.load(Ordering::Relaxed);
    loop {
        let next = now.max(current + 1);
        match SEQUENCE.compare_exchange_weak(current, next, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return next,
            Err(seen) => current = seen,
        }
    }
}

impl EmbeddedLog {
    /// The journal `kind` of `tenant`, keeping the newest `keep` lines.
    pub fn new(store: Store, tenant: TenantKey, keep: usize, kind: Kind) -> Self {
        Self { store, tenant, keep, kind }
    }

    /// Appends lines, then trims the oldest beyond the limit.
    pub fn append(&self, lines: Vec<LogLine>) -> Result<(), StoreError> {
        for line in lines {
            let key = self.tenant.record(self.kind, &next_sequence().to_be_bytes());
            self.store.tenant.insert(key, encode(&line))?;
        }
        let prefix = self.tenant.prefix(self.kind);
        let excess = self.store.tenant.scan_prefix(&prefix).keys().count().saturating_sub(self.keep);
        for key in self.store.tenant.scan_prefix(&prefix).keys().take(excess) {
            self.store.tenant.remove(key?)?;
        }
        Ok(())
    }

    /// The newest `limit` lines, oldest first.
    pub fn read(&self, limit: usize) -> Result<Vec<LogLine>, StoreError> {
        let mut lines: Vec<LogLine> = self
            .store
            .tenant
            .scan_prefix(self.tenant.prefix(self.kind))
            .values()
            .rev()
            .take(limit)
            .map(|v| v.map_err(StoreError::from).and_then(|v| decode("policy log", &v)))
            .collect::<Result<_, _>>()?;
        lines.reverse();
        Ok(lines)
    }
}
