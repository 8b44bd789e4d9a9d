//! Suspends a tenant's policy whose calls keep running into the CPU deadline.
//!
//! A policy that spins to its deadline on every request costs a core for as long as its
//! tenant keeps sending, which its neighbours pay for in latency. After
//! `suspend_after_timeouts` deadline hits in a row, the tenant's requests are refused at
//! once (503 `policy_suspended`) for a second, then for twice as long after each further
//! run of hits, up to a minute. The first call after a suspension is a probe; any call
//! that ends in time clears the record.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::PolicyHash;

/// The first suspension.
const FIRST_SUSPENSION: Duration = Duration::from_secs(1);
/// The longest suspension.
const MAX_SUSPENSION: Duration = Duration::from_secs(60);

#[derive(Debug)]
struct Strikes {
    in_a_row: u32,
    suspended_until: Option<Instant>,
    next_suspension: Duration,
}

/// Deadline hits per (tenant, policy). Only tenants with a recent hit have an entry.
#[derive(Debug, Default)]
pub struct Breaker {
    strikes: Mutex<HashMap<(String, PolicyHash), Strikes>>,
}

impl Breaker {
    /// `Err(remaining)` while the tenant's policy is suspended.
    pub fn check(&self, tenant: &str, hash: PolicyHash) -> Result<(), Duration> {
        let strikes = self.strikes.lock().unwrap_or_else(|p| p.into_inner());
        // Every call checks; almost always no tenant has strikes, so no key is built.
        if strikes.is_empty() {
            return Ok(());
        }
        match strikes.get(&(tenant.to_string(), hash)).and_then(|s| s.suspended_until) {
            Some(until) if until > Instant::now() => Err(until - Instant::now()),
            _ => Ok(()),
        }
    }

    /// Records how a call ended. Returns the suspension this call started, if any.
    pub fn record(&self, tenant: &str, hash: PolicyHash, timed_out: bool, suspend_after: u32) -> Option<Duration> {
        let mut strikes = self.strikes.lock().unwrap_or_else(|p| p.into_inner());
        if !timed_out {
            if !strikes.is_empty() {
                strikes.remove(&(tenant.to_string(), hash));
            }
            return None;
        }
        let key = (tenant.to_string(), hash);
        if suspend_after == 0 {
            return None;
        }
        let entry = strikes.entry(key).or_insert(Strikes { in_a_row: 0, suspended_until: None, next_suspension: FIRST_SUSPENSION });
        entry.in_a_row += 1;
        if entry.in_a_row < suspend_after {
            return None;
        }
        let suspension = entry.next_suspension;
        entry.suspended_until = Some(Instant::now() + suspension);
        entry.next_suspension = (suspension * 2).min(MAX_SUSPENSION);
        Some(suspension)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suspends_after_hits_in_a_row_and_a_success_clears() {
        let breaker = Breaker::default();
        let hash = PolicyHash([7; 32]);
        assert_eq!(breaker.record("t", hash, true, 3), None);
        assert_eq!(breaker.record("t", hash, true, 3), None);
        assert_eq!(breaker.record("t", hash, true, 3), Some(FIRST_SUSPENSION));
        assert!(breaker.check("t", hash).is_err());
        assert!(breaker.check("other", hash).is_ok(), "only the tenant that hit the deadline is suspended");
        // A probe that times out again doubles the suspension.
        assert_eq!(breaker.record("t", hash, true, 3), Some(FIRST_SUSPENSION * 2));
        breaker.record("t", hash, false, 3);
        assert!(breaker.check("t", hash).is_ok());
        assert_eq!(breaker.record("t", hash, true, 0), None, "0 turns suspension off");
    }
}
