//! `POST .../policy/replay`: runs an uploaded policy against the tenant's recorded
//! decision inputs (`decision_inputs.rs`) and reports where it decides differently from
//! what was served. Each call is a dry run (`policy::DryRunView`: memory writes dropped,
//! log lines dropped) on the tenant's CPU share for compared calls, so a replay neither
//! changes the tenant's state nor takes its live traffic's share.

use std::sync::Arc;

use serde::Deserialize;
use serde_json::{json, Value};

use super::compare;
use super::tenant_api::parse_hash;
use crate::app::App;
use crate::error::GatewayError;
use crate::policy::{Context, DryRunView, Lane, PolicyHash};
use crate::tenants::Tenant;

/// Most requests one replay runs.
const MAX_REPLAYED: usize = 1000;
/// Most differences one report lists (all are counted).
const MAX_LISTED: usize = 100;

/// Body of `POST .../policy/replay`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Replay {
    /// blake3 hash of an uploaded policy.
    pub hash: String,
    /// The tenant's config for it (any JSON; `{}` if absent).
    #[serde(default)]
    pub config: Option<Value>,
    /// Only requests at or after this time (milliseconds since the Unix epoch).
    #[serde(default)]
    pub since_millis: Option<u64>,
    /// At most this many of the newest requests (default and most: 1000).
    #[serde(default)]
    pub limit: Option<usize>,
}

/// Replays and reports: `{policy, replayed, same, different, failed, differences}`.
pub async fn replay(app: &App, tenant: &Tenant, body: Replay) -> Result<Value, GatewayError> {
    if !app.decision_inputs.enabled() {
        return Err(GatewayError::Conflict("this gateway keeps no decision inputs ([policy] decision_inputs_kept = 0), so there is nothing to replay".into()));
    }
    let hash: PolicyHash = parse_hash(&body.hash)?;
    if !app.policies.exists(&hash).await? {
        return Err(GatewayError::NotFound(format!("policy {hash} is not uploaded")));
    }
    let config = body.config.map(|c| c.to_string()).unwrap_or_else(|| "{}".into());
    let limit = body.limit.unwrap_or(MAX_REPLAYED).clamp(1, MAX_REPLAYED);
    let inputs = app.decision_inputs.read(tenant.storage_id(), body.since_millis.unwrap_or(0), limit).await?;
    let scope: Arc<dyn crate::policy::TenantView> = Arc::new(app.services.tenant_scope(tenant, crate::clock::unix_millis()));
    let (mut same, mut failed, mut differences, mut different) = (0u64, 0u64, Vec::new(), 0u64);
    for input in &inputs {
        let view = Arc::new(DryRunView::new(scope.clone(), None));
        let context = Context { tenant_id: tenant.id.clone(), request_id: input.request_id.clone(), session_id: input.session_id.clone(), unix_millis: input.unix_millis, config: config.clone() };
        let outcome = app.policies.route_in(Lane::Replay, hash, view, &input.request.to_request(), &context).await;
        if outcome.is_err() {
            failed += 1;
        }
        let decision = compare::summary(&outcome);
        if decision == input.decision {
            same += 1;
            continue;
        }
        different += 1;
        if differences.len() < MAX_LISTED {
            differences.push(json!({
                "request_id": input.request_id,
                "unix_millis": input.unix_millis,
                "model": input.request.model,
                "served": {"policy": input.policy, "decision": input.decision},
                "replayed": decision,
            }));
        }
    }
    Ok(json!({"policy": hash.to_string(), "replayed": inputs.len(), "same": same, "different": different, "failed": failed, "differences": differences}))
}
