//! `POST /v1/chat/completions`: the request path of DESIGN §2.
//!
//! parse -> policy route -> reserve -> unseal -> try targets (retry, fallback) ->
//! translate (whole or streamed) -> settle, always, also on error or disconnect.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode};
use serde_json::{Map, Value};

use super::reserve;
use super::stream::{self, StreamJob};
use super::wire::{self, ChatBody};
use super::{json_response, Body};
use crate::app::App;
use crate::catalog::cost_microdollars;
use crate::config::ProviderConfig;
use crate::error::GatewayError;
use crate::metering::{LedgerRecord, Reservation};
use crate::policy::{Completion, Context, Decision, Outcome, PlanTarget, PolicyHash, RoutePlan};
use crate::providers::{ChatCall, ProviderKind, Usage};
use crate::redact::Redactor;
use crate::secret::Secret;
use crate::tenants::Tenant;
use crate::upstream::{failure_status, read_body, AttemptError, MAX_UPSTREAM_BODY_BYTES};

/// Who is asking, established by the server before the body is read.
pub struct Caller {
    /// Request id (also the `x-request-id` header).
    pub request_id: String,
    /// Accept time.
    pub started: Instant,
    /// Wall-clock accept time.
    pub unix_millis: u64,
    /// The token's tenant.
    pub tenant: Arc<Tenant>,
    /// The token.
    pub token: crate::tokens::TokenRecord,
    /// A per-request provider key, only when the tenant allows them.
    pub provider_key: Option<Secret>,
    /// `X-Session-ID`.
    pub session_id: Option<String>,
    /// `X-Session-History: true`.
    pub session_history: bool,
    /// The API the client spoke, for the policy.
    pub api: crate::policy::Api,
}

/// What settles a request: its reservation and the facts for its ledger record.
pub struct Settlement {
    pub(crate) app: Arc<App>,
    pub(crate) reservation: Reservation,
    pub(crate) record: LedgerRecord,
    pub(crate) prompt_estimate: u64,
    pub(crate) started: Instant,
    pub(crate) notify: Option<(PolicyHash, Context)>,
    /// Prices as this tenant pays them.
    pub(crate) catalog: Arc<crate::catalog::Catalog>,
    /// Rate-limit scopes to charge the completion to, and the concurrency slot.
    pub(crate) limits: Vec<(String, crate::ratelimit::RateLimits)>,
    pub(crate) _permit: crate::ratelimit::Permit,
    /// Session to append the turn to on success: id and the user's text.
    pub(crate) session: Option<(String, String)>,
    /// The assistant's reply text, set by whoever saw the answer.
    pub(crate) reply: String,
    /// The target being tried, for a request dropped before it finished.
    pub(crate) trying: Option<PlanTarget>,
    /// Set by `finish`; a settlement dropped without it settles in `drop`.
    pub(crate) finished: bool,
}

impl Settlement {
    /// Settles at the actual usage (estimating what the upstream did not report), writes
    /// the ledger record, and calls the policy's `on-complete` if its plan asked. Returns
    /// the usage billed (what a stream's usage chunk reports).
    pub async fn finish(mut self, usage: Option<Usage>, completion_bytes: u64, outcome: &str, target: Option<&PlanTarget>) -> Usage {
        self.finished = true;
        let usage = self.account(usage, completion_bytes, outcome, target);
        let turns = match (self.session.take(), outcome) {
            (Some((session, user_text)), "success") => Some(self.session_turns(session, user_text)),
            _ => None,
        };
        // The session's turns are stored alongside the settlement: on the shared store the
        // two round trips are in flight together.
        let append = async {
            let Some((session, turns)) = &turns else { return };
            if let Err(e) = self.app.sessions.tenant(&self.reservation.tenant_id).append(session, turns).await {
                tracing::warn!(tenant = %self.reservation.tenant_id, error = ?e, "session turn not stored");
            }
        };
        // Waits for the disk: the answer is only complete once its ledger record is.
        let settle = self.app.metering.settle_durably(self.reservation.clone(), self.record.clone());
        let ((), settled) = tokio::join!(append, settle);
        if let Err(e) = settled {
            tracing::error!(request_id = %self.record.request_id, error = %e, "settling usage failed; the reservation stays and is charged at its amount by crash recovery (embedded at the next start, shared once its lease runs out)");
        }
        self.app.metrics.chat_latency.observe(self.started.elapsed().as_secs_f64());
        self.notify_policy(outcome, usage).await;
        usage
    }

    /// Fills the ledger record (estimating what the upstream did not report) and charges
    /// the completion to the rate limits. Returns the usage billed.
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
        let scopes: Vec<(&str, crate::ratelimit::RateLimits)> = self.limits.iter().map(|(k, l)| (k.as_str(), *l)).collect();
        self.app.limiter.charge_tokens(&scopes, usage.completion_tokens);
        usage
    }

    /// Calls the policy's `on-complete` if its plan asked.
    async fn notify_policy(&mut self, outcome: &str, usage: Usage) {
        if let Some((hash, context)) = self.notify.take() {
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
            let tenant = self.record.tenant_id.clone();
            // Only the incarnation that made the request hears of it.
            let Some(current) = self.app.tenants.get(&tenant).filter(|t| t.storage_id() == self.reservation.tenant_id) else { return };
            let view = Arc::new(self.app.services.tenant_scope(&current, crate::clock::unix_millis()));
            if let Err(e) = self.app.policies.on_complete(hash, view, &completion, &context).await {
                tracing::warn!(tenant = %tenant, error = %e, "policy on-complete failed");
            }
        }
    }
}

/// The concurrency caps a request counts under while it holds its reservation: on the
/// shared store they are counted over every replica (the in-process limiter counts this
/// replica's requests from authentication on).
pub(crate) fn concurrency_caps(tenant: &Tenant, token: &crate::tokens::TokenRecord) -> Vec<(String, u32)> {
    let tenant_cap = tenant.rate_limits.max_concurrent.map(|max| ("tenant".to_string(), max));
    let token_cap = token.rate_limits.max_concurrent.map(|max| (format!("token:{}", token.digest), max));
    tenant_cap.into_iter().chain(token_cap).collect()
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

impl Settlement {
    /// The turns a successful request adds to its session: the user's text and the reply.
    fn session_turns(&mut self, session: String, user_text: String) -> (String, [crate::sessions::Turn; 2]) {
        let mut reply = std::mem::take(&mut self.reply);
        truncate_utf8(&mut reply, crate::sessions::MAX_TURN_BYTES);
        let now = crate::clock::unix_millis();
        let turn = |role: &str, content: String| crate::sessions::Turn { role: role.into(), content, unix_millis: now, request_id: self.record.request_id.clone() };
        (session, [turn("user", user_text), turn("assistant", reply)])
    }
}

/// Cuts a string to at most `max` bytes on a character boundary.
pub fn truncate_utf8(text: &mut String, max: usize) {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
}

/// The body for one target: the client's, with model, the completion limit reserved and
/// temperature set.
fn body_for(parsed: &ChatBody, target: &PlanTarget) -> Map<String, Value> {
    let mut out = parsed.body.clone();
    out.insert("model".into(), Value::String(target.model.clone()));
    reserve::apply_completion_limit(&mut out, reserve::completion_limit(parsed, target));
    if let Some(t) = target.temperature {
        out.insert("temperature".into(), Value::from(t as f64));
    }
    out
}

/// Handles one chat request.
/// `permit` holds the request's concurrency slots, taken before its body was read.
pub async fn handle(app: &Arc<App>, caller: Caller, permit: crate::ratelimit::Permit, bytes: Bytes) -> Result<Response<Body>, GatewayError> {
    let mut parsed = wire::parse(&bytes)?;
    parsed.summary.api = caller.api;
    let tenant = caller.tenant.clone();
    let session_id = caller.session_id.clone().or_else(|| parsed.session_id.clone());
    if let Some(session) = &session_id {
        crate::sessions::validate_id(session).map_err(|e| GatewayError::bad_request("invalid_session_id", e))?;
        if caller.session_history || parsed.session_history {
            let turns = app.sessions.tenant(tenant.storage_id()).history(session, crate::sessions::MAX_HISTORY_TURNS).await?;
            parsed.prepend_history(&turns);
        }
    }
    let session_turn = session_id.clone().and_then(|s| parsed.last_user_text().map(|text| (s, text)));
    let limits = permit.scopes().to_vec();
    let scopes: Vec<(&str, crate::ratelimit::RateLimits)> = limits.iter().map(|(k, l)| (k.as_str(), *l)).collect();
    app.limiter.admit(&scopes, parsed.summary.prompt_token_estimate as u64)?;
    let (hash, config) = match &tenant.policy {
        Some(assignment) => (
            PolicyHash::parse(&assignment.hash).ok_or_else(|| GatewayError::Internal("stored policy hash is malformed".into()))?,
            assignment.config.clone(),
        ),
        None => (app.default_policy, "{}".to_string()),
    };
    let context = Context {
        tenant_id: tenant.id.clone(),
        request_id: caller.request_id.clone(),
        session_id,
        unix_millis: caller.unix_millis,
        config,
    };
    let catalog = app.services.catalog_for(&tenant);
    let view = Arc::new(app.services.tenant_scope(&tenant, caller.unix_millis));
    let outcome = app.policies.route(hash, view, &parsed.summary, &context).await?;
    let plan = match outcome.decision {
        Decision::Reject(rejection) => return Err(GatewayError::PolicyRejected(rejection)),
        Decision::Route(plan) => plan,
    };
    let reserve = reserve::amount(plan.reserve_microdollars, reserve::worst_case(&catalog, &plan, &parsed), reserve::is_budgeted(&tenant))?;
    let reservation = reserve::hold(app, &caller, parsed.summary.end_user.as_ref(), &plan.tags, reserve).await?;
    let settlement = Settlement {
        app: app.clone(),
        reservation,
        record: LedgerRecord {
            tenant_id: tenant.id.clone(),
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
            end_user: parsed.summary.end_user.clone(),
            tags: plan.tags.clone(),
            policy_hash: hash.to_string(),
        },
        prompt_estimate: parsed.summary.prompt_token_estimate as u64,
        started: caller.started,
        notify: plan.notify_complete.then(|| (hash, context.clone())),
        catalog,
        limits,
        _permit: permit,
        session: session_turn,
        reply: String::new(),
        trying: None,
        finished: false,
    };
    let headers = ResponseHeaders { policy: hash.short(), trace: plan.trace.clone(), reservation: reserve };
    dispatch(app, &caller, &tenant, &plan, parsed, settlement, headers).await
}

/// Facts reported in response headers.
struct ResponseHeaders {
    policy: String,
    trace: String,
    reservation: u64,
}

impl ResponseHeaders {
    fn apply(&self, response: &mut Response<Body>, target: &PlanTarget) {
        let headers = response.headers_mut();
        let mut put = |name: &'static str, value: String| {
            if let Ok(v) = HeaderValue::from_str(&value) {
                headers.insert(name, v);
            }
        };
        put("x-tollgate-policy", self.policy.clone());
        put("x-tollgate-target", format!("{}/{}", target.provider, target.model));
        put("x-tollgate-reservation-microdollars", self.reservation.to_string());
        if !self.trace.is_empty() {
            put("x-tollgate-policy-trace", self.trace.clone());
        }
    }
}

/// A target's key: its named credential (which must be for that provider), else the
/// per-request key where allowed, else none.
pub(crate) async fn key_for(app: &App, caller: &Caller, tenant: &Tenant, target: &PlanTarget) -> Result<Option<Secret>, String> {
    if !target.credential.is_empty() {
        let (provider, secret) = app.vault.open(tenant.storage_id(), &target.credential).await.map_err(|e| match e {
            crate::sealing::SealError::NotFound(name) => format!("the tenant has no credential named '{name}'"),
            _ => "the credential could not be opened".into(),
        })?;
        // A key only ever goes to the provider it was stored for.
        if provider != target.provider {
            return Err(format!("credential '{}' is for provider '{provider}', not '{}'", target.credential, target.provider));
        }
        return Ok(Some(secret));
    }
    Ok(caller.provider_key.clone())
}

/// Tries the plan's targets in order.
async fn dispatch(
    app: &Arc<App>,
    caller: &Caller,
    tenant: &Tenant,
    plan: &RoutePlan,
    parsed: ChatBody,
    mut settlement: Settlement,
    headers: ResponseHeaders,
) -> Result<Response<Body>, GatewayError> {
    let mut last_error = GatewayError::Upstream { status: StatusCode::BAD_GATEWAY, code: "no_target", message: "no target could be tried".into() };
    let stream = parsed.summary.stream;
    for target in &plan.targets {
        let Some(provider) = app.config.providers.get(&target.provider) else {
            last_error = GatewayError::Upstream { status: StatusCode::BAD_GATEWAY, code: "unknown_provider", message: format!("the policy chose provider '{}', which this gateway does not configure", target.provider) };
            continue;
        };
        let cooldown_key = format!("{}/{}", target.provider, target.model);
        if app.upstream.cooling_down(&cooldown_key) && plan.targets.len() > 1 {
            last_error = GatewayError::Upstream { status: StatusCode::SERVICE_UNAVAILABLE, code: "target_cooling_down", message: format!("{cooldown_key} is cooling down after repeated failures") };
            continue;
        }
        let key = match key_for(app, caller, tenant, target).await {
            Ok(key) => key,
            Err(message) => {
                last_error = GatewayError::Upstream { status: StatusCode::BAD_GATEWAY, code: "credential_unavailable", message };
                continue;
            }
        };
        // Whatever the upstream sends back passes through this before the client sees it.
        let redactor = Redactor::new(key.as_ref());
        let body = body_for(&parsed, target);
        let adapter = provider.kind.adapter();
        let call = ChatCall { body: &body, model: &target.model, stream };
        let request_for = || adapter.build(&provider.base_url, &call, key.as_ref());
        if provider.kind == ProviderKind::Demo {
            return demo(app, caller, target, &body, stream, parsed.include_usage, settlement, &headers).await;
        }
        settlement.trying = Some(target.clone());
        match try_target(app, provider, &target.provider, &cooldown_key, key.as_ref(), &redactor, request_for).await {
            Ok(response) => {
                if stream {
                    let translator = adapter.stream(&target.model, &caller.request_id);
                    let job = StreamJob { source: stream::Source::Upstream(response.into_body()), translator, redactor, include_usage: parsed.include_usage, model: target.model.clone(), request_id: caller.request_id.clone(), idle_timeout: app.upstream.config.timeout, settlement, target: target.clone() };
                    let mut response = stream::respond(job);
                    headers.apply(&mut response, target);
                    return Ok(response);
                }
                let bytes = match read_body(response.into_body(), MAX_UPSTREAM_BODY_BYTES, app.upstream.config.timeout).await {
                    Ok(bytes) => bytes,
                    Err(message) => {
                        settlement.finish(None, 0, "upstream_error", Some(target)).await;
                        return Err(GatewayError::Upstream { status: StatusCode::BAD_GATEWAY, code: "upstream_error", message });
                    }
                };
                return match adapter.translate(&bytes, &target.model, &caller.request_id) {
                    Ok((mut value, usage)) => {
                        redactor.json(&mut value);
                        settlement.reply = reply_text(&value);
                        // Billed by estimate from the answer when the upstream reports no usage.
                        settlement.finish(Some(usage), completion_bytes(&value), "success", Some(target)).await;
                        let mut response = json_response(StatusCode::OK, &value);
                        headers.apply(&mut response, target);
                        Ok(response)
                    }
                    Err(e) => {
                        settlement.finish(None, 0, "upstream_error", Some(target)).await;
                        Err(GatewayError::Upstream { status: StatusCode::BAD_GATEWAY, code: "upstream_bad_response", message: redactor.message(&e.to_string()) })
                    }
                };
            }
            Err(error) => last_error = error,
        }
    }
    settlement.finish(None, 0, "upstream_error", None).await;
    Err(last_error)
}

/// Attempts one target with retries. Returns the 2xx response, or the error to report if
/// this was the last target.
pub(crate) async fn try_target(
    app: &App,
    provider: &ProviderConfig,
    provider_name: &str,
    cooldown_key: &str,
    key: Option<&Secret>,
    redactor: &Redactor,
    request_for: impl Fn() -> Result<crate::providers::UpstreamRequest, crate::providers::ProviderError>,
) -> Result<http::Response<hyper::body::Incoming>, GatewayError> {
    let attempts = app.upstream.config.attempts_per_target;
    let mut last: Option<AttemptError> = None;
    for attempt in 1..=attempts {
        let request = request_for().map_err(|e| GatewayError::Upstream { status: StatusCode::BAD_GATEWAY, code: "request_unsupported", message: e.to_string() })?;
        match app.upstream.attempt(provider, request).await {
            Ok(response) => {
                app.upstream.record(cooldown_key, true);
                return Ok(response);
            }
            Err(error) => {
                app.metrics.upstream_error(provider_name);
                // A refusal of this tenant's key or request says nothing about the target.
                if error.is_upstreams(key.is_some()) {
                    app.upstream.record(cooldown_key, false);
                }
                let retry = error.retryable() && attempt < attempts;
                let wait = match &error {
                    AttemptError::Status { retry_after, .. } => *retry_after,
                    _ => None,
                };
                last = Some(error);
                if !retry {
                    break;
                }
                tokio::time::sleep(app.upstream.backoff(attempt, wait)).await;
            }
        }
    }
    let error = last.unwrap_or(AttemptError::Timeout);
    let (status, code) = failure_status(&error);
    let message = match &error {
        AttemptError::Status { status, body, .. } => format!("{provider_name}: {}", provider.kind.adapter().error_message(*status, body)),
        AttemptError::Timeout => format!("{provider_name}: no response within {} ms", app.upstream.config.timeout.as_millis()),
        AttemptError::Connect(reason) => format!("{provider_name}: {reason}"),
    };
    // An upstream may echo the key it refused; redacted before the message is cut.
    Err(GatewayError::Upstream { status, code, message: redactor.message(&message) })
}

/// The assistant text of an OpenAI `chat.completion`.
fn reply_text(value: &Value) -> String {
    value.pointer("/choices/0/message/content").and_then(Value::as_str).unwrap_or_default().to_string()
}

/// Bytes of generated output in an OpenAI `chat.completion`: every choice's text and
/// tool-call arguments.
fn completion_bytes(value: &Value) -> u64 {
    let choices = value.get("choices").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
    let mut bytes = 0;
    for message in choices.iter().filter_map(|c| c.get("message")) {
        bytes += message.get("content").and_then(Value::as_str).map_or(0, str::len);
        for call in message.get("tool_calls").and_then(Value::as_array).into_iter().flatten() {
            bytes += call.pointer("/function/arguments").and_then(Value::as_str).map_or(0, str::len);
        }
    }
    bytes as u64
}

/// The built-in demo provider: answered in process.
#[allow(clippy::too_many_arguments)]
async fn demo(
    _app: &Arc<App>,
    caller: &Caller,
    target: &PlanTarget,
    body: &Map<String, Value>,
    stream: bool,
    include_usage: bool,
    settlement: Settlement,
    headers: &ResponseHeaders,
) -> Result<Response<Body>, GatewayError> {
    let adapter = ProviderKind::Demo.adapter();
    if stream {
        let job = StreamJob {
            source: stream::Source::Events(crate::providers::demo::stream_events(body)),
            translator: adapter.stream(&target.model, &caller.request_id),
            redactor: Redactor::default(),
            include_usage,
            model: target.model.clone(),
            request_id: caller.request_id.clone(),
            idle_timeout: std::time::Duration::from_secs(30),
            settlement,
            target: target.clone(),
        };
        let mut response = stream::respond(job);
        headers.apply(&mut response, target);
        return Ok(response);
    }
    let answered = serde_json::to_vec(body).map_err(|e| e.to_string()).and_then(|raw| adapter.translate(&raw, &target.model, &caller.request_id).map_err(|e| e.to_string()));
    let mut settlement = settlement;
    let (value, usage) = match answered {
        Ok(answer) => answer,
        Err(message) => {
            settlement.finish(None, 0, "internal_error", Some(target)).await;
            return Err(GatewayError::Internal(message));
        }
    };
    settlement.reply = reply_text(&value);
    settlement.finish(Some(usage), 0, "success", Some(target)).await;
    let mut response = json_response(StatusCode::OK, &value);
    headers.apply(&mut response, target);
    Ok(response)
}
