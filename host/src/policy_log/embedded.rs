//! One tenant's bounded policy log in the embedded store (sled): a ring of the newest
//! lines, keyed by a time-based sequence number.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::line_counts::LineCounts;
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
    counts: Arc<LineCounts>,
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
    /// The journal `kind` of `tenant`, keeping the newest `keep` lines; `counts` is shared
    /// by every journal of the store.
    pub(super) fn new(store: Store, tenant: TenantKey, keep: usize, kind: Kind, counts: Arc<LineCounts>) -> Self {
        Self { store, tenant, keep, kind, counts }
    }

    /// Appends lines, then trims the oldest beyond the limit.
    pub fn append(&self, lines: Vec<LogLine>) -> Result<(), StoreError> {
        let prefix = self.tenant.prefix(self.kind);
        let mut counts = self.counts.lock(&prefix);
        let held = match counts.get(&prefix) {
            Some(held) => *held,
            // The first append in this process: count what an earlier run left.
            None => self.store.tenant.scan_prefix(&prefix).keys().count(),
        };
        let added = lines.len();
        for line in lines {
            let key = self.tenant.record(self.kind, &next_sequence().to_be_bytes());
            self.store.tenant.insert(key, encode(&line))?;
        }
        let excess = (held + added).saturating_sub(self.keep);
        let mut removed = 0;
        for key in self.store.tenant.scan_prefix(&prefix).keys().take(excess) {
            self.store.tenant.remove(key?)?;
            removed += 1;
        }
        counts.insert(prefix, held + added - removed);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy_log::PolicyLogs;

    fn line(n: usize) -> LogLine {
        LogLine { unix_millis: 1, level: "info".into(), message: format!("line {n}"), request_id: "r".into() }
    }

    fn on_disk(store: &Store, storage_id: &str) -> usize {
        store.tenant.scan_prefix(TenantKey::of(storage_id).prefix(Kind::PolicyLog)).count()
    }

    #[tokio::test]
    async fn appends_keep_exactly_the_newest_lines_across_restarts() {
        let store = Store::temporary().expect("store");
        let log = PolicyLogs::embedded(store.clone(), 5).tenant("t");
        for batch in 0..4 {
            log.append((batch * 3..batch * 3 + 3).map(line).collect()).await.expect("append");
        }
        assert_eq!(on_disk(&store, "t"), 5);
        let messages: Vec<String> = log.read(100).await.expect("read").into_iter().map(|l| l.message).collect();
        assert_eq!(messages, (7..12).map(|n| format!("line {n}")).collect::<Vec<_>>());

        // A new process keeping fewer: the first append counts what is there and trims it.
        let restarted = PolicyLogs::embedded(store.clone(), 3).tenant("t");
        restarted.append(vec![line(12)]).await.expect("append");
        assert_eq!(on_disk(&store, "t"), 3);
        assert_eq!(restarted.read(100).await.expect("read").last().map(|l| l.message.clone()), Some("line 12".into()));
        // Another tenant's journal is its own.
        restarted.append(vec![line(13)]).await.expect("append");
        PolicyLogs::embedded(store.clone(), 3).tenant("u").append(vec![line(0)]).await.expect("append");
        assert_eq!((on_disk(&store, "t"), on_disk(&store, "u")), (3, 1));
    }
}
