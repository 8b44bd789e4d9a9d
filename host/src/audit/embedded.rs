//! The audit chain in sled, for one process: the `audit` tree, sequence number (big
//! endian) to the record's JSON. The head is kept in memory behind a mutex, which is
//! enough while this process is the only writer.

use std::sync::Mutex;

use super::{AuditRecord, Entry, Verification, Walk, GENESIS};
use crate::store::{decode, encode, Store, StoreError};

/// The sled audit chain.
pub(super) struct Embedded {
    store: Store,
    /// Serialises appends: each record names its predecessor's hash.
    head: Mutex<(u64, String)>,
}

impl Embedded {
    /// Opens the chain and finds its head.
    pub(super) fn open(store: Store) -> Result<Self, StoreError> {
        let head = match store.audit.last()? {
            Some((_, value)) => {
                let record: AuditRecord = decode("audit", &value)?;
                (record.seq, record.hash)
            }
            None => (0, GENESIS.to_string()),
        };
        Ok(Self { store, head: Mutex::new(head) })
    }

    /// Appends one record and flushes it.
    pub(super) async fn append(&self, entry: Entry) -> Result<(), StoreError> {
        {
            let mut head = self.head.lock().unwrap_or_else(|p| p.into_inner());
            let record = entry.link(head.0, head.1.clone(), crate::clock::unix_millis());
            self.store.audit.insert(record.seq.to_be_bytes(), encode(&record))?;
            *head = (record.seq, record.hash);
        }
        self.store.flush().await
    }

    /// Records after `after` that `wanted` keeps, at most `limit`.
    pub(super) fn read_matching(&self, after: u64, limit: usize, wanted: impl Fn(&AuditRecord) -> bool) -> Result<Vec<AuditRecord>, StoreError> {
        let mut out = Vec::new();
        for item in self.store.audit.range((after + 1).to_be_bytes()..) {
            if out.len() >= limit {
                break;
            }
            let (_, value) = item?;
            let record: AuditRecord = decode("audit", &value)?;
            if wanted(&record) {
                out.push(record);
            }
        }
        Ok(out)
    }

    /// Walks the whole chain.
    pub(super) fn verify(&self) -> Result<Verification, StoreError> {
        let mut walk = Walk::new();
        for item in self.store.audit.iter() {
            let (_, value) = item?;
            let record = decode::<AuditRecord>("audit", &value).ok();
            if let Err(broken) = walk.next(record.as_ref()) {
                return Ok(broken);
            }
        }
        Ok(walk.end())
    }
}

#[cfg(test)]
mod tests {
    use super::super::AuditLog;
    use super::*;

    #[tokio::test]
    async fn chain_verifies_and_any_edit_or_deletion_breaks_it() -> Result<(), Box<dyn std::error::Error>> {
        let store = Store::temporary()?;
        let log = AuditLog::open(store.clone())?;
        for i in 0..5 {
            log.append("operator", "tenant.create", &format!("t{i}"), serde_json::json!({"i": i})).await?;
        }
        assert_eq!(log.verify().await?, Verification { records: 5, ok: true, broken_at: None, head: log.read(4, 1, None).await?[0].hash.clone() });
        assert_eq!(log.read(0, 10, Some("t3")).await?.len(), 1);
        assert!(log.read(0, 0, None).await?.is_empty(), "a limit of 0 reads nothing");
        let mut third: AuditRecord = decode("audit", &store.audit.get(3u64.to_be_bytes())?.ok_or("missing")?)?;
        third.actor = "someone else".into();
        store.audit.insert(3u64.to_be_bytes(), encode(&third))?;
        assert_eq!(log.verify().await?.broken_at, Some(3));
        let reopened = AuditLog::open(store.clone())?;
        store.audit.remove(3u64.to_be_bytes())?;
        assert_eq!(reopened.verify().await?.broken_at, Some(3));
        Ok(())
    }
}
