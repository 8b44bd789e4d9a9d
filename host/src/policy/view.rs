//! What a policy call may see of its tenant: one small trait, implemented by the gateway
//! over its store, metering and catalog, and by tests over fakes. Every method is already
//! scoped to one tenant; nothing here takes a tenant id.

pub use futures_util::future::BoxFuture;

use super::bindings::tollgate::policy::{catalog::ModelInfo, credentials::CredentialInfo, memory::MemoryError, metering::BudgetStatus};

/// One line a policy wrote to its log.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
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
    /// Reads a memory value.
    fn memory_get(&self, key: &str) -> Result<Option<Vec<u8>>, MemoryError>;
    /// Writes a memory value within the quota.
    fn memory_set(&self, key: &str, value: &[u8]) -> Result<(), MemoryError>;
    /// Deletes a memory value.
    fn memory_delete(&self, key: &str) -> Result<(), MemoryError>;
    /// Lists memory keys by prefix.
    fn memory_list(&self, prefix: &str, limit: u32) -> Result<Vec<String>, MemoryError>;
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
    /// Appends lines to the tenant's bounded policy log.
    fn append_log(&self, lines: Vec<LogLine>);
}
