//! Prometheus counters and histograms. Label sets are bounded: by endpoint, status class
//! and configured provider, never by tenant, so 10,000 tenants do not explode the series.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use crate::metering::LedgerStats;
use crate::policy::PolicyStats;

/// Latency bucket bounds of a request, in seconds.
const BUCKETS: &[f64] = &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

/// Bucket bounds of a store operation (a ledger batch's commit or disk sync), in seconds:
/// these take tens of microseconds to a few milliseconds, below a request's first bucket.
pub const STORE_BUCKETS: &[f64] = &[0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5];

/// A fixed-bucket histogram (at most 15 bounds, plus `+Inf`).
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    counts: [AtomicU64; 16],
    sum_micros: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self::with_bounds(BUCKETS)
    }
}

impl Histogram {
    /// A histogram over `bounds` (ascending, at most 15).
    pub fn with_bounds(bounds: &'static [f64]) -> Self {
        assert!(bounds.len() < 16, "a histogram has at most 15 bounds");
        Self { bounds, counts: Default::default(), sum_micros: AtomicU64::new(0) }
    }

    /// Records one observation.
    pub fn observe(&self, seconds: f64) {
        let index = self.bounds.iter().position(|b| seconds <= *b).unwrap_or(self.bounds.len());
        self.counts[index].fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add((seconds * 1e6) as u64, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let mut cumulative = 0;
        for (i, bound) in self.bounds.iter().enumerate() {
            cumulative += self.counts[i].load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{{labels}le=\"{bound}\"}} {cumulative}");
        }
        cumulative += self.counts[self.bounds.len()].load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{{labels}le=\"+Inf\"}} {cumulative}");
        let _ = writeln!(out, "{name}_sum{{{}}} {}", labels.trim_end_matches(','), self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6);
        let _ = writeln!(out, "{name}_count{{{}}} {cumulative}", labels.trim_end_matches(','));
    }
}

/// One request counted in a gauge for as long as it lives: dropping it (the request
/// finished, or its future was dropped because the client hung up) counts it out.
#[derive(Debug)]
pub struct InFlight<'a>(&'a AtomicU64);

impl<'a> InFlight<'a> {
    /// Counts one in.
    pub fn enter(gauge: &'a AtomicU64) -> Self {
        gauge.fetch_add(1, Ordering::Relaxed);
        InFlight(gauge)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The gateway's metrics.
#[derive(Debug, Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(&'static str, u16), u64>>,
    /// Chat request latency, accept to last byte.
    pub chat_latency: Histogram,
    upstream_errors: Mutex<BTreeMap<String, u64>>,
    /// Requests in flight.
    pub in_flight: AtomicU64,
}

/// What `/metrics` reports of the stores.
#[derive(Default)]
pub struct StoreFigures<'a> {
    /// The vault's credential cache: hits, misses.
    pub vault_cache: Option<(u64, u64)>,
    /// The embedded store's settlement threads (PostgreSQL settles in the database).
    pub ledger: Option<&'a LedgerStats>,
    /// Durable flushes of the embedded store (sled's flush and the `fsync`s after it).
    pub durable_syncs: Option<u64>,
}

impl Metrics {
    /// Counts a finished request by endpoint and status class.
    pub fn request(&self, endpoint: &'static str, status: u16) {
        if let Ok(mut map) = self.requests.lock() {
            *map.entry((endpoint, status / 100 * 100)).or_default() += 1;
        }
    }

    /// Counts an upstream failure of a configured provider.
    pub fn upstream_error(&self, provider: &str) {
        if let Ok(mut map) = self.upstream_errors.lock() {
            *map.entry(provider.to_string()).or_default() += 1;
        }
    }

    /// The Prometheus text exposition, with the stores' figures (`StoreFigures`).
    pub fn render(&self, policy: &PolicyStats, cached_components: usize, pool_size: u32, tenants: usize, stores: StoreFigures<'_>) -> String {
        let StoreFigures { vault_cache, ledger, durable_syncs } = stores;
        let mut out = String::new();
        out.push_str("# TYPE tollgate_requests_total counter\n");
        if let Ok(map) = self.requests.lock() {
            for ((endpoint, class), count) in map.iter() {
                let _ = writeln!(out, "tollgate_requests_total{{endpoint=\"{endpoint}\",status=\"{}xx\"}} {count}", class / 100);
            }
        }
        out.push_str("# TYPE tollgate_chat_latency_seconds histogram\n");
        self.chat_latency.render(&mut out, "tollgate_chat_latency_seconds", "");
        out.push_str("# TYPE tollgate_upstream_errors_total counter\n");
        if let Ok(map) = self.upstream_errors.lock() {
            for (provider, count) in map.iter() {
                let _ = writeln!(out, "tollgate_upstream_errors_total{{provider=\"{provider}\"}} {count}");
            }
        }
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let _ = write!(
            out,
            "# TYPE tollgate_requests_in_flight gauge\ntollgate_requests_in_flight {}\n\
             # TYPE tollgate_policy_calls_total counter\ntollgate_policy_calls_total {}\n\
             # TYPE tollgate_policy_failures_total counter\ntollgate_policy_failures_total {}\n\
             # TYPE tollgate_policy_timeouts_total counter\ntollgate_policy_timeouts_total {}\n\
             # TYPE tollgate_policy_shed_total counter\ntollgate_policy_shed_total {}\n\
             # TYPE tollgate_policy_suspended_total counter\ntollgate_policy_suspended_total {}\n\
             # TYPE tollgate_policy_throttled_total counter\ntollgate_policy_throttled_total {}\n\
             # TYPE tollgate_policy_seconds_total counter\ntollgate_policy_seconds_total {}\n\
             # TYPE tollgate_policy_pool_in_use gauge\ntollgate_policy_pool_in_use {}\n\
             # TYPE tollgate_policy_pool_size gauge\ntollgate_policy_pool_size {pool_size}\n\
             # TYPE tollgate_policy_components_cached gauge\ntollgate_policy_components_cached {cached_components}\n\
             # TYPE tollgate_tenants gauge\ntollgate_tenants {tenants}\n",
            load(&self.in_flight),
            load(&policy.calls),
            load(&policy.failures),
            load(&policy.timeouts),
            load(&policy.shed),
            load(&policy.suspended),
            load(&policy.throttled),
            load(&policy.call_nanos) as f64 / 1e9,
            load(&policy.in_flight),
        );
        if let Some((hits, misses)) = vault_cache {
            let _ = write!(
                out,
                "# TYPE tollgate_vault_cache_hits_total counter\ntollgate_vault_cache_hits_total {hits}\n\
                 # TYPE tollgate_vault_cache_misses_total counter\ntollgate_vault_cache_misses_total {misses}\n"
            );
        }
        if let Some(syncs) = durable_syncs {
            let _ = write!(out, "# TYPE tollgate_store_syncs_total counter\ntollgate_store_syncs_total {syncs}\n");
        }
        if let Some(ledger) = ledger {
            let _ = write!(
                out,
                "# TYPE tollgate_ledger_batches_total counter\ntollgate_ledger_batches_total {}\n\
                 # TYPE tollgate_ledger_settlements_total counter\ntollgate_ledger_settlements_total {}\n\
                 # TYPE tollgate_ledger_checkpoints_total counter\ntollgate_ledger_checkpoints_total {}\n",
                load(&ledger.batches),
                load(&ledger.settlements),
                load(&ledger.checkpoints),
            );
            out.push_str("# TYPE tollgate_ledger_commit_seconds histogram\n");
            ledger.commit.render(&mut out, "tollgate_ledger_commit_seconds", "");
            out.push_str("# TYPE tollgate_ledger_sync_seconds histogram\n");
            ledger.sync.render(&mut out, "tollgate_ledger_sync_seconds", "");
        }
        out
    }
}
