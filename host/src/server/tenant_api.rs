//! One tenant's resources, served identically to the operator
//! (`/admin/v1/tenants/{id}/...`) and to the tenant's own `manage` token
//! (`/v1/tenant/...`): tokens, credentials, policy (assign, roll back, log), uploaded
//! policies (list, delete), usage, sessions and memory. The tenant always comes from the
//! caller's route or token, never from the body.

use std::sync::Arc;

use http::{Method, Response, StatusCode};
use serde::Deserialize;
use serde_json::{json, Value};

use super::{candidate, json_response, replay, text_response, Body};
use crate::app::App;
use crate::error::GatewayError;
use crate::metering::{day_of, GroupBy};
use crate::policy::uploads::{Owner, Usage};
use crate::ratelimit::RateLimits;
use crate::sealing::{MAX_CREDENTIAL_NAME_BYTES, MAX_SECRET_BYTES};
use crate::secret::Secret;
use crate::tenants::{PolicyAssignment, Tenant};
use crate::tokens::Scope;
use crate::PolicyHash;

/// Parses a JSON body with a clear error.
pub fn parse<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, GatewayError> {
    serde_json::from_slice(bytes).map_err(|e| GatewayError::bad_request("invalid_json", format!("invalid request body: {e}")))
}

/// A query-string parameter (no percent-decoding needed for the values we accept).
pub fn query_param<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query.split('&').find_map(|kv| kv.strip_prefix(name).and_then(|rest| rest.strip_prefix('=')))
}

/// Body of `POST .../tokens`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct IssueToken {
    /// `inference` calls models; `manage` also manages the tenant (`/v1/tenant`).
    scope: Scope,
    #[serde(default)]
    rate_limits: RateLimits,
}

/// Body of `PUT .../credentials/{name}`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PutCredential {
    /// Provider name from the operator's config.
    pub provider: String,
    /// The secret; sealed at once and never shown again.
    pub api_key: String,
}

/// Body of `PUT .../policy`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AssignPolicy {
    /// blake3 hash of an uploaded policy.
    pub hash: String,
    /// The tenant's config for it (any JSON; `{}` if absent).
    #[serde(default)]
    pub config: Option<Value>,
}

/// Checks a provider name against the operator's config.
pub fn check_provider(app: &App, provider: &str) -> Result<(), GatewayError> {
    if app.config.providers.contains_key(provider) {
        return Ok(());
    }
    let known = app.config.providers.keys().cloned().collect::<Vec<_>>().join(", ");
    Err(GatewayError::bad_request("unknown_provider", format!("provider '{provider}' is not configured; configured: {known}")))
}

/// Seals and stores a credential.
pub async fn put_credential(app: &App, tenant_id: &str, name: &str, body: PutCredential) -> Result<Value, GatewayError> {
    if name.is_empty() || name.len() > MAX_CREDENTIAL_NAME_BYTES || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
        return Err(GatewayError::bad_request("invalid_name", "credential names are 1 to 64 letters, digits, '-' or '_'"));
    }
    check_provider(app, &body.provider)?;
    if body.api_key.is_empty() || body.api_key.len() > MAX_SECRET_BYTES {
        return Err(GatewayError::bad_request("invalid_api_key", "api_key must be 1 to 8192 bytes"));
    }
    let meta = app.vault.put(tenant_id, name, &body.provider, &Secret::new(body.api_key)).await?;
    Ok(json!(meta))
}

/// A policy hash from a path or body.
pub fn parse_hash(text: &str) -> Result<PolicyHash, GatewayError> {
    PolicyHash::parse(text).ok_or_else(|| GatewayError::bad_request("invalid_hash", "hash must be 64 hex digits"))
}

/// Assigns an uploaded policy, keeping the previous assignment for rollback. Holds the
/// blob's lock, so a delete (on any replica) cannot take the policy between the check and
/// the write.
pub async fn assign_policy(app: &App, tenant: &Tenant, body: AssignPolicy) -> Result<Arc<Tenant>, GatewayError> {
    let hash = parse_hash(&body.hash)?;
    let _blob = app.policies.lock_blob(hash).await?;
    if !app.policies.exists(&hash).await? {
        return Err(GatewayError::NotFound(format!("policy {hash} is not uploaded")));
    }
    let config = body.config.map(|c| c.to_string()).unwrap_or_else(|| "{}".into());
    let updated = app
        .tenants
        .update(tenant, |current| {
            let mut updated = current.clone();
            updated.previous_policy = updated.policy.take();
            updated.policy = Some(PolicyAssignment { hash: hash.to_string(), config });
            Ok(updated)
        })
        .await?;
    Ok(updated)
}

/// Swaps the current and previous policy assignments. A previous policy deleted since
/// is refused (a previous assignment does not keep a policy from being deleted).
async fn roll_back_policy(app: &App, tenant: &Tenant) -> Result<Arc<Tenant>, GatewayError> {
    // The previous policy as this replica last heard of it, checked stored under its
    // blob's lock (before the update, which cannot wait on the store); the update swaps in
    // only that one, so a previous assignment changed meanwhile is refused, not swapped
    // in unchecked.
    let latest = app.tenants.get(&tenant.id).filter(|t| t.incarnation == tenant.incarnation);
    let checked = latest.as_deref().unwrap_or(tenant).previous_policy.clone();
    let checked_hash = checked.as_ref().and_then(|p| PolicyHash::parse(&p.hash));
    let _blob = match checked_hash {
        Some(hash) => Some(app.policies.lock_blob(hash).await?),
        None => None,
    };
    let stored = match checked_hash {
        Some(hash) => app.policies.exists(&hash).await?,
        None => false,
    };
    let updated = app
        .tenants
        .update(tenant, |current| {
            let Some(previous) = current.previous_policy.clone() else {
                return Err(GatewayError::Conflict("there is no previous policy assignment to roll back to".into()));
            };
            if !stored || checked.as_ref() != Some(&previous) {
                return Err(GatewayError::Conflict(format!("the previous policy {} has been deleted; assign an uploaded policy instead", previous.hash)));
            }
            let mut updated = current.clone();
            updated.previous_policy = updated.policy.replace(previous);
            Ok(updated)
        })
        .await?;
    Ok(updated)
}

/// The JSON shape of a tenant.
pub fn tenant_json(t: &Tenant) -> Value {
    json!({
        "id": t.id,
        "display_name": t.display_name,
        "budget": t.budget.map(|b| json!({"limit_microdollars": b.limit_microdollars, "period": b.period.as_str()})),
        "policy": t.policy,
        "previous_policy": t.previous_policy,
        "candidate_policy": t.candidate_policy,
        "allow_request_keys": t.allow_request_keys,
        "rate_limits": t.rate_limits,
        "user_budget_microdollars": t.user_budget_microdollars,
        "tag_budgets_microdollars": t.tag_budgets_microdollars,
        "price_overrides": t.price_overrides,
        "created_millis": t.created_millis,
    })
}

/// `start=YYYY-MM-DD&end=YYYY-MM-DD` (both inclusive) as UTC days; defaults to the current
/// month so far.
pub fn day_range(query: &str) -> Result<(String, String), GatewayError> {
    let check = |text: &str| -> Result<String, GatewayError> {
        chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d")
            .map(|d| d.format("%Y-%m-%d").to_string())
            .map_err(|_| GatewayError::bad_request("invalid_date", format!("'{text}' is not a date like 2026-03-01")))
    };
    let today = day_of(crate::clock::unix_millis());
    let start = match query_param(query, "start") {
        Some(s) => check(s)?,
        None => format!("{}-01", &today[..7]),
    };
    let end = match query_param(query, "end") {
        Some(s) => check(s)?,
        None => today,
    };
    if end < start {
        return Err(GatewayError::bad_request("invalid_date", "end is before start"));
    }
    Ok((start, end))
}

/// A CSV field safe to open in a spreadsheet (OWASP "CSV injection"). Keys are chosen by
/// end users and policies (`user`, tags), so a key starting with `=`, `+`, `-`, `@`, tab or
/// CR gets a leading `'` and is read as text, not run as a formula; a field holding `,`,
/// `"`, CR or LF is quoted with its quotes doubled (RFC 4180).
fn csv_field(text: &str) -> String {
    let mut field = String::with_capacity(text.len() + 3);
    if text.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        field.push('\'');
    }
    field.push_str(text);
    if field.contains([',', '"', '\r', '\n']) {
        field = format!("\"{}\"", field.replace('"', "\"\""));
    }
    field
}

/// Usage of a tenant over a day range, as JSON or CSV, totals or grouped.
pub async fn usage_report(app: &App, tenant: &Tenant, query: &str) -> Result<Response<Body>, GatewayError> {
    let tenant_id = tenant.id.as_str();
    let (start, end) = day_range(query)?;
    let group_by = match query_param(query, "group_by") {
        None => None,
        Some(g) => Some(GroupBy::parse(g).ok_or_else(|| GatewayError::bad_request("invalid_group_by", "group_by must be one of model, provider, day, user, tag"))?),
    };
    let total = app.metering.totals(tenant.storage_id(), &start, &end).await?;
    let rows = match group_by {
        Some(g) => app.metering.usage(tenant.storage_id(), &start, &end, g).await?,
        None => Vec::new(),
    };
    if query_param(query, "format") == Some("csv") {
        let mut csv = String::from("key,requests,prompt_tokens,completion_tokens,cached_tokens,cost_microdollars\n");
        let all = if group_by.is_some() { rows } else { vec![("total".to_string(), total)] };
        for (key, r) in all {
            let key = csv_field(&key);
            csv.push_str(&format!("{key},{},{},{},{},{}\n", r.requests, r.prompt_tokens, r.completion_tokens, r.cached_tokens, r.cost_microdollars));
        }
        return Ok(text_response(StatusCode::OK, "text/csv", csv));
    }
    let row = |key: &str, r: &crate::metering::Rollup| {
        json!({"key": key, "requests": r.requests, "prompt_tokens": r.prompt_tokens, "completion_tokens": r.completion_tokens,
               "cached_tokens": r.cached_tokens, "cost_microdollars": r.cost_microdollars, "cost_usd": r.cost_microdollars as f64 / 1e6})
    };
    let mut body = json!({
        "tenant_id": tenant_id, "start": start, "end": end,
        "requests": total.requests, "prompt_tokens": total.prompt_tokens, "completion_tokens": total.completion_tokens,
        "cached_tokens": total.cached_tokens, "cost_microdollars": total.cost_microdollars, "cost_usd": total.cost_microdollars as f64 / 1e6,
    });
    if let Some(g) = query_param(query, "group_by") {
        body["group_by"] = json!(g);
        body["rows"] = Value::Array(rows.iter().map(|(k, r)| row(k, r)).collect());
    }
    Ok(json_response(StatusCode::OK, &body))
}

/// Spend per day of a date range, one series per model (or provider): what the console's
/// stacked chart draws. Every day of the range is present (zero where nothing was spent).
pub async fn daily_usage(app: &App, tenant: &Tenant, query: &str) -> Result<Response<Body>, GatewayError> {
    let (start, end) = day_range(query)?;
    let group_by = match query_param(query, "group_by").unwrap_or("model") {
        "model" => GroupBy::Model,
        "provider" => GroupBy::Provider,
        _ => return Err(GatewayError::bad_request("invalid_group_by", "group_by must be model or provider")),
    };
    let days = days_between(&start, &end)?;
    let rows = app.metering.usage_daily(tenant.storage_id(), &start, &end, group_by).await?;
    let mut series: std::collections::BTreeMap<String, (Vec<u64>, Vec<u64>)> = std::collections::BTreeMap::new();
    for (day, key, rollup) in rows {
        let Ok(index) = days.binary_search(&day) else { continue };
        let (cost, requests) = series.entry(key).or_insert_with(|| (vec![0; days.len()], vec![0; days.len()]));
        cost[index] = cost[index].saturating_add(rollup.cost_microdollars);
        requests[index] = requests[index].saturating_add(rollup.requests);
    }
    let series: Vec<Value> = series.into_iter().map(|(key, (cost, requests))| json!({"key": key, "cost_microdollars": cost, "requests": requests})).collect();
    Ok(json_response(
        StatusCode::OK,
        &json!({"tenant_id": tenant.id, "start": start, "end": end, "group_by": query_param(query, "group_by").unwrap_or("model"), "days": days, "series": series}),
    ))
}

/// Longest range a daily report covers (a year and a day).
const MAX_REPORT_DAYS: usize = 367;

/// Every UTC day from `start` to `end` (inclusive; both as [`day_range`] checked them).
fn days_between(start: &str, end: &str) -> Result<Vec<String>, GatewayError> {
    let parse = |d: &str| chrono::NaiveDate::parse_from_str(d, "%Y-%m-%d").map_err(|_| GatewayError::bad_request("invalid_date", "dates are YYYY-MM-DD"));
    let last = parse(end)?;
    let days: Vec<chrono::NaiveDate> = parse(start)?.iter_days().take_while(|d| *d <= last).take(MAX_REPORT_DAYS + 1).collect();
    if days.len() > MAX_REPORT_DAYS {
        return Err(GatewayError::bad_request("invalid_date", format!("a daily report covers at most {MAX_REPORT_DAYS} days")));
    }
    Ok(days.iter().map(|d| d.format("%Y-%m-%d").to_string()).collect())
}

fn memory_error(e: crate::policy::MemoryError) -> GatewayError {
    use crate::policy::MemoryError as E;
    match e {
        E::QuotaExceeded => GatewayError::bad_request("quota_exceeded", "the tenant's memory quota is used up"),
        E::InvalidKey => GatewayError::bad_request("invalid_key", "keys are 1 to 256 bytes"),
        other => GatewayError::Internal(format!("{other:?}")),
    }
}

/// Serves `method rest` for tenant `tenant`. `rest` is the path after the tenant prefix.
/// `actor` names who is asking, for the audit trail.
pub async fn handle(app: &Arc<App>, actor: &str, tenant: Arc<Tenant>, method: &Method, rest: &[&str], query: &str, body: &[u8]) -> Result<Response<Body>, GatewayError> {
    let ok = |v: Value| Ok(json_response(StatusCode::OK, &v));
    let created = |v: Value| Ok(json_response(StatusCode::CREATED, &v));
    let id = tenant.id.as_str();
    // Every record of the tenant is stored under its incarnation.
    let storage = tenant.storage_id();
    let owner = tenant.clone();
    let audit = |action: &'static str, detail: Value| {
        let owner = owner.clone();
        async move { app.audit.append_tenant(actor, action, &owner, detail).await }
    };
    match (method.clone(), rest) {
        (Method::GET, []) => ok(tenant_json(&tenant)),
        (Method::POST, ["tokens"]) => {
            let request: IssueToken = parse(body)?;
            let (token, record) = app.tokens.issue(&tenant, request.scope, request.rate_limits).await?;
            audit("token.issue", json!({"token_id": record.id, "scope": record.scope})).await?;
            created(json!({"token": token, "id": record.id, "scope": record.scope, "tenant_id": id}))
        }
        (Method::GET, ["tokens"]) => ok(json!({"data": app.tokens.list(&tenant).await?})),
        (Method::DELETE, ["tokens", token_id]) => {
            if !app.tokens.revoke(&tenant, token_id).await? {
                return Err(GatewayError::NotFound(format!("no token '{token_id}'")));
            }
            audit("token.revoke", json!({"token_id": token_id})).await?;
            ok(json!({"revoked": token_id}))
        }
        (Method::PUT, ["credentials", name]) => {
            let meta = put_credential(app, storage, name, parse(body)?).await?;
            audit("credential.put", json!({"name": name, "provider": meta["provider"]})).await?;
            ok(meta)
        }
        (Method::GET, ["credentials"]) => ok(json!({"data": app.vault.list(storage).await?})),
        (Method::DELETE, ["credentials", name]) => {
            if !app.vault.delete(storage, name).await? {
                return Err(GatewayError::NotFound(format!("no credential '{name}'")));
            }
            audit("credential.delete", json!({"name": name})).await?;
            ok(json!({"deleted": name}))
        }
        (Method::GET, ["policy"]) => ok(json!({"policy": tenant.policy, "previous_policy": tenant.previous_policy, "candidate_policy": tenant.candidate_policy, "default_policy": app.default_policy.to_string()})),
        (Method::PUT, ["policy"]) => {
            let updated = assign_policy(app, &tenant, parse(body)?).await?;
            audit("policy.assign", json!({"hash": updated.policy.as_ref().map(|p| p.hash.clone())})).await?;
            ok(tenant_json(&updated))
        }
        (Method::POST, ["policy", "replay"]) => ok(replay::replay(app, &tenant, parse(body)?).await?),
        (Method::GET, ["policy", "candidate"]) => ok(candidate::show(app, &tenant).await?),
        (Method::PUT, ["policy", "candidate"]) => {
            let updated = candidate::assign(app, &tenant, parse(body)?).await?;
            audit("policy.candidate.assign", json!({"candidate": updated.candidate_policy.as_ref().map(|c| json!({"hash": c.hash, "mode": c.mode, "percent": c.percent}))})).await?;
            ok(tenant_json(&updated))
        }
        (Method::POST, ["policy", "candidate", "promote"]) => {
            let updated = candidate::promote(app, &tenant).await?;
            audit("policy.candidate.promote", json!({"hash": updated.policy.as_ref().map(|p| p.hash.clone())})).await?;
            ok(tenant_json(&updated))
        }
        (Method::DELETE, ["policy", "candidate"]) => {
            let dropped = tenant.candidate_policy.as_ref().map(|c| c.hash.clone());
            let updated = candidate::drop_candidate(app, &tenant).await?;
            audit("policy.candidate.drop", json!({"hash": dropped})).await?;
            ok(tenant_json(&updated))
        }
        (Method::POST, ["policy", "rollback"]) => {
            let updated = roll_back_policy(app, &tenant).await?;
            audit("policy.rollback", json!({"hash": updated.policy.as_ref().map(|p| p.hash.clone())})).await?;
            ok(tenant_json(&updated))
        }
        (Method::GET, ["policies"]) => {
            let records = app.policies.blobs().list(Owner::Tenant(storage)).await?;
            let usage = Usage::of(&records);
            let assigned = tenant.policy.as_ref().map(|p| p.hash.as_str());
            let data: Vec<Value> = records
                .into_iter()
                .map(|r| json!({"hash": r.hash, "bytes": r.bytes, "uploaded_millis": r.uploaded_millis, "assigned": assigned == Some(r.hash.as_str())}))
                .collect();
            let limits = app.policies.limits();
            ok(json!({"data": data, "used_uploads": usage.uploads, "used_bytes": usage.bytes, "max_uploads": limits.max_uploads_per_tenant, "max_bytes": limits.max_upload_bytes_per_tenant}))
        }
        (Method::DELETE, ["policies", hash]) => {
            let hash = parse_hash(hash)?;
            let deleted = crate::policy_deletion::delete_for_tenant(app, &tenant, hash).await?;
            // Whether the blob went tells whether anyone else holds the same bytes: the
            // operator's log may know, the tenant's reply and audit trail do not.
            tracing::info!(tenant = id, policy = %hash, blob_removed = deleted.blob_removed, "uploaded policy deleted");
            audit("policy.delete", json!({"hash": hash.to_string()})).await?;
            ok(json!({"deleted": hash.to_string()}))
        }
        (Method::GET, ["audit"]) => {
            let after = query_param(query, "after").and_then(|a| a.parse().ok()).unwrap_or(0);
            ok(json!({"data": app.audit.read_own(after, 1000, &tenant).await?}))
        }
        (Method::GET, ["policy", "log"]) => {
            ok(json!({"data": app.policy_logs.tenant(storage).read(app.policy_logs.keep()).await?}))
        }
        (Method::GET, ["usage"]) => usage_report(app, &tenant, query).await,
        (Method::GET, ["usage", "daily"]) => daily_usage(app, &tenant, query).await,
        (Method::GET, ["budget"]) => {
            let status = app.metering.status(tenant.storage_id(), tenant.budget, crate::clock::unix_millis()).await?;
            ok(json!({
                "period": status.period,
                "period_id": status.period_id,
                "limit_microdollars": status.limit_microdollars,
                "spent_microdollars": status.spent_microdollars,
                "reserved_microdollars": status.reserved_microdollars,
            }))
        }
        (Method::GET, ["usage", "records"]) => {
            let (start, end) = day_range(query)?;
            let from = chrono::NaiveDate::parse_from_str(&start, "%Y-%m-%d").ok().and_then(|d| d.and_hms_opt(0, 0, 0)).map(|d| d.and_utc().timestamp_millis().max(0) as u64).unwrap_or(0);
            let to = chrono::NaiveDate::parse_from_str(&end, "%Y-%m-%d").ok().and_then(|d| d.and_hms_opt(0, 0, 0)).map(|d| d.and_utc().timestamp_millis().max(0) as u64 + 86_400_000).unwrap_or(u64::MAX);
            let limit = query_param(query, "limit").and_then(|l| l.parse().ok()).unwrap_or(1000usize).min(10_000);
            ok(json!({"data": app.metering.ledger(storage, from, to, limit).await?}))
        }
        (Method::GET, ["sessions"]) => ok(json!({"data": app.sessions.tenant(storage).list(1000).await?})),
        (Method::GET, ["sessions", session]) => {
            let turns = app.sessions.tenant(storage).history(session, crate::sessions::MAX_HISTORY_TURNS).await?;
            if turns.is_empty() {
                return Err(GatewayError::NotFound(format!("no session '{session}'")));
            }
            ok(json!({"id": session, "turns": turns}))
        }
        (Method::DELETE, ["sessions", session]) => {
            if !app.sessions.tenant(storage).delete(session).await.map_err(memory_error)? {
                return Err(GatewayError::NotFound(format!("no session '{session}'")));
            }
            audit("session.delete", json!({"session": session})).await?;
            ok(json!({"deleted": session}))
        }
        (Method::GET, ["memory"]) => {
            let memory = app.memory.tenant(storage);
            let entries = memory.entries(1000).await.map_err(memory_error)?;
            let data: Vec<Value> = entries.into_iter().map(|(k, v)| json!({"key": k, "value": String::from_utf8_lossy(&v), "bytes": v.len()})).collect();
            ok(json!({"data": data, "used_bytes": memory.used_bytes().await.map_err(memory_error)?, "quota_bytes": app.memory.quota_bytes()}))
        }
        (Method::DELETE, ["memory", key]) => {
            app.memory.tenant(storage).delete(key).await.map_err(memory_error)?;
            audit("memory.delete", json!({"key": key})).await?;
            ok(json!({"deleted": key}))
        }
        _ => Err(GatewayError::NotFound(format!("no tenant resource /{}", rest.join("/")))),
    }
}

#[cfg(test)]
mod tests {
    use super::csv_field;

    #[test]
    fn csv_fields_are_neither_formulas_nor_broken_rows() {
        assert_eq!(csv_field("demo/demo-small"), "demo/demo-small");
        assert_eq!(csv_field("=1+1"), "'=1+1");
        assert_eq!(csv_field("+1"), "'+1");
        assert_eq!(csv_field("-1"), "'-1");
        assert_eq!(csv_field("@SUM(A1)"), "'@SUM(A1)");
        assert_eq!(csv_field("\tx"), "'\tx");
        assert_eq!(csv_field("\rx"), "\"'\rx\"");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field("two\nlines"), "\"two\nlines\"");
        assert_eq!(csv_field(r#"=HYPERLINK("http://x","y")"#), r#""'=HYPERLINK(""http://x"",""y"")""#);
    }
}
