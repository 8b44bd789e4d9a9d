//! The route phase: the tenant's policy (its assignment, else the stock default) decides
//! the targets, or refuses the request. Shared by every operation and inbound API; what
//! the response then says about the decision (`x-tollgate-*` headers) is here too.

use std::sync::Arc;

use http::{HeaderValue, Response};
use tracing::Instrument;

use super::caller::Caller;
use super::Body;
use crate::app::App;
use crate::error::GatewayError;
use crate::policy::{Context, Decision, PlanTarget, PolicyHash, Request, RoutePlan};

/// A request the policy accepted.
pub struct Routed {
    /// The policy that decided.
    pub hash: PolicyHash,
    /// What it decided.
    pub plan: RoutePlan,
    /// What it was told besides the request (also what `on-complete` gets).
    pub context: Context,
}

/// Calls the caller's tenant's policy on `request`; a rejection is the error.
pub async fn route(app: &App, caller: &Caller, request: &Request, session_id: Option<String>) -> Result<Routed, GatewayError> {
    let tenant = &caller.tenant;
    let (hash, config) = match &tenant.policy {
        Some(assignment) => (
            PolicyHash::parse(&assignment.hash).ok_or_else(|| GatewayError::Internal("stored policy hash is malformed".into()))?,
            assignment.config.clone(),
        ),
        None => (app.default_policy, "{}".to_string()),
    };
    let context = Context { tenant_id: tenant.id.clone(), request_id: caller.request_id.clone(), session_id, unix_millis: caller.unix_millis, config };
    let view = Arc::new(app.services.tenant_scope(tenant, caller.unix_millis));
    let span = tracing::debug_span!("tollgate.policy.route", tollgate.policy.hash = %hash.short(), tollgate.policy.decision = tracing::field::Empty);
    let outcome = app.policies.route(hash, view, request, &context).instrument(span.clone()).await?;
    match outcome.decision {
        Decision::Reject(rejection) => {
            span.record("tollgate.policy.decision", "reject");
            Err(GatewayError::PolicyRejected(rejection))
        }
        Decision::Route(plan) => {
            span.record("tollgate.policy.decision", "route");
            Ok(Routed { hash, plan, context })
        }
    }
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
