//! The gateway's one error type, and the one place that maps errors to an HTTP status and
//! OpenAI's error shape `{"error": {"message", "type", "code"}}`, so the official SDKs
//! raise the matching exception classes.

use http::StatusCode;
use serde_json::json;

use crate::policy::{PolicyError, Rejection};
use crate::policy_deletion::DeleteRefused;

/// Everything a request can fail with.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// Missing or unknown token (401 `invalid_api_key`).
    #[error("{0}")]
    Unauthorized(&'static str),
    /// The token may not do this (403 `permission_denied`).
    #[error("{0}")]
    Forbidden(String),
    /// The request is malformed (400 with a specific code).
    #[error("{message}")]
    BadRequest {
        /// Machine-readable code.
        code: &'static str,
        /// For the client.
        message: String,
    },
    /// No such resource (404).
    #[error("{0}")]
    NotFound(String),
    /// No such resource, with its own code (404), e.g. `previous_response_not_found`.
    #[error("{message}")]
    NotFoundCode {
        /// Machine-readable code.
        code: &'static str,
        /// For the client.
        message: String,
    },
    /// A resource already exists (409).
    #[error("{0}")]
    Conflict(String),
    /// An uploaded policy's delete was refused (404 `not_found`, 409 `policy_assigned`).
    #[error(transparent)]
    PolicyDeleteRefused(#[from] DeleteRefused),
    /// Wrong method on a known path (405).
    #[error("method not allowed")]
    MethodNotAllowed,
    /// Body larger than the cap (413).
    #[error("request body larger than {0} bytes")]
    PayloadTooLarge(usize),
    /// The body did not arrive within the body read timeout (408 `request_timeout`; the
    /// connection is closed).
    #[error("the request body did not arrive within {0} ms")]
    BodyTimeout(u64),
    /// A rate limit was hit (429 `rate_limit_exceeded`, with `Retry-After`).
    #[error(transparent)]
    RateLimited(#[from] crate::ratelimit::RateLimited),
    /// Over budget (402 `budget_exceeded`).
    #[error("{0}")]
    BudgetExceeded(String),
    /// The tenant's policy refused the request (its own status and code).
    #[error("{}", .0.message)]
    PolicyRejected(Rejection),
    /// The tenant's policy failed (trap, timeout, bad return value) or the sandbox is full.
    #[error(transparent)]
    Policy(#[from] PolicyError),
    /// Every target failed; the last failure's status class and message.
    #[error("{message}")]
    Upstream {
        /// Status to return.
        status: StatusCode,
        /// Machine-readable code.
        code: &'static str,
        /// For the client (never upstream headers or keys).
        message: String,
    },
    /// A bug or a storage failure (500). The message is logged, not returned in full.
    #[error("internal error: {0}")]
    Internal(String),
}

impl GatewayError {
    /// A 400 with a code.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        GatewayError::BadRequest { code, message: message.into() }
    }

    /// Status, OpenAI error `type` and `code`.
    pub fn parts(&self) -> (StatusCode, &'static str, String) {
        use GatewayError::*;
        match self {
            Unauthorized(_) => (StatusCode::UNAUTHORIZED, "authentication_error", "invalid_api_key".into()),
            Forbidden(_) => (StatusCode::FORBIDDEN, "permission_error", "permission_denied".into()),
            BadRequest { code, .. } => (StatusCode::BAD_REQUEST, "invalid_request_error", (*code).into()),
            NotFound(_) => (StatusCode::NOT_FOUND, "invalid_request_error", "not_found".into()),
            NotFoundCode { code, .. } => (StatusCode::NOT_FOUND, "invalid_request_error", (*code).into()),
            Conflict(_) => (StatusCode::CONFLICT, "invalid_request_error", "conflict".into()),
            PolicyDeleteRefused(DeleteRefused::NotHeld(_) | DeleteRefused::NotFound(_)) => (StatusCode::NOT_FOUND, "invalid_request_error", "not_found".into()),
            PolicyDeleteRefused(_) => (StatusCode::CONFLICT, "invalid_request_error", "policy_assigned".into()),
            MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "invalid_request_error", "method_not_allowed".into()),
            PayloadTooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "invalid_request_error", "request_too_large".into()),
            BodyTimeout(_) => (StatusCode::REQUEST_TIMEOUT, "invalid_request_error", "request_timeout".into()),
            RateLimited(_) => (StatusCode::TOO_MANY_REQUESTS, "rate_limit_error", "rate_limit_exceeded".into()),
            BudgetExceeded(_) => (StatusCode::PAYMENT_REQUIRED, "insufficient_quota", "budget_exceeded".into()),
            PolicyRejected(r) => (StatusCode::from_u16(r.status).unwrap_or(StatusCode::FORBIDDEN), "invalid_request_error", r.code.clone()),
            Policy(PolicyError::Busy) => (StatusCode::SERVICE_UNAVAILABLE, "server_error", "overloaded".into()),
            Policy(PolicyError::UploadQuota(_)) => (StatusCode::CONFLICT, "invalid_request_error", "upload_quota_exceeded".into()),
            Policy(PolicyError::CompileBusy) => (StatusCode::TOO_MANY_REQUESTS, "rate_limit_error", "compile_busy".into()),
            Policy(PolicyError::CpuShareExhausted { .. }) => (StatusCode::TOO_MANY_REQUESTS, "rate_limit_error", "policy_cpu_share_exceeded".into()),
            Policy(PolicyError::Suspended { .. }) => (StatusCode::SERVICE_UNAVAILABLE, "server_error", "policy_suspended".into()),
            Policy(_) => (StatusCode::INTERNAL_SERVER_ERROR, "server_error", "policy_failed".into()),
            Upstream { status, code, .. } => (*status, if status.is_server_error() { "server_error" } else { "invalid_request_error" }, (*code).into()),
            Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "server_error", "internal_error".into()),
        }
    }

    /// The client-facing message: internal details stay in the logs.
    pub fn client_message(&self) -> String {
        match self {
            GatewayError::Internal(_) => "internal error; see the gateway logs for the request id".into(),
            other => other.to_string(),
        }
    }

    /// The JSON body.
    pub fn body(&self) -> serde_json::Value {
        let (_, kind, code) = self.parts();
        json!({"error": {"message": self.client_message(), "type": kind, "param": null, "code": code}})
    }
}

impl From<crate::store::StoreError> for GatewayError {
    fn from(e: crate::store::StoreError) -> Self {
        GatewayError::Internal(e.to_string())
    }
}

impl From<crate::sealing::SealError> for GatewayError {
    fn from(e: crate::sealing::SealError) -> Self {
        match e {
            crate::sealing::SealError::NotFound(name) => GatewayError::NotFound(format!("no credential named '{name}'")),
            e @ crate::sealing::SealError::RotationInProgress => GatewayError::Conflict(e.to_string()),
            e @ crate::sealing::SealError::RotationKeyNotDeployed { .. } => GatewayError::bad_request("invalid_key", e.to_string()),
            other => GatewayError::Internal(other.to_string()),
        }
    }
}

impl From<crate::metering::BudgetError> for GatewayError {
    fn from(e: crate::metering::BudgetError) -> Self {
        match e {
            crate::metering::BudgetError::Exceeded { .. } => GatewayError::BudgetExceeded(e.to_string()),
            crate::metering::BudgetError::TooManyInFlight { .. } => GatewayError::RateLimited(crate::ratelimit::RateLimited { what: "too many concurrent requests", retry_after_secs: 1 }),
            crate::metering::BudgetError::Store(e) => e.into(),
        }
    }
}

impl From<crate::tenants::TenantError> for GatewayError {
    fn from(e: crate::tenants::TenantError) -> Self {
        use crate::tenants::TenantError as E;
        match e {
            E::NotFound(_) => GatewayError::NotFound(e.to_string()),
            E::Exists(_) => GatewayError::Conflict(e.to_string()),
            E::Refused(refused) => refused,
            E::Store(store) => store.into(),
        }
    }
}
