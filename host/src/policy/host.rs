//! The imported interfaces, implemented on the per-call store state. Each forwards to the
//! calling tenant's [`TenantView`]; per-call limits (memory operations, log lines) are
//! enforced here, and every denial is a WIT error value, never a trap.

use std::sync::Arc;

use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::bindings::tollgate::policy::{catalog, credentials, log, memory, metering, types};
use super::limits::PolicyLimits;
use super::view::{LogLine, TenantView};

/// Everything one policy call's `Store` holds. Dropped with the store after the call.
pub struct CallState {
    pub(crate) view: Arc<dyn TenantView>,
    pub(crate) limits: Arc<PolicyLimits>,
    pub(crate) request_id: String,
    pub(crate) limiter: CallLimiter,
    pub(crate) log: Vec<LogLine>,
    pub(crate) dropped_log_lines: u64,
    pub(crate) stderr: BoundedStderr,
    /// Epoch ticks the guest ran through (its run time, in ticks).
    pub(crate) ticks_run: u64,
    memory_ops: u32,
    wasi: WasiCtx,
    table: ResourceTable,
}

impl CallState {
    /// State for one call: WASI with nothing granted (no preopens, env, args, network),
    /// stderr captured into a bounded pipe that ends up in the tenant's policy log.
    pub(crate) fn new(view: Arc<dyn TenantView>, limits: Arc<PolicyLimits>, request_id: String) -> Self {
        let stderr_cap = limits.log_lines_per_call * limits.log_line_bytes;
        let stderr = BoundedStderr::new(stderr_cap);
        let wasi = WasiCtx::builder().stderr(stderr.clone()).build();
        let limiter = CallLimiter { memory_bytes: limits.memory_bytes, memory_limit_hit: false };
        Self {
            view,
            limits,
            request_id,
            limiter,
            ticks_run: 0,
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

impl credentials::Host for CallState {
    fn list(&mut self) -> Vec<credentials::CredentialInfo> {
        self.view.credentials()
    }
}

impl memory::Host for CallState {
    fn get(&mut self, key: String) -> Result<Option<Vec<u8>>, memory::MemoryError> {
        self.count_memory_op()?;
        self.view.memory_get(&key)
    }

    fn set(&mut self, key: String, value: Vec<u8>) -> Result<(), memory::MemoryError> {
        self.count_memory_op()?;
        if value.len() > self.limits.memory_value_bytes {
            return Err(memory::MemoryError::ValueTooLarge);
        }
        self.view.memory_set(&key, &value)
    }

    fn delete(&mut self, key: String) -> Result<(), memory::MemoryError> {
        self.count_memory_op()?;
        self.view.memory_delete(&key)
    }

    fn list_keys(&mut self, prefix: String, limit: u32) -> Result<Vec<String>, memory::MemoryError> {
        self.count_memory_op()?;
        self.view.memory_list(&prefix, limit.min(1000))
    }
}

impl metering::Host for CallState {
    fn budget(&mut self) -> metering::BudgetStatus {
        self.view.budget()
    }

    fn user_spend(&mut self, end_user: String) -> u64 {
        self.view.user_spend(&end_user)
    }

    fn tag_spend(&mut self, tag: String) -> u64 {
        self.view.tag_spend(&tag)
    }
}

impl catalog::Host for CallState {
    fn models(&mut self) -> Vec<catalog::ModelInfo> {
        self.view.models()
    }

    fn lookup(&mut self, model: String) -> Option<catalog::ModelInfo> {
        self.view.lookup_model(&model)
    }
}

impl log::Host for CallState {
    fn write(&mut self, level: log::Level, message: String) {
        let level = match level {
            log::Level::Trace => "trace",
            log::Level::Debug => "debug",
            log::Level::Info => "info",
            log::Level::Warn => "warn",
            log::Level::Error => "error",
        };
        self.push_log(level, &message);
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
