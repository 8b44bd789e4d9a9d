//! Each tenant's share of policy CPU: a token bucket of milliseconds of policy run time.
//!
//! A policy within its deadline can still cost a core if its tenant calls it back to
//! back (8 ms of a 10 ms deadline, a hundred times a second); on a small machine its
//! neighbours then wait for the CPU. Each call is admitted against the tenant's bucket
//! (refilled at `tenant_cpu_ms_per_second`, holding at most [`BURST`]) at the
//! tenant's recent average cost, and charged its measured run time afterwards. A tenant
//! past its share waits for the refill (up to `MAX_WAIT`), then is refused with 429.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Run time a tenant may use at once before the refill rate applies: five calls at the
/// default deadline.
pub const BURST: Duration = Duration::from_millis(50);

/// The longest a call waits for its tenant's share; longer and the request is refused.
pub const MAX_WAIT: Duration = Duration::from_secs(1);

#[derive(Debug)]
struct Bucket {
    /// Milliseconds of run time available (negative: owed).
    available_ms: f64,
    refilled: Instant,
    /// Recent average cost of one call, in milliseconds.
    average_ms: f64,
}

/// The buckets of every tenant that called its policy since start.
#[derive(Debug)]
pub struct CpuShare {
    ms_per_second: f64,
    buckets: Mutex<HashMap<String, Bucket>>,
}

/// What admission decided.
#[derive(Debug, PartialEq)]
pub enum Admission {
    /// Run now.
    Now,
    /// Run after this wait.
    After(Duration),
    /// Refused: the tenant would wait longer than [`MAX_WAIT`].
    Refused(Duration),
}

impl CpuShare {
    /// Buckets refilled at `ms_per_second` (0: no limit).
    pub fn new(ms_per_second: u32) -> Self {
        Self { ms_per_second: f64::from(ms_per_second), buckets: Mutex::new(HashMap::new()) }
    }

    /// Admits one call of `tenant`, holding its expected cost.
    pub fn admit(&self, tenant: &str) -> Admission {
        self.admit_within(tenant, MAX_WAIT)
    }

    /// Admits one call of `tenant` only if it can run now (holding its expected cost);
    /// otherwise holds nothing and answers how long it would have waited.
    pub fn admit_now(&self, tenant: &str) -> Admission {
        self.admit_within(tenant, Duration::ZERO)
    }

    fn admit_within(&self, tenant: &str, max_wait: Duration) -> Admission {
        if self.ms_per_second == 0.0 {
            return Admission::Now;
        }
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let burst_ms = BURST.as_secs_f64() * 1000.0;
        // Look up before inserting: the tenant's id is copied once, not on every call.
        if !buckets.contains_key(tenant) {
            buckets.insert(tenant.to_string(), Bucket { available_ms: burst_ms, refilled: now, average_ms: 0.0 });
        }
        let Some(bucket) = buckets.get_mut(tenant) else { return Admission::Now };
        let refill = now.duration_since(bucket.refilled).as_secs_f64() * self.ms_per_second;
        bucket.available_ms = (bucket.available_ms + refill).min(burst_ms);
        bucket.refilled = now;
        let wait = if bucket.available_ms >= 0.0 { Duration::ZERO } else { Duration::from_secs_f64(-bucket.available_ms / self.ms_per_second) };
        if wait > max_wait {
            return Admission::Refused(wait);
        }
        bucket.available_ms -= bucket.average_ms;
        if wait.is_zero() { Admission::Now } else { Admission::After(wait) }
    }

    /// Charges a finished call its run time, correcting what admission held.
    pub fn charge(&self, tenant: &str, ran: Duration) {
        if self.ms_per_second == 0.0 {
            return;
        }
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(bucket) = buckets.get_mut(tenant) {
            let ran_ms = ran.as_secs_f64() * 1000.0;
            bucket.available_ms += bucket.average_ms - ran_ms;
            bucket.average_ms = 0.8 * bucket.average_ms + 0.2 * ran_ms;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tenant_past_its_share_waits_then_is_refused_and_others_are_not_touched() {
        let share = CpuShare::new(100);
        assert_eq!(share.admit("heavy"), Admission::Now);
        // 100 ms of run time against a 50 ms burst and 100 ms/s: 50 ms owed, half a second.
        share.charge("heavy", Duration::from_millis(100));
        match share.admit("heavy") {
            Admission::After(wait) => assert!(wait > Duration::from_millis(400) && wait <= Duration::from_millis(500), "{wait:?}"),
            other => panic!("{other:?}"),
        }
        share.charge("heavy", Duration::from_millis(200));
        assert!(matches!(share.admit("heavy"), Admission::Refused(_)));
        assert_eq!(share.admit("calm"), Admission::Now, "another tenant has its own share");
        assert_eq!(CpuShare::new(0).admit("heavy"), Admission::Now, "0 turns the share off");
    }
}
