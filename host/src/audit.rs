//! The audit trail: every operator and self-service change appends a record (who, what,
//! when, never a secret) to a log chained with blake3, so editing or deleting a record
//! breaks the chain at that point and `verify` says where.
//!
//! [`AuditLog`] is the one interface the gateway uses, over one of two stores: the
//! embedded one (sled, one process; `audit/embedded.rs`) or the shared one
//! ([`crate::postgres::audit::PgAudit`]), where appends from any number of replicas
//! form one chain. The record, its hash and the walk that verifies a chain are here and
//! shared by both; only where records are kept differs.

mod embedded;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::postgres::audit::PgAudit;
use crate::store::{encode, Store, StoreError};
use crate::tenants::Tenant;

/// One audit record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
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

/// The `prev_hash` of the first record.
pub(crate) const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

fn digest(record: &AuditRecord) -> String {
    let mut unhashed = record.clone();
    unhashed.hash = String::new();
    blake3::hash(&encode(&unhashed)).to_hex().to_string()
}

/// What one append records; the chain adds its position, time and links.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub actor: String,
    pub action: String,
    pub tenant: String,
    pub incarnation: String,
    pub detail: Value,
}

impl Entry {
    /// The record that follows the chain's head `(seq, hash)`, hashed.
    pub(crate) fn link(self, head_seq: u64, head_hash: String, unix_millis: u64) -> AuditRecord {
        let Entry { actor, action, tenant, incarnation, detail } = self;
        let mut record = AuditRecord { seq: head_seq + 1, unix_millis, actor, action, tenant, incarnation, detail, prev_hash: head_hash, hash: String::new() };
        record.hash = digest(&record);
        record
    }
}

/// Walks a chain from its first record, recomputing every hash and link.
pub(crate) struct Walk {
    previous: String,
    expected_seq: u64,
    records: u64,
}

impl Walk {
    pub(crate) fn new() -> Self {
        Self { previous: GENESIS.to_string(), expected_seq: 1, records: 0 }
    }

    /// Checks the next record (`None`: it did not decode); `Err` is the verdict naming the
    /// first broken record.
    pub(crate) fn next(&mut self, record: Option<&AuditRecord>) -> Result<(), Verification> {
        match record {
            Some(record) if record.seq == self.expected_seq && record.prev_hash == self.previous && digest(record) == record.hash => {
                self.previous = record.hash.clone();
                self.expected_seq += 1;
                self.records += 1;
                Ok(())
            }
            _ => Err(self.broken()),
        }
    }

    /// Records checked so far.
    pub(crate) fn records(&self) -> u64 {
        self.records
    }

    /// The hash of the last record checked (the genesis hash before any).
    pub(crate) fn head(&self) -> &str {
        &self.previous
    }

    /// The verdict that the chain breaks at the next record expected.
    pub(crate) fn broken(&self) -> Verification {
        Verification { records: self.records, ok: false, broken_at: Some(self.expected_seq), head: self.previous.clone() }
    }

    /// The verdict that every record checked holds.
    pub(crate) fn end(self) -> Verification {
        Verification { records: self.records, ok: true, broken_at: None, head: self.previous }
    }
}

/// The audit log, over the embedded or the shared store.
pub struct AuditLog {
    chain: Chain,
}

enum Chain {
    Embedded(embedded::Embedded),
    Shared(PgAudit),
}

impl AuditLog {
    /// The embedded log in `store`, with its head found.
    pub fn open(store: Store) -> Result<Self, StoreError> {
        Ok(Self { chain: Chain::Embedded(embedded::Embedded::open(store)?) })
    }

    /// The shared log (PostgreSQL).
    pub fn shared(audit: PgAudit) -> Self {
        Self { chain: Chain::Shared(audit) }
    }

    /// Appends one record; durable when this returns.
    pub async fn append(&self, actor: &str, action: &str, tenant: &str, detail: Value) -> Result<(), StoreError> {
        self.append_entry(Entry { actor: actor.into(), action: action.into(), tenant: tenant.into(), incarnation: String::new(), detail }).await
    }

    /// Appends one record about one tenant incarnation; durable when this returns.
    pub async fn append_tenant(&self, actor: &str, action: &str, tenant: &Tenant, detail: Value) -> Result<(), StoreError> {
        self.append_entry(Entry { actor: actor.into(), action: action.into(), tenant: tenant.id.clone(), incarnation: tenant.incarnation.clone(), detail }).await
    }

    async fn append_entry(&self, entry: Entry) -> Result<(), StoreError> {
        match &self.chain {
            Chain::Embedded(e) => e.append(entry).await,
            Chain::Shared(p) => p.append(entry).await.map(|_| ()),
        }
    }

    /// Records after `after`, at most `limit`, optionally only those about one tenant id
    /// (every incarnation: the operator's view).
    pub async fn read(&self, after: u64, limit: usize, tenant: Option<&str>) -> Result<Vec<AuditRecord>, StoreError> {
        match &self.chain {
            Chain::Embedded(e) => e.read_matching(after, limit, |record| tenant.is_none_or(|t| t == record.tenant)),
            Chain::Shared(p) => p.read(after, limit, tenant).await,
        }
    }

    /// Records about this incarnation of `tenant` only (the tenant's own view).
    pub async fn read_own(&self, after: u64, limit: usize, tenant: &Tenant) -> Result<Vec<AuditRecord>, StoreError> {
        match &self.chain {
            Chain::Embedded(e) => e.read_matching(after, limit, |record| record.tenant == tenant.id && record.incarnation == tenant.incarnation),
            Chain::Shared(p) => p.read_own(after, limit, &tenant.id, &tenant.incarnation).await,
        }
    }

    /// Walks the whole chain, recomputing every hash and link; names the first broken
    /// record. The shared log also checks the last record against the head it keeps, so
    /// deleting records from the end breaks it too.
    pub async fn verify(&self) -> Result<Verification, StoreError> {
        match &self.chain {
            Chain::Embedded(e) => e.verify(),
            Chain::Shared(p) => p.verify().await,
        }
    }
}
