//! The dispatch phase: the plan's targets in order, each with its provider adapter, the
//! tenant's key for it, retries with backoff and a cool-down for targets that keep
//! failing; the first 2xx answer wins. The same for every operation (the caller says how
//! to build a target's request) and every provider, the in-process `demo` included.

use http::StatusCode;

use super::caller::Caller;
use super::settle::Settlement;
use crate::app::App;
use crate::config::ProviderConfig;
use crate::error::GatewayError;
use crate::policy::{PlanTarget, RoutePlan};
use crate::providers::{Provider, ProviderError, UpstreamRequest};
use crate::redact::Redactor;
use crate::secret::Secret;
use crate::tenants::Tenant;
use crate::upstream::{failure_status, read_body, AttemptError, UpstreamBody, MAX_UPSTREAM_BODY_BYTES};

/// A target's 2xx answer, not yet read.
pub struct Answer<'p> {
    /// The target that answered.
    pub target: &'p PlanTarget,
    /// Its provider's wire format.
    pub adapter: &'static dyn Provider,
    /// The answer.
    pub response: http::Response<UpstreamBody>,
    /// Redacts the call's key from whatever the upstream sends back.
    pub redactor: Redactor,
}

/// How to build one target's upstream request with its key.
pub trait BuildRequest: Fn(&dyn Provider, &ProviderConfig, &PlanTarget, Option<&Secret>) -> Result<UpstreamRequest, ProviderError> {}
impl<F: Fn(&dyn Provider, &ProviderConfig, &PlanTarget, Option<&Secret>) -> Result<UpstreamRequest, ProviderError>> BuildRequest for F {}

/// Tries `plan`'s targets in order until one answers 2xx. When none does, settles the
/// request as an upstream error and returns the last target's error.
pub async fn first_answer<'p>(app: &App, caller: &Caller, plan: &'p RoutePlan, mut settlement: Settlement, build: impl BuildRequest) -> Result<(Answer<'p>, Settlement), GatewayError> {
    let mut last_error = GatewayError::Upstream { status: StatusCode::BAD_GATEWAY, code: "no_target", message: "no target could be tried".into() };
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
        let key = match key_for(app, caller, &caller.tenant, target).await {
            Ok(key) => key,
            Err(message) => {
                last_error = GatewayError::Upstream { status: StatusCode::BAD_GATEWAY, code: "credential_unavailable", message };
                continue;
            }
        };
        // Whatever the upstream sends back passes through this before the client sees it.
        let redactor = Redactor::new(key.as_ref());
        let adapter = provider.kind.adapter();
        let request_for = || build(adapter, provider, target, key.as_ref());
        settlement.trying = Some(target.clone());
        let span_for = |attempt| crate::telemetry::attempt_span(caller.api, provider, target, attempt);
        match try_target(app, provider, &target.provider, &cooldown_key, key.as_ref(), &redactor, request_for, span_for).await {
            Ok(response) => return Ok((Answer { target, adapter, response, redactor }, settlement)),
            Err(error) => last_error = error,
        }
    }
    settlement.finish(None, 0, "upstream_error", None).await;
    Err(last_error)
}

/// Reads a whole (not streamed) answer's body; one that cannot be read settles the
/// request as an upstream error.
pub async fn read_whole(app: &App, target: &PlanTarget, response: http::Response<UpstreamBody>, settlement: Settlement) -> Result<(bytes::Bytes, Settlement), GatewayError> {
    match read_body(response.into_body(), MAX_UPSTREAM_BODY_BYTES, app.upstream.config.timeout).await {
        Ok(bytes) => Ok((bytes, settlement)),
        Err(message) => {
            settlement.finish(None, 0, "upstream_error", Some(target)).await;
            Err(GatewayError::Upstream { status: StatusCode::BAD_GATEWAY, code: "upstream_error", message })
        }
    }
}

/// A target's key: its named credential (which must be for that provider), else the
/// per-request key where allowed, else none.
async fn key_for(app: &App, caller: &Caller, tenant: &Tenant, target: &PlanTarget) -> Result<Option<Secret>, String> {
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

/// Attempts one target with retries. Returns the 2xx response, or the error to report if
/// this was the last target.
#[allow(clippy::too_many_arguments)] // each is one fact of the attempt; a struct would only rename them
async fn try_target(
    app: &App,
    provider: &ProviderConfig,
    provider_name: &str,
    cooldown_key: &str,
    key: Option<&Secret>,
    redactor: &Redactor,
    request_for: impl Fn() -> Result<UpstreamRequest, ProviderError>,
    span_for: impl Fn(u32) -> tracing::Span,
) -> Result<http::Response<UpstreamBody>, GatewayError> {
    let attempts = app.upstream.config.attempts_per_target;
    let mut last: Option<AttemptError> = None;
    for attempt in 1..=attempts {
        let request = request_for().map_err(|e| GatewayError::Upstream { status: StatusCode::BAD_GATEWAY, code: "request_unsupported", message: e.to_string() })?;
        let span = span_for(attempt);
        let answer = tracing::Instrument::instrument(app.upstream.attempt(provider, request), span.clone()).await;
        crate::telemetry::record_attempt(&span, &answer);
        match answer {
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
