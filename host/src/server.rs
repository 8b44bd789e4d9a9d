//! The hyper server: accept loop (TCP_NODELAY), header timeout and limits, body cap
//! enforced while the body streams in, body read timeout, authentication, routing, and graceful shutdown
//! with a bounded drain.

// The request path, one module per phase (see `chat.rs` for the order) or inbound API.
mod caller;
mod chat;
mod compare;
mod dispatch;
mod embeddings;
mod messages;
mod reencode;
pub mod reserve;
mod responses;
mod route;
mod settle;
mod stream;
pub mod wire;

// Management.
mod admin;
mod candidate;
mod console;
mod replay;
mod openapi;
pub mod tenant_api;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tracing::Instrument;

use crate::app::App;
use crate::error::GatewayError;
use crate::secret::Secret;
use crate::tenants::Tenant;
use crate::tokens;

/// Response body type.
pub type Body = http_body_util::combinators::UnsyncBoxBody<Bytes, Infallible>;

/// A JSON response.
pub fn json_response(status: StatusCode, value: &serde_json::Value) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from(value.to_string())).boxed_unsync());
    *response.status_mut() = status;
    response.headers_mut().insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// A plain-text response.
pub fn text_response(status: StatusCode, content_type: &'static str, text: String) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from(text)).boxed_unsync());
    *response.status_mut() = status;
    response.headers_mut().insert(http::header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// The error response for `error` (the one place errors become HTTP), in OpenAI's shape,
/// or in Anthropic's for the Messages routes (`anthropic`).
pub fn error_response(error: &GatewayError, anthropic: bool) -> Response<Body> {
    let (status, _, _) = error.parts();
    if status.is_server_error() {
        tracing::warn!(error = %error, "request failed");
    }
    let body = if anthropic { messages::error_body(error) } else { error.body() };
    let mut response = json_response(status, &body);
    let retry_after = match error {
        GatewayError::RateLimited(limited) => Some(limited.retry_after_secs),
        GatewayError::Policy(crate::PolicyError::CpuShareExhausted { retry_after_secs } | crate::PolicyError::Suspended { retry_after_secs, .. }) => Some(*retry_after_secs),
        _ => None,
    };
    if let Some(value) = retry_after.and_then(|secs| HeaderValue::from_str(&secs.to_string()).ok()) {
        response.headers_mut().insert(http::header::RETRY_AFTER, value);
    }
    if matches!(error, GatewayError::BodyTimeout(_)) {
        // The rest of the body may still be trickling in: do not wait for it.
        response.headers_mut().insert(http::header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// The bearer token of a request, if any.
fn bearer(request: &Request<Incoming>) -> Option<&str> {
    let value = request.headers().get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let token = value.strip_prefix("Bearer ").or_else(|| value.strip_prefix("bearer "))?;
    Some(token.trim())
}

/// The `x-api-key` token of a request (how Anthropic's SDKs send theirs), if any. Only a
/// tenant token is accepted there: the operator token travels as a bearer token alone.
fn api_key(request: &Request<Incoming>) -> Option<&str> {
    Some(request.headers().get("x-api-key")?.to_str().ok()?.trim())
}

/// Who a request is from.
pub enum Principal {
    /// The operator.
    Admin,
    /// A tenant token.
    Tenant(Arc<Tenant>, tokens::TokenRecord),
}

/// Authenticates a request: the admin token or a tenant token; anything else is 401.
/// A request that names a tenant in `X-Tenant-ID` must name the token's own.
pub async fn authenticate(app: &App, request: &Request<Incoming>) -> Result<Principal, GatewayError> {
    let token = match (bearer(request), api_key(request)) {
        (Some(token), _) => {
            if app.admin.matches(token) {
                return Ok(Principal::Admin);
            }
            token
        }
        (None, Some(token)) => token,
        (None, None) => return Err(GatewayError::Unauthorized("missing bearer token: send 'Authorization: Bearer <token>'")),
    };
    let record = app.tokens.lookup(token).await?.ok_or(GatewayError::Unauthorized("invalid token"))?;
    // The token's tenant as it is now: a token of a deleted incarnation opens nothing.
    let tenant = app.tenants.get(&record.tenant_id).filter(|t| record.belongs_to(t)).ok_or(GatewayError::Unauthorized("invalid token"))?;
    if let Some(claimed) = request.headers().get("x-tenant-id") {
        if claimed.as_bytes() != tenant.id.as_bytes() {
            return Err(GatewayError::Forbidden("X-Tenant-ID does not match the token's tenant".into()));
        }
    }
    tracing::Span::current().record("tollgate.tenant_id", tenant.id.as_str());
    Ok(Principal::Tenant(tenant, record))
}

/// Reads the body up to the cap, refusing larger ones while they stream in, and bodies
/// that take longer than `timeout` in all (a trickling client holds no connection longer).
pub async fn read_capped(body: Incoming, limit: usize, timeout: std::time::Duration) -> Result<Bytes, GatewayError> {
    let read = tokio::time::timeout(timeout, Limited::new(body, limit).collect()).await.map_err(|_| GatewayError::BodyTimeout(timeout.as_millis() as u64))?;
    match read {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(GatewayError::PayloadTooLarge(limit)),
        Err(_) => Err(GatewayError::bad_request("body_read_failed", "the request body could not be read")),
    }
}

fn new_request_id() -> String {
    let mut bytes = [0u8; 12];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

async fn route(app: Arc<App>, request: Request<Incoming>, request_id: &str, started: Instant) -> Result<Response<Body>, GatewayError> {
    let path = request.uri().path().to_string();
    if let Some(reply) = console::serve(request.method(), &path) {
        return reply;
    }
    match (request.method().clone(), path.as_str()) {
        (Method::GET, "/healthz") => Ok(json_response(StatusCode::OK, &serde_json::json!({"status": "ok"}))),
        (Method::GET, "/openapi.json") => Ok(json_response(StatusCode::OK, openapi::document())),
        (_, "/openapi.json") => Err(GatewayError::MethodNotAllowed),
        (Method::GET, "/metrics") => Ok(text_response(
            StatusCode::OK,
            "text/plain; version=0.0.4",
            app.metrics.render(
                &app.policies.stats,
                app.policies.cached_components(),
                app.policies.limits().pool_instances,
                app.tenants.len(),
                crate::metrics::StoreFigures { vault_cache: app.vault.cache_counts(), ledger: app.metering.ledger_stats(), durable_syncs: app.store.durable_syncs() },
            ),
        )),
        (Method::POST, "/v1/messages/count_tokens") => {
            let Principal::Tenant(..) = authenticate(&app, &request).await? else {
                return Err(GatewayError::Forbidden("use a tenant token".into()));
            };
            let body = read_capped(request.into_body(), app.config.server.max_body_bytes, app.config.server.body_read_timeout).await?;
            messages::count_tokens(&body)
        }
        (Method::POST, "/v1/chat/completions" | "/v1/embeddings" | "/v1/messages" | "/v1/responses") => {
            let Principal::Tenant(tenant, token) = authenticate(&app, &request).await? else {
                return Err(GatewayError::Forbidden("the operator token cannot call models; use a tenant token".into()));
            };
            let provider_key = request.headers().get("x-provider-api-key").and_then(|v| v.to_str().ok()).map(|v| Secret::new(v.to_string()));
            if provider_key.is_some() && !tenant.allow_request_keys {
                return Err(GatewayError::Forbidden("this tenant does not allow per-request provider keys (X-Provider-API-Key)".into()));
            }
            let session_id = request.headers().get("x-session-id").and_then(|v| v.to_str().ok()).map(str::to_owned);
            let session_history = request.headers().get("x-session-history").is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"true"));
            // Counted against the concurrency caps from here, not from when the body is in.
            let permit = app.limiter.acquire(crate::ratelimit::scopes_of(&tenant, &token))?;
            let body = read_capped(request.into_body(), app.config.server.max_body_bytes, app.config.server.body_read_timeout).await?;
            let api = match path.as_str() {
                "/v1/embeddings" => crate::policy::Api::OpenaiEmbeddings,
                "/v1/messages" => crate::policy::Api::AnthropicMessages,
                "/v1/responses" => crate::policy::Api::OpenaiResponses,
                _ => crate::policy::Api::OpenaiChatCompletions,
            };
            let caller = chat::Caller { request_id: request_id.into(), started, unix_millis: crate::clock::unix_millis(), tenant, token, provider_key, session_id, session_history, api };
            match api {
                crate::policy::Api::OpenaiEmbeddings => embeddings::handle(&app, caller, permit, body).await,
                crate::policy::Api::AnthropicMessages => messages::handle(&app, caller, permit, body).await,
                crate::policy::Api::OpenaiResponses => responses::handle(&app, caller, permit, body).await,
                crate::policy::Api::OpenaiChatCompletions => chat::handle(&app, caller, permit, body).await,
            }
        }
        (Method::DELETE, p) if p.strip_prefix("/v1/responses/").is_some_and(|id| !id.is_empty() && !id.contains('/')) => {
            let Principal::Tenant(tenant, _) = authenticate(&app, &request).await? else {
                return Err(GatewayError::Forbidden("use a tenant token".into()));
            };
            responses::delete(&app, &tenant, &path["/v1/responses/".len()..]).await
        }
        (Method::GET, "/v1/models") => {
            let Principal::Tenant(tenant, _) = authenticate(&app, &request).await? else {
                return Err(GatewayError::Forbidden("use a tenant token".into()));
            };
            // What this tenant can be served: the demo provider, providers it holds a
            // credential for, and every configured provider if it may bring its own key.
            let catalog = app.services.catalog_for(&tenant);
            let held: Vec<String> = app.vault.list(tenant.storage_id()).await?.into_iter().map(|c| c.provider).collect();
            let usable = |provider: &str| match app.config.providers.get(provider) {
                Some(p) => p.kind == crate::providers::ProviderKind::Demo || tenant.allow_request_keys || held.iter().any(|h| h == provider),
                None => false,
            };
            let data: Vec<serde_json::Value> = catalog
                .models()
                .iter()
                .filter(|m| usable(&m.provider))
                .map(|m| serde_json::json!({"id": format!("{}/{}", m.provider, m.model), "object": "model", "created": 0, "owned_by": m.provider}))
                .collect();
            Ok(json_response(StatusCode::OK, &serde_json::json!({"object": "list", "data": data})))
        }
        (_, "/v1/chat/completions" | "/v1/embeddings" | "/v1/messages" | "/v1/responses" | "/v1/messages/count_tokens" | "/v1/models" | "/healthz" | "/metrics") => Err(GatewayError::MethodNotAllowed),
        (_, p) if p.starts_with("/v1/responses/") => Err(GatewayError::MethodNotAllowed),
        (_, p) if p.starts_with("/admin/") || p.starts_with("/api/") => admin::handle(&app, request).await,
        (_, p) if p == "/v1/tenant" || p.starts_with("/v1/tenant/") => admin::self_service(&app, request).await,
        _ => Err(GatewayError::NotFound(format!("no route for {path}"))),
    }
}

fn endpoint(path: &str) -> &'static str {
    match path {
        "/v1/chat/completions" => "chat",
        "/v1/embeddings" => "embeddings",
        "/v1/messages" | "/v1/messages/count_tokens" => "messages",
        p if p == "/v1/responses" || p.starts_with("/v1/responses/") => "responses",
        "/v1/models" => "models",
        "/healthz" | "/metrics" => "ops",
        p if p == "/console" || p.starts_with("/console/") => "console",
        p if p.starts_with("/admin/") || p.starts_with("/api/") || p.starts_with("/v1/tenant") => "admin",
        _ => "other",
    }
}

async fn serve_request(app: Arc<App>, request: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let started = Instant::now();
    let request_id = new_request_id();
    let endpoint = endpoint(request.uri().path());
    // Field names follow OpenTelemetry's HTTP conventions (they become a trace's
    // attributes when `[telemetry]` exports): never a header, a token or a body.
    let span = tracing::info_span!(
        "request",
        otel.name = tracing::field::Empty,
        otel.kind = tracing::field::Empty,
        tollgate.request_id = %request_id,
        http.request.method = %request.method(),
        url.path = %request.uri().path(),
        tollgate.tenant_id = tracing::field::Empty,
        http.response.status_code = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
    );
    crate::telemetry::name_request_span(&span, endpoint);
    let in_flight = crate::metrics::InFlight::enter(&app.metrics.in_flight);
    let mut response = match route(app.clone(), request, &request_id, started).instrument(span.clone()).await {
        Ok(response) => response,
        Err(error) => {
            // Every refusal that tells the client to come back later (see REFUSAL_DELAY).
            if matches!(error, GatewayError::RateLimited(_) | GatewayError::Policy(crate::PolicyError::Suspended { .. } | crate::PolicyError::CpuShareExhausted { .. })) {
                tokio::time::sleep(crate::ratelimit::REFUSAL_DELAY).await;
            }
            span.in_scope(|| error_response(&error, endpoint == "messages"))
        }
    };
    drop(in_flight);
    app.metrics.request(endpoint, response.status().as_u16());
    span.record("http.response.status_code", i64::from(response.status().as_u16()));
    if response.status().is_server_error() {
        span.record("otel.status_code", "error");
    }
    span.in_scope(|| tracing::info!(status = response.status().as_u16(), micros = started.elapsed().as_micros() as u64, "done"));
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert("x-request-id", value);
    }
    Ok(response)
}

/// Serves until `shutdown` resolves, then drains in-flight connections for at most the
/// configured drain timeout.
pub async fn serve(app: Arc<App>, listener: TcpListener, shutdown: impl std::future::Future<Output = ()>) -> std::io::Result<()> {
    let config = app.config.server.clone();
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (socket, peer): (tokio::net::TcpStream, SocketAddr) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let _ = socket.set_nodelay(true);
        let app = app.clone();
        let service = service_fn(move |request| serve_request(app.clone(), request));
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(config.header_read_timeout)
            .max_headers(config.max_headers)
            .max_buf_size(64 << 10);
        let connection = builder.serve_connection(TokioIo::new(socket), service);
        let watched = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(e) = watched.await {
                tracing::debug!(peer = %peer, error = %e, "connection ended with an error");
            }
        });
    }
    // Stop accepting at once: new clients are refused instead of queueing behind the drain.
    drop(listener);
    tracing::info!("shutting down: draining in-flight requests");
    if tokio::time::timeout(config.drain_timeout, graceful.shutdown()).await.is_err() {
        tracing::warn!("drain timeout reached; closing remaining connections");
    }
    // Policies' `on-complete` calls for the answers just sent (each bounded by its CPU
    // deadline).
    app.after_response.close();
    if tokio::time::timeout(config.drain_timeout, app.after_response.wait()).await.is_err() {
        tracing::warn!("drain timeout reached with policy on-complete calls still running");
    }
    app.store.flush_blocking().map_err(std::io::Error::other)?;
    Ok(())
}
