//! The operator API (admin token) and the tenant self-service API (a tenant's `manage`
//! token), plus the shapes from the original user request under `/api/v1`.
//!
//! Operator: `/admin/v1/tenants` (create, list paged, show, update, delete),
//! `/admin/v1/tenants/{id}/...` (see [`super::tenant_api`]), `POST /admin/v1/policies`,
//! `DELETE /admin/v1/policies/{hash}`, `POST /admin/v1/keys/rotate`. Self-service:
//! `GET /v1/tenant`, `/v1/tenant/...`, `POST /v1/tenant/policies`. Every write is durable
//! before it is acknowledged.

use std::collections::BTreeMap;
use std::sync::Arc;

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde::Deserialize;
use serde_json::json;

use super::tenant_api::{self, check_provider, parse, put_credential, query_param, tenant_json, PutCredential};
use super::{authenticate, json_response, read_capped, Body, Principal};
use crate::app::App;
use crate::catalog::ModelEntry;
use crate::error::GatewayError;
use crate::metering::{Budget, Period};
use crate::policy::Owner;
use crate::ratelimit::RateLimits;
use crate::sealing::Key;
use crate::tenants::{validate_id, Lifecycle, PolicyAssignment, Tenant};
use crate::tokens::{self, Scope};

/// The audit trail's name for the operator token.
const OPERATOR: &str = "operator";

/// Largest admin JSON body.
const MAX_ADMIN_BODY_BYTES: usize = 64 << 10;
/// Tenants per page of `GET /admin/v1/tenants`.
const TENANTS_PER_PAGE: usize = 100;

/// Most tenants `GET /admin/v1/usage/top` lists.
const MAX_TOP_SPENDERS: usize = 100;

/// A query parameter, percent-decoded (`q` may hold spaces and any text).
fn decoded_param(query: &str, name: &str) -> Option<String> {
    form_urlencoded::parse(query.as_bytes()).find(|(k, _)| k == name).map(|(_, v)| v.into_owned())
}

/// The tenants that spent most in a date range (`start`, `end` as for usage; `limit`, 10
/// unless given, at most 100).
async fn top_spenders(app: &App, query: &str) -> Result<http::Response<Body>, GatewayError> {
    let (start, end) = tenant_api::day_range(query)?;
    let limit = query_param(query, "limit").and_then(|l| l.parse().ok()).unwrap_or(10usize).clamp(1, MAX_TOP_SPENDERS);
    let tenants = app.tenants.page(None, None, usize::MAX);
    let by_storage: BTreeMap<&str, &Arc<Tenant>> = tenants.iter().map(|t| (t.storage_id(), t)).collect();
    let storage_ids: Vec<String> = by_storage.keys().map(|id| id.to_string()).collect();
    let spenders = app.metering.top_spenders(&storage_ids, &start, &end, limit).await?;
    let data: Vec<serde_json::Value> = spenders
        .iter()
        .filter_map(|(storage_id, total)| {
            let tenant = by_storage.get(storage_id.as_str())?;
            Some(json!({"tenant_id": tenant.id, "display_name": tenant.display_name, "cost_microdollars": total.cost_microdollars, "requests": total.requests}))
        })
        .collect();
    Ok(json_response(StatusCode::OK, &json!({"start": start, "end": end, "data": data})))
}

fn usd_to_micros(usd: f64) -> Result<u64, GatewayError> {
    if !usd.is_finite() || !(0.0..=1e9).contains(&usd) {
        return Err(GatewayError::bad_request("invalid_budget", "budget must be a non-negative amount of USD"));
    }
    Ok((usd * 1_000_000.0).round() as u64)
}

/// `POST /admin/v1/tenants`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct CreateTenant {
    /// Tenant id.
    id: String,
    #[serde(default)]
    display_name: String,
    /// Budget per period in USD; none means unlimited.
    #[serde(default)]
    budget_usd: Option<f64>,
    /// `month` when absent.
    #[serde(default)]
    budget_period: Option<Period>,
    /// Whether requests may bring their own provider key (`X-Provider-API-Key`).
    #[serde(default)]
    allow_request_keys: bool,
    #[serde(default)]
    rate_limits: RateLimits,
    /// Budget per end user (`user`) per period, in USD.
    #[serde(default)]
    user_budget_usd: Option<f64>,
    /// Budget per plan tag per period, in USD.
    #[serde(default)]
    tag_budgets_usd: BTreeMap<String, f64>,
    /// Prices for this tenant that replace the catalog's.
    #[serde(default)]
    price_overrides: Vec<ModelEntry>,
}

/// `PATCH /admin/v1/tenants/{id}`: fields present are changed.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct UpdateTenant {
    display_name: Option<String>,
    /// `null` removes the budget.
    #[serde(default, with = "double_option")]
    #[schema(value_type = Option<f64>)]
    budget_usd: Option<Option<f64>>,
    budget_period: Option<Period>,
    allow_request_keys: Option<bool>,
    rate_limits: Option<RateLimits>,
    /// `null` removes the per-end-user budget.
    #[serde(default, with = "double_option")]
    #[schema(value_type = Option<f64>)]
    user_budget_usd: Option<Option<f64>>,
    tag_budgets_usd: Option<BTreeMap<String, f64>>,
    price_overrides: Option<Vec<ModelEntry>>,
}

fn tag_budgets(usd: &BTreeMap<String, f64>) -> Result<BTreeMap<String, u64>, GatewayError> {
    usd.iter().map(|(tag, amount)| Ok((tag.clone(), usd_to_micros(*amount)?))).collect()
}

/// Distinguishes an absent field from an explicit `null`.
mod double_option {
    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<f64>>, D::Error> {
        Option::<f64>::deserialize(d).map(Some)
    }
}

/// The user-requested shape: `POST /api/v1/tenants`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct QuickTenant {
    /// Tenant id.
    tenant_id: String,
    /// Provider name from the operator's config.
    provider: String,
    /// The provider key, sealed at once as the credential `default`.
    api_key: String,
    /// The model the stock default policy routes to.
    model: String,
    #[serde(default)]
    max_tokens: Option<u32>,
    #[serde(default)]
    temperature: Option<f32>,
    #[serde(default)]
    budget_usd_per_month: Option<f64>,
}

/// `POST /admin/v1/keys/rotate`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RotateKeys {
    /// The new key (64 hex digits or base64 of 32 bytes); generated when absent
    /// and the key lives in the data dir.
    #[serde(default)]
    new_master_key: Option<String>,
}

fn tenant(app: &App, id: &str) -> Result<Arc<Tenant>, GatewayError> {
    app.tenants.get(id).ok_or_else(|| GatewayError::NotFound(format!("no tenant '{id}'")))
}

/// The tenant record a create request describes (not yet stored).
fn new_tenant(request: CreateTenant) -> Result<Tenant, GatewayError> {
    validate_id(&request.id).map_err(|e| GatewayError::bad_request("invalid_tenant_id", e))?;
    let budget = match request.budget_usd {
        Some(usd) => Some(Budget { limit_microdollars: usd_to_micros(usd)?, period: request.budget_period.unwrap_or_default() }),
        None => None,
    };
    Ok(Tenant {
        id: request.id,
        display_name: request.display_name,
        budget,
        policy: None,
        previous_policy: None,
        candidate_policy: None,
        allow_request_keys: request.allow_request_keys,
        created_millis: crate::clock::unix_millis(),
        rate_limits: request.rate_limits,
        user_budget_microdollars: request.user_budget_usd.map(usd_to_micros).transpose()?,
        tag_budgets_microdollars: tag_budgets(&request.tag_budgets_usd)?,
        price_overrides: request.price_overrides,
        incarnation: String::new(),
        lifecycle: Lifecycle::Live,
    })
}

async fn update_tenant(app: &App, current: &Tenant, request: UpdateTenant) -> Result<Arc<Tenant>, GatewayError> {
    let updated = app
        .tenants
        .update(current, |current| {
            let mut updated = current.clone();
            if let Some(name) = request.display_name {
                updated.display_name = name;
            }
            match request.budget_usd {
                Some(Some(usd)) => {
                    let period = request.budget_period.or(current.budget.map(|b| b.period)).unwrap_or_default();
                    updated.budget = Some(Budget { limit_microdollars: usd_to_micros(usd)?, period });
                }
                Some(None) => updated.budget = None,
                None => {
                    if let (Some(period), Some(budget)) = (request.budget_period, updated.budget.as_mut()) {
                        budget.period = period;
                    }
                }
            }
            if let Some(allow) = request.allow_request_keys {
                updated.allow_request_keys = allow;
            }
            if let Some(limits) = request.rate_limits {
                updated.rate_limits = limits;
            }
            if let Some(user_budget) = request.user_budget_usd {
                updated.user_budget_microdollars = user_budget.map(usd_to_micros).transpose()?;
            }
            if let Some(tags) = request.tag_budgets_usd {
                updated.tag_budgets_microdollars = tag_budgets(&tags)?;
            }
            if let Some(prices) = request.price_overrides {
                updated.price_overrides = prices;
            }
            Ok(updated)
        })
        .await?;
    Ok(updated)
}

/// `POST /api/v1/tenants`: the tenant, its credential, its policy and its first token,
/// created whole or not at all. The record is stored `creating` first (invisible, and
/// rolled back by the next start if a crash comes before the end) and made live last.
async fn quick_create(app: &App, quick: QuickTenant) -> Result<(Arc<Tenant>, String, tokens::TokenRecord), GatewayError> {
    check_provider(app, &quick.provider)?;
    let mut tenant = new_tenant(CreateTenant {
        id: quick.tenant_id.clone(),
        display_name: String::new(),
        budget_usd: quick.budget_usd_per_month,
        budget_period: Some(Period::Month),
        allow_request_keys: false,
        rate_limits: RateLimits::default(),
        user_budget_usd: None,
        tag_budgets_usd: BTreeMap::new(),
        price_overrides: Vec::new(),
    })?;
    let config = json!({"provider": quick.provider, "credential": "default", "model": quick.model, "max_tokens": quick.max_tokens, "temperature": quick.temperature});
    tenant.policy = Some(PolicyAssignment { hash: app.default_policy.to_string(), config: config.to_string() });
    tenant.lifecycle = Lifecycle::Creating;
    let tenant = app.tenants.create(tenant).await?;
    put_credential(app, tenant.storage_id(), "default", PutCredential { provider: quick.provider.clone(), api_key: quick.api_key }).await?;
    let (token, record) = app.tokens.issue(&tenant, Scope::Inference, RateLimits::default()).await?;
    let tenant = app.tenants.activate(&tenant.id).await?;
    Ok((tenant, token, record))
}

/// Uploads a policy for `tenant` (`None`: the operator), within the tenant's quota.
async fn upload_policy(app: &App, actor: &str, tenant: Option<&Tenant>, wasm: &[u8]) -> Result<Response<Body>, GatewayError> {
    let owner = tenant.map_or(Owner::Operator, |t| Owner::Tenant(t.storage_id()));
    let hash = app.policies.upload_for(owner, wasm.to_vec()).await.map_err(|e| match e {
        crate::PolicyError::Upload(u @ crate::policy::UploadError::TooComplex { .. }) => GatewayError::bad_request("policy_too_complex", u.to_string()),
        crate::PolicyError::Upload(u) => GatewayError::bad_request("invalid_policy", u.to_string()),
        other => GatewayError::Policy(other),
    })?;
    let detail = json!({"hash": hash.to_string(), "bytes": wasm.len()});
    match tenant {
        Some(tenant) => app.audit.append_tenant(actor, "policy.upload", tenant, detail).await?,
        None => app.audit.append(actor, "policy.upload", "", detail).await?,
    }
    Ok(json_response(StatusCode::CREATED, &json!({"hash": hash.to_string()})))
}

/// Streams a backup of the live store (see [`crate::backup`]): a snapshot spooled to a
/// local file first (a failure there is a 500), then sent at the client's pace.
async fn backup_response(app: &App) -> Result<Response<Body>, GatewayError> {
    use http_body_util::BodyExt;
    let store = app.store.clone();
    // The data dir shares the store's disk and permissions; a store opened elsewhere (tests)
    // spools to the system's temporary directory.
    let dir = Some(app.config.server.data_dir.clone()).filter(|d| d.is_dir()).unwrap_or_else(std::env::temp_dir);
    let (mut file, _) = tokio::task::spawn_blocking(move || crate::backup::spool(&store, &dir))
        .await
        .map_err(|e| GatewayError::Internal(format!("backup task: {e}")))?
        .map_err(|e| GatewayError::Internal(e.to_string()))?;
    let (tx, rx) = tokio::sync::mpsc::channel::<bytes::Bytes>(16);
    tokio::task::spawn_blocking(move || {
        let mut chunk = vec![0u8; 256 << 10];
        loop {
            match std::io::Read::read(&mut file, &mut chunk) {
                Ok(0) => break,
                Ok(n) => {
                    if tx.blocking_send(bytes::Bytes::copy_from_slice(&chunk[..n])).is_err() {
                        break;
                    }
                }
                Err(e) => {
                    // The stream ends without its checksum trailer: restore refuses it.
                    tracing::warn!(error = %e, "backup stream ended early");
                    break;
                }
            }
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|b| (Ok::<_, std::convert::Infallible>(hyper::body::Frame::data(b)), rx)) });
    let mut response = Response::new(http_body_util::StreamBody::new(stream).boxed_unsync());
    response.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/octet-stream"));
    Ok(response)
}

/// Routes an `/admin/...` or `/api/...` request. Operator token only.
pub async fn handle(app: &Arc<App>, request: Request<Incoming>) -> Result<Response<Body>, GatewayError> {
    if !matches!(authenticate(app, &request).await?, Principal::Admin) {
        return Err(GatewayError::Forbidden("this endpoint needs the operator token".into()));
    }
    let method = request.method().clone();
    let path = request.uri().path().trim_end_matches('/').to_string();
    let query = request.uri().query().unwrap_or("").to_string();
    let parts: Vec<&str> = path.split('/').skip(1).collect();
    let limit = if parts == ["admin", "v1", "policies"] { app.policies.limits().upload_bytes } else { MAX_ADMIN_BODY_BYTES };
    let body = read_capped(request.into_body(), limit, app.config.server.body_read_timeout).await?;
    let ok = |v: serde_json::Value| Ok(json_response(StatusCode::OK, &v));
    let created = |v: serde_json::Value| Ok(json_response(StatusCode::CREATED, &v));
    match (method.clone(), parts.as_slice()) {
        (Method::POST, ["admin", "v1", "tenants"]) => {
            let tenant = app.tenants.create(new_tenant(parse(&body)?)?).await?;
            app.audit.append_tenant(OPERATOR, "tenant.create", &tenant, json!({"budget": tenant.budget, "rate_limits": tenant.rate_limits})).await?;
            created(tenant_json(&tenant))
        }
        (Method::GET, ["admin", "v1", "audit"]) => {
            let after = query_param(&query, "after").and_then(|a| a.parse().ok()).unwrap_or(0);
            let limit = query_param(&query, "limit").and_then(|l| l.parse().ok()).unwrap_or(1000usize).min(10_000);
            ok(json!({"data": app.audit.read(after, limit, query_param(&query, "tenant")).await?}))
        }
        (Method::GET, ["admin", "v1", "usage", "top"]) => top_spenders(app, &query).await,
        (Method::GET, ["admin", "v1", "audit", "verify"]) => ok(json!(app.audit.verify().await?)),
        (Method::GET, ["admin", "v1", "backup"]) => {
            app.audit.append(OPERATOR, "backup.start", "", json!({})).await?;
            backup_response(app).await
        }
        (Method::GET, ["admin", "v1", "tenants"]) => {
            let search = decoded_param(&query, "q");
            let page = app.tenants.page(query_param(&query, "after"), search.as_deref().filter(|q| !q.is_empty()), TENANTS_PER_PAGE);
            let next = (page.len() == TENANTS_PER_PAGE).then(|| page.last().map(|t| t.id.clone())).flatten();
            ok(json!({"data": page.iter().map(|t| tenant_json(t)).collect::<Vec<_>>(), "next_after": next, "total": app.tenants.len()}))
        }
        (Method::PATCH, ["admin", "v1", "tenants", id]) => {
            let current = tenant(app, id)?;
            let changes: serde_json::Value = parse(&body)?;
            let updated = update_tenant(app, &current, parse(&body)?).await?;
            let changed: Vec<&String> = changes.as_object().map(|m| m.keys().collect()).unwrap_or_default();
            app.audit.append_tenant(OPERATOR, "tenant.update", &updated, json!({"fields": changed, "budget": updated.budget})).await?;
            ok(tenant_json(&updated))
        }
        (Method::DELETE, ["admin", "v1", "tenants", id]) => {
            let (deleted, removed) = crate::tenant_lifecycle::delete(app, id).await?;
            app.audit.append_tenant(OPERATOR, "tenant.delete", &deleted, json!({"records_removed": removed})).await?;
            ok(json!({"deleted": id, "records_removed": removed}))
        }
        (_, ["admin", "v1", "tenants", id, rest @ ..]) => {
            let found = tenant(app, id)?;
            tenant_api::handle(app, OPERATOR, found, &method, rest, &query, &body).await
        }
        (Method::POST, ["admin", "v1", "policies"]) => upload_policy(app, OPERATOR, None, &body).await,
        (Method::DELETE, ["admin", "v1", "policies", hash]) => {
            let hash = tenant_api::parse_hash(hash)?;
            let deleted = crate::policy_deletion::delete_for_operator(app, hash).await?;
            app.audit.append(OPERATOR, "policy.delete", "", json!({"hash": hash.to_string(), "claims_removed": deleted.claims, "blob_removed": deleted.blob_removed})).await?;
            ok(json!({"deleted": hash.to_string(), "claims_removed": deleted.claims}))
        }
        (Method::POST, ["admin", "v1", "keys", "rotate"]) => {
            let request: RotateKeys = parse(&body)?;
            let key = match (request.new_master_key, app.vault.key_in_file()) {
                (Some(text), _) => Key::parse(&text).map_err(|e| GatewayError::bad_request("invalid_key", e.to_string()))?,
                (None, true) => Key::random(),
                (None, false) => return Err(GatewayError::bad_request("invalid_key", "the master key comes from TOLLGATE_MASTER_KEY: pass new_master_key and set it there before the next restart")),
            };
            let fingerprint = key.fingerprint();
            let rewrapped = app.vault.rotate(key).await?;
            app.audit.append(OPERATOR, "keys.rotate", "", json!({"new_key_fingerprint": fingerprint, "rewrapped_data_keys": rewrapped})).await?;
            ok(json!({"rewrapped_data_keys": rewrapped, "new_key_fingerprint": fingerprint, "key_file_updated": app.vault.key_in_file()}))
        }
        (Method::POST, ["api", "v1", "tenants"]) => {
            let (tenant, token, record) = quick_create(app, parse(&body)?).await?;
            app.audit.append_tenant(OPERATOR, "tenant.create", &tenant, json!({"via": "/api/v1/tenants", "budget": tenant.budget, "credential": "default", "token_id": record.id})).await?;
            created(json!({"tenant": tenant_json(&tenant), "token": token, "token_id": record.id}))
        }
        (Method::GET, ["api", "v1", "metering", "tenant", id]) => {
            let found = tenant(app, id)?;
            tenant_api::usage_report(app, &found, &query).await
        }
        _ => Err(GatewayError::NotFound(format!("no admin route for {method} {path}"))),
    }
}

/// Routes `/v1/tenant...` for a tenant's own `manage` token.
pub async fn self_service(app: &Arc<App>, request: Request<Incoming>) -> Result<Response<Body>, GatewayError> {
    let Principal::Tenant(tenant, token) = authenticate(app, &request).await? else {
        return Err(GatewayError::Forbidden("the self-service API takes a tenant's manage token; the operator uses /admin/v1/tenants/{id}".into()));
    };
    if token.scope != Scope::Manage {
        return Err(GatewayError::Forbidden("this token has the inference scope; managing the tenant needs a manage token".into()));
    }
    let method = request.method().clone();
    let path = request.uri().path().trim_end_matches('/').to_string();
    let query = request.uri().query().unwrap_or("").to_string();
    let parts: Vec<&str> = path.split('/').skip(3).collect();
    let limit = if parts == ["policies"] { app.policies.limits().upload_bytes } else { MAX_ADMIN_BODY_BYTES };
    let body = read_capped(request.into_body(), limit, app.config.server.body_read_timeout).await?;
    let actor = format!("tenant:{}/token:{}", tenant.id, token.id);
    match (method.clone(), parts.as_slice()) {
        (Method::POST, ["policies"]) => upload_policy(app, &actor, Some(&tenant), &body).await,
        (_, rest) => tenant_api::handle(app, &actor, tenant, &method, rest, &query, &body).await,
    }
}
