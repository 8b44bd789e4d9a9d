//! Every sandbox limit in one documented struct. Each field names the threat it defends
//! against; every one is settable under `[policy]` in the operator's config.

use std::time::Duration;

use serde::Deserialize;

/// Running-time budget of one policy call, counted in the time the guest ran (time spent
/// yielded to other requests does not count; see `run_time.rs`). Defends against a guest that
/// loops forever or computes long enough to starve other requests. Ticks are wall-clock
/// while the guest runs: 10 ms is ~400 times a typical call and leaves room for the OS to
/// preempt a well-behaved call on a loaded host without failing it.
pub const DEFAULT_CPU_DEADLINE: Duration = Duration::from_millis(10);
/// Epoch granularity: the deadline is enforced to within one tick, and a long call yields
/// its thread to other requests once per tick. 250 µs rather than 1 ms: beside a policy
/// using 8 ms of CPU a call, a neighbour's p99 rose 2.4-2.9x instead of 3.7-4.0x; the
/// price is about 2 µs a call on average (the tenth of calls that catch a tick yield once)
/// and a ticker thread waking 4,000 times a second.
pub const EPOCH_TICK: Duration = Duration::from_micros(250);
/// Linear memory a guest may grow to. Defends against memory bombs; 16 MiB is ample for
/// routing logic yet keeps 64 concurrent calls under 1 GiB.
pub const DEFAULT_MEMORY_BYTES: usize = 16 << 20;
/// Wasm stack. Defends against unbounded recursion overflowing the host thread's stack.
pub const DEFAULT_MAX_WASM_STACK: usize = 512 << 10;
/// Bytes of each pooled linear memory kept resident and zeroed with `memset` on reuse
/// instead of being returned to the kernel: a fresh instance per call would otherwise pay
/// page faults and TLB shootdowns on every call (half the call's cost, measured). A Rust
/// policy built with a 128 KiB stack (see `.cargo/config.toml`) touches well under 1 MiB;
/// 64 slots keep at most 64 MiB resident. An interpreter's policy touches pages across its
/// 9 to 13 MiB heap: raising `keep_resident_memory_bytes` to 16 MiB made a Python call ~16%
/// faster (3.48 to 2.93 ms, tests/benches/RESULTS.md), at up to 16 MiB per slot.
pub const KEEP_RESIDENT_MEMORY_BYTES: usize = 1 << 20;
/// The same for each pooled fiber stack and table.
pub const KEEP_RESIDENT_STACK_BYTES: usize = 128 << 10;
/// Slots returned to the kernel in one batch (one TLB shootdown instead of one each).
pub const DECOMMIT_BATCH: usize = 16;
/// Concurrent policy instances; sized to concurrency, not tenant count.
pub const DEFAULT_POOL_INSTANCES: u32 = 64;
/// How long a call waits for a free instance before the request is shed with 503.
pub const DEFAULT_POOL_WAIT: Duration = Duration::from_millis(250);
/// Largest accepted policy upload. Defends against memory and compile-time exhaustion.
pub const DEFAULT_UPLOAD_BYTES: usize = 8 << 20;
/// Policies one tenant may hold uploaded. Defends the store against a tenant uploading
/// variants without end (each is stored twice: the wasm and its larger compiled
/// artifact); a tenant deletes an unassigned upload to make room.
pub const DEFAULT_MAX_UPLOADS_PER_TENANT: usize = 32;
/// Wasm bytes of one tenant's uploads together: eight uploads of the largest size, or
/// many of the few hundred KiB a Rust policy takes.
pub const DEFAULT_MAX_UPLOAD_BYTES_PER_TENANT: u64 = 64 << 20;
/// Compiled components kept resident; tenants sharing a hash share one entry.
pub const DEFAULT_COMPILED_CACHE: usize = 512;
/// Log lines one call may write; the rest are counted and dropped (log floods).
pub const DEFAULT_LOG_LINES_PER_CALL: usize = 32;
/// Longest log line kept; longer lines are truncated.
pub const DEFAULT_LOG_LINE_BYTES: usize = 1024;
/// Lines kept in a tenant's policy log (a ring: the oldest go first).
pub const DEFAULT_LOG_LINES_KEPT: usize = 500;
/// Recent decision inputs kept per tenant for replays (`decision_inputs.rs`).
pub const DEFAULT_DECISION_INPUTS_KEPT: usize = 200;
/// Bytes of keys plus values a tenant may keep in its policy memory.
pub const DEFAULT_MEMORY_QUOTA_BYTES: u64 = 1 << 20;
/// Largest single memory value.
pub const DEFAULT_MEMORY_VALUE_BYTES: usize = 64 << 10;
/// Memory calls one policy call may make: bounds the store work a guest can cause.
pub const DEFAULT_MEMORY_OPS_PER_CALL: u32 = 256;
/// Deadline hits in a row after which a tenant's policy is suspended (refused at once,
/// from 1 s doubling to 60 s). Defends neighbours against a policy that spins on every
/// request; 0 turns it off.
pub const DEFAULT_SUSPEND_AFTER_TIMEOUTS: u32 = 3;
/// Milliseconds of policy run time each tenant may use per second (a quarter of a core):
/// defends neighbours against a policy that stays within its deadline but is called back
/// to back. A typical call costs 25-50 µs, so this admits thousands of calls a second per
/// tenant; 0 turns it off.
pub const DEFAULT_TENANT_CPU_MS_PER_SECOND: u32 = 250;
/// Targets a plan may hold; more is a bad return value, not a longer retry chain.
pub const DEFAULT_MAX_TARGETS: usize = 8;
/// Longest trace string (it becomes a response header).
pub const DEFAULT_MAX_TRACE_BYTES: usize = 256;
/// Tags a plan may carry, and the longest tag.
pub const DEFAULT_MAX_TAGS: usize = 16;
/// Longest tag.
pub const DEFAULT_MAX_TAG_BYTES: usize = 64;

// Compile bombs: a valid component of a few MB with hundreds of thousands of functions,
// or functions with huge bodies or tens of thousands of locals, costs Cranelift tens of
// seconds and gigabytes before anything else could refuse it. These are counted with a
// cheap parse before compiling (see `upload.rs`); the stock policies use a small
// fraction of each.

/// Functions defined across the component's core modules.
pub const DEFAULT_MAX_FUNCTIONS: usize = 20_000;
/// Locals one function may declare.
pub const DEFAULT_MAX_FUNCTION_LOCALS: usize = 5_000;
/// Bytes of one function body.
pub const DEFAULT_MAX_FUNCTION_BODY_BYTES: usize = 512 << 10;
/// Core module instances one component may create. The pooling allocator reserves this
/// many per slot, so it bounds the per-instance state a component can make the host keep.
/// A Rust `wasm32-wasip2` component creates a few (its module plus the shims
/// wit-component adds); a Python one (componentize-py links CPython's libraries as
/// separate modules) creates 38, and needs the limit raised.
pub const DEFAULT_MAX_CORE_INSTANCES_PER_COMPONENT: u32 = 8;
/// Linear memories per component: the pooling allocator's slots hold this many.
pub const MAX_MEMORIES_PER_COMPONENT: u32 = 2;
/// Tables per component: the pooling allocator's slots hold this many.
pub const MAX_TABLES_PER_COMPONENT: u32 = 4;
/// Policies compiled at once, the rest queued: compiling is CPU-heavy and must not take
/// every core from request handling.
pub const COMPILE_SLOTS: usize = 1;

// Argument sizes of the host imports. The guest's 16 MiB memory already bounds what one
// argument can be; these keep the host's work per import small and proportionate (a
// 16 MiB "model name" would be copied, validated and compared against every catalog
// entry) and keep guest-chosen strings out of host maps. Time inside imports counts
// against the call's deadline as well (see `host.rs`), so a guest cannot escape it by
// looping over expensive imports.

/// Longest memory key or `list-keys` prefix: the memory store's own key limit, since a
/// longer prefix cannot match any key. Larger: `invalid-key`.
pub const MAX_IMPORT_KEY_BYTES: usize = crate::memory::MAX_KEY_BYTES;
/// Longest `log.write` message the host accepts; lines are still cut to
/// `log_line_bytes`. Larger: the call traps (the interface has no error value).
pub const MAX_IMPORT_LOG_MESSAGE_BYTES: usize = 64 << 10;
/// Longest model name for `catalog.lookup` (no provider's model name comes close).
/// Larger: the call traps.
pub const MAX_IMPORT_MODEL_NAME_BYTES: usize = 256;
/// Longest end-user or tag name for `metering.user-spend`/`tag-spend`: each distinct
/// name could otherwise become a host-side key of any size. Larger: the call traps.
pub const MAX_IMPORT_SCOPE_NAME_BYTES: usize = 256;

/// The sandbox limits. `Default` gives the documented defaults above.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PolicyLimits {
    /// Per-call wall-clock deadline, in milliseconds.
    pub cpu_deadline_ms: u64,
    /// Linear memory cap per instance, in bytes.
    pub memory_bytes: usize,
    /// Wasm stack size, in bytes.
    pub max_wasm_stack: usize,
    /// Concurrent instances (pooling allocator slots).
    pub pool_instances: u32,
    /// Wait for a free slot before shedding with 503, in milliseconds.
    pub pool_wait_ms: u64,
    /// Largest policy upload, in bytes.
    pub upload_bytes: usize,
    /// Uploads one tenant may hold (0: tenants may not upload).
    pub max_uploads_per_tenant: usize,
    /// Wasm bytes of one tenant's uploads together.
    pub max_upload_bytes_per_tenant: u64,
    /// Compiled components kept resident (LRU).
    pub compiled_cache: usize,
    /// Log lines per call.
    pub log_lines_per_call: usize,
    /// Longest log line, in bytes.
    pub log_line_bytes: usize,
    /// Lines kept per tenant.
    pub log_lines_kept: usize,
    /// Recent decision inputs kept per tenant for replays (0: none, and no replay).
    pub decision_inputs_kept: usize,
    /// Bytes of each pooled linear memory kept resident between calls (see
    /// [`KEEP_RESIDENT_MEMORY_BYTES`]); at most `memory_bytes`.
    pub keep_resident_memory_bytes: usize,
    /// Per-tenant memory quota, in bytes.
    pub memory_quota_bytes: u64,
    /// Largest memory value, in bytes.
    pub memory_value_bytes: usize,
    /// Memory operations per call.
    pub memory_ops_per_call: u32,
    /// Deadline hits in a row before suspension (0: never).
    pub suspend_after_timeouts: u32,
    /// Policy run time per tenant per second, in milliseconds (0: unlimited).
    pub tenant_cpu_ms_per_second: u32,
    /// Targets per plan.
    pub max_targets: usize,
    /// Trace length, in bytes.
    pub max_trace_bytes: usize,
    /// Tags per plan.
    pub max_tags: usize,
    /// Tag length, in bytes.
    pub max_tag_bytes: usize,
    /// Functions per uploaded component.
    pub max_functions: usize,
    /// Locals per function of an uploaded component.
    pub max_function_locals: usize,
    /// Bytes per function body of an uploaded component.
    pub max_function_body_bytes: usize,
    /// Core module instances per component (more: the upload does not compile).
    pub max_core_instances_per_component: u32,
}

impl Default for PolicyLimits {
    fn default() -> Self {
        Self {
            cpu_deadline_ms: DEFAULT_CPU_DEADLINE.as_millis() as u64,
            memory_bytes: DEFAULT_MEMORY_BYTES,
            max_wasm_stack: DEFAULT_MAX_WASM_STACK,
            pool_instances: DEFAULT_POOL_INSTANCES,
            pool_wait_ms: DEFAULT_POOL_WAIT.as_millis() as u64,
            upload_bytes: DEFAULT_UPLOAD_BYTES,
            max_uploads_per_tenant: DEFAULT_MAX_UPLOADS_PER_TENANT,
            max_upload_bytes_per_tenant: DEFAULT_MAX_UPLOAD_BYTES_PER_TENANT,
            compiled_cache: DEFAULT_COMPILED_CACHE,
            log_lines_per_call: DEFAULT_LOG_LINES_PER_CALL,
            log_line_bytes: DEFAULT_LOG_LINE_BYTES,
            log_lines_kept: DEFAULT_LOG_LINES_KEPT,
            decision_inputs_kept: DEFAULT_DECISION_INPUTS_KEPT,
            keep_resident_memory_bytes: KEEP_RESIDENT_MEMORY_BYTES,
            memory_quota_bytes: DEFAULT_MEMORY_QUOTA_BYTES,
            memory_value_bytes: DEFAULT_MEMORY_VALUE_BYTES,
            memory_ops_per_call: DEFAULT_MEMORY_OPS_PER_CALL,
            suspend_after_timeouts: DEFAULT_SUSPEND_AFTER_TIMEOUTS,
            tenant_cpu_ms_per_second: DEFAULT_TENANT_CPU_MS_PER_SECOND,
            max_targets: DEFAULT_MAX_TARGETS,
            max_trace_bytes: DEFAULT_MAX_TRACE_BYTES,
            max_tags: DEFAULT_MAX_TAGS,
            max_tag_bytes: DEFAULT_MAX_TAG_BYTES,
            max_functions: DEFAULT_MAX_FUNCTIONS,
            max_function_locals: DEFAULT_MAX_FUNCTION_LOCALS,
            max_function_body_bytes: DEFAULT_MAX_FUNCTION_BODY_BYTES,
            max_core_instances_per_component: DEFAULT_MAX_CORE_INSTANCES_PER_COMPONENT,
        }
    }
}

impl PolicyLimits {
    /// Checks the limits make sense together; the message says which one does not.
    pub fn validate(&self) -> Result<(), &'static str> {
        if self.cpu_deadline_ms == 0 {
            return Err("policy.cpu_deadline_ms must be at least 1");
        }
        if self.memory_bytes < (1 << 20) {
            return Err("policy.memory_bytes must be at least 1 MiB (Rust guests need it to start)");
        }
        if self.keep_resident_memory_bytes > self.memory_bytes {
            return Err("policy.keep_resident_memory_bytes must not exceed policy.memory_bytes");
        }
        if self.max_wasm_stack < (64 << 10) {
            return Err("policy.max_wasm_stack must be at least 64 KiB");
        }
        if self.pool_instances == 0 {
            return Err("policy.pool_instances must be at least 1");
        }
        if self.compiled_cache == 0 {
            return Err("policy.compiled_cache must be at least 1");
        }
        if self.max_core_instances_per_component == 0 {
            return Err("policy.max_core_instances_per_component must be at least 1");
        }
        if self.max_targets == 0 {
            return Err("policy.max_targets must be at least 1");
        }
        Ok(())
    }

    /// The per-call deadline.
    pub fn cpu_deadline(&self) -> Duration {
        Duration::from_millis(self.cpu_deadline_ms)
    }

    /// Epoch ticks a call may run through before it is interrupted.
    pub fn deadline_ticks(&self) -> u64 {
        (self.cpu_deadline().as_micros() / EPOCH_TICK.as_micros()) as u64 + 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeping_more_resident_than_a_memory_may_grow_to_is_refused() {
        assert!(PolicyLimits::default().validate().is_ok());
        let raised = PolicyLimits { keep_resident_memory_bytes: 16 << 20, ..PolicyLimits::default() };
        assert!(raised.validate().is_ok(), "16 MiB fits the default 16 MiB memory");
        let over = PolicyLimits { keep_resident_memory_bytes: 17 << 20, ..PolicyLimits::default() };
        assert_eq!(over.validate(), Err("policy.keep_resident_memory_bytes must not exceed policy.memory_bytes"));
        let parsed: PolicyLimits = toml::from_str("keep_resident_memory_bytes = 8388608").expect("parse");
        assert_eq!(parsed.keep_resident_memory_bytes, 8 << 20);
    }
}
