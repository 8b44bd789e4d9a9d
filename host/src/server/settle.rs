//! The settle phase, in three separate steps once a request has ended, however it ended:
//!
//! 1. **money**: the usage billed (the upstream's figures, else an estimate), the ledger
//!    record, the rate limits' token charge; durable before the answer (or `[DONE]`) is;
//! 2. **session**: a successful chat's turns appended to its session, alongside 1;
//! 3. **on-complete**: the policy's hook, when its plan asked, run after the answer was
//!    sent (tracked by [`App::after_response`], so a graceful shutdown waits for it).
//!
//! A request whose future is dropped first (its client hung up) settles in `Drop`.

use std::sync::Arc;
use std::time::Instant;

use super::caller::Caller;
use super::route::Routed;
use crate::app::App;
use crate::catalog::{cost_microdollars, Catalog};
use crate::metering::{LedgerRecord, Reservation};
use crate::policy::{Completion, Context, Outcome, PlanTarget, PolicyHash};
use crate::providers::Usage;
use crate::ratelimit::{Permit, RateLimits};

/// What settles a request: its reservation and the facts for its ledger record.
pub struct Settlement {
    app: Arc<App>,
    reservation: Reservation,
    record: LedgerRecord,
    /// Prompt tokens billed when the upstream reports none.
    prompt_estimate: u64,
    started: Instant,
    notify: Option<(PolicyHash, Context)>,
    /// Prices as this tenant pays them.
    catalog: Arc<Catalog>,
    /// Rate-limit scopes to charge the completion to, and the concurrency slot.
    limits: Vec<(String, RateLimits)>,
    _permit: Permit,
    /// Session to append the turn to on success: id and the user's text.
    session: Option<(String, String)>,
    /// The assistant's reply text, set by whoever saw the answer.
    pub(crate) reply: String,
    /// The target being tried, for a request dropped before it finished.
    pub(crate) trying: Option<PlanTarget>,
    /// Set by `finish`; a settlement dropped without it settles in `drop`.
    finished: bool,
}

/// What a request brings to its settlement besides its route and reservation.
pub struct Opening {
    /// The end user the client named.
    pub end_user: Option<String>,
    /// Prompt tokens billed when the upstream reports none.
    pub prompt_estimate: u64,
    /// The request's concurrency slots, held until it settles.
    pub permit: Permit,
    /// Session to append to on success: id and the user's text.
    pub session: Option<(String, String)>,
}

impl Settlement {
    /// Opens the settlement of a routed request that holds `reservation`.
    pub fn open(app: &Arc<App>, caller: &Caller, routed: &Routed, reservation: Reservation, catalog: Arc<Catalog>, opening: Opening) -> Self {
        let Opening { end_user, prompt_estimate, permit, session } = opening;
        Settlement {
            app: app.clone(),
            reservation,
            record: LedgerRecord {
                tenant_id: caller.tenant.id.clone(),
                unix_millis: caller.unix_millis,
                request_id: caller.request_id.clone(),
                provider: String::new(),
                model: String::new(),
                prompt_tokens: 0,
                completion_tokens: 0,
                cached_tokens: 0,
                cache_write_tokens: 0,
                cost_microdollars: 0,
                latency_ms: 0,
                outcome: String::new(),
                end_user,
                tags: routed.plan.tags.clone(),
                policy_hash: routed.hash.to_string(),
            },
            prompt_estimate,
            started: caller.started,
            notify: routed.plan.notify_complete.then(|| (routed.hash, routed.context.clone())),
            catalog,
            limits: permit.scopes().to_vec(),
            _permit: permit,
            session,
            reply: String::new(),
            trying: None,
            finished: false,
        }
    }

    /// Settles at the actual usage: money and session together, then the policy's
    /// `on-complete` off the response path. Returns the usage billed (what a stream's
    /// usage chunk reports).
    pub async fn finish(mut self, usage: Option<Usage>, completion_bytes: u64, outcome: &str, target: Option<&PlanTarget>) -> Usage {
        self.finished = true;
        let usage = self.account(usage, completion_bytes, outcome, target);
        let span = crate::telemetry::settle_span(outcome, &self.record, &usage);
        // On the shared store the two round trips are in flight together.
        let reply = std::mem::take(&mut self.reply);
        tracing::Instrument::instrument(async { tokio::join!(self.store_turns(outcome, reply), self.settle_money()) }, span).await;
        self.app.metrics.chat_latency.observe(self.started.elapsed().as_secs_f64());
        self.notify_policy(outcome, usage);
        usage
    }

    /// Step 1: fills the ledger record (estimating what the upstream did not report) and
    /// charges the completion to the rate limits. Returns the usage billed.
    fn account(&mut self, usage: Option<Usage>, completion_bytes: u64, outcome: &str, target: Option<&PlanTarget>) -> Usage {
        let usage = usage.filter(|u| u.prompt_tokens > 0 || u.completion_tokens > 0).unwrap_or(Usage {
            // Bill what flowed even when the upstream never said: the prompt as estimated,
            // the completion at 4 bytes per token.
            prompt_tokens: if target.is_some() && outcome != "upstream_error" { self.prompt_estimate } else { 0 },
            completion_tokens: completion_bytes.div_ceil(4),
            cached_tokens: 0,
            cache_write_tokens: 0,
        });
        if let Some(t) = target {
            self.record.provider = t.provider.clone();
            self.record.model = t.model.clone();
        }
        self.record.prompt_tokens = usage.prompt_tokens;
        self.record.completion_tokens = usage.completion_tokens;
        self.record.cached_tokens = usage.cached_tokens;
        self.record.cache_write_tokens = usage.cache_write_tokens;
        let cost = target.and_then(|t| self.catalog.price(&t.provider, &t.model)).map(|price| cost_microdollars(&price, &usage)).unwrap_or(0);
        // Never past the reservation: the limit sent upstream bounds the completion, and
        // what the prompt estimate missed (dense scripts, provider tokenisers) is the
        // gateway's, never the tenant's cap's.
        if cost > self.reservation.microdollars {
            tracing::warn!(request_id = %self.record.request_id, cost, reserved = self.reservation.microdollars, "usage cost more than the reservation; billed at the reservation");
        }
        self.record.cost_microdollars = cost.min(self.reservation.microdollars);
        self.record.latency_ms = self.started.elapsed().as_millis() as u64;
        self.record.outcome = outcome.into();
        let scopes: Vec<(&str, RateLimits)> = self.limits.iter().map(|(k, l)| (k.as_str(), *l)).collect();
        self.app.limiter.charge_tokens(&scopes, usage.completion_tokens);
        usage
    }

    /// Step 1, durably: the answer is only complete once its ledger record is on disk.
    async fn settle_money(&self) {
        if let Err(e) = self.app.metering.settle_durably(self.reservation.clone(), self.record.clone()).await {
            tracing::error!(request_id = %self.record.request_id, error = %e, "settling usage failed; the reservation stays and is charged at its amount by crash recovery (embedded at the next start, shared once its lease runs out)");
        }
    }

    /// Step 2: a successful request's user text and reply, appended to its session.
    async fn store_turns(&self, outcome: &str, mut reply: String) {
        let Some((session, user_text)) = self.session.as_ref().filter(|_| outcome == "success") else { return };
        truncate_utf8(&mut reply, crate::sessions::MAX_TURN_BYTES);
        let now = crate::clock::unix_millis();
        let turn = |role: &str, content: String| crate::sessions::Turn { role: role.into(), content, unix_millis: now, request_id: self.record.request_id.clone() };
        let turns = [turn("user", user_text.clone()), turn("assistant", reply)];
        if let Err(e) = self.app.sessions.tenant(&self.reservation.tenant_id).append(session, &turns).await {
            tracing::warn!(tenant = %self.reservation.tenant_id, error = ?e, "session turn not stored");
        }
    }

    /// Step 3: the policy's `on-complete`, if its plan asked, after the answer: its run
    /// time (up to the policy's CPU deadline) is never the client's wait.
    fn notify_policy(&mut self, outcome: &str, usage: Usage) {
        let Some((hash, context)) = self.notify.take() else { return };
        let completion = Completion {
            request_id: self.record.request_id.clone(),
            outcome: match outcome {
                "success" => Outcome::Success,
                "client_disconnected" => Outcome::ClientDisconnected,
                _ => Outcome::UpstreamError,
            },
            provider: self.record.provider.clone(),
            model: self.record.model.clone(),
            end_user: self.record.end_user.clone(),
            prompt_tokens: usage.prompt_tokens,
            completion_tokens: usage.completion_tokens,
            cost_microdollars: self.record.cost_microdollars,
            latency_ms: self.record.latency_ms,
            tags: self.record.tags.clone(),
        };
        let (app, tenant, incarnation) = (self.app.clone(), self.record.tenant_id.clone(), self.reservation.tenant_id.clone());
        self.app.after_response.spawn(async move {
            // Only the incarnation that made the request hears of it.
            let Some(current) = app.tenants.get(&tenant).filter(|t| t.storage_id() == incarnation) else { return };
            let view = Arc::new(app.services.tenant_scope(&current, crate::clock::unix_millis()));
            if let Err(e) = app.policies.on_complete(hash, view, &completion, &context).await {
                tracing::warn!(tenant = %tenant, error = %e, "policy on-complete failed");
            }
        });
    }
}

/// Cuts a string to at most `max` bytes on a character boundary.
fn truncate_utf8(text: &mut String, max: usize) {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
}

/// A request whose future is dropped before it settles (its client hung up while the
/// gateway waited on the upstream; hyper then drops the handler) is settled here, as a
/// disconnect billed for its prompt at the target being tried, instead of holding its
/// reservation until the next restart.
impl Drop for Settlement {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        let target = self.trying.take();
        // Unwinding from a bug is the gateway's failure, not the client's hang-up.
        let outcome = if std::thread::panicking() { "internal_error" } else { "client_disconnected" };
        self.account(None, 0, outcome, target.as_ref());
        self.app.metering.settle_detached(self.reservation.clone(), self.record.clone());
    }
}
