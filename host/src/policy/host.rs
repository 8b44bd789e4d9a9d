//! The imported interfaces, implemented on the per-call store state. Each forwards to the
//! calling tenant's [`TenantView`]; per-call limits (memory operations, log lines,
//! argument sizes) are enforced here. A denial is a WIT error value where the interface
//! has one; where it has none (an oversized argument to `log`, `catalog` or `metering`)
//! the call traps with an [`ImportError`] that names the limit, and a failed read (the
//! budget, credentials) traps with the view's [`Unavailable`](super::view::Unavailable):
//! imports fail closed, never answering zero or an empty list.
//!
//! Time spent in imports counts against the call's deadline: the store's call hook
//! (installed in `policy.rs`) adds it to the call's [`RunTime`] and traps with
//! `Trap::Interrupt` when an import returns past the deadline.

use std::sync::Arc;

use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::bindings::tollgate::policy::{catalog, credentials, log, memory, metering, types};
use super::limits::{self, PolicyLimits};
use super::run_time::RunTime;
use super::view::{LogLine, TenantView};

/// Why an import trapped the call. The message reaches the policy's author through
/// `policy_failed`; it names the import and the limit, never tenant data.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImportError {
    /// An argument larger than the import accepts, where the interface has no error value.
    #[error("{import} was passed {bytes} bytes; the limit is {limit}")]
    ArgumentTooLarge {
        /// The import, e.g. `metering.user-spend`.
        import: &'static str,
        /// The argument's size.
        bytes: usize,
        /// The limit.
        limit: usize,
    },
}

fn bounded(import: &'static str, argument: &str, limit: usize) -> wasmtime::Result<()> {
    if argument.len() > limit {
        return Err(ImportError::ArgumentTooLarge { import, bytes: argument.len(), limit }.into());
    }
    Ok(())
}

/// Everything one policy call's `Store` holds. Dropped with the store after the call.
pub struct CallState {
    pub(crate) view: Arc<dyn TenantView>,
    pub(crate) limits: Arc<PolicyLimits>,
    pub(crate) request_id: String,
    pub(crate) limiter: CallLimiter,
    pub(crate) log: Vec<LogLine>,
    pub(crate) dropped_log_lines: u64,
    pub(crate) stderr: BoundedStderr,
    /// The call's run time (see `run_time.rs`), kept by the epoch callback and the call
    /// hook.
    pub(crate) run: RunTime,
    memory_ops: u32,
    wasi: WasiCtx,
    table: ResourceTable,
}

impl CallState {
    /// State for one call: WASI with nothing granted (no preopens, env, args, network),
    /// stderr captured into a bounded pipe that ends up in the tenant's policy log.
    pub(crate) fn new(view: Arc<dyn TenantView>, limits: Arc<PolicyLimits>, request_id: String, run: RunTime) -> Self {
        let stderr_cap = limits.log_lines_per_call * limits.log_line_bytes;
        let stderr = BoundedStderr::new(stderr_cap);
        let wasi = WasiCtx::builder().stderr(stderr.clone()).build();
        let limiter = CallLimiter { memory_bytes: limits.memory_bytes, memory_limit_hit: false };
        Self {
            view,
            limits,
            request_id,
            limiter,
            run,
            log: Vec::new(),
            dropped_log_lines: 0,
            stderr,
            memory_ops: 0,
            wasi,
            table: ResourceTable::new(),
        }
    }

    fn count_memory_op(&mut self) -> Result<(), memory::MemoryError> {
        self.memory_ops += 1;
        if self.memory_ops > self.limits.memory_ops_per_call {
            return Err(memory::MemoryError::TooManyOperations);
        }
        Ok(())
    }

    pub(crate) fn push_log(&mut self, level: &str, message: &str) {
        if self.log.len() >= self.limits.log_lines_per_call {
            self.dropped_log_lines += 1;
            return;
        }
        let mut end = message.len().min(self.limits.log_line_bytes);
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        self.log.push(LogLine {
            unix_millis: crate::clock::unix_millis(),
            level: level.into(),
            message: message[..end].into(),
            request_id: self.request_id.clone(),
        });
    }
}

/// Caps linear memory and remembers that the cap was hit, so the caller can report
/// "memory limit" instead of a bare trap.
pub(crate) struct CallLimiter {
    memory_bytes: usize,
    pub(crate) memory_limit_hit: bool,
}

/// Tables a guest may grow to; Rust guests use a few hundred entries.
const MAX_TABLE_ELEMENTS: usize = 100_000;

impl wasmtime::ResourceLimiter for CallLimiter {
    fn memory_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        if desired > self.memory_bytes {
            self.memory_limit_hit = true;
            // An error (not `Ok(false)`) traps at once instead of letting the guest's
            // allocator limp on, and names the cause.
            return Err(wasmtime::format_err!("policy memory limit of {} bytes exceeded", self.memory_bytes));
        }
        Ok(true)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }
}

impl WasiView for CallState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl types::Host for CallState {}

// Asynchronous, like the metering reads below: on the shared store it is a database read.
impl credentials::Host for CallState {
    async fn list(&mut self) -> wasmtime::Result<Vec<credentials::CredentialInfo>> {
        Ok(self.view.credentials().await?)
    }
}

/// A key or prefix the memory store cannot hold is `invalid-key`, before any store work.
fn memory_key(key: &str) -> Result<(), memory::MemoryError> {
    if key.len() > limits::MAX_IMPORT_KEY_BYTES {
        return Err(memory::MemoryError::InvalidKey);
    }
    Ok(())
}

// Asynchronous, like `metering` below: on the shared store each is a database round trip,
// awaited without blocking a worker thread. The checks before it cost no store work.
impl memory::Host for CallState {
    async fn get(&mut self, key: String) -> wasmtime::Result<Result<Option<Vec<u8>>, memory::MemoryError>> {
        if let Err(refused) = self.count_memory_op().and_then(|()| memory_key(&key)) {
            return Ok(Err(refused));
        }
        Ok(self.view.memory_get(&key).await)
    }

    async fn set(&mut self, key: String, value: Vec<u8>) -> wasmtime::Result<Result<(), memory::MemoryError>> {
        let checked = self.count_memory_op().and_then(|()| memory_key(&key)).and_then(|()| {
            if value.len() > self.limits.memory_value_bytes {
                return Err(memory::MemoryError::ValueTooLarge);
            }
            Ok(())
        });
        if let Err(refused) = checked {
            return Ok(Err(refused));
        }
        Ok(self.view.memory_set(&key, &value).await)
    }

    async fn delete(&mut self, key: String) -> wasmtime::Result<Result<(), memory::MemoryError>> {
        if let Err(refused) = self.count_memory_op().and_then(|()| memory_key(&key)) {
            return Ok(Err(refused));
        }
        Ok(self.view.memory_delete(&key).await)
    }

    async fn list_keys(&mut self, prefix: String, limit: u32) -> wasmtime::Result<Result<Vec<String>, memory::MemoryError>> {
        if let Err(refused) = self.count_memory_op().and_then(|()| memory_key(&prefix)) {
            return Ok(Err(refused));
        }
        Ok(self.view.memory_list(&prefix, limit.min(1000)).await)
    }
}

// Asynchronous: on the shared store these are database reads, awaited without blocking a
// worker thread. The time they take counts against the call's deadline like any import's.
impl metering::Host for CallState {
    async fn budget(&mut self) -> wasmtime::Result<metering::BudgetStatus> {
        Ok(self.view.budget().await?)
    }

    async fn user_spend(&mut self, end_user: String) -> wasmtime::Result<u64> {
        bounded("metering.user-spend", &end_user, limits::MAX_IMPORT_SCOPE_NAME_BYTES)?;
        Ok(self.view.user_spend(&end_user).await?)
    }

    async fn tag_spend(&mut self, tag: String) -> wasmtime::Result<u64> {
        bounded("metering.tag-spend", &tag, limits::MAX_IMPORT_SCOPE_NAME_BYTES)?;
        Ok(self.view.tag_spend(&tag).await?)
    }
}

impl catalog::Host for CallState {
    fn models(&mut self) -> wasmtime::Result<Vec<catalog::ModelInfo>> {
        Ok(self.view.models())
    }

    fn lookup(&mut self, model: String) -> wasmtime::Result<Option<catalog::ModelInfo>> {
        bounded("catalog.lookup", &model, limits::MAX_IMPORT_MODEL_NAME_BYTES)?;
        Ok(self.view.lookup_model(&model))
    }
}

impl log::Host for CallState {
    fn write(&mut self, level: log::Level, message: String) -> wasmtime::Result<()> {
        bounded("log.write", &message, limits::MAX_IMPORT_LOG_MESSAGE_BYTES)?;
        let level = match level {
            log::Level::Trace => "trace",
            log::Level::Debug => "debug",
            log::Level::Info => "info",
            log::Level::Warn => "warn",
            log::Level::Error => "error",
        };
        self.push_log(level, &message);
        Ok(())
    }
}

/// The guest's stderr: kept up to a byte cap, the rest silently discarded. (wasmtime's
/// `MemoryOutputPipe` traps the guest when full, which would turn a chatty policy into a
/// failed request.)
#[derive(Clone)]
pub(crate) struct BoundedStderr {
    buffer: Arc<std::sync::Mutex<Vec<u8>>>,
    capacity: usize,
}

impl BoundedStderr {
    fn new(capacity: usize) -> Self {
        Self { buffer: Arc::new(std::sync::Mutex::new(Vec::new())), capacity }
    }

    /// What the guest wrote, up to the cap.
    pub(crate) fn contents(&self) -> Vec<u8> {
        self.buffer.lock().map(|b| b.clone()).unwrap_or_default()
    }

    fn keep(&self, bytes: &[u8]) {
        if let Ok(mut buffer) = self.buffer.lock() {
            let room = self.capacity.saturating_sub(buffer.len());
            buffer.extend_from_slice(&bytes[..bytes.len().min(room)]);
        }
    }
}

impl wasmtime_wasi::cli::IsTerminal for BoundedStderr {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl wasmtime_wasi::cli::StdoutStream for BoundedStderr {
    fn p2_stream(&self) -> Box<dyn wasmtime_wasi::p2::OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl wasmtime_wasi::p2::Pollable for BoundedStderr {
    async fn ready(&mut self) {}
}

impl wasmtime_wasi::p2::OutputStream for BoundedStderr {
    fn write(&mut self, bytes: bytes::Bytes) -> wasmtime_wasi::p2::StreamResult<()> {
        self.keep(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> wasmtime_wasi::p2::StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> wasmtime_wasi::p2::StreamResult<usize> {
        Ok(64 << 10)
    }
}

impl tokio::io::AsyncWrite for BoundedStderr {
    fn poll_write(self: std::pin::Pin<&mut Self>, _cx: &mut std::task::Context<'_>, buf: &[u8]) -> std::task::Poll<std::io::Result<usize>> {
        self.keep(buf);
        std::task::Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: std::pin::Pin<&mut Self>, _cx: &mut std::task::Context<'_>) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: std::pin::Pin<&mut Self>, _cx: &mut std::task::Context<'_>) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}
