//! The authenticate phase's result: who is asking, established by the server before the
//! body is read, whatever API the request came in.

use std::sync::Arc;
use std::time::Instant;

use crate::policy::Api;
use crate::secret::Secret;
use crate::tenants::Tenant;
use crate::tokens::TokenRecord;

/// Who is asking.
pub struct Caller {
    /// Request id (also the `x-request-id` header).
    pub request_id: String,
    /// Accept time.
    pub started: Instant,
    /// Wall-clock accept time.
    pub unix_millis: u64,
    /// The token's tenant.
    pub tenant: Arc<Tenant>,
    /// The token.
    pub token: TokenRecord,
    /// A per-request provider key, only when the tenant allows them.
    pub provider_key: Option<Secret>,
    /// `X-Session-ID`.
    pub session_id: Option<String>,
    /// `X-Session-History: true`.
    pub session_history: bool,
    /// The API the client spoke, for the policy.
    pub api: Api,
}

/// The concurrency caps a request counts under while it holds its reservation: on the
/// shared store they are counted over every replica (the in-process limiter counts this
/// replica's requests from authentication on).
pub(crate) fn concurrency_caps(tenant: &Tenant, token: &TokenRecord) -> Vec<(String, u32)> {
    let tenant_cap = tenant.rate_limits.max_concurrent.map(|max| ("tenant".to_string(), max));
    let token_cap = token.rate_limits.max_concurrent.map(|max| (format!("token:{}", token.digest), max));
    tenant_cap.into_iter().chain(token_cap).collect()
}
