//! The gateway's [`TenantView`]: what one tenant's policy call may see, built per request
//! from the shared services and the tenant's id. Nothing in it can reach another tenant.

use std::sync::Arc;

use crate::catalog::Catalog;
use crate::memory::{Memory, TenantMemory};
use crate::metering::{Budget, Metering};
use crate::policy::{BoxFuture, BudgetStatus, CredentialInfo, LogLine, MemoryError, ModelInfo, TenantView, Unavailable};
use crate::policy_log::{PolicyLog, PolicyLogs};
use crate::sealing::Vault;

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
    /// Every tenant's policy memory (with its quota).
    pub memory: Memory,
    /// Every tenant's policy log.
    pub logs: PolicyLogs,
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
        TenantScope {
            tenant_id: tenant_id.into(),
            budget,
            now_millis,
            vault: self.vault.clone(),
            memory: self.memory.tenant(tenant_id),
            metering: self.metering.clone(),
            catalog: self.catalog.clone(),
            log: self.logs.tenant(tenant_id),
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

    fn memory_get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Vec<u8>>, MemoryError>> {
        Box::pin(self.memory.get(key))
    }

    fn memory_set<'a>(&'a self, key: &'a str, value: &'a [u8]) -> BoxFuture<'a, Result<(), MemoryError>> {
        Box::pin(self.memory.set(key, value))
    }

    fn memory_delete<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<(), MemoryError>> {
        Box::pin(self.memory.delete(key))
    }

    fn memory_list<'a>(&'a self, prefix: &'a str, limit: u32) -> BoxFuture<'a, Result<Vec<String>, MemoryError>> {
        Box::pin(self.memory.list(prefix, limit))
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
        self.log.append_detached(lines);
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
            memory: Memory::embedded(store.clone(), 1 << 20),
            logs: PolicyLogs::embedded(store, 10),
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
        let hold = Hold { tenant_id: "t", budget, sub_budgets: &users, request_id: "r1", microdollars: 100, now_millis: now, end_user: Some("alice".into()), tags: vec!["team".into()], caps: Vec::new() };
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
