//! The route phase: the tenant's policy (its assignment, else the stock default) decides
//! the targets, or refuses the request. Shared by every operation and inbound API; what
//! the response then says about the decision (`x-tollgate-*` headers) is here too.

use std::sync::Arc;

use http::{HeaderValue, Response};
use tracing::Instrument;

use super::caller::Caller;
use super::compare::{self, Acted, Beside};
use super::Body;
use crate::app::App;
use crate::decision_inputs::DecisionInput;
use crate::error::GatewayError;
use crate::policy::{Context, Decision, PlanTarget, PolicyHash, Request, RoutePlan};
use crate::tenants::CandidateMode;

/// A request the policy accepted.
pub struct Routed {
    /// The policy that decided.
    pub hash: PolicyHash,
    /// What it decided.
    pub plan: RoutePlan,
    /// What it was told besides the request (also what `on-complete` gets).
    pub context: Context,
}

/// Calls the caller's tenant's policy on `request`; a rejection is the error. A tenant
/// trying a candidate policy (`compare.rs`) has it decide instead on its canary share,
/// and has the other of the two run beside for comparison, off the response path.
pub async fn route(app: &Arc<App>, caller: &Caller, request: &Request, session_id: Option<String>) -> Result<Routed, GatewayError> {
    let tenant = &caller.tenant;
    let live = match &tenant.policy {
        Some(assignment) => (parse_stored(&assignment.hash)?, assignment.config.clone()),
        None => (app.default_policy, "{}".to_string()),
    };
    let candidate = match tenant.candidate_policy.as_ref().filter(|c| c.selects(&caller.request_id)) {
        Some(c) => Some((c.mode, parse_stored(&c.hash)?, c.config.clone())),
        None => None,
    };
    // The acting policy and its config; for a canary, the live policy to fall back on.
    let (mut acting, config, mut beside, fallback) = match candidate {
        None => (live.0, live.1, None, None),
        Some((mode @ CandidateMode::Shadow, hash, config)) => (live.0, live.1, Some(Beside { mode, policy: hash, config }), None),
        Some((mode @ CandidateMode::Canary, hash, config)) => (hash, config, Some(Beside { mode, policy: live.0, config: live.1.clone() }), Some(live)),
    };
    let mut context = Context { tenant_id: tenant.id.clone(), request_id: caller.request_id.clone(), session_id, unix_millis: caller.unix_millis, config };
    let mut outcome = decide(app, tenant, acting, request, &context).await;
    if let (Err(failure), Some((live_hash, live_config))) = (&outcome, fallback) {
        // A canary that fails (not one that refuses) hands the request to the live policy.
        tracing::warn!(tenant = %tenant.id, policy = %acting.short(), error = %failure, "canary policy failed; the live policy decides");
        compare::log_canary_failure(app, tenant, Acted { policy: acting, decision: compare::summary(&outcome) }, &context);
        (acting, context.config, beside) = (live_hash, live_config, None);
        outcome = decide(app, tenant, acting, request, &context).await;
    }
    let record = outcome.is_ok() && app.decision_inputs.enabled();
    if record || beside.is_some() {
        let decision = compare::summary(&outcome);
        if record {
            // Kept for replays, written after the answer.
            let line = DecisionInput::line(request, &context, &acting.to_string(), decision.clone());
            let journal = app.decision_inputs.tenant(tenant.storage_id());
            app.after_response.spawn(async move { journal.append_detached(vec![line]) });
        }
        if let Some(beside) = beside {
            compare::spawn(app, tenant, beside, Acted { policy: acting, decision }, request.clone(), context.clone());
        }
    }
    match outcome?.decision {
        Decision::Reject(rejection) => Err(GatewayError::PolicyRejected(rejection)),
        Decision::Route(plan) => Ok(Routed { hash: acting, plan, context }),
    }
}

/// One acting call of policy `hash`, in its span.
async fn decide(app: &App, tenant: &crate::tenants::Tenant, hash: PolicyHash, request: &Request, context: &Context) -> Result<crate::policy::RouteOutcome, crate::PolicyError> {
    let view = Arc::new(app.services.tenant_scope(tenant, context.unix_millis));
    let span = tracing::debug_span!("tollgate.policy.route", tollgate.policy.hash = %hash.short(), tollgate.policy.decision = tracing::field::Empty);
    let outcome = app.policies.route(hash, view, request, context).instrument(span.clone()).await;
    if let Ok(decided) = &outcome {
        span.record("tollgate.policy.decision", if matches!(decided.decision, Decision::Reject(_)) { "reject" } else { "route" });
    }
    outcome
}

fn parse_stored(hash: &str) -> Result<PolicyHash, GatewayError> {
    PolicyHash::parse(hash).ok_or_else(|| GatewayError::Internal("stored policy hash is malformed".into()))
}

impl Routed {
    /// Reports the decision on a response: the policy, the target that served, the
    /// reservation and the policy's trace.
    pub fn annotate(&self, response: &mut Response<Body>, target: &PlanTarget, reservation: u64) {
        let headers = response.headers_mut();
        let mut put = |name: &'static str, value: String| {
            if let Ok(v) = HeaderValue::from_str(&value) {
                headers.insert(name, v);
            }
        };
        put("x-tollgate-policy", self.hash.short());
        put("x-tollgate-target", format!("{}/{}", target.provider, target.model));
        put("x-tollgate-reservation-microdollars", reservation.to_string());
        if !self.plan.trace.is_empty() {
            put("x-tollgate-policy-trace", self.plan.trace.clone());
        }
    }
}
