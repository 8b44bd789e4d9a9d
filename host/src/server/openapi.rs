//! `GET /openapi.json`: the OpenAPI 3.1 description of every route, assembled here and only
//! here from the request types the handlers parse (`admin.rs`, `tenant_api.rs`) and the
//! records they list (tokens, credentials, audit, ledger, sessions, policy log). Handlers
//! are arms of a match, so each route is one documented item below carrying its
//! `#[utoipa::path]`. Responses the handlers build with `json!` are described by the
//! `*View` types here, which mirror that JSON (the test suite checks real answers against
//! them).
//!
//! The per-tenant resources are declared once under `/admin/v1/tenants/{id}/...` (operator
//! token) and copied to `/v1/tenant/...` (the tenant's manage token, no id) by
//! [`document`], as the server serves both from one handler. The inbound model APIs are
//! OpenAI's and Anthropic's wire formats: their essential request fields are described and
//! the upstream reference linked from `externalDocs`.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use serde_json::{json, Value};
use utoipa::{OpenApi, ToSchema};

use super::admin::{CreateTenant, QuickTenant, RotateKeys, UpdateTenant};
use super::candidate::AssignCandidate;
use super::replay::Replay;
use super::tenant_api::{AssignPolicy, IssueToken, PutCredential};
use crate::audit::{AuditRecord, Verification};
use crate::catalog::ModelEntry;
use crate::metering::{Budget, LedgerRecord, Period};
use crate::policy::LogLine;
use crate::ratelimit::RateLimits;
use crate::sealing::CredentialMeta;
use crate::sessions::{SessionInfo, Turn};
use crate::tenants::{CandidatePolicy, PolicyAssignment};
use crate::tokens::{Scope, TokenRecord};

/// The document, built once (it depends on nothing but the code).
static DOCUMENT: LazyLock<Value> = LazyLock::new(build);

/// The OpenAPI 3.1 document served at `GET /openapi.json`.
pub fn document() -> &'static Value {
    &DOCUMENT
}

// ---- Errors ----

/// The error body of every route but the Messages ones (OpenAI's shape).
#[derive(ToSchema)]
#[allow(dead_code)]
pub(super) struct ErrorBody {
    error: ErrorDetail,
}

/// What went wrong.
#[derive(serde::Serialize, ToSchema)]
#[allow(dead_code)]
pub(super) struct ErrorDetail {
    /// For the client; internal details stay in the gateway's logs.
    message: String,
    /// OpenAI's error type, e.g. `invalid_request_error`, `authentication_error`.
    #[serde(rename = "type")]
    kind: String,
    /// Always `null`.
    param: Option<String>,
    /// Machine-readable code, e.g. `invalid_json`, `budget_exceeded` (see the README's
    /// Errors table).
    code: String,
}

/// The error body of `/v1/messages` and `/v1/messages/count_tokens` (Anthropic's shape).
#[derive(serde::Serialize, ToSchema)]
#[allow(dead_code)]
pub(super) struct AnthropicErrorBody {
    /// Always `error`.
    #[serde(rename = "type")]
    kind: String,
    error: AnthropicErrorDetail,
}

/// What went wrong, Anthropic's way.
#[derive(serde::Serialize, ToSchema)]
#[allow(dead_code)]
pub(super) struct AnthropicErrorDetail {
    /// From the status: `invalid_request_error`, `authentication_error`, ...
    #[serde(rename = "type")]
    kind: String,
    /// For the client.
    message: String,
}

// ---- Operations ----

/// `GET /healthz`.
#[derive(ToSchema)]
#[allow(dead_code)]
pub(super) struct HealthView {
    /// Always `ok`.
    status: String,
}

/// The documentation items: one function per route, never called.
#[allow(dead_code)]
mod routes {
    use super::*;

    /// Liveness.
    #[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200, description = "The gateway is serving", body = HealthView)))]
    fn healthz() {}

    /// Prometheus metrics (labels never include tenants).
    #[utoipa::path(get, path = "/metrics", tag = "operations", responses((status = 200, description = "Prometheus text format 0.0.4", content_type = "text/plain; version=0.0.4", body = String)))]
    fn metrics() {}

    /// This document.
    #[utoipa::path(get, path = "/openapi.json", tag = "operations", responses((status = 200, description = "The OpenAPI 3.1 description of every route", body = Object)))]
    fn openapi_json() {}

    /// The web console (`/console` redirects here); its files are under `/console/...`.
    #[utoipa::path(get, path = "/console/", tag = "operations", responses((status = 200, description = "The console's page (HTML, under a strict Content-Security-Policy)", content_type = "text/html", body = String)))]
    fn console() {}

    // ---- Inbound model APIs ----

    /// OpenAI Chat Completions, plain or SSE (`stream: true`).
    #[utoipa::path(post, path = "/v1/chat/completions", tag = "models", request_body = ChatCompletionRequest,
        responses((status = 200, description = "A chat completion, or with `stream: true` its chunks as server-sent events", content(
            (Object = "application/json"), (String = "text/event-stream")))),
        security(("tenant_token" = [])))]
    fn chat_completions() {}

    /// OpenAI embeddings.
    #[utoipa::path(post, path = "/v1/embeddings", tag = "models", request_body = EmbeddingsRequest,
        responses((status = 200, description = "`{object: list, data: [{object: embedding, index, embedding}], model, usage}`", body = Object)),
        security(("tenant_token" = [])))]
    fn embeddings() {}

    /// Anthropic Messages, plain or SSE (`stream: true`).
    #[utoipa::path(post, path = "/v1/messages", tag = "models", request_body = MessagesRequest,
        responses((status = 200, description = "An Anthropic message, or with `stream: true` its events", content(
            (Object = "application/json"), (String = "text/event-stream")))),
        security(("api_key" = []), ("tenant_token" = [])))]
    fn messages() {}

    /// The prompt estimate the gateway reserves budget by; no upstream call, nothing billed.
    #[utoipa::path(post, path = "/v1/messages/count_tokens", tag = "models", request_body = CountTokensRequest,
        responses((status = 200, description = "The estimate", body = CountTokensView)),
        security(("api_key" = []), ("tenant_token" = [])))]
    fn count_tokens() {}

    /// OpenAI Responses, plain or typed SSE events (`stream: true`).
    #[utoipa::path(post, path = "/v1/responses", tag = "models", request_body = ResponsesRequest,
        responses((status = 200, description = "A response object, or with `stream: true` its typed events", content(
            (Object = "application/json"), (String = "text/event-stream")))),
        security(("tenant_token" = [])))]
    fn responses() {}

    /// Deletes a stored response (it can no longer be a `previous_response_id`).
    #[utoipa::path(delete, path = "/v1/responses/{id}", tag = "models", params(("id" = String, Path, description = "The response id")),
        responses((status = 200, description = "Deleted", body = ResponseDeletedView)),
        security(("tenant_token" = [])))]
    fn delete_response() {}

    /// The models this tenant can be served.
    #[utoipa::path(get, path = "/v1/models", tag = "models",
        responses((status = 200, description = "OpenAI's model list", body = ModelListView)),
        security(("tenant_token" = [])))]
    fn models() {}

    // ---- Operator ----

    /// Creates a tenant.
    #[utoipa::path(post, path = "/admin/v1/tenants", tag = "operator", request_body = CreateTenant,
        responses((status = 201, description = "Created", body = TenantView)), security(("operator_token" = [])))]
    fn create_tenant() {}

    /// Lists tenants, 100 a page.
    #[utoipa::path(get, path = "/admin/v1/tenants", tag = "operator",
        params(("after" = Option<String>, Query, description = "The last id of the previous page"),
               ("q" = Option<String>, Query, description = "Only tenants whose id or display name contains this (case-insensitive)")),
        responses((status = 200, description = "A page", body = TenantPageView)), security(("operator_token" = [])))]
    fn list_tenants() {}

    /// The tenants that spent most over a day range.
    #[utoipa::path(get, path = "/admin/v1/usage/top", tag = "operator",
        params(("start" = Option<String>, Query, description = "First UTC day, YYYY-MM-DD (default: the month's first)"),
               ("end" = Option<String>, Query, description = "Last UTC day, inclusive (default: today)"),
               ("limit" = Option<u32>, Query, description = "At most this many (default 10, at most 100)")),
        responses((status = 200, description = "Most spent first", body = TopSpendersView)), security(("operator_token" = [])))]
    fn top_spenders() {}

    /// Updates a tenant: fields present change; `null` removes a budget.
    #[utoipa::path(patch, path = "/admin/v1/tenants/{id}", tag = "operator", params(("id" = String, Path, description = "Tenant id")),
        request_body = UpdateTenant, responses((status = 200, description = "The updated tenant", body = TenantView)), security(("operator_token" = [])))]
    fn update_tenant() {}

    /// Deletes a tenant: every record and its data key.
    #[utoipa::path(delete, path = "/admin/v1/tenants/{id}", tag = "operator", params(("id" = String, Path, description = "Tenant id")),
        responses((status = 200, description = "Deleted", body = TenantDeletedView)), security(("operator_token" = [])))]
    fn delete_tenant() {}

    /// The gateway's audit trail.
    #[utoipa::path(get, path = "/admin/v1/audit", tag = "operator",
        params(("after" = Option<u64>, Query, description = "Records after this sequence number"),
               ("limit" = Option<u32>, Query, description = "At most this many (default 1000, at most 10000)"),
               ("tenant" = Option<String>, Query, description = "Only this tenant's records")),
        responses((status = 200, description = "Records", body = AuditPageView)), security(("operator_token" = [])))]
    fn audit() {}

    /// Verifies the audit trail's hash chain.
    #[utoipa::path(get, path = "/admin/v1/audit/verify", tag = "operator",
        responses((status = 200, description = "The verification", body = Verification)), security(("operator_token" = [])))]
    fn audit_verify() {}

    /// A backup of the live store, streamed.
    #[utoipa::path(get, path = "/admin/v1/backup", tag = "operator",
        responses((status = 200, description = "The backup stream (restore with `tollgate restore`)", content_type = "application/octet-stream", body = Vec<u8>)),
        security(("operator_token" = [])))]
    fn backup() {}

    /// Uploads a policy component (the operator's: no quota).
    #[utoipa::path(post, path = "/admin/v1/policies", tag = "operator",
        request_body(content = Vec<u8>, content_type = "application/wasm", description = "The policy component's bytes"),
        responses((status = 201, description = "Uploaded", body = UploadedView)), security(("operator_token" = [])))]
    fn upload_policy() {}

    /// Removes a policy and every tenant's upload of it (409 `policy_assigned` while assigned).
    #[utoipa::path(delete, path = "/admin/v1/policies/{hash}", tag = "operator", params(("hash" = String, Path, description = "blake3 hash, 64 hex digits")),
        responses((status = 200, description = "Deleted", body = PolicyDeletedView)), security(("operator_token" = [])))]
    fn delete_policy() {}

    /// Re-wraps every data key under a new master key, online.
    #[utoipa::path(post, path = "/admin/v1/keys/rotate", tag = "operator", request_body = RotateKeys,
        responses((status = 200, description = "Rotated", body = RotatedView)), security(("operator_token" = [])))]
    fn rotate_keys() {}

    /// The original request's shape: tenant, credential, policy and first token at once.
    #[utoipa::path(post, path = "/api/v1/tenants", tag = "operator", request_body = QuickTenant,
        responses((status = 201, description = "Created", body = QuickCreatedView)), security(("operator_token" = [])))]
    fn quick_tenant() {}

    /// A tenant's usage for a day range (the same options as `.../usage`).
    #[utoipa::path(get, path = "/api/v1/metering/tenant/{id}", tag = "operator",
        params(("id" = String, Path, description = "Tenant id"), UsageQuery),
        responses((status = 200, description = "Usage", content((UsageView = "application/json"), (String = "text/csv")))),
        security(("operator_token" = [])))]
    fn metering() {}

    // ---- One tenant's resources (copied to /v1/tenant/... by `document`) ----

    /// Shows the tenant.
    #[utoipa::path(get, path = "/admin/v1/tenants/{id}", tag = "tenant", params(("id" = String, Path, description = "Tenant id")),
        responses((status = 200, description = "The tenant", body = TenantView)), security(("operator_token" = [])))]
    fn tenant() {}

    /// Issues a token (shown once; stored as its blake3 hash).
    #[utoipa::path(post, path = "/admin/v1/tenants/{id}/tokens", tag = "tenant", params(("id" = String, Path, description = "Tenant id")),
        request_body = IssueToken, responses((status = 201, description = "Issued", body = IssuedTokenView)), security(("operator_token" = [])))]
    fn issue_token() {}

    /// Lists tokens (never the tokens themselves).
    #[utoipa::path(get, path = "/admin/v1/tenants/{id}/tokens", tag = "tenant", params(("id" = String, Path, description = "Tenant id")),
        responses((status = 200, description = "Tokens", body = TokenListView)), security(("operator_token" = [])))]
    fn list_tokens() {}

    /// Revokes a token.
    #[utoipa::path(delete, path = "/admin/v1/tenants/{id}/tokens/{token_id}", tag = "tenant",
        params(("id" = String, Path, description = "Tenant id"), ("token_id" = String, Path, description = "The token's short id")),
        responses((status = 200, description = "Revoked", body = RevokedView)), security(("operator_token" = [])))]
    fn revoke_token() {}

    /// Stores a provider credential, sealed at once.
    #[utoipa::path(put, path = "/admin/v1/tenants/{id}/credentials/{name}", tag = "tenant",
        params(("id" = String, Path, description = "Tenant id"), ("name" = String, Path, description = "1 to 64 letters, digits, '-' or '_'")),
        request_body = PutCredential, responses((status = 200, description = "Stored", body = CredentialMeta)), security(("operator_token" = [])))]
    fn put_credential() {}

    /// Lists credentials (never the secrets).
    #[utoipa::path(get, path = "/admin/v1/tenants/{id}/credentials", tag = "tenant", params(("id" = String, Path, description = "Tenant id")),
        responses((status = 200, description = "Credentials", body = CredentialListView)), security(("operator_token" = [])))]
    fn list_credentials() {}

    /// Deletes a credential.
    #[utoipa::path(delete, path = "/admin/v1/tenants/{id}/credentials/{name}", tag = "tenant",
        params(("id" = String, Path, description = "Tenant id"), ("name" = String, Path, description = "Credential name")),
        responses((status = 200, description = "Deleted", body = DeletedView)), security(("operator_token" = [])))]
    fn delete_credential() {}

    /// The current, previous and default policy.
    #[utoipa::path(get, path = "/admin/v1/tenants/{id}/policy", tag = "tenant", params(("id" = String, Path, description = "Tenant id")),
        responses((status = 200, description = "The assignment", body = PolicyView)), security(("operator_token" = [])))]
    fn policy() {}

    /// Assigns an uploaded policy, keeping the previous one for rollback.
    #[utoipa::path(put, path = "/admin/v1/tenants/{id}/policy", tag = "tenant", params(("id" = String, Path, description = "Tenant id")),
        request_body = AssignPolicy, responses((status = 200, description = "The updated tenant", body = TenantView)), security(("operator_token" = [])))]
    fn assign_policy() {}

    /// Swaps the current and previous policy assignments.
    #[utoipa::path(post, path = "/admin/v1/tenants/{id}/policy/rollback", tag = "tenant", params(("id" = String, Path, description = "Tenant id")),
        responses((status = 200, description = "The updated tenant", body = TenantView)), security(("operator_token" = [])))]
    fn roll_back_policy() {}

    /// Replays an uploaded policy against the tenant's recorded requests (dry runs) and
    /// reports where it decides differently from what was served.
    #[utoipa::path(post, path = "/admin/v1/tenants/{id}/policy/replay", tag = "tenant", params(("id" = String, Path, description = "Tenant id")),
        request_body = Replay, responses((status = 200, description = "The report", body = ReplayView)), security(("operator_token" = [])))]
    fn replay() {}

    /// The candidate policy and how its decisions compared with the acting ones.
    #[utoipa::path(get, path = "/admin/v1/tenants/{id}/policy/candidate", tag = "tenant", params(("id" = String, Path, description = "Tenant id")),
        responses((status = 200, description = "The candidate and its comparisons", body = CandidateView)), security(("operator_token" = [])))]
    fn candidate() {}

    /// Sets the candidate policy: `shadow` (compared, never acted on) or `canary` (decides
    /// `percent` of requests).
    #[utoipa::path(put, path = "/admin/v1/tenants/{id}/policy/candidate", tag = "tenant", params(("id" = String, Path, description = "Tenant id")),
        request_body = AssignCandidate, responses((status = 200, description = "The updated tenant", body = TenantView)), security(("operator_token" = [])))]
    fn assign_candidate() {}

    /// Makes the candidate the policy; the current one becomes the previous (for rollback).
    #[utoipa::path(post, path = "/admin/v1/tenants/{id}/policy/candidate/promote", tag = "tenant", params(("id" = String, Path, description = "Tenant id")),
        responses((status = 200, description = "The updated tenant", body = TenantView)), security(("operator_token" = [])))]
    fn promote_candidate() {}

    /// Drops the candidate policy.
    #[utoipa::path(delete, path = "/admin/v1/tenants/{id}/policy/candidate", tag = "tenant", params(("id" = String, Path, description = "Tenant id")),
        responses((status = 200, description = "The updated tenant", body = TenantView)), security(("operator_token" = [])))]
    fn drop_candidate() {}

    /// What the tenant's policy logged.
    #[utoipa::path(get, path = "/admin/v1/tenants/{id}/policy/log", tag = "tenant", params(("id" = String, Path, description = "Tenant id")),
        responses((status = 200, description = "Log lines", body = PolicyLogView)), security(("operator_token" = [])))]
    fn policy_log() {}

    /// The tenant's own policy uploads and its quota.
    #[utoipa::path(get, path = "/admin/v1/tenants/{id}/policies", tag = "tenant", params(("id" = String, Path, description = "Tenant id")),
        responses((status = 200, description = "Uploads", body = UploadedPoliciesView)), security(("operator_token" = [])))]
    fn list_policies() {}

    /// Deletes one of the tenant's uploads (409 `policy_assigned` for its current policy).
    #[utoipa::path(delete, path = "/admin/v1/tenants/{id}/policies/{hash}", tag = "tenant",
        params(("id" = String, Path, description = "Tenant id"), ("hash" = String, Path, description = "blake3 hash, 64 hex digits")),
        responses((status = 200, description = "Deleted", body = DeletedView)), security(("operator_token" = [])))]
    fn delete_tenant_policy() {}

    /// The tenant's own audit trail.
    #[utoipa::path(get, path = "/admin/v1/tenants/{id}/audit", tag = "tenant",
        params(("id" = String, Path, description = "Tenant id"), ("after" = Option<u64>, Query, description = "Records after this sequence number")),
        responses((status = 200, description = "Records", body = AuditPageView)), security(("operator_token" = [])))]
    fn tenant_audit() {}

    /// Usage over a day range, totals or grouped, JSON or CSV.
    #[utoipa::path(get, path = "/admin/v1/tenants/{id}/usage", tag = "tenant", params(("id" = String, Path, description = "Tenant id"), UsageQuery),
        responses((status = 200, description = "Usage", content((UsageView = "application/json"), (String = "text/csv")))),
        security(("operator_token" = [])))]
    fn usage() {}

    /// Spend per day over a day range, one series per model or provider (every day of
    /// the range present, zero where nothing was spent).
    #[utoipa::path(get, path = "/admin/v1/tenants/{id}/usage/daily", tag = "tenant",
        params(("id" = String, Path, description = "Tenant id"),
               ("start" = Option<String>, Query, description = "First UTC day, YYYY-MM-DD (default: the month's first)"),
               ("end" = Option<String>, Query, description = "Last UTC day, inclusive (default: today; at most 367 days)"),
               ("group_by" = Option<String>, Query, description = "`model` (default) or `provider`")),
        responses((status = 200, description = "Daily series", body = DailyUsageView)), security(("operator_token" = [])))]
    fn daily_usage() {}

    /// Ledger records over a day range.
    #[utoipa::path(get, path = "/admin/v1/tenants/{id}/usage/records", tag = "tenant",
        params(("id" = String, Path, description = "Tenant id"),
               ("start" = Option<String>, Query, description = "First UTC day, YYYY-MM-DD (default: the month's first)"),
               ("end" = Option<String>, Query, description = "Last UTC day, inclusive (default: today)"),
               ("limit" = Option<u32>, Query, description = "At most this many (default 1000, at most 10000)")),
        responses((status = 200, description = "Records", body = LedgerPageView)), security(("operator_token" = [])))]
    fn usage_records() {}

    /// The budget's current period.
    #[utoipa::path(get, path = "/admin/v1/tenants/{id}/budget", tag = "tenant", params(("id" = String, Path, description = "Tenant id")),
        responses((status = 200, description = "Budget status", body = BudgetView)), security(("operator_token" = [])))]
    fn budget() {}

    /// Lists sessions.
    #[utoipa::path(get, path = "/admin/v1/tenants/{id}/sessions", tag = "tenant", params(("id" = String, Path, description = "Tenant id")),
        responses((status = 200, description = "Sessions", body = SessionListView)), security(("operator_token" = [])))]
    fn list_sessions() {}

    /// One session's turns.
    #[utoipa::path(get, path = "/admin/v1/tenants/{id}/sessions/{session}", tag = "tenant",
        params(("id" = String, Path, description = "Tenant id"), ("session" = String, Path, description = "Session id")),
        responses((status = 200, description = "The session", body = SessionView)), security(("operator_token" = [])))]
    fn session() {}

    /// Deletes a session.
    #[utoipa::path(delete, path = "/admin/v1/tenants/{id}/sessions/{session}", tag = "tenant",
        params(("id" = String, Path, description = "Tenant id"), ("session" = String, Path, description = "Session id")),
        responses((status = 200, description = "Deleted", body = DeletedView)), security(("operator_token" = [])))]
    fn delete_session() {}

    /// The policy's memory.
    #[utoipa::path(get, path = "/admin/v1/tenants/{id}/memory", tag = "tenant", params(("id" = String, Path, description = "Tenant id")),
        responses((status = 200, description = "Entries and quota", body = MemoryView)), security(("operator_token" = [])))]
    fn memory() {}

    /// Deletes one memory key.
    #[utoipa::path(delete, path = "/admin/v1/tenants/{id}/memory/{key}", tag = "tenant",
        params(("id" = String, Path, description = "Tenant id"), ("key" = String, Path, description = "Memory key")),
        responses((status = 200, description = "Deleted", body = DeletedView)), security(("operator_token" = [])))]
    fn delete_memory() {}

    // ---- Self-service only ----

    /// Uploads a policy component, within the tenant's upload quota.
    #[utoipa::path(post, path = "/v1/tenant/policies", tag = "tenant",
        request_body(content = Vec<u8>, content_type = "application/wasm", description = "The policy component's bytes"),
        responses((status = 201, description = "Uploaded", body = UploadedView)), security(("tenant_manage_token" = [])))]
    fn tenant_upload_policy() {}
}

// ---- Inbound model API requests (essential fields; the rest pass through) ----

/// OpenAI's Chat Completions request; fields not listed are passed on.
#[derive(ToSchema)]
#[allow(dead_code)]
pub(super) struct ChatCompletionRequest {
    /// Routed by the tenant's policy; absent means the tenant's default model.
    model: Option<String>,
    /// 1 or more messages, each `{role: system|developer|user|assistant|tool, content, ...}`.
    messages: Vec<Value>,
    /// Answer as server-sent events.
    stream: Option<bool>,
    max_tokens: Option<u32>,
    temperature: Option<f64>,
    /// Sessions: the gateway keeps history under this id (or `X-Session-ID`).
    session_id: Option<String>,
}

/// OpenAI's embeddings request.
#[derive(ToSchema)]
#[allow(dead_code)]
pub(super) struct EmbeddingsRequest {
    model: Option<String>,
    /// A string or an array of up to 2,048 non-empty strings (not token ids).
    input: Value,
    /// 1 to 4,096.
    dimensions: Option<u32>,
    /// `float` (default) or `base64`.
    encoding_format: Option<String>,
    user: Option<String>,
}

/// Anthropic's Messages request; fields not listed are passed on or ignored (see README).
#[derive(ToSchema)]
#[allow(dead_code)]
pub(super) struct MessagesRequest {
    model: Option<String>,
    /// `user` and `assistant` turns, content a string or blocks.
    messages: Vec<Value>,
    /// Required, as in Anthropic's API.
    max_tokens: u32,
    /// A string or text blocks.
    system: Option<Value>,
    stream: Option<bool>,
    tools: Option<Vec<Value>>,
}

/// `POST /v1/messages/count_tokens`: a Messages body without `max_tokens`.
#[derive(ToSchema)]
#[allow(dead_code)]
pub(super) struct CountTokensRequest {
    model: Option<String>,
    messages: Vec<Value>,
    system: Option<Value>,
    tools: Option<Vec<Value>>,
}

/// The token estimate.
#[derive(ToSchema)]
#[allow(dead_code)]
pub(super) struct CountTokensView {
    input_tokens: u64,
}

/// OpenAI's Responses request.
#[derive(ToSchema)]
#[allow(dead_code)]
pub(super) struct ResponsesRequest {
    model: Option<String>,
    /// A string, or a non-empty array of input items.
    input: Value,
    /// A leading system message.
    instructions: Option<String>,
    /// Continue a stored response.
    previous_response_id: Option<String>,
    max_output_tokens: Option<u32>,
    stream: Option<bool>,
    tools: Option<Vec<Value>>,
}

/// `DELETE /v1/responses/{id}`.
#[derive(ToSchema)]
#[allow(dead_code)]
pub(super) struct ResponseDeletedView {
    id: String,
    /// `response.deleted`.
    object: String,
    deleted: bool,
}

/// `GET /v1/models`.
#[derive(ToSchema)]
#[allow(dead_code)]
pub(super) struct ModelListView {
    /// `list`.
    object: String,
    data: Vec<ModelView>,
}

/// One model.
#[derive(ToSchema)]
#[allow(dead_code)]
pub(super) struct ModelView {
    /// `provider/model`.
    id: String,
    /// `model`.
    object: String,
    /// Always 0.
    created: u64,
    /// The provider.
    owned_by: String,
}

// ---- Management responses (mirroring the handlers' JSON) ----

/// A tenant (`tenant_api::tenant_json`).
#[derive(ToSchema)]
#[allow(dead_code)]
pub(super) struct TenantView {
    id: String,
    display_name: String,
    budget: Option<Budget>,
    policy: Option<PolicyAssignment>,
    previous_policy: Option<PolicyAssignment>,
    /// Present while the tenant tries a candidate policy.
    candidate_policy: Option<CandidatePolicy>,
    allow_request_keys: bool,
    rate_limits: RateLimits,
    user_budget_microdollars: Option<u64>,
    tag_budgets_microdollars: BTreeMap<String, u64>,
    price_overrides: Vec<ModelEntry>,
    /// Milliseconds since the Unix epoch.
    created_millis: u64,
}

/// `GET /admin/v1/tenants`.
#[derive(ToSchema)]
#[allow(dead_code)]
pub(super) struct TenantPageView {
    data: Vec<TenantView>,
    /// Pass as `after` for the next page; `null` on the last.
    next_after: Option<String>,
    /// Tenants in all.
    total: u64,
}

/// `DELETE /admin/v1/tenants/{id}`.
#[derive(ToSchema)]
#[allow(dead_code)]
pub(super) struct TenantDeletedView {
    deleted: String,
    records_removed: u64,
}

/// A deleted resource's name.
#[derive(ToSchema)]
#[allow(dead_code)]
pub(super) struct DeletedView {
    deleted: String,
}

/// A revoked token's id.
#[derive(ToSchema)]
#[allow(dead_code)]
pub(super) struct RevokedView {
    revoked: String,
}

/// Audit records.
#[derive(ToSchema)]
#[allow(dead_code)]
pub(super) struct AuditPageView {
    data: Vec<AuditRecord>,
}

/// An uploaded policy's hash.
#[derive(ToSchema)]
#[allow(dead_code)]
pub(super) struct UploadedView {
    /// blake3, 64 hex digits.
    hash: String,
}

/// `DELETE /admin/v1/policies/{hash}`.
#[derive(ToSchema)]
#[allow(dead_code)]
pub(super) struct PolicyDeletedView {
    deleted: String,
    /// Tenants' uploads of it removed.
    claims_removed: u64,
}

/// `POST /admin/v1/keys/rotate`.
#[derive(ToSchema)]
#[allow(dead_code)]
pub(super) struct RotatedView {
    rewrapped_data_keys: u64,
    new_key_fingerprint: String,
    /// Whether the key file in the data dir now holds the new key.
    key_file_updated: bool,
}

/// `POST /api/v1/tenants`.
#[derive(ToSchema)]
#[allow(dead_code)]
pub(super) struct QuickCreatedView {
    tenant: TenantView,
    /// The inference token, shown once.
    token: String,
    token_id: String,
}

/// A token just issued.
#[derive(ToSchema)]
#[allow(dead_code)]
pub(super) struct IssuedTokenView {
    /// The token, shown once.
    token: String,
    id: String,
    scope: Scope,
    tenant_id: String,
}

/// Tokens.
#[derive(ToSchema)]
#[allow(dead_code)]
pub(super) struct TokenListView {
    data: Vec<TokenRecord>,
}

/// Credentials.
#[derive(ToSchema)]
#[allow(dead_code)]
pub(super) struct CredentialListView {
    data: Vec<CredentialMeta>,
}

/// A tenant's policy assignment.
#[derive(ToSchema)]
#[allow(dead_code)]
pub(super) struct PolicyView {
    policy: Option<PolicyAssignment>,
    previous_policy: Option<PolicyAssignment>,
    candidate_policy: Option<CandidatePolicy>,
    /// The stock default policy's hash.
    default_policy: String,
}

/// A tenant's candidate policy and how its decisions compared (over the policy log's
/// kept lines; each comparison is a `compare` line whose message is the JSON in `recent`).
#[derive(ToSchema)]
#[allow(dead_code)]
pub(super) struct CandidateView {
    candidate: Option<CandidatePolicy>,
    comparisons: ComparisonsView,
    /// The newest comparisons, newest first: `{mode, request_id, acting: {policy, decision}, beside: {policy, decision}, same}`,
    /// or for a canary that failed `{mode, request_id, canary: {policy, decision}, fallback}`.
    recent: Vec<Value>,
}

/// A replay's report.
#[derive(ToSchema)]
#[allow(dead_code)]
pub(super) struct ReplayView {
    /// The policy replayed.
    policy: String,
    /// Recorded requests replayed (the newest, at most `limit`).
    replayed: u64,
    same: u64,
    different: u64,
    /// Replayed calls that failed (a trap, a timeout); counted in `different`.
    failed: u64,
    /// The first 100 differences: `{request_id, unix_millis, model, served: {policy, decision}, replayed}`.
    differences: Vec<Value>,
}

/// Counts of comparisons.
#[derive(ToSchema)]
#[allow(dead_code)]
pub(super) struct ComparisonsView {
    compared: u64,
    same: u64,
    different: u64,
    /// Comparisons where the policy beside failed (a trap, a timeout, skipped for its CPU share).
    beside_failed: u64,
    /// Requests a failing canary handed to the live policy.
    canary_failed: u64,
}

/// Policy log lines.
#[derive(ToSchema)]
#[allow(dead_code)]
pub(super) struct PolicyLogView {
    data: Vec<LogLine>,
}

/// One upload.
#[derive(ToSchema)]
#[allow(dead_code)]
pub(super) struct UploadedPolicyView {
    hash: String,
    bytes: u64,
    uploaded_millis: u64,
    /// Whether it is the tenant's current policy.
    assigned: bool,
}

/// The tenant's uploads and quota.
#[derive(ToSchema)]
#[allow(dead_code)]
pub(super) struct UploadedPoliciesView {
    data: Vec<UploadedPolicyView>,
    used_uploads: u64,
    used_bytes: u64,
    max_uploads: u64,
    max_bytes: u64,
}

/// Query of the usage reports.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub(super) struct UsageQuery {
    /// First UTC day, YYYY-MM-DD (default: the month's first).
    start: Option<String>,
    /// Last UTC day, inclusive (default: today).
    end: Option<String>,
    /// `model`, `provider`, `day`, `user` or `tag`.
    group_by: Option<String>,
    /// `csv` for CSV.
    format: Option<String>,
}

/// Usage totals, with `rows` when grouped.
#[derive(ToSchema)]
#[allow(dead_code)]
pub(super) struct UsageView {
    tenant_id: String,
    start: String,
    end: String,
    requests: u64,
    prompt_tokens: u64,
    completion_tokens: u64,
    cached_tokens: u64,
    cost_microdollars: u64,
    cost_usd: f64,
    /// Present when grouped.
    group_by: Option<String>,
    /// Present when grouped.
    rows: Option<Vec<UsageRowView>>,
}

/// One group's usage.
#[derive(ToSchema)]
#[allow(dead_code)]
pub(super) struct UsageRowView {
    key: String,
    requests: u64,
    prompt_tokens: u64,
    completion_tokens: u64,
    cached_tokens: u64,
    cost_microdollars: u64,
    cost_usd: f64,
}

/// Spend per day, one series per model or provider.
#[derive(ToSchema)]
#[allow(dead_code)]
pub(super) struct DailyUsageView {
    tenant_id: String,
    start: String,
    end: String,
    /// `model` or `provider`.
    group_by: String,
    /// Every UTC day of the range, in order.
    days: Vec<String>,
    series: Vec<DailySeriesView>,
}

/// One model's (or provider's) figures, one entry per day of `days`.
#[derive(ToSchema)]
#[allow(dead_code)]
pub(super) struct DailySeriesView {
    key: String,
    cost_microdollars: Vec<u64>,
    requests: Vec<u64>,
}

/// The top spenders of a day range.
#[derive(ToSchema)]
#[allow(dead_code)]
pub(super) struct TopSpendersView {
    start: String,
    end: String,
    data: Vec<TopSpenderView>,
}

/// One tenant's spend.
#[derive(ToSchema)]
#[allow(dead_code)]
pub(super) struct TopSpenderView {
    tenant_id: String,
    display_name: String,
    cost_microdollars: u64,
    requests: u64,
}

/// Ledger records.
#[derive(ToSchema)]
#[allow(dead_code)]
pub(super) struct LedgerPageView {
    data: Vec<LedgerRecord>,
}

/// The budget's current period.
#[derive(ToSchema)]
#[allow(dead_code)]
pub(super) struct BudgetView {
    period: Period,
    /// E.g. `2026-11` or `2026-11-30`.
    period_id: String,
    /// `null` when the tenant has no budget.
    limit_microdollars: Option<u64>,
    spent_microdollars: u64,
    reserved_microdollars: u64,
}

/// Sessions.
#[derive(ToSchema)]
#[allow(dead_code)]
pub(super) struct SessionListView {
    data: Vec<SessionInfo>,
}

/// One session.
#[derive(ToSchema)]
#[allow(dead_code)]
pub(super) struct SessionView {
    id: String,
    turns: Vec<Turn>,
}

/// The policy's memory.
#[derive(ToSchema)]
#[allow(dead_code)]
pub(super) struct MemoryView {
    data: Vec<MemoryEntryView>,
    used_bytes: u64,
    quota_bytes: u64,
}

/// One memory entry.
#[derive(ToSchema)]
#[allow(dead_code)]
pub(super) struct MemoryEntryView {
    key: String,
    /// The value as text (lossy UTF-8).
    value: String,
    bytes: u64,
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Tollgate", description = "Multi-tenant LLM gateway: OpenAI- and Anthropic-compatible model APIs, the operator API and the tenant self-service API."),
    paths(
        routes::healthz, routes::metrics, routes::openapi_json, routes::console,
        routes::chat_completions, routes::embeddings, routes::messages, routes::count_tokens, routes::responses, routes::delete_response, routes::models,
        routes::create_tenant, routes::list_tenants, routes::top_spenders, routes::update_tenant, routes::delete_tenant, routes::audit, routes::audit_verify, routes::backup,
        routes::upload_policy, routes::delete_policy, routes::rotate_keys, routes::quick_tenant, routes::metering,
        routes::tenant, routes::issue_token, routes::list_tokens, routes::revoke_token, routes::put_credential, routes::list_credentials,
        routes::delete_credential, routes::policy, routes::assign_policy, routes::roll_back_policy, routes::replay, routes::candidate, routes::assign_candidate, routes::promote_candidate, routes::drop_candidate, routes::policy_log, routes::list_policies,
        routes::delete_tenant_policy, routes::tenant_audit, routes::usage, routes::daily_usage, routes::usage_records, routes::budget, routes::list_sessions,
        routes::session, routes::delete_session, routes::memory, routes::delete_memory,
        routes::tenant_upload_policy,
    ),
    components(schemas(ErrorBody, AnthropicErrorBody)),
    tags(
        (name = "models", description = "OpenAI- and Anthropic-compatible model APIs (a tenant token)"),
        (name = "operator", description = "The operator API (the operator token)"),
        (name = "tenant", description = "One tenant's resources: under `/admin/v1/tenants/{id}` for the operator, under `/v1/tenant` for the tenant's own manage token"),
        (name = "operations", description = "Health, metrics and this description (no token)"),
    ),
)]
struct ApiDoc;

/// Where the upstream wire formats are specified.
const EXTERNAL_DOCS: &[(&str, &str)] = &[
    ("/v1/chat/completions", "https://platform.openai.com/docs/api-reference/chat/create"),
    ("/v1/embeddings", "https://platform.openai.com/docs/api-reference/embeddings/create"),
    ("/v1/messages", "https://docs.anthropic.com/en/api/messages"),
    ("/v1/messages/count_tokens", "https://docs.anthropic.com/en/api/messages-count-tokens"),
    ("/v1/responses", "https://platform.openai.com/docs/api-reference/responses/create"),
    ("/v1/responses/{id}", "https://platform.openai.com/docs/api-reference/responses/delete"),
    ("/v1/models", "https://platform.openai.com/docs/api-reference/models/list"),
];

/// Headers the model APIs read (see the README's API section).
const MODEL_HEADERS: &[(&str, &str)] = &[
    ("X-Tenant-ID", "Must name the token's tenant when present"),
    ("X-Session-ID", "Keep the conversation's history under this id"),
    ("X-Session-History", "`true`: prepend the session's stored history"),
    ("X-Provider-API-Key", "The provider key for this request only (tenants created with `allow_request_keys`); never stored or logged"),
];

/// The statuses every authenticated route may answer besides its own.
const ERRORS: &[(&str, &str)] = &[
    ("400", "Malformed request (`invalid_json`, a missing or invalid field)"),
    ("401", "Missing or unknown token (`invalid_api_key`)"),
    ("403", "The token may not do this (`permission_denied`)"),
    ("404", "No such resource (`not_found`)"),
    ("413", "Body larger than the cap (`request_too_large`)"),
    ("429", "A rate limit was hit (`rate_limit_exceeded`, with `Retry-After`)"),
    ("500", "Internal error (`internal_error`); details are in the gateway's logs"),
];

/// The utoipa document, completed with what its macros do not express: security schemes,
/// the error responses, `externalDocs`, and the `/v1/tenant/...` copies.
fn build() -> Value {
    let mut doc = serde_json::to_value(ApiDoc::openapi()).unwrap_or_else(|_| json!({}));
    doc["components"]["securitySchemes"] = json!({
        "operator_token": {"type": "http", "scheme": "bearer", "description": "The operator token (`TOLLGATE_ADMIN_TOKEN`)."},
        "tenant_token": {"type": "http", "scheme": "bearer", "description": "A tenant token (`tg_...`), inference or manage scope."},
        "tenant_manage_token": {"type": "http", "scheme": "bearer", "description": "A tenant token of the `manage` scope."},
        "api_key": {"type": "apiKey", "in": "header", "name": "x-api-key", "description": "A tenant token, as Anthropic's SDKs send it."},
    });
    let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) else {
        return doc;
    };
    // The tenant's own copy of each per-tenant resource.
    let copies: Vec<(String, Value)> = paths
        .iter()
        .filter_map(|(path, item)| {
            let rest = path.strip_prefix("/admin/v1/tenants/{id}")?;
            let mut item = item.clone();
            let operations = item.as_object_mut()?;
            operations.retain(|method, op| op["tags"][0] == "tenant" && method != "parameters");
            for (_, op) in operations.iter_mut() {
                if let Some(params) = op.get_mut("parameters").and_then(Value::as_array_mut) {
                    params.retain(|p| p["name"] != "id");
                }
                op["security"] = json!([{"tenant_manage_token": []}]);
                if let Some(id) = op.get("operationId").and_then(Value::as_str) {
                    op["operationId"] = json!(format!("self_{id}"));
                }
            }
            (!operations.is_empty()).then(|| (format!("/v1/tenant{rest}"), item))
        })
        .collect();
    for (path, item) in copies {
        // `/v1/tenant/policies` also holds the tenant's own upload.
        let merged = paths.entry(path).or_insert_with(|| json!({}));
        if let (Some(merged), Value::Object(operations)) = (merged.as_object_mut(), item) {
            merged.extend(operations);
        }
    }
    for (path, item) in paths.iter_mut() {
        let anthropic = path.starts_with("/v1/messages");
        let external = EXTERNAL_DOCS.iter().find(|(p, _)| p == path).map(|(_, url)| *url);
        let Some(operations) = item.as_object_mut() else { continue };
        for (_, op) in operations.iter_mut().filter(|(_, op)| op.get("security").is_some()) {
            let schema = if anthropic { "#/components/schemas/AnthropicErrorBody" } else { "#/components/schemas/ErrorBody" };
            for (status, description) in ERRORS {
                if op["responses"].get(*status).is_none() {
                    op["responses"][*status] = json!({"description": description, "content": {"application/json": {"schema": {"$ref": schema}}}});
                }
            }
            if let Some(url) = external {
                op["externalDocs"] = json!({"description": "The upstream wire format this route speaks", "url": url});
                if op.get("requestBody").is_some() {
                    let headers = MODEL_HEADERS.iter().map(|(name, description)| json!({"name": name, "in": "header", "required": false, "description": description, "schema": {"type": "string"}}));
                    op["parameters"] = Value::Array(headers.collect());
                }
            }
            // Bytes, not the array of integers `Vec<u8>` would be described as.
            for pointer in ["/requestBody/content", "/responses/200/content"] {
                for (media, content) in op.pointer_mut(pointer).and_then(Value::as_object_mut).into_iter().flatten() {
                    if matches!(media.as_str(), "application/wasm" | "application/octet-stream") {
                        content["schema"] = json!({"type": "string", "contentMediaType": media});
                    }
                }
            }
        }
    }
    doc
}
