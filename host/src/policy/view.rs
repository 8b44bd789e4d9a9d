//! What a policy call may see of its tenant: one small trait, implemented by the gateway
//! over its store, metering and catalog, and by tests over fakes. Every method is already
//! scoped to one tenant; nothing here takes a tenant id.

pub use futures_util::future::BoxFuture;

use super::bindings::tollgate::policy::{catalog::ModelInfo, credentials::CredentialInfo, memory::MemoryError, metering::BudgetStatus};

/// One line a policy wrote to its log.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct LogLine {
    /// Milliseconds since the Unix epoch.
    pub unix_millis: u64,
    /// `trace`, `debug`, `info`, `warn`, `error` or `stderr`.
    pub level: String,
    /// The message, truncated to the per-line limit.
    pub message: String,
    /// The request during which it was written.
    pub request_id: String,
}

/// A read behind an import failed (the store, the vault). The import traps the call with
/// this message rather than answering zero or an empty list: a budget guard reading "no
/// spend" on a storage failure would fail open.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} unavailable: {cause}")]
pub struct Unavailable {
    /// What could not be read: `budget`, `credentials`, ...
    pub what: &'static str,
    /// Why, e.g. `storage failure: ...` (never another tenant's data).
    pub cause: String,
}

/// The tenant-scoped capabilities behind the policy imports.
pub trait TenantView: Send + Sync {
    /// Names and providers of the tenant's credentials. Asynchronous: on the shared store
    /// it is a database read.
    fn credentials(&self) -> BoxFuture<'_, Result<Vec<CredentialInfo>, Unavailable>>;
    /// Reads a memory value. Asynchronous (like the other memory methods): on the shared
    /// store it is a database round trip, awaited without blocking a worker thread.
    fn memory_get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Vec<u8>>, MemoryError>>;
    /// Writes a memory value within the quota.
    fn memory_set<'a>(&'a self, key: &'a str, value: &'a [u8]) -> BoxFuture<'a, Result<(), MemoryError>>;
    /// Deletes a memory value.
    fn memory_delete<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<(), MemoryError>>;
    /// Lists memory keys by prefix.
    fn memory_list<'a>(&'a self, prefix: &'a str, limit: u32) -> BoxFuture<'a, Result<Vec<String>, MemoryError>>;
    /// Budget and spend of the current period. Asynchronous (like the two below): on the
    /// shared store it is a database read.
    fn budget(&self) -> BoxFuture<'_, Result<BudgetStatus, Unavailable>>;
    /// An end user's settled spend this period.
    fn user_spend<'a>(&'a self, end_user: &'a str) -> BoxFuture<'a, Result<u64, Unavailable>>;
    /// A tag's settled spend this period.
    fn tag_spend<'a>(&'a self, tag: &'a str) -> BoxFuture<'a, Result<u64, Unavailable>>;
    /// The catalog with the tenant's prices.
    fn models(&self) -> Vec<ModelInfo>;
    /// One catalog entry.
    fn lookup_model(&self, model: &str) -> Option<ModelInfo>;
    /// Appends lines to the tenant's bounded policy log. Synchronous and never failing: it
    /// runs as a call ends, and a store that is slow or down must not hold the request (the
    /// shared store queues the lines and writes them off the request path).
    fn append_log(&self, lines: Vec<LogLine>);
}
