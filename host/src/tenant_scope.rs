//! The gateway's [`TenantView`]: what one tenant's policy call may see, built per request
//! from the shared services and the tenant's id. Nothing in it can reach another tenant.

use std::sync::Arc;

use crate::catalog::Catalog;
use crate::memory::TenantMemory;
use crate::metering::{Budget, Metering};
use crate::policy::{BudgetStatus, CredentialInfo, LogLine, MemoryError, ModelInfo, TenantView};
use crate::policy_log::PolicyLog;
use crate::sealing::Vault;
use crate::store::TenantKey;

/// One tenant's capabilities for one policy call.
pub struct TenantScope {
    tenant_id: String,
    tenant: TenantKey,
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
            tenant,
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

impl TenantView for TenantScope {
    fn credentials(&self) -> Vec<CredentialInfo> {
        self.vault
            .list(&self.tenant_id)
            .unwrap_or_default()
            .into_iter()
            .map(|c| CredentialInfo { name: c.name, provider: c.provider })
            .collect()
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

    fn budget(&self) -> BudgetStatus {
        self.metering.status(&self.tenant, self.budget, self.now_millis).unwrap_or_else(|_| BudgetStatus {
            period: "month".into(),
            period_id: String::new(),
            limit_microdollars: self.budget.map(|b| b.limit_microdollars),
            spent_microdollars: 0,
            reserved_microdollars: 0,
        })
    }

    fn user_spend(&self, end_user: &str) -> u64 {
        let period = self.budget.map(|b| b.period).unwrap_or_default().id_at(self.now_millis);
        self.metering.scope_spend(&self.tenant, &format!("user:{end_user}"), &period).unwrap_or(0)
    }

    fn tag_spend(&self, tag: &str) -> u64 {
        let period = self.budget.map(|b| b.period).unwrap_or_default().id_at(self.now_millis);
        self.metering.scope_spend(&self.tenant, &format!("tag:{tag}"), &period).unwrap_or(0)
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
