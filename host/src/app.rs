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
    pub tenants: Tenants,
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
    /// Every tenant's policy log.
    pub policy_logs: crate::policy_log::PolicyLogs,
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
        if config.store.url.is_some() {
            // Refused rather than ignored: a replica silently on its own store would
            // split every tenant's state.
            return Err(StartError::SharedStore("serving from the shared store ([store] url / TOLLGATE_STORE_URL) is not available in this build yet; `tollgate migrate` prepares the database".into()));
        }
        let dir = config.server.data_dir.clone();
        std::fs::create_dir_all(&dir).map_err(|e| StartError::DataDir(dir.display().to_string(), e.to_string()))?;
        let store = Store::open(&dir)?;
        let previous = std::env::var("TOLLGATE_MASTER_KEY_PREVIOUS").ok();
        let keys = crate::sealing::load_master_keys(master_key, previous.as_deref(), &dir)?;
        Self::with_keys(config, store, keys, admin_token).await
    }

    /// Builds the services over an open store (tests use a temporary one).
    pub async fn with_store(config: Config, store: Store, master: Key, admin_token: &Secret) -> Result<Arc<App>, StartError> {
        Self::with_keys(config, store, crate::sealing::MasterKeys::single(master), admin_token).await
    }

    async fn with_keys(config: Config, store: Store, keys: crate::sealing::MasterKeys, admin_token: &Secret) -> Result<Arc<App>, StartError> {
        let vault = Arc::new(Vault::with_keys(store.clone(), keys)?);
        let metering = Metering::new(store.clone()).map_err(|e| StartError::Recovery(e.to_string()))?;
        let recovered = metering.recover_reservations().await.map_err(|e| StartError::Recovery(e.to_string()))?;
        if recovered > 0 {
            tracing::warn!(recovered, "charged reservations left unsettled by a crash at their reserved amount");
        }
        let catalog = Arc::new(Catalog::new(&config.models));
        let policies = PolicyRuntime::new(config.policy.clone(), store.clone())?;
        let default_policy = policies.upload(DEFAULT_POLICY_WASM.to_vec()).await?;
        let memory = crate::memory::Memory::embedded(store.clone(), config.policy.memory_quota_bytes);
        let sessions = crate::sessions::Sessions::embedded(store.clone(), config.policy.memory_quota_bytes);
        let policy_logs = crate::policy_log::PolicyLogs::embedded(store.clone(), config.policy.log_lines_kept);
        let services = ScopeServices { vault: vault.clone(), metering: metering.clone(), catalog: catalog.clone(), memory: memory.clone(), logs: policy_logs.clone() };
        let app = App {
            audit: crate::audit::AuditLog::open(store.clone())?,
            tenants: Tenants::load(store.clone())?,
            tokens: crate::tokens::Tokens::embedded(store.clone()),
            upstream: Upstream::new(config.upstream.clone()),
            admin: AdminToken::new(admin_token.expose()),
            metrics: Metrics::default(),
            config,
            store,
            vault,
            metering,
            memory,
            sessions,
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
        Ok(app)
    }
}
