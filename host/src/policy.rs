//! The policy runtime: one wasmtime `Engine`, a linker with the tenant-scoped imports and a
//! deny-all WASI, an LRU of compiled components keyed by content hash, and a fresh `Store`
//! per call behind a semaphore sized to the instance pool. Uploaded wasm and who holds it
//! are kept by [`PolicyBlobs`] (embedded or shared); compiled artifacts in this replica's
//! own store.

pub mod blobs;
mod breaker;
mod cpu_share;
mod decision;
mod dry_run;
mod host;
pub mod limits;
mod run_time;
mod ticker;
mod upload;
pub mod uploads;
mod v0_1;
mod view;

use std::fmt;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lru::LruCache;
use wasmtime::component::{Component, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Trap};

pub use decision::{Decision, PlanTarget, Rejection, RoutePlan};
pub use dry_run::DryRunView;
pub use limits::PolicyLimits;
pub use upload::{check_complexity, UploadError};
pub use blobs::{Claim, ClaimError, PolicyBlobs};
pub use uploads::{Owner, QuotaExceeded, UploadRecord};
pub use view::{BoxFuture, LogLine, TenantView, Unavailable};

use crate::store::{Store, StoreError};
use host::CallState;
use run_time::RunTime;

/// Host bindings generated from `wit/policy.wit` (the current contract; 0.1.0 components
/// are served through `v0_1.rs`).
pub mod bindings {
    // Exports are async so calls run on a fiber inside the tokio task: WASI's blocking
    // stream calls (a guest's `eprintln!`) then await instead of nesting a runtime.
    // Imports are trappable: an import past a limit the interface has no error value for
    // traps the call (see `host.rs`).
    wasmtime::component::bindgen!({ world: "policy", path: "../wit", exports: { default: async }, imports: {
        "tollgate:policy/metering.budget": async | trappable,
        "tollgate:policy/metering.user-spend": async | trappable,
        "tollgate:policy/metering.tag-spend": async | trappable,
        "tollgate:policy/memory.get": async | trappable,
        "tollgate:policy/memory.set": async | trappable,
        "tollgate:policy/memory.delete": async | trappable,
        "tollgate:policy/memory.list-keys": async | trappable,
        "tollgate:policy/credentials.list": async | trappable,
        default: trappable,
    } });
}

pub use bindings::tollgate::policy::catalog::ModelInfo;
pub use bindings::tollgate::policy::credentials::CredentialInfo;
pub use bindings::tollgate::policy::memory::MemoryError;
pub use bindings::tollgate::policy::metering::BudgetStatus;
pub use bindings::tollgate::policy::types::{Api, Completion, Context, Message, Operation, Outcome, Request};

/// A compiled policy, ready to instantiate, in the contract version it was built for.
enum Pre {
    /// `tollgate:policy@0.2.0`.
    Current(bindings::PolicyPre<CallState>),
    /// `tollgate:policy@0.1.0`.
    V0_1(v0_1::Pre),
}

impl Pre {
    async fn route(&self, store: &mut wasmtime::Store<CallState>, request: &Request, context: &Context) -> wasmtime::Result<bindings::tollgate::policy::types::Decision> {
        match self {
            Pre::Current(pre) => pre.instantiate_async(&mut *store).await?.call_route(&mut *store, request, context).await,
            Pre::V0_1(pre) => v0_1::route(pre, store, request, context).await,
        }
    }

    async fn on_complete(&self, store: &mut wasmtime::Store<CallState>, completion: &Completion, context: &Context) -> wasmtime::Result<()> {
        match self {
            Pre::Current(pre) => pre.instantiate_async(&mut *store).await?.call_on_complete(&mut *store, completion, context).await,
            Pre::V0_1(pre) => v0_1::on_complete(pre, store, completion, context).await,
        }
    }
}

/// The content address of a policy: blake3 of its wasm bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PolicyHash(pub [u8; 32]);

impl PolicyHash {
    /// The hash of `wasm`.
    pub fn of(wasm: &[u8]) -> Self {
        PolicyHash(*blake3::hash(wasm).as_bytes())
    }

    /// Parses 64 hex digits.
    pub fn parse(hex: &str) -> Option<Self> {
        blake3::Hash::from_hex(hex).ok().map(|h| PolicyHash(*h.as_bytes()))
    }

    /// The first 12 hex digits, for headers and messages.
    pub fn short(&self) -> String {
        self.to_string()[..12].to_string()
    }
}

impl fmt::Display for PolicyHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(blake3::Hash::from_bytes(self.0).to_hex().as_str())
    }
}

impl fmt::Debug for PolicyHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PolicyHash({self})")
    }
}

/// A policy call or upload failed. Messages name the policy by hash and never include
/// tenant data.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// The upload was refused.
    #[error(transparent)]
    Upload(#[from] UploadError),
    /// No policy with this hash was uploaded.
    #[error("policy {0} is not uploaded")]
    NotFound(PolicyHash),
    /// The call ran past its deadline.
    #[error("policy {hash} exceeded its CPU deadline of {deadline_ms} ms")]
    Timeout {
        /// The policy.
        hash: PolicyHash,
        /// The deadline.
        deadline_ms: u64,
    },
    /// The tenant's policy hit its deadline too often in a row and is refused for a while.
    #[error("policy {hash} is suspended for this tenant for {retry_after_secs} s after running into its CPU deadline repeatedly; see the tenant's policy log")]
    Suspended {
        /// The policy.
        hash: PolicyHash,
        /// Seconds until the next call is tried.
        retry_after_secs: u64,
    },
    /// The tenant has used its share of policy CPU for now.
    #[error("this tenant's policy has used its share of CPU ({retry_after_secs} s until there is room); its policy calls cost more than the gateway allows per tenant")]
    CpuShareExhausted {
        /// Seconds until a call would be admitted.
        retry_after_secs: u64,
    },
    /// The guest tried to grow memory past the cap.
    #[error("policy {hash} exceeded its memory limit of {limit} bytes")]
    MemoryLimit {
        /// The policy.
        hash: PolicyHash,
        /// The cap.
        limit: usize,
    },
    /// The guest overflowed its stack.
    #[error("policy {0} exhausted its stack")]
    StackOverflow(PolicyHash),
    /// The guest trapped (a panic is a trap).
    #[error("policy {hash} trapped: {reason}")]
    Trap {
        /// The policy.
        hash: PolicyHash,
        /// The trap.
        reason: String,
    },
    /// The guest returned a value the host refuses to act on.
    #[error("policy {hash} returned an invalid decision: {reason}")]
    InvalidDecision {
        /// The policy.
        hash: PolicyHash,
        /// What is wrong with it.
        reason: String,
    },
    /// The uploading tenant holds as many uploads or bytes as its quota allows.
    #[error(transparent)]
    UploadQuota(#[from] QuotaExceeded),
    /// The uploading tenant already has a compile queued or running.
    #[error("this tenant already has a policy compiling; retry when it is done")]
    CompileBusy,
    /// Every sandbox slot stayed busy for the whole wait.
    #[error("policy sandbox is at capacity; retry shortly")]
    Busy,
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The runtime could not be set up (bad limits, engine failure).
    #[error("policy runtime setup failed: {0}")]
    Setup(String),
}

impl From<ClaimError> for PolicyError {
    fn from(e: ClaimError) -> Self {
        match e {
            ClaimError::Quota(q) => PolicyError::UploadQuota(q),
            ClaimError::Store(s) => PolicyError::Store(s),
        }
    }
}

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct PolicyStats {
    /// Calls made (route and on-complete).
    pub calls: AtomicU64,
    /// Calls that trapped, timed out or returned an invalid decision.
    pub failures: AtomicU64,
    /// Calls that hit the CPU deadline.
    pub timeouts: AtomicU64,
    /// Calls shed because the pool stayed busy.
    pub shed: AtomicU64,
    /// Calls refused because the tenant's policy was suspended.
    pub suspended: AtomicU64,
    /// Calls delayed or refused because their tenant was past its share of policy CPU.
    pub throttled: AtomicU64,
    /// Total call time, in nanoseconds.
    pub call_nanos: AtomicU64,
    /// Calls in flight.
    pub in_flight: AtomicU64,
    /// Compiled components loaded into the cache.
    pub loads: AtomicU64,
}

/// A route call's result: the validated decision.
#[derive(Debug)]
pub struct RouteOutcome {
    /// What the policy decided.
    pub decision: Decision,
    /// How long the call took.
    pub elapsed: Duration,
}

/// The policy runtime. Cheap to share behind an `Arc`.
pub struct PolicyRuntime {
    engine: Engine,
    linker: Arc<Linker<CallState>>,
    limits: Arc<PolicyLimits>,
    /// This replica's own store: compiled artifacts (the `compiled` tree), specific to
    /// this engine and CPU.
    store: Store,
    /// Uploaded wasm and who holds it.
    blobs: PolicyBlobs,
    cache: Mutex<LruCache<PolicyHash, Arc<Pre>>>,
    permits: tokio::sync::Semaphore,
    /// Compiles running at once (the rest queue): see `limits::COMPILE_SLOTS`.
    compiles: tokio::sync::Semaphore,
    /// Tenants with a compile queued or running: one each.
    compiling: Mutex<std::collections::HashSet<String>>,
    /// This process's part of [`PolicyRuntime::lock_blob`].
    blob_lock: tokio::sync::Mutex<()>,
    breaker: breaker::Breaker,
    cpu_share: cpu_share::CpuShare,
    /// Advances the epoch while a call is in flight.
    ticker: ticker::EpochTicker,
    /// Counters for `/metrics`.
    pub stats: PolicyStats,
}

/// One call in flight: its store, and the accounting owed however the call ends. A
/// caller whose future is dropped mid-call (a client hanging up) drops the `Call`, and
/// its `Drop` settles the accounting: the run time is charged to the tenant's CPU share,
/// the in-flight gauge comes down, the log lines reach the tenant, and the call counts as
/// a deadline hit (hanging up on a call still running is how a client would dodge the
/// deadline; a well-behaved call is over in microseconds, so its clients hardly ever hang
/// up during one, and any call that ends in time clears the record).
/// Which of a tenant's shares of policy CPU a call draws on, and whether it may wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lane {
    /// A decision the request acts on: it waits (briefly) for its tenant's share and a slot.
    Acting,
    /// A decision only compared: it draws on a share of its own, so a slow or failing
    /// candidate never throttles or suspends the tenant's acting calls, and it never
    /// waits: no share or no free slot right now, and it is skipped.
    Beside,
    /// A recorded request replayed: the compared calls' share, but it waits for it.
    Replay,
}

impl Lane {
    /// The key of the lane's CPU share and suspension breaker for `tenant`.
    fn share_key(self, tenant: &str) -> std::borrow::Cow<'_, str> {
        match self {
            Lane::Acting => std::borrow::Cow::Borrowed(tenant),
            // No tenant id holds a NUL.
            Lane::Beside | Lane::Replay => std::borrow::Cow::Owned(format!("{tenant}\0beside")),
        }
    }
}

struct Call<'a> {
    runtime: &'a PolicyRuntime,
    /// The tenant's share key (see [`Lane`]).
    tenant: &'a str,
    hash: PolicyHash,
    store: wasmtime::Store<CallState>,
    started: Instant,
    settled: bool,
}

impl Call<'_> {
    /// Does the accounting once; `timed_out` feeds the suspension breaker.
    fn settle(&mut self, timed_out: bool) {
        if std::mem::replace(&mut self.settled, true) {
            return;
        }
        let runtime = self.runtime;
        let state = self.store.data_mut();
        // What the call ran (`run_time.rs`): none of the time it spent yielded.
        runtime.cpu_share.charge(self.tenant, state.run.finish());
        flush_log(state);
        runtime.stats.in_flight.fetch_sub(1, Ordering::Relaxed);
        runtime.ticker.call_ended();
        runtime.stats.call_nanos.fetch_add(self.started.elapsed().as_nanos() as u64, Ordering::Relaxed);
        if let Some(suspension) = runtime.breaker.record(self.tenant, self.hash, timed_out, runtime.limits.suspend_after_timeouts) {
            tracing::warn!(policy = %self.hash, tenant = self.tenant, seconds = suspension.as_secs(), "policy suspended for this tenant after repeated CPU deadline hits");
        }
    }
}

impl Drop for Call<'_> {
    fn drop(&mut self) {
        if !self.settled {
            tracing::warn!(policy = %self.hash, tenant = self.tenant, "policy call abandoned mid-flight by its caller");
            self.settle(true);
        }
    }
}

/// A tenant's one upload, compiling or not, queued or running; dropping it (the upload
/// ended, or its future was dropped) lets the tenant upload again. Holding it for every
/// upload makes a tenant's quota check and record exact.
struct CompileTurn<'a> {
    compiling: &'a Mutex<std::collections::HashSet<String>>,
    tenant: String,
}

impl<'a> CompileTurn<'a> {
    fn take(compiling: &'a Mutex<std::collections::HashSet<String>>, tenant: &str) -> Result<Self, PolicyError> {
        let mut set = compiling.lock().unwrap_or_else(|p| p.into_inner());
        if !set.insert(tenant.to_string()) {
            return Err(PolicyError::CompileBusy);
        }
        Ok(Self { compiling, tenant: tenant.to_string() })
    }
}

impl Drop for CompileTurn<'_> {
    fn drop(&mut self) {
        self.compiling.lock().unwrap_or_else(|p| p.into_inner()).remove(&self.tenant);
    }
}

/// A blob's lock, held (see [`PolicyRuntime::lock_blob`]). The database's part is
/// released first.
pub struct BlobLock<'a> {
    _across_replicas: Option<crate::postgres::policies::PgBlobLock>,
    _in_process: tokio::sync::MutexGuard<'a, ()>,
}

fn engine_for(limits: &PolicyLimits) -> Result<Engine, PolicyError> {
    let mut pool = PoolingAllocationConfig::new();
    let slots = limits.pool_instances;
    let core_instances = limits.max_core_instances_per_component;
    pool.total_component_instances(slots)
        .total_core_instances(slots * core_instances)
        .max_core_instances_per_component(core_instances)
        .total_memories(slots * limits::MAX_MEMORIES_PER_COMPONENT)
        .max_memories_per_component(limits::MAX_MEMORIES_PER_COMPONENT)
        .total_tables(slots * limits::MAX_TABLES_PER_COMPONENT)
        .max_tables_per_component(limits::MAX_TABLES_PER_COMPONENT)
        .max_memory_size(limits.memory_bytes)
        .total_stacks(slots)
        .linear_memory_keep_resident(limits.keep_resident_memory_bytes)
        .table_keep_resident(limits::KEEP_RESIDENT_STACK_BYTES)
        .async_stack_keep_resident(limits::KEEP_RESIDENT_STACK_BYTES)
        .decommit_batch_size(limits::DECOMMIT_BATCH)
        // Reset only the pages a call dirtied (Linux 6.7+), not the whole kept-resident
        // prefix of each memory and table: see HOTPATH.md, the policy call.
        .pagemap_scan(wasmtime::Enabled::Auto);
    let mut config = Config::new();
    config
        .epoch_interruption(true)
        .max_wasm_stack(limits.max_wasm_stack)
        .wasm_component_model(true)
        // Proposals a routing policy has no use for are attack surface: GC, exceptions and
        // threads are not even compiled in (wasmtime's `gc` and `threads` features are off).
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    Engine::new(&config).map_err(|e| PolicyError::Setup(format!("{e:#}")))
}

impl PolicyRuntime {
    /// Builds the engine, the linker and the epoch ticker, with blobs and artifacts both
    /// in `store` (one process).
    pub fn new(limits: PolicyLimits, store: Store) -> Result<Self, PolicyError> {
        Self::with_blobs(limits, store.clone(), PolicyBlobs::embedded(store))
    }

    /// As [`PolicyRuntime::new`], with uploaded wasm and claims in `blobs` (shared by
    /// replicas) and compiled artifacts in this replica's `store`.
    pub fn with_blobs(limits: PolicyLimits, store: Store, blobs: PolicyBlobs) -> Result<Self, PolicyError> {
        limits.validate().map_err(|e| PolicyError::Setup(e.into()))?;
        let engine = engine_for(&limits)?;
        let mut linker = Linker::<CallState>::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(|e| PolicyError::Setup(format!("{e:#}")))?;
        bindings::Policy::add_to_linker::<CallState, wasmtime::component::HasSelf<CallState>>(&mut linker, |s| s)
            .map_err(|e| PolicyError::Setup(format!("{e:#}")))?;
        v0_1::add_to_linker(&mut linker).map_err(|e| PolicyError::Setup(format!("{e:#}")))?;
        let ticker = ticker::EpochTicker::start(engine.clone()).map_err(|e| PolicyError::Setup(format!("epoch ticker: {e}")))?;
        let cache_size = NonZeroUsize::new(limits.compiled_cache).unwrap_or(NonZeroUsize::MIN);
        Ok(Self {
            permits: tokio::sync::Semaphore::new(limits.pool_instances as usize),
            compiles: tokio::sync::Semaphore::new(limits::COMPILE_SLOTS),
            compiling: Mutex::new(std::collections::HashSet::new()),
            blobs,
            blob_lock: tokio::sync::Mutex::new(()),
            breaker: breaker::Breaker::default(),
            cpu_share: cpu_share::CpuShare::new(limits.tenant_cpu_ms_per_second),
            cache: Mutex::new(LruCache::new(cache_size)),
            engine,
            linker: Arc::new(linker),
            limits: Arc::new(limits),
            store,
            ticker,
            stats: PolicyStats::default(),
        })
    }

    /// The limits in force.
    pub fn limits(&self) -> &PolicyLimits {
        &self.limits
    }

    /// Compiled components resident in the cache.
    pub fn cached_components(&self) -> usize {
        self.cache.lock().map(|c| c.len()).unwrap_or(0)
    }

    /// Validates, compiles and stores a policy for the operator; returns its hash (see
    /// [`PolicyRuntime::upload_for`]).
    pub async fn upload(&self, wasm: Vec<u8>) -> Result<PolicyHash, PolicyError> {
        self.upload_for(Owner::Operator, wasm).await
    }

    /// Validates, compiles and stores a policy uploaded by `owner`, and records that it
    /// holds it; returns its hash. Uploading bytes the owner already holds is a no-op that
    /// returns the same hash; bytes someone else uploaded are recorded without compiling.
    /// A tenant's uploads run one at a time, each within its quota: one already queued or
    /// running is [`PolicyError::CompileBusy`], one past the quota
    /// [`PolicyError::UploadQuota`], before any compiling; the quota is checked again as
    /// the upload is recorded, which a shared store does in one transaction, so uploads
    /// through several replicas cannot pass it together. Compiles run on blocking
    /// threads, at most `COMPILE_SLOTS` at once, the rest queued.
    pub async fn upload_for(&self, owner: Owner<'_>, wasm: Vec<u8>) -> Result<PolicyHash, PolicyError> {
        upload::check_bytes(&wasm, self.limits.upload_bytes)?;
        upload::check_complexity(&wasm, &self.limits)?;
        let hash = PolicyHash::of(&wasm);
        let size = wasm.len() as u64;
        let _turn = match owner {
            Owner::Tenant(storage_id) => Some(CompileTurn::take(&self.compiling, storage_id)?),
            Owner::Operator => None,
        };
        {
            let _blob = self.lock_blob(hash).await?;
            match self.blobs.claim(owner, hash, size, &self.limits).await? {
                Claim::AlreadyHeld => return Ok(hash),
                Claim::Recorded => {
                    self.blobs.flush().await?;
                    return Ok(hash);
                }
                Claim::NoBlob => {}
            }
        }
        let key = hash.to_string();
        let _slot = self.compiles.acquire().await.map_err(|e| PolicyError::Setup(format!("compile pool: {e}")))?;
        let (engine, linker) = (self.engine.clone(), self.linker.clone());
        let (wasm, pre, artifact) = tokio::task::spawn_blocking(move || {
            let component = upload::compile(&engine, &wasm)?;
            let pre = instantiate_pre(&linker, &component)?;
            let artifact = component.serialize().map_err(|e| UploadError::Compile(format!("{e:#}")))?;
            Ok::<_, UploadError>((wasm, pre, artifact))
        })
        .await
        .map_err(|e| PolicyError::Setup(format!("compile task: {e}")))??;
        let _blob = self.lock_blob(hash).await?;
        // Recorded first: an upload refused here (another replica's upload took the last
        // of the quota meanwhile) leaves no artifact behind.
        self.blobs.store(owner, &wasm, &self.limits).await?;
        self.store.compiled.insert(&key, artifact).map_err(StoreError::from)?;
        self.blobs.flush().await?;
        self.cache_put(hash, Arc::new(pre));
        Ok(hash)
    }

    /// Uploaded wasm and who holds it.
    pub fn blobs(&self) -> &PolicyBlobs {
        &self.blobs
    }

    /// Waits for and holds blob `hash`'s lock. Whoever changes what holds a policy blob
    /// takes it: an upload recording its claim, an assignment checking the blob exists, a
    /// delete deciding nothing holds it any more. So a delete never takes a blob from under
    /// an upload or assignment racing it, on this replica or (shared store) another. Fails
    /// when the shared store cannot be reached.
    pub async fn lock_blob(&self, hash: PolicyHash) -> Result<BlobLock<'_>, StoreError> {
        // This process's lock first (one for every blob), then the database's: so each
        // replica has at most one connection waiting on the database's, and waiting can
        // never take the last connection of its pool from the holder's writes.
        let in_process = self.blob_lock.lock().await;
        let across_replicas = self.blobs.lock_across_replicas(hash).await?;
        Ok(BlobLock { _across_replicas: across_replicas, _in_process: in_process })
    }

    /// Removes policy `hash`: its wasm, this replica's compiled artifact and cached
    /// component; whether the wasm was removed. The caller decided under `_held` that
    /// nothing holds it (see [`PolicyBlobs::remove`] for a shared store). Not durable until
    /// [`PolicyBlobs::flush`]. Other replicas keep their compiled copies of a removed
    /// policy; assignments check [`PolicyRuntime::exists`], which asks the shared store.
    pub async fn remove(&self, _held: &BlobLock<'_>, hash: PolicyHash) -> Result<bool, StoreError> {
        let existed = self.blobs.remove(hash).await?;
        self.store.compiled.remove(hash.to_string())?;
        if let Ok(mut cache) = self.cache.lock() {
            cache.pop(&hash);
        }
        Ok(existed)
    }

    /// Whether a policy with this hash was uploaded.
    pub async fn exists(&self, hash: &PolicyHash) -> Result<bool, PolicyError> {
        Ok(self.blobs.contains(*hash).await?)
    }

    /// Makes policy `hash` ready to call on this replica: in the cache, from this
    /// replica's compiled artifact, else compiled from the stored wasm (uploaded through
    /// any replica). [`PolicyError::NotFound`] if it was never uploaded.
    pub async fn prepare(&self, hash: PolicyHash) -> Result<(), PolicyError> {
        self.load(hash).await.map(|_| ())
    }

    fn cache_put(&self, hash: PolicyHash, pre: Arc<Pre>) {
        if let Ok(mut cache) = self.cache.lock() {
            cache.put(hash, pre);
        }
    }

    fn cache_get(&self, hash: &PolicyHash) -> Option<Arc<Pre>> {
        self.cache.lock().ok().and_then(|mut c| c.get(hash).cloned())
    }

    /// The ready-to-instantiate policy: from the LRU, else from this replica's stored
    /// artifact, else compiled from the stored wasm (first use on this replica, or after a
    /// wasmtime upgrade).
    async fn load(&self, hash: PolicyHash) -> Result<Arc<Pre>, PolicyError> {
        if let Some(pre) = self.cache_get(&hash) {
            return Ok(pre);
        }
        let key = hash.to_string();
        let artifact = self.store.compiled.get(&key).map_err(StoreError::from)?;
        let wasm = match artifact {
            Some(_) => None,
            None => Some(self.blobs.wasm(hash).await?.ok_or(PolicyError::NotFound(hash))?),
        };
        let (engine, linker) = (self.engine.clone(), self.linker.clone());
        let (pre, fresh_artifact) = tokio::task::spawn_blocking(move || -> Result<_, PolicyError> {
            let from_artifact = artifact.and_then(|bytes| deserialize_own_artifact(&engine, &bytes));
            let (component, fresh) = match (from_artifact, wasm) {
                (Some(component), _) => (component, None),
                (None, Some(wasm)) => {
                    let component = upload::compile(&engine, &wasm)?;
                    let bytes = component.serialize().ok();
                    (component, bytes)
                }
                (None, None) => return Err(PolicyError::NotFound(hash)),
            };
            Ok((instantiate_pre(&linker, &component)?, fresh))
        })
        .await
        .map_err(|e| PolicyError::Setup(format!("load task: {e}")))??;
        if let Some(bytes) = fresh_artifact {
            self.store.compiled.insert(&key, bytes).map_err(StoreError::from)?;
        }
        let pre = Arc::new(pre);
        self.stats.loads.fetch_add(1, Ordering::Relaxed);
        self.cache_put(hash, pre.clone());
        Ok(pre)
    }

    async fn slot(&self) -> Result<tokio::sync::SemaphorePermit<'_>, PolicyError> {
        let wait = Duration::from_millis(self.limits.pool_wait_ms);
        match tokio::time::timeout(wait, self.permits.acquire()).await {
            Ok(Ok(permit)) => Ok(permit),
            _ => {
                self.stats.shed.fetch_add(1, Ordering::Relaxed);
                Err(PolicyError::Busy)
            }
        }
    }

    /// Calls `route` in a fresh instance of policy `hash`, scoped to `view`'s tenant.
    pub async fn route(
        &self,
        hash: PolicyHash,
        view: Arc<dyn TenantView>,
        request: &Request,
        context: &Context,
    ) -> Result<RouteOutcome, PolicyError> {
        self.route_in(Lane::Acting, hash, view, request, context).await
    }

    /// Calls `route` as [`PolicyRuntime::route`] does, on `lane`: a decision only compared
    /// (a shadow candidate, or the live policy beside a canary) runs on
    /// [`Lane::Beside`], a replayed request on [`Lane::Replay`].
    pub async fn route_in(&self, lane: Lane, hash: PolicyHash, view: Arc<dyn TenantView>, request: &Request, context: &Context) -> Result<RouteOutcome, PolicyError> {
        let share_key = lane.share_key(&context.tenant_id);
        self.not_suspended(&share_key, hash)?;
        match lane {
            Lane::Acting | Lane::Replay => self.cpu_share_of(&share_key).await?,
            Lane::Beside => self.cpu_share_now(&share_key)?,
        }
        let pre = self.load(hash).await?;
        let _permit = match lane {
            Lane::Acting | Lane::Replay => self.slot().await?,
            Lane::Beside => self.permits.try_acquire().map_err(|_| {
                self.stats.shed.fetch_add(1, Ordering::Relaxed);
                PolicyError::Busy
            })?,
        };
        let started = Instant::now();
        let mut call = self.begin(hash, view, context, &share_key);
        let result = pre.route(&mut call.store, request, context).await;
        let raw = self.finish(call, result)?;
        let decision = Decision::validate(raw, &self.limits).map_err(|reason| {
            self.stats.failures.fetch_add(1, Ordering::Relaxed);
            PolicyError::InvalidDecision { hash, reason }
        })?;
        Ok(RouteOutcome { decision, elapsed: started.elapsed() })
    }

    /// Calls `on-complete` in a fresh instance of policy `hash`.
    pub async fn on_complete(
        &self,
        hash: PolicyHash,
        view: Arc<dyn TenantView>,
        completion: &Completion,
        context: &Context,
    ) -> Result<(), PolicyError> {
        self.not_suspended(&context.tenant_id, hash)?;
        self.cpu_share_of(&context.tenant_id).await?;
        let pre = self.load(hash).await?;
        let _permit = self.slot().await?;
        let mut call = self.begin(hash, view, context, &context.tenant_id);
        let result = pre.on_complete(&mut call.store, completion, context).await;
        self.finish(call, result)
    }

    /// Refuses at once while the tenant's policy is suspended (see `breaker.rs`).
    fn not_suspended(&self, tenant: &str, hash: PolicyHash) -> Result<(), PolicyError> {
        self.breaker.check(tenant, hash).map_err(|remaining| {
            self.stats.suspended.fetch_add(1, Ordering::Relaxed);
            PolicyError::Suspended { hash, retry_after_secs: remaining.as_secs() + 1 }
        })
    }

    /// Admits a call on the tenant's share only if it can run at once.
    fn cpu_share_now(&self, share_key: &str) -> Result<(), PolicyError> {
        match self.cpu_share.admit_now(share_key) {
            cpu_share::Admission::Now => Ok(()),
            cpu_share::Admission::After(wait) | cpu_share::Admission::Refused(wait) => {
                self.stats.throttled.fetch_add(1, Ordering::Relaxed);
                Err(PolicyError::CpuShareExhausted { retry_after_secs: wait.as_secs() + 1 })
            }
        }
    }

    /// Waits for the tenant's share of policy CPU (see `cpu_share.rs`), or refuses.
    async fn cpu_share_of(&self, tenant: &str) -> Result<(), PolicyError> {
        match self.cpu_share.admit(tenant) {
            cpu_share::Admission::Now => Ok(()),
            cpu_share::Admission::After(wait) => {
                self.stats.throttled.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(wait).await;
                Ok(())
            }
            cpu_share::Admission::Refused(wait) => {
                self.stats.throttled.fetch_add(1, Ordering::Relaxed);
                Err(PolicyError::CpuShareExhausted { retry_after_secs: wait.as_secs() + 1 })
            }
        }
    }

    /// A fresh store for one call of `hash` in `context`'s tenant, with its limiter and
    /// epoch deadline.
    fn begin<'a>(&'a self, hash: PolicyHash, view: Arc<dyn TenantView>, context: &'a Context, share_key: &'a str) -> Call<'a> {
        self.stats.calls.fetch_add(1, Ordering::Relaxed);
        let run = RunTime::new(self.ticker.ticks().clone());
        let mut store = wasmtime::Store::new(&self.engine, CallState::new(view, self.limits.clone(), context.request_id.clone(), run));
        store.limiter(|state| &mut state.limiter);
        // Check in on every epoch tick: a long call yields its worker thread to other
        // requests between ticks (a guest spinning to its deadline would otherwise hold a
        // tokio worker for the whole deadline). The deadline counts the call's run time
        // (`run_time.rs`), not the time it spent yielded, so a busy gateway does not kill
        // a well-behaved call that merely waited its turn.
        // The budget is the deadline plus one tick: the first tick may arrive just after
        // the call starts.
        let budget = limits::EPOCH_TICK * u32::try_from(self.limits.deadline_ticks()).unwrap_or(u32::MAX);
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(move |mut context| {
            let run = &mut context.data_mut().run;
            run.tick();
            // Yield on every tick, also the first: letting a call run on through its first
            // tick saved 2 µs a call on average but let a heavy policy hold its worker for
            // two ticks, and its neighbours' p99 rose by a third (tests/RELIABILITY.md).
            Ok(if run.total() >= budget { wasmtime::UpdateDeadline::Interrupt } else { wasmtime::UpdateDeadline::YieldCustom(1, run.yield_now()) })
        });
        // Epoch interruption only fires in wasm: time inside imports (copying a huge
        // argument, a slow store read) is measured here and counts against the same
        // budget. An import that returns past it ends the call as a timeout.
        store.call_hook(move |mut context, hook| {
            let run = &mut context.data_mut().run;
            match hook {
                wasmtime::CallHook::CallingHost => run.entering_host(),
                wasmtime::CallHook::ReturningFromHost => {
                    run.returned_from_host();
                    if run.total() >= budget {
                        return Err(Trap::Interrupt.into());
                    }
                }
                wasmtime::CallHook::CallingWasm | wasmtime::CallHook::ReturningFromWasm => {}
            }
            Ok(())
        });
        // Counted in flight from here; the `Call` brings the gauge down however it ends.
        self.stats.in_flight.fetch_add(1, Ordering::Relaxed);
        self.ticker.call_started();
        Call { runtime: self, tenant: share_key, hash, store, started: Instant::now(), settled: false }
    }

    /// Ends a call: settles its accounting (see [`Call`]), hands its log lines to the
    /// tenant (also when the call failed), and classifies a failure.
    fn finish<R>(&self, mut call: Call<'_>, result: wasmtime::Result<R>) -> Result<R, PolicyError> {
        let hash = call.hash;
        let memory_limit_hit = call.store.data().limiter.memory_limit_hit;
        let timed_out = result.is_err() && !memory_limit_hit && result.as_ref().err().and_then(|e| e.downcast_ref::<Trap>()) == Some(&Trap::Interrupt);
        call.settle(timed_out);
        drop(call);
        result.map_err(|error| {
            self.stats.failures.fetch_add(1, Ordering::Relaxed);
            let failure = self.classify(hash, &error, memory_limit_hit);
            if matches!(failure, PolicyError::Timeout { .. }) {
                self.stats.timeouts.fetch_add(1, Ordering::Relaxed);
            }
            tracing::warn!(policy = %hash, error = %failure, "policy call failed");
            failure
        })
    }

    fn classify(&self, hash: PolicyHash, error: &wasmtime::Error, memory_limit_hit: bool) -> PolicyError {
        if memory_limit_hit {
            return PolicyError::MemoryLimit { hash, limit: self.limits.memory_bytes };
        }
        if let Some(refused) = error.downcast_ref::<host::ImportError>() {
            return PolicyError::Trap { hash, reason: refused.to_string() };
        }
        if let Some(unavailable) = error.downcast_ref::<Unavailable>() {
            return PolicyError::Trap { hash, reason: unavailable.to_string() };
        }
        match error.downcast_ref::<Trap>() {
            Some(Trap::Interrupt) => PolicyError::Timeout { hash, deadline_ms: self.limits.cpu_deadline_ms },
            Some(Trap::StackOverflow) => PolicyError::StackOverflow(hash),
            Some(Trap::UnreachableCodeReached) => PolicyError::Trap { hash, reason: "the policy panicked (see its policy log)".into() },
            Some(trap) => PolicyError::Trap { hash, reason: trap.to_string() },
            None => PolicyError::Trap { hash, reason: format!("{error:#}") },
        }
    }
}

/// Links `component` and checks its exports against the current contract, then against
/// 0.1.0; a component that matches neither is refused with the current contract's reason.
fn instantiate_pre(linker: &Linker<CallState>, component: &Component) -> Result<Pre, UploadError> {
    let instance_pre = linker.instantiate_pre(component).map_err(|e| UploadError::ForbiddenImport(format!("{e:#}")))?;
    match bindings::PolicyPre::new(instance_pre.clone()) {
        Ok(pre) => Ok(Pre::Current(pre)),
        Err(current) => v0_1::Pre::new(instance_pre).map(Pre::V0_1).map_err(|_| UploadError::WrongWorld(format!("{current:#}"))),
    }
}

/// Turns an artifact this host compiled and stored back into a component; `None` if it
/// is stale (another wasmtime version or engine config), so the caller recompiles.
#[allow(unsafe_code)]
fn deserialize_own_artifact(engine: &Engine, bytes: &[u8]) -> Option<Component> {
    // SAFETY: `deserialize` trusts its input to be wasmtime's own output. These bytes are
    // only ever produced by `Component::serialize` in this host and kept in the host's own
    // store; uploads are wasm and always go through `Component::new`. Wasmtime still checks
    // the version and engine configuration and refuses a mismatched artifact.
    unsafe { Component::deserialize(engine, bytes) }.ok()
}

/// Moves a finished call's log lines (and captured stderr) into the tenant's policy log.
fn flush_log(state: &mut CallState) {
    let stderr = state.stderr.contents();
    if !stderr.is_empty() {
        let text = String::from_utf8_lossy(&stderr).into_owned();
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            state.push_log("stderr", line);
        }
    }
    if state.dropped_log_lines > 0 {
        let dropped = state.dropped_log_lines;
        state.dropped_log_lines = 0;
        let note = format!("{dropped} log lines dropped (limit {} per call)", state.limits.log_lines_per_call);
        // The note itself must get through even when the per-call limit is used up.
        let mut line = LogLine { unix_millis: crate::clock::unix_millis(), level: "warn".into(), message: note, request_id: state.request_id.clone() };
        line.message.truncate(state.limits.log_line_bytes);
        state.log.push(line);
    }
    if !state.log.is_empty() {
        let lines = std::mem::take(&mut state.log);
        state.view.append_log(lines);
    }
}
