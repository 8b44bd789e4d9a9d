//! Versioned schema migrations, embedded in the binary and applied in order by
//! `tollgate migrate` (and by whatever opens the store before using it), recorded in
//! `tollgate_migrations`; replicas starting together take turns on an advisory lock, so
//! each migration runs once.

use deadpool_postgres::Pool;

use super::DbError;

/// `(version, name, sql)`, in order. Never edit a released migration: add the next one.
pub const MIGRATIONS: &[(i32, &str, &str)] = &[
    (1, "budgets", include_str!("migrations/0001_budgets.sql")),
    (2, "tenants_tokens", include_str!("migrations/0002_tenants_tokens.sql")),
    (3, "vault", include_str!("migrations/0003_vault.sql")),
    (4, "audit_policies", include_str!("migrations/0004_audit_policies.sql")),
    (5, "sessions_memory_log", include_str!("migrations/0005_sessions_memory_log.sql")),
    (6, "tenant_tombstones", include_str!("migrations/0006_tenant_tombstones.sql")),
    (7, "policy_blob_lock", include_str!("migrations/0007_policy_blob_lock.sql")),
    (8, "credential_changes", include_str!("migrations/0008_credential_changes.sql")),
    (9, "change_feed_order", include_str!("migrations/0009_change_feed_order.sql")),
    (10, "stored_responses", include_str!("migrations/0010_stored_responses.sql")),
];

/// The advisory lock migrations run under (an arbitrary constant: "tollgate" in ASCII).
const MIGRATION_LOCK: i64 = 0x746f_6c6c_6761_7465;

/// Applies every migration the database lacks, all in one transaction (PostgreSQL's DDL
/// is transactional: a failure leaves the schema as it was). Returns the versions applied.
pub async fn migrate(pool: &Pool) -> Result<Vec<i32>, DbError> {
    let mut client = pool.get().await.map_err(|e| DbError::new("connecting", e))?;
    let tx = client.transaction().await.map_err(|e| DbError::new("starting the migration", e))?;
    // Locked first: two sessions running CREATE TABLE IF NOT EXISTS at once can both try
    // to create it, and one fails. Released at commit or rollback.
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK]).await.map_err(|e| DbError::new("taking the migration lock", e))?;
    tx.batch_execute("CREATE TABLE IF NOT EXISTS tollgate_migrations (version int PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())")
        .await
        .map_err(|e| DbError::new("creating the migrations table", e))?;
    let applied: Vec<i32> = tx
        .query("SELECT version FROM tollgate_migrations", &[])
        .await
        .map_err(|e| DbError::new("reading applied migrations", e))?
        .iter()
        .map(|row| row.get(0))
        .collect();
    let mut done = Vec::new();
    for (version, name, sql) in MIGRATIONS {
        if applied.contains(version) {
            continue;
        }
        tx.batch_execute(sql).await.map_err(|e| DbError::new("applying a migration", e))?;
        tx.execute("INSERT INTO tollgate_migrations (version, name) VALUES ($1, $2)", &[version, name])
            .await
            .map_err(|e| DbError::new("recording a migration", e))?;
        done.push(*version);
    }
    tx.commit().await.map_err(|e| DbError::new("committing the migration", e))?;
    for version in &done {
        tracing::info!(version, "applied store migration");
    }
    Ok(done)
}
