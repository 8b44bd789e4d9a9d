//! Shared setup for the suites that run the gateway against the loopback mock upstream
//! (`tollgate_tests::mock`): a config whose providers point at the mock, the three provider
//! kinds with their wire facts, tenant setup through the admin API, SSE reading and JSON
//! normalisation, and a stub upstream that refuses every key with a 401 echoing it.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use serde_json::{json, Value};
use tollgate::config::ProviderConfig;
use tollgate::providers::ProviderKind;
use tollgate::Config;
use tollgate_tests::mock::MockUpstream;

use crate::support::{Gateway, Reply, ADMIN};

/// One provider kind under test, with the facts of its wire format.
#[derive(Debug, Clone, Copy)]
pub struct Kind {
    /// Provider name in the config (also the ledger's `provider`).
    pub name: &'static str,
    pub kind: ProviderKind,
    /// The header the key travels in.
    pub auth_header: &'static str,
}

pub const OPENAI: Kind = Kind { name: "openai", kind: ProviderKind::Openai, auth_header: "authorization" };
pub const ANTHROPIC: Kind = Kind { name: "anthropic", kind: ProviderKind::Anthropic, auth_header: "x-api-key" };
pub const GEMINI: Kind = Kind { name: "gemini", kind: ProviderKind::Gemini, auth_header: "x-goog-api-key" };

/// Every upstream kind; each conformance check runs against all of them.
pub const KINDS: [Kind; 3] = [OPENAI, ANTHROPIC, GEMINI];

impl Kind {
    /// The value of [`auth_header`](Self::auth_header) for `key`.
    pub fn auth_value(&self, key: &str) -> String {
        match self.kind {
            ProviderKind::Openai => format!("Bearer {key}"),
            _ => key.to_string(),
        }
    }

    /// The path (with query) the upstream should see for `model`.
    pub fn path(&self, model: &str, stream: bool) -> String {
        match (self.kind, stream) {
            (ProviderKind::Gemini, false) => format!("/v1beta/models/{model}:generateContent"),
            (ProviderKind::Gemini, true) => format!("/v1beta/models/{model}:streamGenerateContent?alt=sse"),
            (ProviderKind::Anthropic, _) => "/v1/messages".into(),
            _ => "/v1/chat/completions".into(),
        }
    }

    /// The base URL for a provider of this kind served by a server at `url`.
    pub fn base_url(&self, url: &str) -> String {
        match self.kind {
            ProviderKind::Openai => format!("{url}/v1"),
            _ => url.to_string(),
        }
    }
}

/// Short retries and timeouts so failure paths stay fast, and cool-down out of the way.
pub fn fast_upstream(config: &mut Config) {
    config.upstream.timeout = Duration::from_secs(2);
    config.upstream.attempts_per_target = 2;
    config.upstream.backoff_base = Duration::from_millis(10);
    config.upstream.backoff_cap = Duration::from_millis(50);
    config.upstream.cooldown_after = 1000;
    config.upstream.cooldown = Duration::from_millis(10);
}

/// Points provider `name` (of `kind`) at the server at `url`.
pub fn point(config: &mut Config, name: &str, kind: Kind, url: &str) {
    config.providers.insert(name.into(), ProviderConfig { kind: kind.kind, base_url: kind.base_url(url) });
}

/// The embedded config with openai, anthropic and gemini all served by `mock`.
pub fn config(mock: &MockUpstream) -> Config {
    let mut config = Config::embedded();
    for kind in KINDS {
        point(&mut config, kind.name, kind, &mock.url());
    }
    fast_upstream(&mut config);
    config
}

/// Asserts an admin call succeeded and returns its JSON.
pub async fn admin_ok(gw: &Gateway, method: &str, path: &str, body: Value) -> Value {
    let reply = gw.admin(method, path, body).await;
    assert!(reply.status == 200 || reply.status == 201, "{method} {path}: {} {}", reply.status, reply.text());
    reply.json()
}

/// Creates tenant `id` and issues an inference token for it.
pub async fn create_tenant(gw: &Gateway, id: &str, extra: Value) -> String {
    let mut body = json!({"id": id});
    if let (Some(body), Value::Object(extra)) = (body.as_object_mut(), extra) {
        body.extend(extra);
    }
    admin_ok(gw, "POST", "/admin/v1/tenants", body).await;
    let issued = admin_ok(gw, "POST", &format!("/admin/v1/tenants/{id}/tokens"), json!({"scope": "inference"})).await;
    issued["token"].as_str().expect("token").to_string()
}

/// Stores credential `name` for `provider` on tenant `id`.
pub async fn put_credential(gw: &Gateway, id: &str, name: &str, provider: &str, key: &str) {
    admin_ok(gw, "PUT", &format!("/admin/v1/tenants/{id}/credentials/{name}"), json!({"provider": provider, "api_key": key})).await;
}

/// Assigns the stock default policy with `config`.
pub async fn default_policy(gw: &Gateway, id: &str, config: Value) {
    let hash = gw.app.default_policy.to_string();
    admin_ok(gw, "PUT", &format!("/admin/v1/tenants/{id}/policy"), json!({"hash": hash, "config": config})).await;
}

/// A tenant whose default policy sends unqualified models to `provider` with a stored
/// credential `main` holding `key`. Returns its token.
pub async fn tenant(gw: &Gateway, id: &str, provider: &str, key: &str) -> String {
    let token = create_tenant(gw, id, json!({})).await;
    put_credential(gw, id, "main", provider, key).await;
    default_policy(gw, id, json!({"provider": provider, "credential": "main"})).await;
    token
}

/// Uploads a stock guest policy; returns its hash.
pub async fn upload(gw: &Gateway, package: &str) -> String {
    let wasm = tollgate_tests::guests::wasm(package);
    let reply = gw.call("POST", "/admin/v1/policies", Some(ADMIN), &[("content-type", "application/wasm")], wasm).await;
    assert_eq!(reply.status, 201, "{}", reply.text());
    reply.json()["hash"].as_str().expect("hash").to_string()
}

/// The tenant's ledger rows (`GET .../usage/records`), in the order the admin API returns them.
pub async fn ledger(gw: &Gateway, id: &str) -> Vec<Value> {
    let reply = admin_ok(gw, "GET", &format!("/admin/v1/tenants/{id}/usage/records"), Value::Null).await;
    reply["data"].as_array().cloned().unwrap_or_default()
}

/// The ledger row for `request_id`, waiting briefly: a stream settles after its last byte.
pub async fn ledger_row(gw: &Gateway, id: &str, request_id: &str) -> Value {
    for _ in 0..100 {
        if let Some(row) = ledger(gw, id).await.into_iter().find(|r| r["request_id"] == request_id) {
            return row;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("no ledger row for request {request_id} of tenant {id}: {:?}", ledger(gw, id).await);
}

/// A chat body with one user message.
pub fn chat(model: &str, text: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": text}]})
}

/// The same body, streamed, with or without the usage chunk.
pub fn streamed(mut body: Value, include_usage: bool) -> Value {
    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": include_usage});
    body
}

/// The `data:` payloads of an SSE body, checking the framing the gateway promises: every
/// event is exactly `data: <payload>\n\n`.
pub fn sse_data(reply: &Reply) -> Vec<String> {
    let text = reply.text();
    assert!(text.ends_with("\n\n"), "the stream does not end with a blank line: {text:?}");
    text.trim_end_matches("\n\n")
        .split("\n\n")
        .map(|event| {
            let data = event.strip_prefix("data: ").unwrap_or_else(|| panic!("event {event:?} is not a single data line"));
            assert!(!data.contains('\n'), "multi-line event {event:?}");
            data.to_string()
        })
        .collect()
}

/// The JSON chunks of a stream, excluding a final `[DONE]`.
pub fn sse_chunks(reply: &Reply) -> Vec<Value> {
    sse_data(reply)
        .into_iter()
        .filter(|d| d != "[DONE]")
        .map(|d| serde_json::from_str(&d).unwrap_or_else(|e| panic!("chunk {d:?} is not JSON: {e}")))
        .collect()
}

/// Removes the fields that differ per request (`id`, `created`), recursively.
pub fn normalised(mut value: Value) -> Value {
    fn strip(value: &mut Value) {
        match value {
            Value::Object(map) => {
                map.remove("id");
                map.remove("created");
                map.values_mut().for_each(strip);
            }
            Value::Array(items) => items.iter_mut().for_each(strip),
            _ => {}
        }
    }
    strip(&mut value);
    value
}

/// The concatenated `delta.content` of a stream's chunks.
pub fn streamed_text(chunks: &[Value]) -> String {
    chunks.iter().filter_map(|c| c.pointer("/choices/0/delta/content").and_then(Value::as_str)).collect()
}

/// An upstream that answers every request with 401 and an error body echoing the key it
/// was sent (as some real providers do), in the error shape of `kind`.
pub struct KeyEchoStub {
    pub addr: SocketAddr,
    hits: Arc<AtomicUsize>,
    seen: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl KeyEchoStub {
    pub async fn start(kind: Kind) -> KeyEchoStub {
        let hits = Arc::new(AtomicUsize::new(0));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (h, s) = (hits.clone(), seen.clone());
        let (addr, task) = serve(move |req| {
            let (hits, seen) = (h.clone(), s.clone());
            async move {
                hits.fetch_add(1, Ordering::SeqCst);
                let raw = req.headers().get(kind.auth_header).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
                let key = raw.strip_prefix("Bearer ").unwrap_or(&raw).to_string();
                let _ = req.into_body().collect().await;
                seen.lock().expect("seen").push(key.clone());
                let message = format!("Incorrect API key provided: {key}. You can find your API key in your account.");
                let body = match kind.kind {
                    ProviderKind::Anthropic => json!({"type": "error", "error": {"type": "authentication_error", "message": message}}),
                    ProviderKind::Gemini => json!({"error": {"code": 401, "message": message, "status": "UNAUTHENTICATED"}}),
                    _ => json!({"error": {"message": message, "type": "invalid_request_error", "param": null, "code": "invalid_api_key"}}),
                };
                let mut response = hyper::Response::new(Full::new(Bytes::from(body.to_string())));
                *response.status_mut() = http::StatusCode::UNAUTHORIZED;
                response.headers_mut().insert("content-type", http::HeaderValue::from_static("application/json"));
                // Some upstreams reflect request data in headers too.
                if let Ok(v) = http::HeaderValue::from_str(&format!("key={key}")) {
                    response.headers_mut().insert("x-debug-echo", v);
                }
                response
            }
        })
        .await;
        KeyEchoStub { addr, hits, seen, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    /// The keys it was sent.
    pub fn keys(&self) -> Vec<String> {
        self.seen.lock().expect("seen").clone()
    }
}

impl Drop for KeyEchoStub {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Serves `answer` on a loopback port, one task per connection, until the returned task
/// is aborted.
pub async fn serve<F, Fut>(answer: F) -> (SocketAddr, tokio::task::JoinHandle<()>)
where
    F: Fn(hyper::Request<hyper::body::Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = hyper::Response<Full<Bytes>>> + Send + 'static,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind stub");
    let addr = listener.local_addr().expect("stub addr");
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            let answer = answer.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req| {
                    let answer = answer.clone();
                    async move { Ok::<_, Infallible>(answer(req).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(hyper_util::rt::TokioIo::new(stream), service).await;
            });
        }
    });
    (addr, task)
}

/// [`Gateway::call`] for a gateway served some other way (on a real data dir, say).
pub async fn call_at(addr: SocketAddr, method: &str, path: &str, token: Option<&str>, headers: &[(&str, &str)], body: Vec<u8>) -> Reply {
    call_at_within(Duration::from_secs(30), addr, method, path, token, headers, body).await
}

/// [`call_at`], waiting up to `timeout` for the response (an interpreter's component
/// compiles for many seconds at upload, longer while the whole suite shares the cores).
pub async fn call_at_within(timeout: Duration, addr: SocketAddr, method: &str, path: &str, token: Option<&str>, headers: &[(&str, &str)], body: Vec<u8>) -> Reply {
    crate::sweep::request(headers, &body);
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (mut sender, connection) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await.expect("handshake");
    tokio::spawn(connection);
    let mut request = http::Request::builder().method(method).uri(format!("http://{addr}{path}")).header("host", addr.to_string());
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    let response = tokio::time::timeout(timeout, sender.send_request(request.body(Full::new(Bytes::from(body))).expect("request")))
        .await
        .expect("response in time")
        .expect("response");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.into_body().collect().await.expect("body").to_bytes().to_vec();
    let reply = Reply { status, headers, body };
    crate::sweep::reply(method, path, &reply);
    reply
}
