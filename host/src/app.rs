//! The gateway's shared state: every service a request touches, built once at start.

use std::sync::Arc;

use crate::catalog::Catalog;
use crate::config::Config;
use crate::metering::Metering;
use crate::metrics::Metrics;
use crate::policy::PolicyHash;
use crate::sealing::{Key, Vault};
use crate::store::Store;
use crate::tenant_scope::ScopeServices;
use crate::tenants::Tenants;
use crate::tokens::AdminToken;
use crate::upstream::Upstream;
use crate::{PolicyRuntime, Secret};

/// The stock default policy, built from `policies/default` at compile time.
pub const DEFAULT_POLICY_WASM: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/default_policy.wasm"));

/// Everything a request handler needs.
pub struct App {
    /// Validated configuration.
    pub config: Config,
    /// The store.
    pub store: Store,
    /// Tenant registry.
    pub tenants: Arc<Tenants>,
    /// Bearer tokens.
    pub tokens: crate::tokens::Tokens,
    /// Sealed credentials.
    pub vault: Arc<Vault>,
    /// Spend and ledger.
    pub metering: Metering,
    /// Every tenant's policy memory.
    pub memory: crate::memory::Memory,
    /// Every tenant's conversation sessions.
    pub sessions: crate::sessions::Sessions,
    /// Every tenant's stored Responses API answers (`previous_response_id`).
    pub responses: crate::stored_responses::StoredResponses,
    /// Every tenant's policy log.
    pub policy_logs: crate::policy_log::PolicyLogs,
    /// Each tenant's recent decision inputs, for replays.
    pub decision_inputs: crate::decision_inputs::DecisionInputs,
    /// Models and prices.
    pub catalog: Arc<Catalog>,
    /// Policy sandbox.
    pub policies: PolicyRuntime,
    /// Upstream client.
    pub upstream: Upstream,
    /// Operator token.
    pub admin: AdminToken,
    /// Hash of the stock default policy.
    pub default_policy: PolicyHash,
    /// Counters.
    pub metrics: Metrics,
    /// Per-tenant scope factory.
    pub services: ScopeServices,
    /// Rate limits.
    pub limiter: crate::ratelimit::Limiter,
    /// The chained audit trail of every change.
    pub audit: crate::audit::AuditLog,
    /// Deleted tenant incarnations still to be purged again.
    pub tombstones: crate::tenant_tombstones::Tombstones,
    /// On the shared store: this replica's change feed and reservation-lease upkeep
    /// (stopped when the app is dropped). `None` on the embedded store.
    pub replica: Option<SharedReplica>,
    /// Work a request leaves running after its answer was sent (a policy's `on-complete`);
    /// a graceful shutdown waits for it.
    pub after_response: tokio_util::task::TaskTracker,
}

/// What a replica on the shared store keeps running for its life.
pub struct SharedReplica {
    /// Other replicas' writes, as they commit.
    pub feed: crate::postgres::changes::ChangeFeed,
    _leases: crate::postgres::budgets::MaintenanceGuard,
}

/// The domain services over one store or the other, before they become an [`App`].
struct Domains {
    vault: Arc<Vault>,
    metering: Metering,
    tenants: Arc<Tenants>,
    tokens: crate::tokens::Tokens,
    audit: crate::audit::AuditLog,
    tombstones: crate::tenant_tombstones::Tombstones,
    policies: PolicyRuntime,
    memory: crate::memory::Memory,
    sessions: crate::sessions::Sessions,
    responses: crate::stored_responses::StoredResponses,
    policy_logs: crate::policy_log::PolicyLogs,
    replica: Option<SharedReplica>,
}

/// Startup failed.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The data dir could not be created.
    #[error("data dir {0}: {1}")]
    DataDir(String, String),
    /// The store failed to open.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// The master key was unusable.
    #[error(transparent)]
    Seal(#[from] crate::sealing::SealError),
    /// The policy runtime failed to start.
    #[error(transparent)]
    Policy(#[from] crate::PolicyError),
    /// The shared store could not be used.
    #[error("shared store: {0}")]
    SharedStore(String),
    /// Reservations left by a crash could not be settled.
    #[error("recovering reservations: {0}")]
    Recovery(String),
}

impl App {
    /// Opens the store in the data dir and builds every service. `master_key` and
    /// `admin_token` come from the environment when set.
    pub async fn start(config: Config, master_key: Option<&str>, admin_token: &Secret) -> Result<Arc<App>, StartError> {
        let dir = config.server.data_dir.clone();
        std::fs::create_dir_all(&dir).map_err(|e| StartError::DataDir(dir.display().to_string(), e.to_string()))?;
        // On the shared store the data dir keeps only what is this replica's own (compiled
        // policy artifacts).
        let store = Store::open(&dir)?;
        let previous = std::env::var("TOLLGATE_MASTER_KEY_PREVIOUS").ok();
        if let Some(url) = config.store.url.clone() {
            // Every replica must hold the same master key: none may generate its own.
            let master_key = master_key.ok_or(crate::sealing::SealError::MasterKeyRequired)?;
            let keys = crate::sealing::load_master_keys(Some(master_key), previous.as_deref(), &dir)?;
            let domains = Self::shared_domains(&config, &url, &store, keys).await?;
            return Self::assemble(config, store, domains, admin_token).await;
        }
        let keys = crate::sealing::load_master_keys(master_key, previous.as_deref(), &dir)?;
        Self::with_keys(config, store, keys, admin_token).await
    }

    /// Connects to the shared store, migrates it, and builds every domain over it, with
    /// this replica's change feed and lease upkeep running.
    async fn shared_domains(config: &Config, url: &str, store: &Store, keys: crate::sealing::MasterKeys) -> Result<Domains, StartError> {
        use crate::postgres;
        let shared = |e: postgres::DbError| StartError::SharedStore(e.to_string());
        let pool = postgres::connect(url).map_err(shared)?;
        let applied = postgres::migrate(&pool).await.map_err(shared)?;
        if !applied.is_empty() {
            tracing::info!(?applied, "migrated the shared store");
        }
        let vault = Arc::new(Vault::shared(pool.clone(), keys).await?);
        // Subscribed before the caches load, so no write in between is missed.
        let feed = postgres::changes::ChangeFeed::start(url, pool.clone()).await.map_err(shared)?;
        let (tenant_changes, token_changes) = (feed.subscribe(), feed.subscribe());
        vault.follow(feed.subscribe());
        let budgets = postgres::budgets::PgBudgets::start(pool.clone(), postgres::budgets::ReplicaSettings { lease: config.store.lease, ..Default::default() });
        let leases = budgets.spawn_maintenance();
        let tenants = Arc::new(Tenants::shared(postgres::tenants::PgTenants::new(pool.clone())).await?);
        tenants.follow(tenant_changes);
        let tokens = crate::tokens::Tokens::shared(postgres::tenants::PgTokens::new(pool.clone()));
        tokens.follow(token_changes);
        let blobs = crate::policy::PolicyBlobs::shared(postgres::policies::PgPolicies::new(pool.clone()));
        Ok(Domains {
            vault,
            metering: Metering::shared(budgets),
            tenants,
            tokens,
            audit: crate::audit::AuditLog::shared(postgres::audit::PgAudit::new(pool.clone())),
            tombstones: crate::tenant_tombstones::Tombstones::shared(postgres::tombstones::PgTombstones::new(pool.clone())),
            policies: PolicyRuntime::with_blobs(config.policy.clone(), store.clone(), blobs)?,
            memory: crate::memory::Memory::shared(postgres::memory::PgMemory::new(pool.clone()), config.policy.memory_quota_bytes),
            sessions: crate::sessions::Sessions::shared(postgres::sessions::PgSessions::new(pool.clone()), config.policy.memory_quota_bytes),
            responses: crate::stored_responses::StoredResponses::shared(postgres::responses::PgResponses::new(pool.clone()), config.policy.memory_quota_bytes),
            policy_logs: crate::policy_log::PolicyLogs::shared(postgres::policy_log::PgPolicyLog::start(pool), config.policy.log_lines_kept),
            replica: Some(SharedReplica { feed, _leases: leases }),
        })
    }

    /// Whether this app is one replica of several on the shared store (not alone on the
    /// embedded one).
    pub fn shares_store(&self) -> bool {
        self.replica.is_some()
    }

    /// Builds the services over an open store (tests use a temporary one).
    pub async fn with_store(config: Config, store: Store, master: Key, admin_token: &Secret) -> Result<Arc<App>, StartError> {
        Self::with_keys(config, store, crate::sealing::MasterKeys::single(master), admin_token).await
    }

    async fn with_keys(config: Config, store: Store, keys: crate::sealing::MasterKeys, admin_token: &Secret) -> Result<Arc<App>, StartError> {
        let domains = Domains {
            vault: Arc::new(Vault::with_keys(store.clone(), keys)?),
            metering: Metering::new(store.clone()).map_err(|e| StartError::Recovery(e.to_string()))?,
            tenants: Arc::new(Tenants::load(store.clone())?),
            tokens: crate::tokens::Tokens::embedded(store.clone()),
            audit: crate::audit::AuditLog::open(store.clone())?,
            tombstones: crate::tenant_tombstones::Tombstones::embedded(store.clone()),
            policies: PolicyRuntime::new(config.policy.clone(), store.clone())?,
            memory: crate::memory::Memory::embedded(store.clone(), config.policy.memory_quota_bytes),
            sessions: crate::sessions::Sessions::embedded(store.clone(), config.policy.memory_quota_bytes),
            responses: crate::stored_responses::StoredResponses::embedded(store.clone(), config.policy.memory_quota_bytes),
            policy_logs: crate::policy_log::PolicyLogs::embedded(store.clone(), config.policy.log_lines_kept),
            replica: None,
        };
        Self::assemble(config, store, domains, admin_token).await
    }

    /// Builds the app from its domains: charges what a crash left reserved, makes sure
    /// the stock policy is stored, and finishes interrupted tenant changes (on the shared
    /// store, keeps finishing those other replicas abandon).
    async fn assemble(config: Config, store: Store, domains: Domains, admin_token: &Secret) -> Result<Arc<App>, StartError> {
        let Domains { vault, metering, tenants, tokens, audit, tombstones, policies, memory, sessions, responses, policy_logs, replica } = domains;
        let recovered = metering.recover_reservations().await.map_err(|e| StartError::Recovery(e.to_string()))?;
        if recovered > 0 {
            tracing::warn!(recovered, "charged reservations left unsettled by a crash at their reserved amount");
        }
        let catalog = Arc::new(Catalog::new(&config.models));
        let default_policy = policies.upload(DEFAULT_POLICY_WASM.to_vec()).await?;
        let decision_inputs = crate::decision_inputs::DecisionInputs::beside(&policy_logs, config.policy.decision_inputs_kept);
        let services = ScopeServices { vault: vault.clone(), metering: metering.clone(), catalog: catalog.clone(), memory: memory.clone(), logs: policy_logs.clone() };
        let app = App {
            audit,
            tombstones,
            tenants,
            tokens,
            replica,
            after_response: tokio_util::task::TaskTracker::new(),
            upstream: Upstream::new(config.upstream.clone()),
            admin: AdminToken::new(admin_token.expose()),
            metrics: Metrics::default(),
            config,
            store,
            vault,
            metering,
            memory,
            sessions,
            responses,
            decision_inputs,
            policy_logs,
            catalog,
            policies,
            default_policy,
            services,
            limiter: crate::ratelimit::Limiter::default(),
        };
        let app = Arc::new(app);
        let finished = crate::tenant_lifecycle::finish_interrupted(&app).await.map_err(|e| StartError::Recovery(e.to_string()))?;
        if finished > 0 {
            tracing::warn!(finished, "finished tenant creations and deletions a crash interrupted");
        }
        if app.shares_store() {
            crate::tenant_lifecycle::spawn_upkeep(&app);
        }
        Ok(app)
    }
}
