//! The shared store for several replicas: PostgreSQL, through `tokio-postgres` with a
//! `deadpool-postgres` pool (pipelining, explicit prepared statements, no database needed
//! at build time; see `SCALE-OUT.md` in the design notes for the comparison with sqlx).
//!
//! This module connects and migrates; each submodule keeps one domain on it ([`budgets`],
//! [`tenants`], [`tombstones`], [`audit`], [`policies`], [`memory`], [`sessions`],
//! [`responses`], [`policy_log`], the vault with its per-replica cache, `sealing/cache.rs`), and [`changes`] carries
//! writes to the other replicas' caches. The schema is keyed by `tenant_id` first, so
//! Citus can distribute it by tenant; the few global tables say so in their `COMMENT`
//! (which the schema test reads).

pub mod audit;
pub mod budgets;
pub mod changes;
pub mod memory;
pub mod policy_log;
pub mod responses;
pub mod sessions;
pub mod tenants;
pub mod tombstones;
mod migrate;
pub mod policies;
pub(crate) mod vault;

use std::str::FromStr;

use deadpool_postgres::{Manager, ManagerConfig, RecyclingMethod};
use tokio_postgres::NoTls;

use crate::store::StoreError;

pub use deadpool_postgres::Pool;
pub use migrate::{migrate, MIGRATIONS};

/// Connections per replica: enough to keep a settlement batch, reserves and reads in flight
/// at once; every connection pipelines.
const POOL_SIZE: usize = 16;

/// A database failure, with the operation that met it.
#[derive(Debug, thiserror::Error)]
#[error("database: {context}: {}", cause(source.as_ref()))]
pub struct DbError {
    /// What was being done.
    pub context: &'static str,
    /// The cause (connection, query or pool).
    #[source]
    pub source: Box<dyn std::error::Error + Send + Sync>,
}

impl DbError {
    /// Wraps `source` with what was being done.
    pub fn new(context: &'static str, source: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self { context, source: source.into() }
    }
}

/// The cause as an operator needs it: tokio-postgres prints a server error as just "db
/// error", so the server's SQLSTATE and message are spelled out.
fn cause(source: &(dyn std::error::Error + Send + Sync + 'static)) -> String {
    match source.downcast_ref::<tokio_postgres::Error>().and_then(tokio_postgres::Error::as_db_error) {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => source.to_string(),
    }
}

/// Counts and byte sizes are u64 in Rust and bigint in the database.
pub(crate) fn to_db(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// A bigint count or size read back (never negative in the schema).
pub(crate) fn from_db(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

/// A batch for a writer task: `first`, then whatever else is already waiting, up to `max`
/// (`next` takes one without waiting). One statement and one commit then serve them all.
pub(crate) fn take_waiting<T>(first: T, max: usize, mut next: impl FnMut() -> Option<T>) -> Vec<T> {
    let mut batch = vec![first];
    while batch.len() < max {
        match next() {
            Some(job) => batch.push(job),
            None => break,
        }
    }
    batch
}

/// Opens a pool on `url` (`postgres://user:password@host:port/db`, or the key=value form;
/// several hosts with `target_session_attrs=read-write` follow a failover). Connections
/// are made on first use; call [`migrate`] to check the database is reachable.
pub fn connect(url: &str) -> Result<Pool, DbError> {
    let config = tokio_postgres::Config::from_str(url).map_err(|e| DbError::new("parsing the store url", e))?;
    let manager = Manager::from_config(config, NoTls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
    Pool::builder(manager).max_size(POOL_SIZE).build().map_err(|e| DbError::new("building the connection pool", e))
}

/// Maps a query error to a store error naming what was being done.
pub(crate) fn db(context: &'static str) -> impl FnOnce(tokio_postgres::Error) -> StoreError {
    move |e| StoreError::Database(DbError::new(context, e))
}

/// Maps a failure to get a pooled connection to a store error.
pub(crate) fn pool_error(e: deadpool_postgres::PoolError) -> StoreError {
    StoreError::Database(DbError::new("connecting", e))
}

