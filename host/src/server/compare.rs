//! Comparing a decision that was acted on with one that was not: a shadow candidate
//! beside the live policy, or the live policy beside a canary. The second policy runs
//! after the first decided, off the response path (on [`App::after_response`]), in a
//! dry run (`policy::DryRunView`: its memory writes are dropped) on a CPU share of its
//! own; the outcome is one line in the tenant's policy log, level `compare`, whose
//! message is JSON:
//!
//! `{"mode":"shadow","request_id":...,"acting":{"policy":...,"decision":...},"beside":{...},"same":false}`
//!
//! where a decision is `{"route":["provider/model@credential",...]}`,
//! `{"reject":"403 code"}` or `{"failed":"why"}`. Nothing of the request's content is
//! logged: only what the two policies decided.

use std::sync::Arc;

use serde_json::{json, Value};

use crate::app::App;
use crate::policy::{Context, Decision, DryRunView, Lane, LogLine, PolicyError, PolicyHash, Request, RouteOutcome};
use crate::tenants::{CandidateMode, Tenant};

/// The log level of comparison lines.
pub const LEVEL: &str = "compare";

/// What a policy decided, as the comparison records it.
pub fn summary(outcome: &Result<RouteOutcome, PolicyError>) -> Value {
    match outcome {
        Ok(RouteOutcome { decision: Decision::Route(plan), .. }) => {
            json!({"route": plan.targets.iter().map(|t| format!("{}/{}@{}", t.provider, t.model, t.credential)).collect::<Vec<_>>()})
        }
        Ok(RouteOutcome { decision: Decision::Reject(r), .. }) => json!({"reject": format!("{} {}", r.status, r.code)}),
        Err(e) => json!({"failed": e.to_string()}),
    }
}

/// What was decided and acted on.
pub struct Acted {
    /// The policy that decided.
    pub policy: PolicyHash,
    /// Its decision, as [`summary`] gives it.
    pub decision: Value,
}

/// The policy to run beside: which, with what config, and in which mode.
pub struct Beside {
    pub mode: CandidateMode,
    pub policy: PolicyHash,
    pub config: String,
}

/// Runs `beside` on `request` after the response, compares its decision with `acted`,
/// and logs the comparison in the tenant's policy log.
pub fn spawn(app: &Arc<App>, tenant: &Tenant, beside: Beside, acted: Acted, request: Request, context: Context) {
    let app_for_task = app.clone();
    let scope: Arc<dyn crate::policy::TenantView> = Arc::new(app.services.tenant_scope(tenant, context.unix_millis));
    let mode = match beside.mode {
        CandidateMode::Shadow => "shadow",
        CandidateMode::Canary => "canary",
    };
    app.after_response.spawn(async move {
        let app = app_for_task;
        let view = Arc::new(DryRunView::new(scope.clone(), Some(format!("[{mode} {}]", beside.policy.short()))));
        let context = Context { config: beside.config, ..context };
        let outcome = app.policies.route_in(Lane::Beside, beside.policy, view, &request, &context).await;
        let decision = summary(&outcome);
        let same = decision == acted.decision;
        let message = json!({
            "mode": mode,
            "request_id": context.request_id,
            "acting": {"policy": acted.policy.to_string(), "decision": acted.decision},
            "beside": {"policy": beside.policy.to_string(), "decision": decision},
            "same": same,
        });
        scope.append_log(vec![LogLine { unix_millis: context.unix_millis, level: LEVEL.into(), message: message.to_string(), request_id: context.request_id.clone() }]);
    });
}

/// Logs that a canary failed on a request (the live policy then decided it):
/// `{"mode":"canary","request_id":...,"canary":{"policy":...,"decision":{"failed":...}},"fallback":"live"}`.
pub fn log_canary_failure(app: &App, tenant: &Tenant, failed: Acted, context: &Context) {
    let message = json!({
        "mode": "canary",
        "request_id": context.request_id,
        "canary": {"policy": failed.policy.to_string(), "decision": failed.decision},
        "fallback": "live",
    });
    app.policy_logs.tenant(tenant.storage_id()).append_detached(vec![LogLine { unix_millis: context.unix_millis, level: LEVEL.into(), message: message.to_string(), request_id: context.request_id.clone() }]);
}

/// Tallies the comparison lines of a policy log:
/// `{compared, same, different, beside_failed, canary_failed}`.
pub fn tally(lines: &[LogLine]) -> Value {
    let (mut compared, mut same, mut failed, mut canary_failed) = (0u64, 0u64, 0u64, 0u64);
    for line in lines.iter().filter(|l| l.level == LEVEL) {
        let Ok(entry) = serde_json::from_str::<Value>(&line.message) else { continue };
        if entry.get("fallback").is_some() {
            canary_failed += 1;
            continue;
        }
        compared += 1;
        if entry["same"] == true {
            same += 1;
        }
        if entry["beside"]["decision"].get("failed").is_some() {
            failed += 1;
        }
    }
    json!({"compared": compared, "same": same, "different": compared - same, "beside_failed": failed, "canary_failed": canary_failed})
}
