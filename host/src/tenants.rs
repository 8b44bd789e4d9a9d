//! The tenant registry: records in the store, an in-memory map of `Arc`s in front.
//!
//! A tenant id names a tenant; its **incarnation** (random, fixed at creation) is what
//! its data is stored under. Deleting `tenant-a` and creating it again makes a new
//! incarnation, which can never see the old one's spend, ledger, sessions, tokens or keys,
//! even records a request of the old one wrote after the purge.
//!
//! Changes to one tenant are serialised by a per-id lock and applied to the current
//! record ([`Tenants::update`]), so concurrent writers (an operator PATCH and the tenant's
//! policy assignment) never lose each other's changes; creation is insert-if-absent.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use serde::{Deserialize, Serialize};

use crate::metering::Budget;
use crate::policy::PolicyHash;
use crate::store::{decode, encode, Store, StoreError, TenantKey};

/// Longest tenant id.
pub const MAX_TENANT_ID_BYTES: usize = 64;

/// Stripes of the per-tenant update lock: enough that unrelated tenants rarely wait on
/// each other, bounded whatever the number of tenants.
const UPDATE_LOCK_STRIPES: usize = 256;

/// Where a tenant is in its life. Only a `Live` tenant is served or managed; the others
/// exist so a crash mid-create or mid-delete is finished on the next start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Lifecycle {
    /// Being created in several writes (`POST /api/v1/tenants`); rolled back at start.
    Creating,
    /// In service.
    #[default]
    Live,
    /// Being deleted; the purge is finished at start.
    Deleting,
}

/// A policy a tenant runs, with the JSON config it chose for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PolicyAssignment {
    /// blake3 of the policy wasm, hex.
    pub hash: String,
    /// The tenant's config for it (a JSON document).
    pub config: String,
}

/// A policy a tenant tries beside its live one before promoting it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CandidatePolicy {
    /// blake3 of the policy wasm, hex.
    pub hash: String,
    /// The tenant's config for it (a JSON document).
    pub config: String,
    /// How it runs beside the live policy.
    pub mode: CandidateMode,
    /// The share of requests it runs on, 1 to 100 (chosen by the request id, so a
    /// request's lane is the same on every replica).
    pub percent: u8,
}

/// How a candidate policy runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum CandidateMode {
    /// Beside the live policy, off the response path: its decisions are compared with the
    /// live ones and logged, never acted on.
    Shadow,
    /// In place of the live policy on its share of requests (the live policy then runs
    /// off the path for the comparison); if it fails, the live policy decides.
    Canary,
}

impl CandidatePolicy {
    /// Whether request `request_id` falls in the candidate's share.
    pub fn selects(&self, request_id: &str) -> bool {
        let digest = blake3::hash(request_id.as_bytes());
        let draw = u16::from_le_bytes([digest.as_bytes()[0], digest.as_bytes()[1]]) % 100;
        draw < u16::from(self.percent)
    }
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
    /// A policy in shadow or canary mode beside the current one, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub candidate_policy: Option<CandidatePolicy>,
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
    /// What this tenant's data is stored under; see [`Tenant::storage_id`].
    #[serde(default)]
    pub incarnation: String,
    /// Where the tenant is in its life.
    #[serde(default)]
    pub lifecycle: Lifecycle,
}

/// A fresh incarnation of `id`: the id (for whoever reads a raw store) and 128 random
/// bits, joined by `#`, which no tenant id contains.
pub fn new_incarnation(id: &str) -> String {
    let mut bytes = [0u8; 16];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut bytes);
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("{id}#{hex}")
}

/// Why a tenant id is refused. Ids are path segments of the API, so they must survive a
/// URL unchanged: `.` and `..` would be resolved away by clients and proxies.
pub fn validate_id(id: &str) -> Result<(), &'static str> {
    if id.is_empty() || id.len() > MAX_TENANT_ID_BYTES {
        return Err("tenant id must be 1 to 64 bytes");
    }
    if !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.') {
        return Err("tenant id may contain only ASCII letters, digits, '-', '_' and '.'");
    }
    if id.bytes().all(|b| b == b'.') {
        return Err("tenant id cannot be only dots ('.' and '..' do not survive in a URL path)");
    }
    Ok(())
}

impl Tenant {
    /// Whether the tenant runs `hash`: as its policy or as its candidate.
    pub fn runs(&self, hash: PolicyHash) -> bool {
        self.policy_hash() == Some(hash) || self.candidate_policy.as_ref().and_then(|c| PolicyHash::parse(&c.hash)) == Some(hash)
    }

    /// The policy hash in force, if the tenant assigned one.
    pub fn policy_hash(&self) -> Option<PolicyHash> {
        self.policy.as_ref().and_then(|p| PolicyHash::parse(&p.hash))
    }

    /// The name every per-tenant record is stored under: the incarnation (tenants created
    /// before incarnations existed keep their id).
    pub fn storage_id(&self) -> &str {
        if self.incarnation.is_empty() { &self.id } else { &self.incarnation }
    }

    /// The prefix of every per-tenant record.
    pub fn key(&self) -> TenantKey {
        TenantKey::of(self.storage_id())
    }
}

/// A tenant change could not be made.
#[derive(Debug, thiserror::Error)]
pub enum TenantError {
    /// No live tenant has this id.
    #[error("no tenant '{0}'")]
    NotFound(String),
    /// A tenant with this id exists (or is being deleted).
    #[error("tenant '{0}' already exists")]
    Exists(String),
    /// The change itself was refused (validation); the message is for the client.
    #[error(transparent)]
    Refused(#[from] crate::error::GatewayError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The registry.
pub struct Tenants {
    records: Records,
    cache: RwLock<Cache>,
    update_locks: Vec<tokio::sync::Mutex<()>>,
}

/// The cached tenants, and the ids written while a full reload reads the store: the
/// reload's snapshot may predate those writes, so they keep what the cache has.
#[derive(Default)]
struct Cache {
    tenants: HashMap<String, Arc<Tenant>>,
    written_during_reload: Option<std::collections::HashSet<String>>,
}

impl Cache {
    fn put(&mut self, id: &str, tenant: Option<Arc<Tenant>>) {
        if let Some(written) = &mut self.written_during_reload {
            written.insert(id.to_string());
        }
        match tenant {
            Some(tenant) => self.tenants.insert(id.to_string(), tenant),
            None => self.tenants.remove(id),
        };
    }
}

/// Where the records are: the embedded store, or the shared one (every replica caches
/// them all and follows the change feed).
enum Records {
    Embedded(Store),
    Shared(crate::postgres::tenants::PgTenants),
}

impl Tenants {
    /// Loads every tenant record from the embedded store.
    pub fn load(store: Store) -> Result<Self, StoreError> {
        let mut tenants = Vec::new();
        for item in store.tenants.iter() {
            let (_, value) = item?;
            tenants.push(decode("tenants", &value)?);
        }
        Ok(Self::with(Records::Embedded(store), tenants))
    }

    /// Loads every tenant record from the shared store; [`Tenants::follow`] keeps them
    /// current.
    pub async fn shared(table: crate::postgres::tenants::PgTenants) -> Result<Self, StoreError> {
        let tenants = table.load_all().await?;
        Ok(Self::with(Records::Shared(table), tenants))
    }

    fn with(records: Records, tenants: Vec<Tenant>) -> Self {
        let tenants = tenants.into_iter().map(|t| (t.id.clone(), Arc::new(t))).collect();
        let update_locks = (0..UPDATE_LOCK_STRIPES).map(|_| tokio::sync::Mutex::new(())).collect();
        Self { records, cache: RwLock::new(Cache { tenants, written_during_reload: None }), update_locks }
    }

    /// Applies other replicas' changes to this one's records as the feed reports them
    /// (shared store; a no-op on the embedded one). Runs until the feed ends.
    pub fn follow(self: &Arc<Self>, mut changes: tokio::sync::broadcast::Receiver<crate::postgres::changes::Change>) {
        use crate::postgres::changes::Change;
        use tokio::sync::broadcast::error::RecvError;
        let Records::Shared(table) = &self.records else { return };
        let (table, tenants) = (table.clone(), Arc::downgrade(self));
        tokio::spawn(async move {
            loop {
                let reload_all = match changes.recv().await {
                    Ok(Change::Row { kind, key }) if kind == "tenant" => {
                        let Some(tenants) = tenants.upgrade() else { return };
                        // Under the id's lock, as this replica's own writes are: a read taken
                        // before one of them commits must not land in the cache after it
                        // (a tenant just made live here read back as still being created).
                        let _guard = tenants.lock_for(&key).lock().await;
                        match table.get(&key).await {
                            Ok(found) => {
                                tenants.cached(&key, found);
                            }
                            Err(e) => tracing::warn!(tenant = %key, error = %e, "reloading a changed tenant failed; the next change or reload retries"),
                        }
                        false
                    }
                    Ok(Change::Row { .. }) => false,
                    Ok(Change::ReloadAll) | Err(RecvError::Lagged(_)) => true,
                    Err(RecvError::Closed) => return,
                };
                if reload_all {
                    let Some(tenants) = tenants.upgrade() else { return };
                    if let Ok(mut cache) = tenants.cache.write() {
                        cache.written_during_reload = Some(Default::default());
                    }
                    let loaded = table.load_all().await;
                    if let Ok(mut cache) = tenants.cache.write() {
                        let written = cache.written_during_reload.take().unwrap_or_default();
                        match loaded {
                            Ok(all) => {
                                let mut fresh: HashMap<String, Arc<Tenant>> = all.into_iter().map(|t| (t.id.clone(), Arc::new(t))).collect();
                                // Written here or by the feed after the snapshot was taken:
                                // the cache is newer than the snapshot for these.
                                for id in written {
                                    match cache.tenants.get(&id) {
                                        Some(tenant) => fresh.insert(id, tenant.clone()),
                                        None => fresh.remove(&id),
                                    };
                                }
                                cache.tenants = fresh;
                            }
                            Err(e) => tracing::warn!(error = %e, "reloading every tenant failed"),
                        }
                    }
                }
            }
        });
    }

    /// Puts what the store holds for `id` in the cache (or takes it out).
    fn cached(&self, id: &str, record: Option<Tenant>) -> Option<Arc<Tenant>> {
        let mut cache = self.cache.write().ok()?;
        let tenant = record.map(Arc::new);
        cache.put(id, tenant.clone());
        tenant
    }

    /// One live tenant.
    pub fn get(&self, id: &str) -> Option<Arc<Tenant>> {
        self.get_any(id).filter(|t| t.lifecycle == Lifecycle::Live)
    }

    /// One tenant in any state (being created or deleted too).
    fn get_any(&self, id: &str) -> Option<Arc<Tenant>> {
        self.cache.read().ok().and_then(|c| c.tenants.get(id).cloned())
    }

    /// Whether `tenant` is still the live incarnation of its id: work for a deleted (or
    /// deleted and re-created) tenant is refused.
    pub fn is_current(&self, tenant: &Tenant) -> bool {
        self.get(&tenant.id).is_some_and(|t| t.incarnation == tenant.incarnation)
    }

    /// Tenants not live: interrupted creations and deletions, for the start to finish.
    pub fn unfinished(&self) -> Vec<Arc<Tenant>> {
        self.cache.read().map(|c| c.tenants.values().filter(|t| t.lifecycle != Lifecycle::Live).cloned().collect()).unwrap_or_default()
    }

    /// Every tenant, in any state: what holds a policy blob counts them all.
    pub fn all(&self) -> Vec<Arc<Tenant>> {
        self.cache.read().map(|c| c.tenants.values().cloned().collect()).unwrap_or_default()
    }

    /// Every tenant, in any state, as the store holds it now: on the shared store read
    /// from the database, not this replica's cache, which hears of another replica's
    /// change a moment after its commit. What decides that no tenant runs a policy blob
    /// any more reads this.
    pub async fn all_stored(&self) -> Result<Vec<Arc<Tenant>>, StoreError> {
        match &self.records {
            Records::Embedded(_) => Ok(self.all()),
            Records::Shared(table) => Ok(table.load_all().await?.into_iter().map(Arc::new).collect()),
        }
    }

    /// How many live tenants exist.
    pub fn len(&self) -> usize {
        self.cache.read().map(|c| c.tenants.values().filter(|t| t.lifecycle == Lifecycle::Live).count()).unwrap_or(0)
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Live tenants in id order after `after`, at most `limit`; with `search`, only those
    /// whose id or display name contains it (case-insensitive).
    pub fn page(&self, after: Option<&str>, search: Option<&str>, limit: usize) -> Vec<Arc<Tenant>> {
        let Ok(cache) = self.cache.read() else { return Vec::new() };
        let search = search.map(str::to_lowercase);
        let found = |t: &Tenant| search.as_deref().is_none_or(|s| t.id.to_lowercase().contains(s) || t.display_name.to_lowercase().contains(s));
        let mut ids: Vec<&String> =
            cache.tenants.iter().filter(|(id, t)| t.lifecycle == Lifecycle::Live && after.is_none_or(|a| id.as_str() > a) && found(t)).map(|(id, _)| id).collect();
        ids.sort();
        ids.into_iter().take(limit).filter_map(|id| cache.tenants.get(id).cloned()).collect()
    }

    fn lock_for(&self, id: &str) -> &tokio::sync::Mutex<()> {
        let stripe = blake3::hash(id.as_bytes()).as_bytes()[0] as usize % UPDATE_LOCK_STRIPES;
        &self.update_locks[stripe]
    }

    /// Stores a record in the embedded store and caches it.
    async fn write(&self, store: &Store, tenant: Tenant) -> Result<Arc<Tenant>, StoreError> {
        store.tenants.insert(tenant.id.as_bytes(), encode(&tenant))?;
        store.flush().await?;
        let tenant = Arc::new(tenant);
        if let Ok(mut cache) = self.cache.write() {
            cache.put(&tenant.id, Some(tenant.clone()));
        }
        Ok(tenant)
    }

    /// Creates a tenant with a fresh incarnation, durably; refuses an id in use (also one
    /// being deleted). Two concurrent creates of one id: one succeeds, one gets `Exists`.
    pub async fn create(&self, mut tenant: Tenant) -> Result<Arc<Tenant>, TenantError> {
        let _guard = self.lock_for(&tenant.id).lock().await;
        if self.get_any(&tenant.id).is_some() {
            return Err(TenantError::Exists(tenant.id));
        }
        tenant.incarnation = new_incarnation(&tenant.id);
        match &self.records {
            Records::Embedded(store) => {
                let created = store.tenants.compare_and_swap(tenant.id.as_bytes(), None::<&[u8]>, Some(encode(&tenant))).map_err(StoreError::from)?;
                if created.is_err() {
                    return Err(TenantError::Exists(tenant.id));
                }
                Ok(self.write(store, tenant).await?)
            }
            // Another replica may hold the id without this one having heard yet.
            Records::Shared(table) => match table.insert_if_absent(&tenant).await? {
                true => Ok(self.cached(&tenant.id.clone(), Some(tenant)).ok_or_else(|| StoreError::Aborted("tenant cache poisoned".into()))?),
                false => Err(TenantError::Exists(tenant.id)),
            },
        }
    }

    /// Applies `change` to the current record of live tenant `tenant` (the same
    /// incarnation: a tenant deleted and re-created meanwhile is not changed) under its
    /// lock, and stores the result durably. `change` may refuse with an error for the
    /// client; it sees every change made before it, so concurrent writers lose nothing.
    pub async fn update<F>(&self, tenant: &Tenant, change: F) -> Result<Arc<Tenant>, TenantError>
    where
        F: FnOnce(&Tenant) -> Result<Tenant, crate::error::GatewayError>,
    {
        self.update_in(&tenant.id, Some(&tenant.incarnation), &[Lifecycle::Live], change).await
    }

    /// [`Tenants::update`] for a tenant in one of `states`, of any incarnation when
    /// `incarnation` is `None`.
    async fn update_in<F>(&self, id: &str, incarnation: Option<&str>, states: &[Lifecycle], change: F) -> Result<Arc<Tenant>, TenantError>
    where
        F: FnOnce(&Tenant) -> Result<Tenant, crate::error::GatewayError>,
    {
        let _guard = self.lock_for(id).lock().await;
        let apply = |current: Option<&Tenant>| -> Result<Tenant, TenantError> {
            let current = current.filter(|t| states.contains(&t.lifecycle) && incarnation.is_none_or(|i| i == t.incarnation)).ok_or_else(|| TenantError::NotFound(id.into()))?;
            let mut updated = change(current)?;
            // Identity is not the change's to make.
            updated.id = current.id.clone();
            updated.incarnation = current.incarnation.clone();
            Ok(updated)
        };
        match &self.records {
            Records::Embedded(store) => {
                let updated = apply(self.get_any(id).as_deref())?;
                Ok(self.write(store, updated).await?)
            }
            // The current record is the database's, locked across replicas for the change.
            Records::Shared(table) => {
                let updated = table.update(id, |current| apply(current.as_ref())).await?;
                Ok(self.cached(id, Some(updated)).ok_or_else(|| StoreError::Aborted("tenant cache poisoned".into()))?)
            }
        }
    }

    /// Makes a tenant being created live.
    pub async fn activate(&self, id: &str) -> Result<Arc<Tenant>, TenantError> {
        self.update_in(id, None, &[Lifecycle::Creating], |t| Ok(Tenant { lifecycle: Lifecycle::Live, ..t.clone() })).await
    }

    /// Marks a tenant deleting, durably: from here it is served and managed no more, its
    /// id cannot be re-created until [`Tenants::remove`], and a crash finishes the purge.
    pub async fn mark_deleting(&self, id: &str) -> Result<Arc<Tenant>, TenantError> {
        self.update_in(id, None, &[Lifecycle::Live, Lifecycle::Creating, Lifecycle::Deleting], |t| Ok(Tenant { lifecycle: Lifecycle::Deleting, ..t.clone() })).await
    }

    /// Marks unfinished incarnation `tenant` deleting, for the caller to finish (a creation
    /// is rolled back), if no one else is working on it: its record is still in the state
    /// `tenant` shows and, on the shared store, has not changed for `idle` (another replica
    /// may be in the middle of a younger one). The embedded store keeps no time of change
    /// and one process uses it, which asks only at start: there any `idle` is met. `None`
    /// when it moved on meanwhile (a creation finished, another replica took it over).
    pub async fn take_over(&self, tenant: &Tenant, idle: std::time::Duration) -> Result<Option<Arc<Tenant>>, TenantError> {
        if tenant.lifecycle == Lifecycle::Live {
            return Ok(None);
        }
        match &self.records {
            Records::Embedded(_) => match self.update_in(&tenant.id, Some(&tenant.incarnation), &[tenant.lifecycle], |t| Ok(Tenant { lifecycle: Lifecycle::Deleting, ..t.clone() })).await {
                Ok(marked) => Ok(Some(marked)),
                Err(TenantError::NotFound(_)) => Ok(None),
                Err(e) => Err(e),
            },
            Records::Shared(table) => {
                let _guard = self.lock_for(&tenant.id).lock().await;
                let Some(marked) = table.take_over(tenant, idle).await? else { return Ok(None) };
                Ok(Some(self.cached(&tenant.id, Some(marked)).ok_or_else(|| StoreError::Aborted("tenant cache poisoned".into()))?))
            }
        }
    }

    /// Removes the record of incarnation `tenant` (the caller purged its data). A newer
    /// incarnation under the same id is left alone.
    pub async fn remove(&self, tenant: &Tenant) -> Result<bool, StoreError> {
        let _guard = self.lock_for(&tenant.id).lock().await;
        if self.get_any(&tenant.id).is_none_or(|t| t.incarnation != tenant.incarnation) {
            return Ok(false);
        }
        let existed = match &self.records {
            Records::Embedded(store) => {
                let existed = store.tenants.remove(tenant.id.as_bytes())?.is_some();
                store.flush().await?;
                existed
            }
            Records::Shared(table) => table.remove(&tenant.id, &tenant.incarnation).await?,
        };
        self.cached(&tenant.id, None);
        Ok(existed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant(id: &str) -> Tenant {
        serde_json::from_value(serde_json::json!({"id": id})).unwrap_or_else(|_| unreachable!())
    }

    #[test]
    fn ids_that_do_not_survive_a_url_path_are_refused() {
        for bad in [".", "..", "...", "a/b", "a b", "", "é"] {
            assert!(validate_id(bad).is_err(), "{bad:?}");
        }
        for good in ["a", "tenant-a", "a.b", "..a", "A_1"] {
            assert!(validate_id(good).is_ok(), "{good:?}");
        }
    }

    #[tokio::test]
    async fn concurrent_creates_of_one_id_make_one_tenant() -> Result<(), Box<dyn std::error::Error>> {
        let tenants = Arc::new(Tenants::load(Store::temporary()?)?);
        let mut tasks = Vec::new();
        for _ in 0..16 {
            let tenants = tenants.clone();
            tasks.push(tokio::spawn(async move { tenants.create(tenant("twin")).await.is_ok() }));
        }
        let mut created = 0;
        for task in tasks {
            created += usize::from(task.await?);
        }
        assert_eq!(created, 1);
        Ok(())
    }

    #[tokio::test]
    async fn concurrent_updates_of_different_fields_are_all_kept() -> Result<(), Box<dyn std::error::Error>> {
        let tenants = Arc::new(Tenants::load(Store::temporary()?)?);
        let busy = tenants.create(tenant("busy")).await?;
        let mut tasks = Vec::new();
        for i in 0..20u64 {
            let tenants = tenants.clone();
            let busy = busy.clone();
            tasks.push(tokio::spawn(async move {
                tenants
                    .update(&busy, |t| {
                        let mut t = t.clone();
                        t.tag_budgets_microdollars.insert(format!("tag{i}"), i);
                        Ok(t)
                    })
                    .await
                    .is_ok()
            }));
        }
        for task in tasks {
            assert!(task.await?);
        }
        assert_eq!(tenants.get("busy").map(|t| t.tag_budgets_microdollars.len()), Some(20));
        Ok(())
    }

    #[tokio::test]
    async fn a_re_created_id_is_a_new_incarnation() -> Result<(), Box<dyn std::error::Error>> {
        let tenants = Tenants::load(Store::temporary()?)?;
        let first = tenants.create(tenant("again")).await?;
        tenants.mark_deleting("again").await?;
        assert!(tenants.get("again").is_none() && !tenants.is_current(&first));
        assert!(matches!(tenants.create(tenant("again")).await, Err(TenantError::Exists(_))), "not while it is being deleted");
        tenants.remove(&first).await?;
        let second = tenants.create(tenant("again")).await?;
        assert_ne!(first.key(), second.key());
        assert!(tenants.is_current(&second) && !tenants.is_current(&first));
        // A late removal of the old incarnation leaves the new one alone.
        assert!(!tenants.remove(&first).await?);
        assert!(tenants.get("again").is_some());
        Ok(())
    }
}
