//! A tenant's candidate policy (`.../policy/candidate`): assign one in `shadow` mode (it
//! runs beside the live policy, its decisions compared and logged, never acted on) or
//! `canary` mode (it decides a share of requests), read how its decisions compared, and
//! promote it (it becomes the policy; the old one is kept for rollback) or drop it.
//! How requests run it is `route.rs` and `compare.rs`.

use std::sync::Arc;

use serde::Deserialize;
use serde_json::{json, Value};

use super::compare;
use super::tenant_api::parse_hash;
use crate::app::App;
use crate::error::GatewayError;
use crate::tenants::{CandidateMode, CandidatePolicy, PolicyAssignment, Tenant};

/// Comparisons `GET .../policy/candidate` lists, newest first.
const RECENT_COMPARISONS: usize = 50;

/// Body of `PUT .../policy/candidate`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AssignCandidate {
    /// blake3 hash of an uploaded policy.
    pub hash: String,
    /// The tenant's config for it (any JSON; `{}` if absent).
    #[serde(default)]
    pub config: Option<Value>,
    /// `shadow` or `canary`.
    pub mode: CandidateMode,
    /// The share of requests it runs on, 1 to 100: required for `canary`; `shadow`
    /// defaults to 100 (every request).
    #[serde(default)]
    pub percent: Option<u8>,
}

/// The candidate and how its decisions compared with the acting ones (over the policy
/// log's kept lines).
pub async fn show(app: &App, tenant: &Tenant) -> Result<Value, GatewayError> {
    let lines = app.policy_logs.tenant(tenant.storage_id()).read(app.policy_logs.keep()).await?;
    let recent: Vec<Value> = lines
        .iter()
        .rev()
        .filter(|l| l.level == compare::LEVEL)
        .filter_map(|l| serde_json::from_str(&l.message).ok())
        .take(RECENT_COMPARISONS)
        .collect();
    Ok(json!({"candidate": tenant.candidate_policy, "comparisons": compare::tally(&lines), "recent": recent}))
}

/// Sets the candidate (replacing any), under the blob's lock as an assignment is.
pub async fn assign(app: &App, tenant: &Tenant, body: AssignCandidate) -> Result<Arc<Tenant>, GatewayError> {
    let hash = parse_hash(&body.hash)?;
    let percent = match (body.mode, body.percent) {
        (_, Some(p)) if !(1..=100).contains(&p) => return Err(GatewayError::bad_request("invalid_percent", "percent must be 1 to 100")),
        (_, Some(p)) => p,
        (CandidateMode::Shadow, None) => 100,
        (CandidateMode::Canary, None) => return Err(GatewayError::bad_request("invalid_percent", "a canary needs percent: the share of requests it decides (1 to 100)")),
    };
    let _blob = app.policies.lock_blob(hash).await?;
    if !app.policies.exists(&hash).await? {
        return Err(GatewayError::NotFound(format!("policy {hash} is not uploaded")));
    }
    let config = body.config.map(|c| c.to_string()).unwrap_or_else(|| "{}".into());
    let candidate = CandidatePolicy { hash: hash.to_string(), config, mode: body.mode, percent };
    Ok(app
        .tenants
        .update(tenant, |current| {
            let mut updated = current.clone();
            updated.candidate_policy = Some(candidate.clone());
            Ok(updated)
        })
        .await?)
}

/// Makes the candidate the policy (the current one becomes the previous, for rollback).
pub async fn promote(app: &App, tenant: &Tenant) -> Result<Arc<Tenant>, GatewayError> {
    Ok(app
        .tenants
        .update(tenant, |current| {
            let Some(candidate) = current.candidate_policy.clone() else {
                return Err(GatewayError::Conflict("there is no candidate policy to promote".into()));
            };
            let mut updated = current.clone();
            updated.candidate_policy = None;
            // A candidate cannot be deleted while assigned (`Tenant::runs`), so its blob is there.
            updated.previous_policy = updated.policy.replace(PolicyAssignment { hash: candidate.hash, config: candidate.config });
            Ok(updated)
        })
        .await?)
}

/// Drops the candidate; 404 when there is none.
pub async fn drop_candidate(app: &App, tenant: &Tenant) -> Result<Arc<Tenant>, GatewayError> {
    if tenant.candidate_policy.is_none() {
        return Err(GatewayError::NotFound("there is no candidate policy".into()));
    }
    Ok(app
        .tenants
        .update(tenant, |current| {
            let mut updated = current.clone();
            updated.candidate_policy = None;
            Ok(updated)
        })
        .await?)
}
