//! Optional OpenTelemetry traces: the request path's `tracing` spans exported over
//! OTLP/HTTP (JSON) to `[telemetry] otlp_endpoint`.
//!
//! Off by default, and then nothing here runs: no layer is installed and the phase spans
//! (at `DEBUG`, see [`Telemetry::layer`]) are disabled at their call sites. When on, one
//! trace per request: the `request` span (tenant, method, path, status) with children for
//! the policy call (`tollgate.policy.route`), the reservation (`tollgate.reserve`), each
//! upstream attempt (GenAI semantic conventions: provider, model, operation, host) and
//! settlement (`tollgate.settle`: token counts, cost).
//!
//! What is exported is only span names and the fields declared on them, which never
//! hold a secret, a header, a body or prompt text. Log events are not exported (an
//! error message may quote an upstream's answer); they stay in the process's logs.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_http::{Bytes, HttpClient, HttpError, Request, Response};
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use tracing::Subscriber;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

use crate::config::{ProviderConfig, TelemetryConfig};
use crate::metering::LedgerRecord;
use crate::policy::{Api, PlanTarget};
use crate::providers::{ProviderKind, Usage};
use crate::upstream::AttemptError;

/// How long one export may take (connect, send, answer). An unreachable collector costs
/// the exporter thread this much per batch, never a request.
pub const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long shutdown waits for the last spans to be sent.
pub const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);
/// The OTLP/HTTP path for traces, appended to the configured endpoint.
pub const TRACES_PATH: &str = "/v1/traces";

/// Trace export could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// The exporter refused its configuration.
    #[error("telemetry: {0}")]
    Exporter(String),
}

/// A running trace exporter. Spans are batched and sent from the SDK's own thread;
/// [`shutdown`](Self::shutdown) sends what is left.
pub struct Telemetry {
    provider: SdkTracerProvider,
}

impl std::fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Telemetry").finish_non_exhaustive()
    }
}

impl Telemetry {
    /// Starts the exporter when `config` names an endpoint; `None` when it does not.
    /// `runtime` runs the HTTP requests (the exporter's thread has no runtime of its own).
    pub fn start(config: &TelemetryConfig, runtime: tokio::runtime::Handle) -> Result<Option<Self>, TelemetryError> {
        let Some(endpoint) = &config.otlp_endpoint else { return Ok(None) };
        let client = RuntimeClient { inner: opentelemetry_http::hyper::HyperClient::new(connector(), EXPORT_TIMEOUT, None), runtime };
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_http_client(client)
            .with_protocol(Protocol::HttpJson)
            .with_endpoint(format!("{endpoint}{TRACES_PATH}"))
            .with_timeout(EXPORT_TIMEOUT)
            .build()
            .map_err(|e| TelemetryError::Exporter(e.to_string()))?;
        let resource = Resource::builder().with_service_name(config.service_name.clone()).build();
        let provider = SdkTracerProvider::builder().with_batch_exporter(exporter).with_resource(resource).build();
        EXPORTING.store(true, Ordering::Relaxed);
        Ok(Some(Self { provider }))
    }

    /// The layer that turns the gateway's spans into OpenTelemetry spans. Its own filter
    /// takes every span of this crate, `DEBUG` included (the phase spans), and no events,
    /// whatever `RUST_LOG` says: install the log output with a per-layer filter beside it.
    pub fn layer<S>(&self) -> impl Layer<S> + Send + Sync + 'static
    where
        S: Subscriber + for<'a> LookupSpan<'a> + Send + Sync,
    {
        tracing_opentelemetry::layer()
            .with_tracer(self.provider.tracer("tollgate"))
            .with_location(false)
            .with_threads(false)
            .with_target(false)
            .with_level(false)
            .with_tracked_inactivity(false)
            .with_filter(tracing_subscriber::filter::filter_fn(|meta| meta.is_span() && meta.target().starts_with("tollgate")))
    }

    /// Sends the spans still buffered and stops the exporter (bounded by
    /// [`SHUTDOWN_TIMEOUT`]). Blocks: call it off the runtime's worker threads (e.g. in
    /// `spawn_blocking`), which must keep running for the last export to be sent.
    pub fn shutdown(self) -> Result<(), TelemetryError> {
        self.provider.shutdown_with_timeout(SHUTDOWN_TIMEOUT).map_err(|e| TelemetryError::Exporter(e.to_string()))
    }
}

/// http and https, with the same roots as the upstream client.
fn connector() -> hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector> {
    let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(Some(EXPORT_TIMEOUT));
    hyper_rustls::HttpsConnectorBuilder::new().with_webpki_roots().https_or_http().enable_http1().wrap_connector(http)
}

/// The hyper client, run on the gateway's runtime: the SDK's batch thread awaits the
/// request from outside any runtime.
#[derive(Debug)]
struct RuntimeClient {
    inner: opentelemetry_http::hyper::HyperClient<hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>>,
    runtime: tokio::runtime::Handle,
}

impl HttpClient for RuntimeClient {
    fn send_bytes<'a, 'b>(&'a self, request: Request<Bytes>) -> Pin<Box<dyn Future<Output = Result<Response<Bytes>, HttpError>> + Send + 'b>>
    where
        'a: 'b,
        Self: 'b,
    {
        let inner = self.inner.clone();
        let task = self.runtime.spawn(async move { inner.send_bytes(request).await });
        Box::pin(async move { task.await.map_err(|e| -> HttpError { Box::new(e) })? })
    }
}

/// Set once an exporter runs: only then do spans carry the exporter's own fields
/// (`otel.name`, `otel.kind`), which would only clutter the logs otherwise.
static EXPORTING: AtomicBool = AtomicBool::new(false);

/// Names the request span for the exporter after its endpoint (`chat`, `embeddings`, ...)
/// and marks it a server span; nothing when no exporter runs.
pub fn name_request_span(span: &tracing::Span, endpoint: &'static str) {
    if EXPORTING.load(Ordering::Relaxed) {
        span.record("otel.name", endpoint);
        span.record("otel.kind", "server");
    }
}

/// The span of one upstream attempt, after the GenAI semantic conventions: operation,
/// provider, requested model and the upstream's host. Disabled (and nothing computed)
/// unless trace export is on.
pub fn attempt_span(api: Api, provider: &ProviderConfig, target: &PlanTarget, attempt: u32) -> tracing::Span {
    let operation = match api {
        Api::OpenaiEmbeddings => "embeddings",
        _ => "chat",
    };
    tracing::debug_span!(
        "gen_ai.attempt",
        otel.name = %format_args!("{operation} {}", target.model),
        otel.kind = "client",
        gen_ai.operation.name = operation,
        gen_ai.provider.name = gen_ai_provider(provider.kind),
        gen_ai.system = gen_ai_provider(provider.kind),
        gen_ai.request.model = %target.model,
        server.address = %server_address(&provider.base_url),
        tollgate.provider = %target.provider,
        tollgate.attempt = i64::from(attempt),
        http.response.status_code = tracing::field::Empty,
        error.type = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
    )
}

/// Records how an attempt ended on its span: the status, or why there was none.
pub fn record_attempt<T>(span: &tracing::Span, answer: &Result<http::Response<T>, AttemptError>) {
    if answer.is_err() {
        span.record("otel.status_code", "error");
    }
    match answer {
        Ok(response) => {
            span.record("http.response.status_code", i64::from(response.status().as_u16()));
        }
        Err(AttemptError::Status { status, .. }) => {
            span.record("http.response.status_code", i64::from(*status));
            span.record("error.type", tracing::field::display(status));
        }
        Err(AttemptError::Timeout) => {
            span.record("error.type", "timeout");
        }
        Err(AttemptError::Connect(_)) => {
            span.record("error.type", "connect");
        }
    }
}

/// The span of a request's settlement, with what was billed: the usage (the upstream's
/// figures or the gateway's estimate), the model that answered and the cost.
pub fn settle_span(outcome: &str, record: &LedgerRecord, usage: &Usage) -> tracing::Span {
    tracing::debug_span!(
        "tollgate.settle",
        tollgate.outcome = outcome,
        tollgate.provider = %record.provider,
        gen_ai.response.model = %record.model,
        gen_ai.usage.input_tokens = int(usage.prompt_tokens),
        gen_ai.usage.output_tokens = int(usage.completion_tokens),
        tollgate.cost_microdollars = int(record.cost_microdollars),
    )
}

/// A count as a span field: `i64`, because the OpenTelemetry bridge exports unsigned
/// integers as strings.
pub fn int(count: u64) -> i64 {
    i64::try_from(count).unwrap_or(i64::MAX)
}

/// `gen_ai.provider.name` for a provider kind (the conventions' well-known values).
pub fn gen_ai_provider(kind: ProviderKind) -> &'static str {
    match kind {
        ProviderKind::Openai => "openai",
        ProviderKind::Anthropic => "anthropic",
        ProviderKind::Gemini => "gcp.gemini",
        ProviderKind::Demo => "tollgate.demo",
    }
}

/// The `server.address` of an upstream: its base URL's host, nothing else (no path,
/// query or user info).
pub fn server_address(base_url: &str) -> String {
    base_url.parse::<http::Uri>().ok().and_then(|uri| uri.host().map(str::to_owned)).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_endpoint_no_exporter() -> Result<(), TelemetryError> {
        let runtime = tokio::runtime::Builder::new_current_thread().build().map_err(|e| TelemetryError::Exporter(e.to_string()))?;
        assert!(Telemetry::start(&TelemetryConfig::default(), runtime.handle().clone())?.is_none());
        Ok(())
    }

    #[test]
    fn server_address_is_the_host_alone() {
        assert_eq!(server_address("https://user:pw@api.example.com:8443/v1?key=k"), "api.example.com");
        assert_eq!(server_address("http://127.0.0.1:9/v1"), "127.0.0.1");
        assert_eq!(server_address("not a url"), "");
    }
}
