//! The audit trail: every operator and self-service change appends a record (who, what,
//! when, never a secret) to a log chained with blake3, so editing or deleting a record
//! breaks the chain at that point and `verify` says where.

use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::store::{decode, encode, Store, StoreError};

/// One audit record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// Position in the chain, from 1.
    pub seq: u64,
    /// Milliseconds since the Unix epoch.
    pub unix_millis: u64,
    /// `operator`, or `tenant:<id>` for a tenant's manage token (with the token id).
    pub actor: String,
    /// What happened, e.g. `credential.put`.
    pub action: String,
    /// The tenant it concerns (empty for gateway-wide actions).
    pub tenant: String,
    /// The tenant incarnation it concerns: a tenant re-created under the same id does not
    /// see its predecessor's trail. Left out of records (and their hash) when empty, so
    /// records from before incarnations verify unchanged.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub incarnation: String,
    /// Non-secret details (names, hashes, amounts).
    pub detail: Value,
    /// Hash of the previous record (hex; zeros for the first).
    pub prev_hash: String,
    /// blake3 of this record without this field (hex).
    pub hash: String,
}

/// The chain was broken.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verification {
    /// Records checked.
    pub records: u64,
    /// Whether every link holds.
    pub ok: bool,
    /// The first broken record, if any.
    pub broken_at: Option<u64>,
    /// The head hash.
    pub head: String,
}

const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

fn digest(record: &AuditRecord) -> String {
    let mut unhashed = record.clone();
    unhashed.hash = String::new();
    blake3::hash(&encode(&unhashed)).to_hex().to_string()
}

/// The audit log.
pub struct AuditLog {
    store: Store,
    /// Serialises appends: each record names its predecessor's hash.
    head: Mutex<(u64, String)>,
}

impl AuditLog {
    /// Opens the log and finds its head.
    pub fn open(store: Store) -> Result<Self, StoreError> {
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
    pub async fn append(&self, actor: &str, action: &str, tenant: &str, detail: Value) -> Result<(), StoreError> {
        self.append_record(actor, action, tenant, "", detail).await
    }

    /// Appends one record about one tenant incarnation.
    pub async fn append_tenant(&self, actor: &str, action: &str, tenant: &crate::tenants::Tenant, detail: Value) -> Result<(), StoreError> {
        self.append_record(actor, action, &tenant.id, &tenant.incarnation, detail).await
    }

    async fn append_record(&self, actor: &str, action: &str, tenant: &str, incarnation: &str, detail: Value) -> Result<(), StoreError> {
        {
            let mut head = self.head.lock().unwrap_or_else(|p| p.into_inner());
            let mut record = AuditRecord {
                seq: head.0 + 1,
                unix_millis: crate::clock::unix_millis(),
                actor: actor.into(),
                action: action.into(),
                tenant: tenant.into(),
                incarnation: incarnation.into(),
                detail,
                prev_hash: head.1.clone(),
                hash: String::new(),
            };
            record.hash = digest(&record);
            self.store.audit.insert(record.seq.to_be_bytes(), encode(&record))?;
            *head = (record.seq, record.hash);
        }
        self.store.flush().await
    }

    /// Records after `after`, at most `limit`, optionally only those about one tenant id
    /// (every incarnation: the operator's view).
    pub fn read(&self, after: u64, limit: usize, tenant: Option<&str>) -> Result<Vec<AuditRecord>, StoreError> {
        self.read_matching(after, limit, |record| tenant.is_none_or(|t| t == record.tenant))
    }

    /// Records about this incarnation of `tenant` only (the tenant's own view).
    pub fn read_own(&self, after: u64, limit: usize, tenant: &crate::tenants::Tenant) -> Result<Vec<AuditRecord>, StoreError> {
        self.read_matching(after, limit, |record| record.tenant == tenant.id && record.incarnation == tenant.incarnation)
    }

    fn read_matching(&self, after: u64, limit: usize, wanted: impl Fn(&AuditRecord) -> bool) -> Result<Vec<AuditRecord>, StoreError> {
        let mut out = Vec::new();
        for item in self.store.audit.range((after + 1).to_be_bytes()..) {
            let (_, value) = item?;
            let record: AuditRecord = decode("audit", &value)?;
            if wanted(&record) {
                out.push(record);
                if out.len() >= limit {
                    break;
                }
            }
        }
        Ok(out)
    }

    /// Walks the whole chain, recomputing every hash and link.
    pub fn verify(&self) -> Result<Verification, StoreError> {
        let mut previous = GENESIS.to_string();
        let mut expected_seq = 1;
        let mut records = 0;
        for item in self.store.audit.iter() {
            let (_, value) = item?;
            let record: AuditRecord = match decode("audit", &value) {
                Ok(record) => record,
                Err(_) => return Ok(Verification { records, ok: false, broken_at: Some(expected_seq), head: previous }),
            };
            if record.seq != expected_seq || record.prev_hash != previous || digest(&record) != record.hash {
                return Ok(Verification { records, ok: false, broken_at: Some(expected_seq), head: previous });
            }
            previous = record.hash;
            expected_seq += 1;
            records += 1;
        }
        Ok(Verification { records, ok: true, broken_at: None, head: previous })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn chain_verifies_and_any_edit_or_deletion_breaks_it() -> Result<(), Box<dyn std::error::Error>> {
        let store = Store::temporary()?;
        let log = AuditLog::open(store.clone())?;
        for i in 0..5 {
            log.append("operator", "tenant.create", &format!("t{i}"), serde_json::json!({"i": i})).await?;
        }
        assert_eq!(log.verify()?, Verification { records: 5, ok: true, broken_at: None, head: log.read(4, 1, None)?[0].hash.clone() });
        assert_eq!(log.read(0, 10, Some("t3"))?.len(), 1);
        let mut third: AuditRecord = decode("audit", &store.audit.get(3u64.to_be_bytes())?.ok_or("missing")?)?;
        third.actor = "someone else".into();
        store.audit.insert(3u64.to_be_bytes(), encode(&third))?;
        assert_eq!(log.verify()?.broken_at, Some(3));
        let reopened = AuditLog::open(store.clone())?;
        store.audit.remove(3u64.to_be_bytes())?;
        assert_eq!(reopened.verify()?.broken_at, Some(3));
        Ok(())
    }
}
