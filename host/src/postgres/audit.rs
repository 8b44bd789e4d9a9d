//! The audit chain on PostgreSQL, shared by every replica: one chain however many
//! replicas append. An append locks the chain's head row (`audit_head ... FOR UPDATE`),
//! links its record to it, inserts it and moves the head, in one transaction; a
//! concurrent append from any replica waits for that commit and links to the new head.
//! The serialisation is the database's, never a process's.

use deadpool_postgres::Pool;
use tokio_postgres::{IsolationLevel, Row};

use super::{db, from_db, pool_error, to_db};
use crate::audit::{AuditRecord, Entry, Verification, Walk};
use crate::store::StoreError;

/// Records read per round trip while verifying (a chain is walked in pages, inside one
/// snapshot, so memory stays bounded however long it is).
const VERIFY_PAGE: i64 = 1000;

const COLUMNS: &str = "seq, unix_millis, actor, action, tenant_id, incarnation, detail, prev_hash, hash";

/// The audit chain in PostgreSQL. Clones share one pool.
#[derive(Clone)]
pub struct PgAudit {
    pool: Pool,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A hash as the record holds it (hex) to its column's bytes.
fn hash_bytes(hex: &str) -> Result<[u8; 32], StoreError> {
    blake3::Hash::from_hex(hex).map(|h| *h.as_bytes()).map_err(|e| StoreError::Corrupt { tree: "audit", reason: e.to_string() })
}

fn record_of(row: &Row) -> AuditRecord {
    AuditRecord {
        seq: from_db(row.get(0)),
        unix_millis: from_db(row.get(1)),
        actor: row.get(2),
        action: row.get(3),
        tenant: row.get(4),
        incarnation: row.get(5),
        detail: row.get(6),
        prev_hash: hex(row.get(7)),
        hash: hex(row.get(8)),
    }
}

fn limit_of(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

impl PgAudit {
    /// The chain in `pool`'s database (migrated).
    pub fn new(pool: Pool) -> Self {
        Self { pool }
    }

    /// Links `entry` to the head, stores it and moves the head, in one transaction;
    /// returns the record once committed.
    pub(crate) async fn append(&self, entry: Entry) -> Result<AuditRecord, StoreError> {
        let mut client = self.pool.get().await.map_err(pool_error)?;
        let tx = client.transaction().await.map_err(db("starting an audit append"))?;
        let head = tx.query_one("SELECT seq, hash FROM audit_head FOR UPDATE", &[]).await.map_err(db("locking the audit head"))?;
        // Timed once the head is held, so times follow the chain's order as far as the
        // replicas' clocks agree.
        let record = entry.link(from_db(head.get(0)), hex(head.get(1)), crate::clock::unix_millis());
        let (prev_hash, hash) = (hash_bytes(&record.prev_hash)?, hash_bytes(&record.hash)?);
        tx.execute(
            format!("INSERT INTO audit ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)").as_str(),
            &[&to_db(record.seq), &to_db(record.unix_millis), &record.actor, &record.action, &record.tenant, &record.incarnation, &record.detail, &prev_hash.as_slice(), &hash.as_slice()],
        )
        .await
        .map_err(db("inserting an audit record"))?;
        tx.execute("UPDATE audit_head SET seq = $1, hash = $2", &[&to_db(record.seq), &hash.as_slice()]).await.map_err(db("moving the audit head"))?;
        tx.commit().await.map_err(db("committing an audit append"))?;
        Ok(record)
    }

    /// Records after `after`, at most `limit`, optionally only those about one tenant id.
    pub(crate) async fn read(&self, after: u64, limit: usize, tenant: Option<&str>) -> Result<Vec<AuditRecord>, StoreError> {
        let client = self.pool.get().await.map_err(pool_error)?;
        let rows = client
            .query(
                format!("SELECT {COLUMNS} FROM audit WHERE seq > $1 AND ($2::text IS NULL OR tenant_id = $2) ORDER BY seq LIMIT $3").as_str(),
                &[&to_db(after), &tenant, &limit_of(limit)],
            )
            .await
            .map_err(db("reading the audit trail"))?;
        Ok(rows.iter().map(record_of).collect())
    }

    /// Records after `after` about one incarnation of one tenant, at most `limit`.
    pub(crate) async fn read_own(&self, after: u64, limit: usize, tenant_id: &str, incarnation: &str) -> Result<Vec<AuditRecord>, StoreError> {
        let client = self.pool.get().await.map_err(pool_error)?;
        let rows = client
            .query(
                format!("SELECT {COLUMNS} FROM audit WHERE tenant_id = $1 AND incarnation = $2 AND seq > $3 ORDER BY seq LIMIT $4").as_str(),
                &[&tenant_id, &incarnation, &to_db(after), &limit_of(limit)],
            )
            .await
            .map_err(db("reading a tenant's audit trail"))?;
        Ok(rows.iter().map(record_of).collect())
    }

    /// Walks the whole chain in one snapshot (appends meanwhile are not seen, so they
    /// cannot look like a break), then checks it ends at the head.
    pub(crate) async fn verify(&self) -> Result<Verification, StoreError> {
        let mut client = self.pool.get().await.map_err(pool_error)?;
        let tx = client
            .build_transaction()
            .isolation_level(IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await
            .map_err(db("starting an audit verification"))?;
        let mut walk = Walk::new();
        let mut after = 0i64;
        loop {
            let rows = tx
                .query(format!("SELECT {COLUMNS} FROM audit WHERE seq > $1 ORDER BY seq LIMIT $2").as_str(), &[&after, &VERIFY_PAGE])
                .await
                .map_err(db("reading the audit chain"))?;
            let Some(last) = rows.last() else { break };
            after = last.get(0);
            for row in &rows {
                if let Err(broken) = walk.next(Some(&record_of(row))) {
                    return Ok(broken);
                }
            }
        }
        let head = tx.query_one("SELECT seq, hash FROM audit_head", &[]).await.map_err(db("reading the audit head"))?;
        let (head_seq, head_hash) = (from_db(head.get(0)), hex(head.get(1)));
        if head_seq != walk.records() || head_hash != walk.head() {
            // Records past the last one walked are missing (or the head was edited).
            return Ok(walk.broken());
        }
        Ok(walk.end())
    }
}
