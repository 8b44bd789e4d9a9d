//! The shared store for several replicas: PostgreSQL, through `tokio-postgres` with a
//! `deadpool-postgres` pool (pipelining, explicit prepared statements, no database needed
//! at build time; see `SCALE-OUT.md` in the design notes for the comparison with sqlx).
//!
//! This module connects and migrates; [`budgets`] is the budget authority on it, and
//! `vault` keeps sealed credentials and wrapped data keys (behind [`crate::sealing::Vault`]). The
//! schema is keyed by `tenant_id` first everywhere, so Citus can distribute it by tenant.

pub mod budgets;
mod migrate;
pub(crate) mod vault;

use std::str::FromStr;

use deadpool_postgres::{Manager, ManagerConfig, RecyclingMethod};
use tokio_postgres::NoTls;

pub use deadpool_postgres::Pool;
pub use migrate::{migrate, MIGRATIONS};

/// Connections per replica: enough to keep a settlement batch, reserves and reads in flight
/// at once; every connection pipelines.
const POOL_SIZE: usize = 16;

/// A database failure, with the operation that met it.
#[derive(Debug, thiserror::Error)]
#[error("database: {context}: {source}")]
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

/// Opens a pool on `url` (`postgres://user:password@host:port/db`, or the key=value form;
/// several hosts with `target_session_attrs=read-write` follow a failover). Connections
/// are made on first use; call [`migrate`] to check the database is reachable.
pub fn connect(url: &str) -> Result<Pool, DbError> {
    let config = tokio_postgres::Config::from_str(url).map_err(|e| DbError::new("parsing the store url", e))?;
    let manager = Manager::from_config(config, NoTls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
    Pool::builder(manager).max_size(POOL_SIZE).build().map_err(|e| DbError::new("building the connection pool", e))
}
