//! Operator API (admin token): tenants, tokens, credentials, policies, usage and key
//! rotation, plus the shapes from the original user request under `/api/v1`.
//!
//! Every write is durable before it is acknowledged.

use std::sync::Arc;

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{authenticate, json_response, read_capped, Body, Principal};
use crate::app::App;
use crate::error::GatewayError;
use crate::metering::{Budget, Period};
use crate::sealing::{Key, MAX_CREDENTIAL_NAME_BYTES, MAX_SECRET_BYTES};
use crate::secret::Secret;
use crate::tenants::{validate_id, PolicyAssignment, Tenant};
use crate::tokens::{self, Scope};
use crate::PolicyHash;

/// Largest admin JSON body.
const MAX_ADMIN_BODY_BYTES: usize = 64 << 10;

fn parse<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, GatewayError> {
    serde_json::from_slice(bytes).map_err(|e| GatewayError::bad_request("invalid_json", format!("invalid request body: {e}")))
}

fn usd_to_micros(usd: f64) -> Result<u64, GatewayError> {
    if !usd.is_finite() || usd < 0.0 || usd > 1e9 {
        return Err(GatewayError::bad_request("invalid_budget", "budget must be a non-negative amount of USD"));
    }
    Ok((usd * 1_000_000.0).round() as u64)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateTenant {
    id: String,
    #[serde(default)]
    display_name: String,
    #[serde(default)]
    budget_usd: Option<f64>,
    #[serde(default)]
    budget_period: Option<Period>,
    #[serde(default)]
    allow_request_keys: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct IssueToken {
    scope: Scope,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PutCredential {
    provider: String,
    api_key: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AssignPolicy {
    hash: String,
    #[serde(default)]
    config: Option<Value>,
}

/// The user-requested shape: `POST /api/v1/tenants`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct QuickTenant {
    tenant_id: String,
    provider: String,
    api_key: String,
    model: String,
    #[serde(default)]
    max_tokens: Option<u32>,
    #[serde(default)]
    temperature: Option<f32>,
    #[serde(default)]
    budget_usd_per_month: Option<f64>,
}

fn tenant_json(t: &Tenant) -> Value {
    json!({
        "id": t.id,
        "display_name": t.display_name,
        "budget": t.budget.map(|b| json!({"limit_microdollars": b.limit_microdollars, "period": b.period.as_str()})),
        "policy": t.policy,
        "previous_policy": t.previous_policy,
        "allow_request_keys": t.allow_request_keys,
        "created_millis": t.created_millis,
    })
}

fn tenant(app: &App, id: &str) -> Result<Arc<Tenant>, GatewayError> {
    app.tenants.get(id).ok_or_else(|| GatewayError::NotFound(format!("no tenant '{id}'")))
}

fn check_provider(app: &App, provider: &str) -> Result<(), GatewayError> {
    if app.config.providers.contains_key(provider) {
        Ok(())
    } else {
        Err(GatewayError::bad_request("unknown_provider", format!("provider '{provider}' is not configured; configured: {}", app.config.providers.keys().cloned().collect::<Vec<_>>().join(", "))))
    }
}

async fn put_credential(app: &App, tenant_id: &str, name: &str, body: PutCredential) -> Result<Value, GatewayError> {
    if name.is_empty() || name.len() > MAX_CREDENTIAL_NAME_BYTES || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
        return Err(GatewayError::bad_request("invalid_name", "credential names are 1 to 64 letters, digits, '-' or '_'"));
    }
    check_provider(app, &body.provider)?;
    if body.api_key.is_empty() || body.api_key.len() > MAX_SECRET_BYTES {
        return Err(GatewayError::bad_request("invalid_api_key", "api_key must be 1 to 8192 bytes"));
    }
    let secret = Secret::new(body.api_key);
    let meta = app.vault.put(tenant_id, name, &body.provider, &secret).await?;
    Ok(json!(meta))
}

async fn create_tenant(app: &App, request: CreateTenant) -> Result<Arc<Tenant>, GatewayError> {
    validate_id(&request.id).map_err(|e| GatewayError::bad_request("invalid_tenant_id", e))?;
    if app.tenants.get(&request.id).is_some() {
        return Err(GatewayError::Conflict(format!("tenant '{}' already exists", request.id)));
    }
    let budget = match request.budget_usd {
        Some(usd) => Some(Budget { limit_microdollars: usd_to_micros(usd)?, period: request.budget_period.unwrap_or_default() }),
        None => None,
    };
    let tenant = Tenant {
        id: request.id,
        display_name: request.display_name,
        budget,
        policy: None,
        previous_policy: None,
        allow_request_keys: request.allow_request_keys,
        created_millis: crate::clock::unix_millis(),
    };
    Ok(app.tenants.put(tenant).await?)
}

async fn assign_policy(app: &App, tenant: &Tenant, body: AssignPolicy) -> Result<Arc<Tenant>, GatewayError> {
    let hash = PolicyHash::parse(&body.hash).ok_or_else(|| GatewayError::bad_request("invalid_hash", "hash must be 64 hex digits"))?;
    if !app.policies.exists(&hash)? {
        return Err(GatewayError::NotFound(format!("policy {hash} is not uploaded")));
    }
    let config = body.config.map(|c| c.to_string()).unwrap_or_else(|| "{}".into());
    let mut updated = tenant.clone();
    updated.previous_policy = updated.policy.take();
    updated.policy = Some(PolicyAssignment { hash: hash.to_string(), config });
    Ok(app.tenants.put(updated).await?)
}

/// Routes an `/admin/...` or `/api/...` request. Operator token only.
pub async fn handle(app: &Arc<App>, request: Request<Incoming>) -> Result<Response<Body>, GatewayError> {
    if !matches!(authenticate(app, &request)?, Principal::Admin) {
        return Err(GatewayError::Forbidden("this endpoint needs the operator token".into()));
    }
    let method = request.method().clone();
    let path = request.uri().path().trim_end_matches('/').to_string();
    let query = request.uri().query().unwrap_or("").to_string();
    let parts: Vec<&str> = path.split('/').skip(1).collect();
    let limit = if parts == ["admin", "v1", "policies"] { app.policies.limits().upload_bytes } else { MAX_ADMIN_BODY_BYTES };
    let body = read_capped(request.into_body(), limit).await?;
    let ok = |v: Value| Ok(json_response(StatusCode::OK, &v));
    let created = |v: Value| Ok(json_response(StatusCode::CREATED, &v));
    match (method, parts.as_slice()) {
        (Method::POST, ["admin", "v1", "tenants"]) => {
            let tenant = create_tenant(app, parse(&body)?).await?;
            created(tenant_json(&tenant))
        }
        (Method::GET, ["admin", "v1", "tenants"]) => {
            let after = query.split('&').find_map(|kv| kv.strip_prefix("after="));
            let page = app.tenants.page(after, 100);
            ok(json!({"data": page.iter().map(|t| tenant_json(t)).collect::<Vec<_>>(), "next_after": page.last().map(|t| t.id.clone())}))
        }
        (Method::GET, ["admin", "v1", "tenants", id]) => {
            let found = tenant(app, id)?;
            ok(tenant_json(&found))
        }
        (Method::DELETE, ["admin", "v1", "tenants", id]) => {
            tenant(app, id)?;
            tokens::revoke_all(&app.store, id)?;
            app.vault.shred(id).await?;
            app.tenants.remove(id).await?;
            ok(json!({"deleted": id}))
        }
        (Method::POST, ["admin", "v1", "tenants", id, "tokens"]) => {
            tenant(app, id)?;
            let request: IssueToken = parse(&body)?;
            let (token, record) = tokens::issue(&app.store, id, request.scope).await?;
            created(json!({"token": token, "id": record.id, "scope": record.scope, "tenant_id": id}))
        }
        (Method::GET, ["admin", "v1", "tenants", id, "tokens"]) => {
            tenant(app, id)?;
            ok(json!({"data": tokens::list(&app.store, id)?}))
        }
        (Method::DELETE, ["admin", "v1", "tenants", id, "tokens", token_id]) => {
            if !tokens::revoke(&app.store, id, token_id).await? {
                return Err(GatewayError::NotFound(format!("no token '{token_id}' for tenant '{id}'")));
            }
            ok(json!({"revoked": token_id}))
        }
        (Method::PUT, ["admin", "v1", "tenants", id, "credentials", name]) => {
            tenant(app, id)?;
            ok(put_credential(app, id, name, parse(&body)?).await?)
        }
        (Method::GET, ["admin", "v1", "tenants", id, "credentials"]) => {
            tenant(app, id)?;
            ok(json!({"data": app.vault.list(id)?}))
        }
        (Method::DELETE, ["admin", "v1", "tenants", id, "credentials", name]) => {
            if !app.vault.delete(id, name).await? {
                return Err(GatewayError::NotFound(format!("no credential '{name}' for tenant '{id}'")));
            }
            ok(json!({"deleted": name}))
        }
        (Method::POST, ["admin", "v1", "policies"]) => {
            let hash = app.policies.upload(body.to_vec()).await.map_err(|e| match e {
                crate::PolicyError::Upload(u) => GatewayError::bad_request("invalid_policy", u.to_string()),
                other => GatewayError::Policy(other),
            })?;
            created(json!({"hash": hash.to_string()}))
        }
        (Method::PUT, ["admin", "v1", "tenants", id, "policy"]) => {
            let current = tenant(app, id)?;
            let updated = assign_policy(app, &current, parse(&body)?).await?;
            ok(tenant_json(&updated))
        }
        (Method::GET, ["admin", "v1", "tenants", id, "policy", "log"]) => {
            tenant(app, id)?;
            let log = crate::policy_log::PolicyLog::new(app.store.clone(), crate::store::TenantKey::of(id), app.config.policy.log_lines_kept);
            ok(json!({"data": log.read(app.config.policy.log_lines_kept)?}))
        }
        (Method::GET, ["admin", "v1", "tenants", id, "usage"]) => {
            tenant(app, id)?;
            ok(json!({"data": app.metering.ledger(id, 0, u64::MAX, 1000)?}))
        }
        (Method::POST, ["admin", "v1", "keys", "rotate"]) => {
            #[derive(Deserialize)]
            #[serde(deny_unknown_fields)]
            struct Rotate {
                new_master_key: String,
            }
            let request: Rotate = parse(&body)?;
            let key = Key::parse(&request.new_master_key).map_err(|e| GatewayError::bad_request("invalid_key", e.to_string()))?;
            let fingerprint = key.fingerprint();
            let rewrapped = app.vault.rotate(key).await?;
            ok(json!({"rewrapped_data_keys": rewrapped, "new_key_fingerprint": fingerprint}))
        }
        (Method::POST, ["api", "v1", "tenants"]) => {
            let quick: QuickTenant = parse(&body)?;
            check_provider(app, &quick.provider)?;
            let tenant = create_tenant(app, CreateTenant {
                id: quick.tenant_id.clone(),
                display_name: String::new(),
                budget_usd: quick.budget_usd_per_month,
                budget_period: Some(Period::Month),
                allow_request_keys: false,
            })
            .await?;
            put_credential(app, &tenant.id, "default", PutCredential { provider: quick.provider.clone(), api_key: quick.api_key }).await?;
            let config = json!({"provider": quick.provider, "credential": "default", "model": quick.model, "max_tokens": quick.max_tokens, "temperature": quick.temperature});
            let tenant = assign_policy(app, &tenant, AssignPolicy { hash: app.default_policy.to_string(), config: Some(config) }).await?;
            let (token, record) = tokens::issue(&app.store, &tenant.id, Scope::Inference).await?;
            created(json!({"tenant": tenant_json(&tenant), "token": token, "token_id": record.id}))
        }
        (Method::GET, ["api", "v1", "metering", "tenant", id]) => {
            tenant(app, id)?;
            let (from, to) = date_range(&query)?;
            let records = app.metering.ledger(id, from, to, 100_000)?;
            let cost: u64 = records.iter().map(|r| r.cost_microdollars).sum();
            let prompt: u64 = records.iter().map(|r| r.prompt_tokens).sum();
            let completion: u64 = records.iter().map(|r| r.completion_tokens).sum();
            ok(json!({"tenant_id": id, "requests": records.len(), "prompt_tokens": prompt, "completion_tokens": completion,
                      "cost_microdollars": cost, "cost_usd": cost as f64 / 1e6}))
        }
        _ => Err(GatewayError::NotFound(format!("no admin route for {path}"))),
    }
}

/// `start=YYYY-MM-DD&end=YYYY-MM-DD` (end inclusive) as a millisecond range.
fn date_range(query: &str) -> Result<(u64, u64), GatewayError> {
    let get = |name: &str| query.split('&').find_map(|kv| kv.strip_prefix(&format!("{name}=")));
    let day = |text: &str| -> Result<u64, GatewayError> {
        let date = chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d").map_err(|_| GatewayError::bad_request("invalid_date", format!("'{text}' is not a date like 2026-03-01")))?;
        Ok(date.and_hms_opt(0, 0, 0).map(|d| d.and_utc().timestamp_millis().max(0) as u64).unwrap_or(0))
    };
    let from = get("start").map(day).transpose()?.unwrap_or(0);
    let to = get("end").map(day).transpose()?.map(|d| d + 86_400_000).unwrap_or(u64::MAX);
    Ok((from, to))
}
