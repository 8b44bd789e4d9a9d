//! How many lines each embedded journal holds, so an append trims the oldest without
//! counting the whole journal first. A journal is counted once, on its first append in
//! this process; after that every append and trim keeps the count. Counting on every
//! append cost a fifth of the gateway's CPU once each request appended its decision
//! inputs (tests/bench/HOTPATH.md).
//!
//! A journal's appends run one at a time under its shard's lock, so the count always
//! matches the journal: nothing else writes or trims its keys in this process.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Mutex, MutexGuard};

/// Shards of the map: appends of journals in different shards never wait for each other.
const SHARDS: usize = 32;

/// Line counts by journal prefix (see [`crate::store::TenantKey::prefix`]).
pub(super) struct LineCounts {
    hasher: RandomState,
    shards: Vec<Mutex<HashMap<Vec<u8>, usize>>>,
}

impl Default for LineCounts {
    fn default() -> Self {
        Self { hasher: RandomState::new(), shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect() }
    }
}

impl LineCounts {
    /// The shard of journal `prefix`, locked: hold it across the journal's append and trim.
    pub(super) fn lock(&self, prefix: &[u8]) -> MutexGuard<'_, HashMap<Vec<u8>, usize>> {
        let shard = self.hasher.hash_one(prefix) as usize % SHARDS;
        self.shards[shard].lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Forgets journal `prefix` (its tenant was purged).
    pub(super) fn forget(&self, prefix: &[u8]) {
        self.lock(prefix).remove(prefix);
    }
}
