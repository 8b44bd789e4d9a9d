//! Rate limits per tenant and per token, so one tenant cannot starve the others: requests
//! per minute and tokens per minute (token buckets refilled continuously), and a cap on
//! concurrent requests (a counter whose permit lives as long as the request, stream
//! included). In memory: limits protect this process; they are not billing.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// How long a refusal waits before it is sent. A client that ignores `Retry-After` and
/// retries at once is slowed to a few refusals a second per connection, instead of taking
/// the CPU other tenants' requests need (measured: two such clients on 2 cores raised a
/// neighbour's p99 2.2-2.7x). A client within its limits never waits.
pub const REFUSAL_DELAY: Duration = Duration::from_millis(100);

/// A tenant's (or token's) limits; `None` means unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RateLimits {
    /// Requests per minute.
    #[serde(default)]
    pub requests_per_minute: Option<u32>,
    /// Tokens (prompt estimate plus completion) per minute.
    #[serde(default)]
    pub tokens_per_minute: Option<u32>,
    /// Requests in flight at once.
    #[serde(default)]
    pub max_concurrent: Option<u32>,
}

/// A limit was hit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("rate limit exceeded: {what}; retry after {retry_after_secs} s")]
pub struct RateLimited {
    /// Which limit.
    pub what: &'static str,
    /// When a retry may succeed.
    pub retry_after_secs: u64,
}

#[derive(Debug)]
struct Bucket {
    level: f64,
    updated: Instant,
}

impl Bucket {
    /// Refills at `per_minute / 60` per second up to `per_minute`, then takes `cost` if
    /// available; otherwise says how long until it would be.
    fn take(&mut self, per_minute: u32, cost: f64, now: Instant) -> Result<(), Duration> {
        let capacity = per_minute as f64;
        let rate = capacity / 60.0;
        self.level = (self.level + now.duration_since(self.updated).as_secs_f64() * rate).min(capacity);
        self.updated = now;
        // A single request larger than the whole bucket is admitted when the bucket is
        // full, or it could never run.
        if self.level >= cost || (self.level >= capacity && cost > capacity) {
            self.level -= cost;
            return Ok(());
        }
        Err(Duration::from_secs_f64(((cost.min(capacity) - self.level) / rate).max(0.0)))
    }
}

#[derive(Default)]
struct State {
    buckets: HashMap<(String, &'static str), Bucket>,
    in_flight: HashMap<String, u32>,
}

/// The limiter shared by all requests.
#[derive(Default, Clone)]
pub struct Limiter {
    state: Arc<Mutex<State>>,
}

/// The limiter keys and limits of a request: its tenant's, and its token's. A token is
/// keyed by its tenant and its full hash, never by its 8-digit id, which can collide
/// (within a tenant or across tenants) and would let one token drain another's bucket.
pub fn scopes_of(tenant: &crate::tenants::Tenant, token: &crate::tokens::TokenRecord) -> Vec<(String, RateLimits)> {
    vec![(format!("t:{}", tenant.id), tenant.rate_limits), (format!("k:{}:{}", tenant.id, token.digest), token.rate_limits)]
}

/// Holds one concurrency slot per capped scope until dropped, and names the request's
/// scopes for the bucket checks that follow.
pub struct Permit {
    state: Arc<Mutex<State>>,
    scopes: Vec<(String, RateLimits)>,
    held: Vec<String>,
}

impl std::fmt::Debug for Permit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Permit").field("held", &self.held).finish()
    }
}

impl Permit {
    /// The scopes this permit was acquired for.
    pub fn scopes(&self) -> &[(String, RateLimits)] {
        &self.scopes
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if let Ok(mut state) = self.state.lock() {
            for key in &self.held {
                if let Some(n) = state.in_flight.get_mut(key) {
                    *n = n.saturating_sub(1);
                    if *n == 0 {
                        state.in_flight.remove(key);
                    }
                }
            }
        }
    }
}

impl Limiter {
    /// Takes a concurrency slot under every capped scope, or refuses without taking any.
    /// Taken as soon as the request is authenticated, before its body is read, so a
    /// client slowly sending bodies is held to its tenant's cap like any other.
    pub fn acquire(&self, scopes: Vec<(String, RateLimits)>) -> Result<Permit, RateLimited> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        for (key, limits) in &scopes {
            if let Some(max) = limits.max_concurrent {
                if state.in_flight.get(key).copied().unwrap_or(0) >= max {
                    return Err(RateLimited { what: "too many concurrent requests", retry_after_secs: 1 });
                }
            }
        }
        let mut held = Vec::new();
        for (key, limits) in &scopes {
            if limits.max_concurrent.is_some() {
                *state.in_flight.entry(key.clone()).or_default() += 1;
                held.push(key.clone());
            }
        }
        Ok(Permit { state: self.state.clone(), scopes, held })
    }

    /// Admits one request costing `tokens` under the requests-per-minute and
    /// tokens-per-minute buckets of every `(key, limits)` given (tenant and token), or
    /// refuses it without charging anything.
    pub fn admit(&self, scopes: &[(&str, RateLimits)], tokens: u64) -> Result<(), RateLimited> {
        let now = Instant::now();
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        // Check every bucket before charging any, so a refusal costs nothing.
        let mut snapshot = Vec::new();
        for (key, limits) in scopes {
            for (kind, per_minute, cost) in [("rpm", limits.requests_per_minute, 1.0), ("tpm", limits.tokens_per_minute, tokens as f64)] {
                let Some(per_minute) = per_minute else { continue };
                let bucket = state.buckets.entry(((*key).to_string(), kind)).or_insert(Bucket { level: per_minute as f64, updated: now });
                let before = (bucket.level, bucket.updated);
                if let Err(wait) = bucket.take(per_minute, cost, now) {
                    for ((k, kind), (level, updated)) in snapshot {
                        if let Some(b) = state.buckets.get_mut(&(k, kind)) {
                            b.level = level;
                            b.updated = updated;
                        }
                    }
                    let what = if kind == "rpm" { "requests per minute" } else { "tokens per minute" };
                    return Err(RateLimited { what, retry_after_secs: (wait.as_secs_f64().ceil() as u64).max(1) });
                }
                snapshot.push((((*key).to_string(), kind), before));
            }
        }
        Ok(())
    }

    /// Charges tokens learned after the fact (the completion) to the tokens-per-minute
    /// buckets; the next requests wait until the debt refills.
    pub fn charge_tokens(&self, scopes: &[(&str, RateLimits)], tokens: u64) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        for (key, limits) in scopes {
            if limits.tokens_per_minute.is_some() {
                if let Some(bucket) = state.buckets.get_mut(&((*key).to_string(), "tpm")) {
                    bucket.level -= tokens as f64;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope(key: &str, limits: RateLimits) -> Vec<(String, RateLimits)> {
        vec![(key.to_string(), limits)]
    }

    #[test]
    fn requests_per_minute_and_concurrency() {
        let limiter = Limiter::default();
        let limits = RateLimits { requests_per_minute: Some(2), tokens_per_minute: None, max_concurrent: Some(1) };
        let first = limiter.acquire(scope("t", limits)).expect("first");
        assert_eq!(limiter.acquire(scope("t", limits)).err().map(|e| e.what), Some("too many concurrent requests"));
        limiter.admit(&[("t", limits)], 0).expect("first");
        drop(first);
        let second = limiter.acquire(scope("t", limits)).expect("second");
        limiter.admit(&[("t", limits)], 0).expect("second");
        drop(second);
        let refused = limiter.admit(&[("t", limits)], 0).expect_err("third in a minute");
        assert_eq!(refused.what, "requests per minute");
        assert_eq!(refused.retry_after_secs, 30);
        assert!(limiter.admit(&[("other", limits)], 0).is_ok(), "tenants have their own buckets");
    }

    #[test]
    fn tokens_with_one_short_id_in_two_tenants_never_share_a_bucket() {
        let tenant = |id: &str| -> crate::tenants::Tenant { serde_json::from_value(serde_json::json!({"id": id})).expect("tenant") };
        let token = |tenant: &str, digest: &str| crate::tokens::TokenRecord {
            id: "0000beef".into(),
            tenant_id: tenant.into(),
            scope: crate::tokens::Scope::Inference,
            created_millis: 0,
            rate_limits: RateLimits { requests_per_minute: Some(1), ..RateLimits::default() },
            incarnation: String::new(),
            digest: digest.into(),
        };
        let (a, b) = (scopes_of(&tenant("a"), &token("a", "aa")), scopes_of(&tenant("b"), &token("b", "bb")));
        assert_ne!(a[1].0, b[1].0);
        let limiter = Limiter::default();
        for scopes in [&a, &b] {
            let borrowed: Vec<(&str, RateLimits)> = scopes.iter().map(|(k, l)| (k.as_str(), *l)).collect();
            assert!(limiter.admit(&borrowed, 0).is_ok(), "each token has its own one request a minute");
        }
    }

    #[test]
    fn tokens_per_minute_refuses_without_charging_other_buckets() {
        let limiter = Limiter::default();
        let tenant = RateLimits { requests_per_minute: Some(100), tokens_per_minute: Some(1000), max_concurrent: None };
        limiter.admit(&[("t", tenant)], 600).expect("fits");
        assert_eq!(limiter.admit(&[("t", tenant)], 600).err().map(|e| e.what), Some("tokens per minute"));
        limiter.charge_tokens(&[("t", tenant)], 400);
        assert!(limiter.admit(&[("t", tenant)], 1).is_err(), "completion debt counts");
    }
}
