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
    let (mut acting, mut beside) = match candidate {
        None => (live.clone(), None),
        Some((mode @ CandidateMode::Shadow, hash, config)) => (live.clone(), Some(Beside { mode, policy: hash, config })),
        Some((mode @ CandidateMode::Canary, hash, config)) => ((hash, config), Some(Beside { mode, policy: live.0, config: live.1.clone() })),
    };
    let context = Context { tenant_id: tenant.id.clone(), request_id: caller.request_id.clone(), session_id, unix_millis: caller.unix_millis, config: acting.1.clone() };
    let mut outcome = decide(app, tenant, acting.0, request, &context).await;
    if let (Err(failure), Some(Beside { mode: CandidateMode::Canary, .. })) = (&outcome, &beside) {
        // A canary that fails (not one that refuses) hands the request to the live policy.
        tracing::warn!(tenant = %tenant.id, policy = %acting.0.short(), error = %failure, "canary policy failed; the live policy decides");
        let failed = Acted { policy: acting.0, decision: compare::summary(&outcome) };
        compare::log_canary_failure(app, tenant, failed, &context);
        acting = live;
        beside = None;
        outcome = decide(app, tenant, acting.0, request, &Context { config: acting.1.clone(), ..context.clone() }).await;
    }
    let context = Context { config: acting.1, ..context };
    if outcome.is_ok() && app.decision_inputs.enabled() {
        // Kept for replays, written after the answer.
        let line = DecisionInput::line(request, &context, &acting.0.to_string(), compare::summary(&outcome));
        let journal = app.decision_inputs.tenant(tenant.storage_id());
        app.after_response.spawn(async move { journal.append_detached(vec![line]) });
    }
    if let Some(beside) = beside {
        let acted = Acted { policy: acting.0, decision: compare::summary(&outcome) };
        compare::spawn(app, tenant, beside, acted, request.clone(), context.clone());
    }
    match outcome?.decision {
        Decision::Reject(rejection) => Err(GatewayError::PolicyRejected(rejection)),
        Decision::Route(plan) => Ok(Routed { hash: acting.0, plan, context }),
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
