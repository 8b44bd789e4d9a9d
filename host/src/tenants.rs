//! The tenant registry: records in the store, an in-memory map of `Arc`s in front.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use serde::{Deserialize, Serialize};

use crate::metering::Budget;
use crate::policy::PolicyHash;
use crate::store::{decode, encode, Store, StoreError};

/// Longest tenant id.
pub const MAX_TENANT_ID_BYTES: usize = 64;

/// A policy a tenant runs, with the JSON config it chose for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyAssignment {
    /// blake3 of the policy wasm, hex.
    pub hash: String,
    /// The tenant's config for it (a JSON document).
    pub config: String,
}

/// One tenant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tenant {
    /// Tenant id.
    pub id: String,
    /// Human-readable name.
    #[serde(default)]
    pub display_name: String,
    /// Budget, if any.
    #[serde(default)]
    pub budget: Option<Budget>,
    /// The policy in force; `None` runs the stock default policy with `{}`.
    #[serde(default)]
    pub policy: Option<PolicyAssignment>,
    /// The assignment before the current one, for rollback.
    #[serde(default)]
    pub previous_policy: Option<PolicyAssignment>,
    /// Whether callers may pass a provider key per request (`X-Provider-API-Key`).
    #[serde(default)]
    pub allow_request_keys: bool,
    /// Creation time, milliseconds since the Unix epoch.
    #[serde(default)]
    pub created_millis: u64,
    /// Requests, tokens and concurrency limits.
    #[serde(default)]
    pub rate_limits: crate::ratelimit::RateLimits,
    /// Each end user's budget per period (the request's `user` field), micro-dollars.
    #[serde(default)]
    pub user_budget_microdollars: Option<u64>,
    /// Budgets per plan tag per period, micro-dollars.
    #[serde(default)]
    pub tag_budgets_microdollars: std::collections::BTreeMap<String, u64>,
    /// Prices that differ from the operator's catalog for this tenant.
    #[serde(default)]
    pub price_overrides: Vec<crate::catalog::ModelEntry>,
}

/// Why a tenant id is refused.
pub fn validate_id(id: &str) -> Result<(), &'static str> {
    if id.is_empty() || id.len() > MAX_TENANT_ID_BYTES {
        return Err("tenant id must be 1 to 64 bytes");
    }
    if !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.') {
        return Err("tenant id may contain only ASCII letters, digits, '-', '_' and '.'");
    }
    Ok(())
}

impl Tenant {
    /// The policy hash in force, if the tenant assigned one.
    pub fn policy_hash(&self) -> Option<PolicyHash> {
        self.policy.as_ref().and_then(|p| PolicyHash::parse(&p.hash))
    }
}

/// The registry.
pub struct Tenants {
    store: Store,
    cache: RwLock<HashMap<String, Arc<Tenant>>>,
}

impl Tenants {
    /// Loads every tenant record.
    pub fn load(store: Store) -> Result<Self, StoreError> {
        let mut cache = HashMap::new();
        for item in store.tenants.iter() {
            let (_, value) = item?;
            let tenant: Tenant = decode("tenants", &value)?;
            cache.insert(tenant.id.clone(), Arc::new(tenant));
        }
        Ok(Self { store, cache: RwLock::new(cache) })
    }

    /// One tenant.
    pub fn get(&self, id: &str) -> Option<Arc<Tenant>> {
        self.cache.read().ok().and_then(|c| c.get(id).cloned())
    }

    /// How many tenants exist.
    pub fn len(&self) -> usize {
        self.cache.read().map(|c| c.len()).unwrap_or(0)
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Tenants in id order after `after`, at most `limit`.
    pub fn page(&self, after: Option<&str>, limit: usize) -> Vec<Arc<Tenant>> {
        let Ok(cache) = self.cache.read() else { return Vec::new() };
        let mut ids: Vec<&String> = cache.keys().filter(|id| after.is_none_or(|a| id.as_str() > a)).collect();
        ids.sort();
        ids.into_iter().take(limit).filter_map(|id| cache.get(id).cloned()).collect()
    }

    /// Creates or replaces a tenant record, durably.
    pub async fn put(&self, tenant: Tenant) -> Result<Arc<Tenant>, StoreError> {
        self.store.tenants.insert(tenant.id.as_bytes(), encode(&tenant))?;
        self.store.flush().await?;
        let tenant = Arc::new(tenant);
        if let Ok(mut cache) = self.cache.write() {
            cache.insert(tenant.id.clone(), tenant.clone());
        }
        Ok(tenant)
    }

    /// Removes a tenant record (the caller removes its data).
    pub async fn remove(&self, id: &str) -> Result<bool, StoreError> {
        let existed = self.store.tenants.remove(id.as_bytes())?.is_some();
        self.store.flush().await?;
        if let Ok(mut cache) = self.cache.write() {
            cache.remove(id);
        }
        Ok(existed)
    }
}
