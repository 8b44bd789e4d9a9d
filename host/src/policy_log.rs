//! Each tenant's bounded policy log: the newest lines its policy wrote (and its stderr),
//! readable by that tenant only. The same machinery keeps a second bounded journal per
//! tenant, its recent decision inputs ([`Stream::DecisionInputs`], see
//! `decision_inputs.rs`).
//!
//! [`PolicyLogs`] is the one interface the gateway uses, over the embedded store
//! ([`EmbeddedLog`], sled) or the shared one ([`PgPolicyLog`], PostgreSQL).

mod embedded;
mod line_counts;

pub use embedded::EmbeddedLog;
use line_counts::LineCounts;

use crate::policy::LogLine;
use crate::postgres::policy_log::PgPolicyLog;
use crate::store::{Kind, Store, StoreError, TenantKey};

/// Every tenant's policy log, in one store, each keeping its newest `keep` lines. Clones
/// share it.
#[derive(Clone)]
pub struct PolicyLogs {
    place: Place,
    keep: usize,
    stream: Stream,
}

/// Which journal of each tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// What policies logged.
    PolicyLog,
    /// What policies decided recent requests on.
    DecisionInputs,
}

impl Stream {
    fn kind(self) -> Kind {
        match self {
            Stream::PolicyLog => Kind::PolicyLog,
            Stream::DecisionInputs => Kind::DecisionInput,
        }
    }

    /// The tenant key of the shared table's rows: the storage id for the policy log, and
    /// for the decision inputs the storage id with a suffix no storage id has (`/` is in
    /// no tenant id or incarnation).
    fn shared_key(self, storage_id: &str) -> String {
        match self {
            Stream::PolicyLog => storage_id.to_string(),
            Stream::DecisionInputs => format!("{storage_id}/decision-inputs"),
        }
    }
}

#[derive(Clone)]
enum Place {
    Embedded(Store, std::sync::Arc<LineCounts>),
    Shared(PgPolicyLog),
}

impl PolicyLogs {
    /// In the embedded store.
    pub fn embedded(store: Store, keep: usize) -> Self {
        Self { place: Place::Embedded(store, Default::default()), keep, stream: Stream::PolicyLog }
    }

    /// In the shared store (PostgreSQL).
    pub fn shared(table: PgPolicyLog, keep: usize) -> Self {
        Self { place: Place::Shared(table), keep, stream: Stream::PolicyLog }
    }

    /// The same place's journal `stream`, keeping `keep` lines per tenant.
    pub fn stream(&self, stream: Stream, keep: usize) -> Self {
        Self { place: self.place.clone(), keep, stream }
    }

    /// Lines kept per tenant.
    pub fn keep(&self) -> usize {
        self.keep
    }

    /// The log of the tenant stored under `storage_id` (its incarnation).
    pub fn tenant(&self, storage_id: &str) -> PolicyLog {
        let arm = match &self.place {
            Place::Embedded(store, counts) => Arm::Embedded(EmbeddedLog::new(store.clone(), TenantKey::of(storage_id), self.keep, self.stream.kind(), counts.clone())),
            Place::Shared(table) => Arm::Shared { table: table.clone(), keep: self.keep },
        };
        PolicyLog { tenant_id: self.stream.shared_key(storage_id), arm }
    }

    /// Removes every line of a deleted tenant: shared, its rows; embedded, only its line
    /// count (its records go with the store's purge of the tenant).
    pub async fn purge_tenant(&self, storage_id: &str) -> Result<(), StoreError> {
        match &self.place {
            Place::Embedded(_, counts) => {
                counts.forget(&TenantKey::of(storage_id).prefix(self.stream.kind()));
                Ok(())
            }
            Place::Shared(table) => table.purge_tenant(&self.stream.shared_key(storage_id)).await,
        }
    }
}

/// One tenant's policy log.
#[derive(Clone)]
pub struct PolicyLog {
    tenant_id: String,
    arm: Arm,
}

#[derive(Clone)]
enum Arm {
    Embedded(EmbeddedLog),
    Shared { table: PgPolicyLog, keep: usize },
}

impl PolicyLog {
    /// Appends lines, then trims the oldest beyond the number kept; returns once they are
    /// stored.
    pub async fn append(&self, lines: Vec<LogLine>) -> Result<(), StoreError> {
        match &self.arm {
            Arm::Embedded(e) => e.append(lines),
            Arm::Shared { table, keep } => table.append(&self.tenant_id, lines, *keep).await,
        }
    }

    /// Appends lines without making the caller wait for a database: the end of a policy
    /// call (synchronous, on the request path) hands its lines over here. Embedded, they
    /// are written at once; shared, queued for this replica's writer, which stores them in
    /// batches. Best effort: a failure is logged, never the caller's.
    pub fn append_detached(&self, lines: Vec<LogLine>) {
        match &self.arm {
            Arm::Embedded(e) => {
                if let Err(error) = e.append(lines) {
                    tracing::warn!(tenant = %self.tenant_id, error = %error, "could not append to policy log");
                }
            }
            Arm::Shared { table, keep } => {
                let count = lines.len();
                if !table.append_detached(&self.tenant_id, lines, *keep) {
                    tracing::warn!(tenant = %self.tenant_id, lines = count, "policy log lines dropped: the writer's queue is full");
                }
            }
        }
    }

    /// The newest `limit` lines, oldest first.
    pub async fn read(&self, limit: usize) -> Result<Vec<LogLine>, StoreError> {
        match &self.arm {
            Arm::Embedded(e) => e.read(limit),
            Arm::Shared { table, .. } => table.read(&self.tenant_id, limit).await,
        }
    }
}
