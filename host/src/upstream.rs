//! Sending a plan's targets upstream: the shared HTTP client (TCP_NODELAY, rustls), one
//! attempt with a timeout, retries with capped exponential backoff and jitter for
//! retryable failures (connect errors, timeouts, 429 honouring `Retry-After`, 5xx), and a
//! cool-down for targets that keep failing. 4xx other than 429 is never retried.
//!
//! The cool-down is shared by every tenant, so only failures that are the upstream's own
//! count towards it ([`AttemptError::is_upstreams`]): one tenant's revoked key or exhausted
//! quota must not take a model out of service for the others.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::StatusCode;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rand::Rng;

use crate::config::{ProviderConfig, UpstreamConfig};
use crate::providers::UpstreamRequest;

/// An upstream's response body: from the network, or produced in process (the `demo`
/// provider, [`crate::providers::Provider::answer_in_process`]).
pub type UpstreamBody = http_body_util::combinators::UnsyncBoxBody<Bytes, hyper::Error>;

/// Largest non-streaming upstream body read.
pub const MAX_UPSTREAM_BODY_BYTES: usize = 32 << 20;

type Connector = hyper_rustls::HttpsConnector<HttpConnector>;

/// Why one attempt failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttemptError {
    /// Could not connect, or the connection broke before a response.
    Connect(String),
    /// No response headers within the timeout.
    Timeout,
    /// The upstream answered with a non-2xx status.
    Status {
        /// The status.
        status: u16,
        /// `Retry-After`, if sent (429/503).
        retry_after: Option<Duration>,
        /// The body (capped), for the error message.
        body: Bytes,
    },
}

impl AttemptError {
    /// Whether trying the same target again may help.
    pub fn retryable(&self) -> bool {
        match self {
            AttemptError::Connect(_) | AttemptError::Timeout => true,
            AttemptError::Status { status, .. } => *status == 429 || *status >= 500,
        }
    }

    /// Whether the failure is the upstream's own (down, slow, erroring, or out of capacity
    /// for a call made without a tenant's key) rather than a refusal of this tenant's key or
    /// request (401/403/400/404/422, or 429 on the tenant's own key, which is that tenant's
    /// quota). Only the upstream's own failures cool a target down for every tenant.
    pub fn is_upstreams(&self, tenant_key: bool) -> bool {
        match self {
            AttemptError::Connect(_) | AttemptError::Timeout => true,
            AttemptError::Status { status: 429, .. } => !tenant_key,
            AttemptError::Status { status, .. } => *status >= 500,
        }
    }
}

/// The shared client and the per-target failure counts.
pub struct Upstream {
    client: Client<Connector, Full<Bytes>>,
    /// Retry and timeout settings.
    pub config: UpstreamConfig,
    failures: Mutex<HashMap<String, (u32, Option<Instant>)>>,
}

impl Upstream {
    /// A client over rustls with the bundled web PKI roots.
    pub fn new(config: UpstreamConfig) -> Self {
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        http.enforce_http(false);
        http.set_connect_timeout(Some(Duration::from_secs(10)));
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_webpki_roots()
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new()).pool_idle_timeout(Duration::from_secs(90)).build(connector);
        Self { client, config, failures: Mutex::new(HashMap::new()) }
    }

    /// Whether `key` (provider/model) is cooling down after repeated failures.
    pub fn cooling_down(&self, key: &str) -> bool {
        let Ok(failures) = self.failures.lock() else { return false };
        matches!(failures.get(key), Some((_, Some(until))) if Instant::now() < *until)
    }

    /// Records the outcome of an attempt for cool-down accounting.
    pub fn record(&self, key: &str, ok: bool) {
        let Ok(mut failures) = self.failures.lock() else { return };
        if ok {
            failures.remove(key);
            return;
        }
        let entry = failures.entry(key.to_string()).or_insert((0, None));
        entry.0 += 1;
        if entry.0 >= self.config.cooldown_after {
            entry.1 = Some(Instant::now() + self.config.cooldown);
            entry.0 = 0;
        }
    }

    /// How long to wait before retry number `attempt` (1-based): exponential, capped,
    /// with jitter; a `Retry-After` is honoured up to the cap.
    pub fn backoff(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        if let Some(wait) = retry_after {
            return wait.min(self.config.backoff_cap);
        }
        let exp = self.config.backoff_base.saturating_mul(1u32 << attempt.min(16).saturating_sub(1));
        let capped = exp.min(self.config.backoff_cap);
        capped.mul_f64(rand::rng().random_range(0.5..=1.0))
    }

    /// One attempt: sends the request and waits for response headers within the timeout.
    /// On 2xx returns the response with its body unread (it may be a stream).
    pub async fn attempt(&self, provider: &ProviderConfig, request: UpstreamRequest) -> Result<http::Response<UpstreamBody>, AttemptError> {
        if let Some(answered) = provider.kind.adapter().answer_in_process(&request) {
            return match answered {
                Ok(bytes) => Ok(http::Response::new(Full::new(bytes).map_err(|never| match never {}).boxed_unsync())),
                Err(e) => Err(AttemptError::Status { status: 400, retry_after: None, body: Bytes::from(serde_json::json!({"error": {"message": e.to_string()}}).to_string()) }),
            };
        }
        let mut builder = http::Request::post(&request.url);
        for (name, value) in request.headers {
            builder = builder.header(name, value);
        }
        let http_request = builder.body(Full::new(request.body)).map_err(|e| AttemptError::Connect(format!("building request: {e}")))?;
        let response = match tokio::time::timeout(self.config.timeout, self.client.request(http_request)).await {
            Err(_) => return Err(AttemptError::Timeout),
            Ok(Err(e)) => return Err(AttemptError::Connect(connect_reason(&e))),
            Ok(Ok(response)) => response,
        };
        if response.status().is_success() {
            return Ok(response.map(BodyExt::boxed_unsync));
        }
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(http::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let body = read_body(response.into_body(), 64 << 10, self.config.timeout).await.unwrap_or_default();
        Err(AttemptError::Status { status, retry_after, body })
    }
}

/// A connect error's reason without URLs (which could carry query-string secrets).
fn connect_reason(error: &hyper_util::client::legacy::Error) -> String {
    if error.is_connect() { "could not connect to the upstream".into() } else { "the upstream connection failed before a response".into() }
}

/// Reads a whole body, up to `limit` bytes, within `timeout`.
pub async fn read_body<B>(body: B, limit: usize, timeout: Duration) -> Result<Bytes, String>
where
    B: hyper::body::Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    match tokio::time::timeout(timeout, Limited::new(body, limit).collect()).await {
        Err(_) => Err("timed out reading the upstream body".into()),
        Ok(Err(e)) => Err(format!("reading the upstream body: {e}")),
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
    }
}

/// Maps the last failure of a plan to the client's status and code.
pub fn failure_status(error: &AttemptError) -> (StatusCode, &'static str) {
    match error {
        AttemptError::Timeout => (StatusCode::GATEWAY_TIMEOUT, "upstream_timeout"),
        AttemptError::Connect(_) => (StatusCode::BAD_GATEWAY, "upstream_unreachable"),
        AttemptError::Status { status: 429, .. } => (StatusCode::TOO_MANY_REQUESTS, "upstream_rate_limited"),
        // The tenant's provider key was refused: not the client's gateway token.
        AttemptError::Status { status: 401 | 403, .. } => (StatusCode::BAD_GATEWAY, "upstream_auth_failed"),
        AttemptError::Status { status, .. } if (400..500).contains(status) => {
            (StatusCode::from_u16(*status).unwrap_or(StatusCode::BAD_REQUEST), "upstream_rejected")
        }
        AttemptError::Status { .. } => (StatusCode::BAD_GATEWAY, "upstream_error"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upstream() -> Upstream {
        Upstream::new(UpstreamConfig {
            timeout: Duration::from_secs(1),
            attempts_per_target: 3,
            backoff_base: Duration::from_millis(100),
            backoff_cap: Duration::from_millis(350),
            cooldown_after: 2,
            cooldown: Duration::from_secs(60),
        })
    }

    #[test]
    fn a_target_that_keeps_failing_cools_down_and_success_resets_it() {
        let up = upstream();
        up.record("p/m", false);
        assert!(!up.cooling_down("p/m"));
        up.record("p/m", false);
        assert!(up.cooling_down("p/m"));
        assert!(!up.cooling_down("p/other"));
        up.record("p/m", true);
        assert!(!up.cooling_down("p/m"));
    }

    #[test]
    fn only_the_upstreams_own_failures_count_towards_the_shared_cool_down() {
        let status = |s| AttemptError::Status { status: s, retry_after: None, body: Bytes::new() };
        assert!(AttemptError::Timeout.is_upstreams(true) && AttemptError::Connect(String::new()).is_upstreams(true));
        assert!(status(500).is_upstreams(true) && status(503).is_upstreams(true));
        assert!(status(429).is_upstreams(false), "429 without a tenant key: the upstream's capacity");
        assert!(!status(429).is_upstreams(true), "429 on a tenant's key: that tenant's quota");
        for tenants in [400, 401, 403, 404, 422] {
            assert!(!status(tenants).is_upstreams(true) && !status(tenants).is_upstreams(false), "{tenants}");
        }
    }

    #[test]
    fn backoff_grows_with_jitter_and_is_capped_and_retry_after_is_honoured_up_to_the_cap() {
        let up = upstream();
        for _ in 0..50 {
            let first = up.backoff(1, None);
            assert!(first >= Duration::from_millis(50) && first <= Duration::from_millis(100), "{first:?}");
            let second = up.backoff(2, None);
            assert!(second >= Duration::from_millis(100) && second <= Duration::from_millis(200), "{second:?}");
            assert!(up.backoff(10, None) <= Duration::from_millis(350));
        }
        assert_eq!(up.backoff(1, Some(Duration::from_millis(200))), Duration::from_millis(200));
        assert_eq!(up.backoff(1, Some(Duration::from_secs(30))), Duration::from_millis(350));
    }

    #[test]
    fn only_connect_errors_timeouts_429_and_5xx_are_retried() {
        let status = |s| AttemptError::Status { status: s, retry_after: None, body: Bytes::new() };
        assert!(AttemptError::Timeout.retryable() && AttemptError::Connect(String::new()).retryable());
        assert!(status(429).retryable() && status(500).retryable() && status(503).retryable());
        assert!(!status(400).retryable() && !status(401).retryable() && !status(404).retryable() && !status(422).retryable());
        assert_eq!(failure_status(&status(401)), (StatusCode::BAD_GATEWAY, "upstream_auth_failed"));
        assert_eq!(failure_status(&status(404)), (StatusCode::NOT_FOUND, "upstream_rejected"));
    }
}
