//! The gateway's [`TenantView`]: what one tenant's policy call may see, built per request
//! from the shared services and the tenant's id. Nothing in it can reach another tenant.

use std::sync::Arc;

use crate::catalog::Catalog;
use crate::memory::TenantMemory;
use crate::metering::{Budget, Metering};
use crate::policy::{BoxFuture, BudgetStatus, CredentialInfo, LogLine, MemoryError, ModelInfo, TenantView, Unavailable};
use crate::policy_log::PolicyLog;
use crate::sealing::Vault;
use crate::store::TenantKey;

/// One tenant's capabilities for one policy call.
pub struct TenantScope {
    tenant_id: String,
    budget: Option<Budget>,
    now_millis: u64,
    vault: Arc<Vault>,
    memory: TenantMemory,
    metering: Metering,
    catalog: Arc<Catalog>,
    log: PolicyLog,
}

/// The shared services a scope is cut from.
#[derive(Clone)]
pub struct ScopeServices {
    /// Credentials.
    pub vault: Arc<Vault>,
    /// Spend.
    pub metering: Metering,
    /// Models and prices.
    pub catalog: Arc<Catalog>,
    /// The store.
    pub store: crate::Store,
    /// Per-tenant memory quota, in bytes.
    pub memory_quota_bytes: u64,
    /// Policy log lines kept per tenant.
    pub log_lines_kept: usize,
}

impl ScopeServices {
    /// The catalog as `tenant` pays it: the operator's, with the tenant's price overrides.
    pub fn catalog_for(&self, tenant: &crate::tenants::Tenant) -> Arc<Catalog> {
        if tenant.price_overrides.is_empty() {
            self.catalog.clone()
        } else {
            Arc::new(self.catalog.with_overrides(&tenant.price_overrides))
        }
    }

    /// The scope of `tenant` (its budget and prices) at `now_millis`.
    pub fn tenant_scope(&self, tenant: &crate::tenants::Tenant, now_millis: u64) -> TenantScope {
        let mut scope = self.scope(tenant.storage_id(), tenant.budget, now_millis);
        scope.catalog = self.catalog_for(tenant);
        scope
    }

    /// The scope of the tenant stored under `tenant_id` (its storage id) at `now_millis`.
    pub fn scope(&self, tenant_id: &str, budget: Option<Budget>, now_millis: u64) -> TenantScope {
        let tenant = TenantKey::of(tenant_id);
        TenantScope {
            tenant_id: tenant_id.into(),
            budget,
            now_millis,
            vault: self.vault.clone(),
            memory: TenantMemory::new(self.store.clone(), tenant, self.memory_quota_bytes),
            metering: self.metering.clone(),
            catalog: self.catalog.clone(),
            log: PolicyLog::new(self.store.clone(), tenant, self.log_lines_kept),
        }
    }
}

impl TenantScope {
    /// Settled spend of `scope` in the period of the tenant's budget.
    async fn scope_spend(&self, scope: &str) -> Result<u64, crate::store::StoreError> {
        let period = self.budget.map(|b| b.period).unwrap_or_default().id_at(self.now_millis);
        self.metering.scope_spend(&self.tenant_id, scope, &period).await
    }
}

impl TenantView for TenantScope {
    fn credentials(&self) -> BoxFuture<'_, Result<Vec<CredentialInfo>, Unavailable>> {
        Box::pin(async move {
            let listed = self.vault.list(&self.tenant_id).await.map_err(|e| Unavailable { what: "credentials", cause: e.to_string() })?;
            Ok(listed.into_iter().map(|c| CredentialInfo { name: c.name, provider: c.provider }).collect())
        })
    }

    fn memory_get(&self, key: &str) -> Result<Option<Vec<u8>>, MemoryError> {
        self.memory.get(key)
    }

    fn memory_set(&self, key: &str, value: &[u8]) -> Result<(), MemoryError> {
        self.memory.set(key, value)
    }

    fn memory_delete(&self, key: &str) -> Result<(), MemoryError> {
        self.memory.delete(key)
    }

    fn memory_list(&self, prefix: &str, limit: u32) -> Result<Vec<String>, MemoryError> {
        self.memory.list(prefix, limit)
    }

    fn budget(&self) -> BoxFuture<'_, Result<BudgetStatus, Unavailable>> {
        Box::pin(async move { self.metering.status(&self.tenant_id, self.budget, self.now_millis).await.map_err(|e| Unavailable { what: "budget", cause: e.to_string() }) })
    }

    fn user_spend<'a>(&'a self, end_user: &'a str) -> BoxFuture<'a, Result<u64, Unavailable>> {
        Box::pin(async move { self.scope_spend(&format!("user:{end_user}")).await.map_err(|e| Unavailable { what: "end-user spend", cause: e.to_string() }) })
    }

    fn tag_spend<'a>(&'a self, tag: &'a str) -> BoxFuture<'a, Result<u64, Unavailable>> {
        Box::pin(async move { self.scope_spend(&format!("tag:{tag}")).await.map_err(|e| Unavailable { what: "tag spend", cause: e.to_string() }) })
    }

    fn models(&self) -> Vec<ModelInfo> {
        self.catalog.models().to_vec()
    }

    fn lookup_model(&self, model: &str) -> Option<ModelInfo> {
        self.catalog.lookup(model).cloned()
    }

    fn append_log(&self, lines: Vec<LogLine>) {
        if let Err(e) = self.log.append(lines) {
            tracing::warn!(tenant = %self.tenant_id, error = %e, "could not append to policy log");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metering::{Budget, Hold, LedgerRecord, Period};

    fn services() -> Result<ScopeServices, Box<dyn std::error::Error>> {
        let store = crate::Store::temporary()?;
        Ok(ScopeServices {
            vault: Arc::new(Vault::new(store.clone(), crate::sealing::Key::random())?),
            metering: Metering::new(store.clone())?,
            catalog: Arc::new(Catalog::new(&[])),
            store,
            memory_quota_bytes: 1 << 20,
            log_lines_kept: 10,
        })
    }

    /// A policy asking for the spend of 100,000 distinct end users and tags (names it
    /// chooses freely) leaves the host's counter cells bounded, and still reads the real
    /// figures.
    #[tokio::test]
    async fn spend_lookups_of_endless_names_keep_host_memory_bounded() -> Result<(), Box<dyn std::error::Error>> {
        let services = services()?;
        let now = 1_764_460_800_000; // 2025-11-30
        let budget = Some(Budget { limit_microdollars: 1_000_000, period: Period::Month });
        let users = [("user:alice".to_string(), 500)];
        let hold = Hold { tenant_id: "t", budget, sub_budgets: &users, request_id: "r1", microdollars: 100, now_millis: now, end_user: Some("alice".into()), tags: vec!["team".into()] };
        let reservation = services.metering.reserve_for(hold).await?;
        let record = LedgerRecord {
            tenant_id: "t".into(), unix_millis: now, request_id: "r1".into(), provider: "demo".into(), model: "m".into(),
            prompt_tokens: 1, completion_tokens: 1, cached_tokens: 0, cache_write_tokens: 0, cost_microdollars: 42, latency_ms: 1,
            outcome: "success".into(), end_user: Some("alice".into()), tags: vec!["team".into()], policy_hash: String::new(),
        };
        services.metering.settle_durably(reservation, record).await?;
        let scope = services.scope("t", budget, now);
        for i in 0..100_000 {
            assert_eq!(scope.user_spend(&format!("user-{i}")).await?, 0);
            if i % 10 == 0 {
                assert_eq!(scope.tag_spend(&format!("tag-{i}")).await?, 0);
            }
        }
        assert_eq!(scope.user_spend("alice").await?, 42);
        assert_eq!(scope.tag_spend("team").await?, 42);
        assert_eq!(scope.budget().await?.spent_microdollars, 42);
        let cells = services.metering.cells_len();
        assert!(cells <= 100, "100,000 spend lookups left {cells} counter cells in memory");
        Ok(())
    }
}
