//! OpenTelemetry traces from the real `tollgate` binary: with `[telemetry] otlp_endpoint`
//! set, a plain and a streamed chat through the loopback mock upstream (OpenAI kind, a
//! stored credential) reach a test OTLP/HTTP receiver as one trace each: the request span
//! (tenant, status) with its policy, reservation, upstream-attempt (GenAI conventions)
//! and settlement (the tokens the mock reported) children, flushed at graceful shutdown,
//! and no byte of what is exported holds the provider key, the tenant token or the
//! operator token. Without the setting nothing is exported, even with the SDK's
//! `OTEL_EXPORTER_OTLP_ENDPOINT` in the environment.
//!
//! Everything listens on 127.0.0.1 and every wait is bounded.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

mod common;
#[allow(dead_code, unused_imports)] // the parts of the mock this binary does not use
#[path = "../../tests/src/mock.rs"]
mod mock;

use common::{eventually, Gateway, ADMIN};
use serde_json::{json, Value};

/// The provider key stored for the tenant: must never be exported.
const PROVIDER_KEY: &str = "sk-otel-canary-7f3a9c1e5b2d4086";
const TENANT: &str = "acme-otel";
/// How long the gateway has to exit after SIGTERM (drain, settle, last export).
const EXIT_WITHIN: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------------------
// A minimal OTLP/HTTP receiver: keeps every request's raw bytes and JSON body.

#[derive(Default)]
struct Received {
    /// Every byte received, head and body, of every request.
    raw: Vec<u8>,
    /// `(path, body)` of each request.
    requests: Vec<(String, Vec<u8>)>,
}

#[derive(Clone)]
struct Receiver {
    addr: SocketAddr,
    received: Arc<Mutex<Received>>,
}

impl Receiver {
    fn start() -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind receiver");
        let addr = listener.local_addr().expect("receiver addr");
        let received = Arc::new(Mutex::new(Received::default()));
        let kept = received.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let kept = kept.clone();
                std::thread::spawn(move || serve_connection(stream, &kept));
            }
        });
        Receiver { addr, received }
    }

    fn request_count(&self) -> usize {
        self.received.lock().unwrap().requests.len()
    }

    /// Every span received, each with its resource's attributes.
    fn spans(&self) -> Vec<Value> {
        let received = self.received.lock().unwrap();
        let mut spans = Vec::new();
        for (path, body) in &received.requests {
            assert_eq!(path, "/v1/traces", "the exporter posted to {path}");
            let value: Value = serde_json::from_slice(body).unwrap_or_else(|e| panic!("an export is not JSON ({e}): {}", String::from_utf8_lossy(body)));
            for resource in value["resourceSpans"].as_array().into_iter().flatten() {
                for scope in resource["scopeSpans"].as_array().into_iter().flatten() {
                    for span in scope["spans"].as_array().into_iter().flatten() {
                        let mut span = span.clone();
                        span["resource"] = resource["resource"].clone();
                        spans.push(span);
                    }
                }
            }
        }
        spans
    }
}

/// Serves keep-alive requests on one connection until it closes.
fn serve_connection(stream: TcpStream, received: &Mutex<Received>) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    let mut writer = stream.try_clone().expect("clone");
    let mut reader = BufReader::new(stream);
    loop {
        let mut head = Vec::new();
        let mut content_length = 0usize;
        let mut request_line = String::new();
        loop {
            let mut line = String::new();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            head.extend_from_slice(line.as_bytes());
            if request_line.is_empty() {
                request_line = line.clone();
            }
            if let Some((name, value)) = line.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                content_length = value.trim().parse().expect("content-length");
            }
            if line == "\r\n" {
                break;
            }
        }
        let mut body = vec![0u8; content_length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let path = request_line.split(' ').nth(1).unwrap_or_default().to_string();
        {
            let mut received = received.lock().unwrap();
            received.raw.extend_from_slice(&head);
            received.raw.extend_from_slice(&body);
            received.requests.push((path, body));
        }
        if writer.write_all(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}").is_err() {
            return;
        }
    }
}

// ---------------------------------------------------------------------------------------
// OTLP JSON helpers.

/// An attribute's value as JSON: strings as strings, integers as numbers (OTLP JSON
/// may write 64-bit integers as strings).
fn attribute(span: &Value, key: &str) -> Option<Value> {
    let attributes = span["attributes"].as_array()?;
    let value = &attributes.iter().find(|a| a["key"] == key)?["value"];
    if let Some(s) = value.get("stringValue") {
        return Some(s.clone());
    }
    if let Some(i) = value.get("intValue") {
        return Some(match i {
            Value::String(s) => json!(s.parse::<i64>().expect("intValue")),
            other => other.clone(),
        });
    }
    value.get("boolValue").or_else(|| value.get("doubleValue")).cloned()
}

fn attr(span: &Value, key: &str) -> Value {
    attribute(span, key).unwrap_or_else(|| panic!("span {} has no attribute {key}: {span}", span["name"]))
}

/// The one child of `parent` that `matches`.
fn child<'a>(spans: &'a [Value], parent: &Value, what: &str, matches: impl Fn(&Value) -> bool) -> &'a Value {
    let children: Vec<&Value> = spans.iter().filter(|s| s["parentSpanId"] == parent["spanId"] && s["traceId"] == parent["traceId"] && matches(s)).collect();
    assert_eq!(children.len(), 1, "expected one {what} span under the request span; spans: {spans:#?}");
    children[0]
}

// ---------------------------------------------------------------------------------------
// The gateway.

fn write_config(dir: &Path, mock: &str, telemetry: Option<SocketAddr>) -> String {
    let mut text = format!("[providers.openai]\nkind = \"openai\"\nbase_url = \"{mock}/v1\"\n");
    if let Some(addr) = telemetry {
        text.push_str(&format!("\n[telemetry]\notlp_endpoint = \"http://{addr}\"\nservice_name = \"tollgate-otel-test\"\n"));
    }
    let path = dir.join("tollgate.toml");
    std::fs::write(&path, text).expect("config");
    path.display().to_string()
}

/// A tenant with the provider key stored as its `main` credential; returns its token.
fn tenant(gw: &Gateway) -> String {
    gw.client.admin_ok("POST", "/admin/v1/tenants", json!({"id": TENANT}));
    let token = gw.client.admin_ok("POST", &format!("/admin/v1/tenants/{TENANT}/tokens"), json!({"scope": "inference"}))["token"].as_str().expect("token").to_string();
    gw.client.admin_ok("PUT", &format!("/admin/v1/tenants/{TENANT}/credentials/main"), json!({"provider": "openai", "api_key": PROVIDER_KEY}));
    token
}

/// A chat through the stored credential; returns the request id and the usage the client
/// was told (the mock's figures).
fn chat(gw: &Gateway, token: &str, model: &str, stream: bool) -> (String, u64, u64) {
    let mut body = json!({"model": format!("openai/{model}"), "messages": [{"role": "user", "content": "trace this request please"}]});
    if stream {
        body["stream"] = json!(true);
        body["stream_options"] = json!({"include_usage": true});
    }
    let reply = gw.client.call("POST", "/v1/chat/completions", Some(token), body).expect("chat");
    assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
    let request_id = reply.header("x-request-id").expect("x-request-id").to_string();
    let usage = if stream {
        let text = String::from_utf8_lossy(&reply.body).to_string();
        let chunks: Vec<Value> = text.split("\n\n").filter_map(|e| e.strip_prefix("data: ")).filter(|d| *d != "[DONE]").map(|d| serde_json::from_str(d).expect("chunk")).collect();
        chunks.iter().rev().find(|c| c["usage"].is_object()).expect("a usage chunk")["usage"].clone()
    } else {
        reply.json()["usage"].clone()
    };
    (request_id, usage["prompt_tokens"].as_u64().expect("prompt_tokens"), usage["completion_tokens"].as_u64().expect("completion_tokens"))
}

/// SIGTERM, and wait for a clean exit: the graceful shutdown that flushes the exporter.
fn terminate(gw: &mut Gateway) {
    let status = std::process::Command::new("kill").args(["-TERM", &gw.child.id().to_string()]).status().expect("kill");
    assert!(status.success(), "kill -TERM failed");
    let mut exit = None;
    eventually(EXIT_WITHIN, || {
        exit = gw.child.try_wait().expect("wait");
        exit.is_some()
    });
    let exit = exit.unwrap_or_else(|| panic!("the gateway did not exit within {EXIT_WITHIN:?} of SIGTERM"));
    assert!(exit.success(), "the gateway exited with {exit}: {}", gw.log.lock().unwrap().join("\n"));
}

#[test]
fn plain_and_streamed_chats_are_exported_as_traces_without_secrets() {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let upstream = runtime.block_on(mock::MockUpstream::start()).expect("mock upstream");
    let receiver = Receiver::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(dir.path(), &upstream.url(), Some(receiver.addr));
    let mut gw = Gateway::start_with(dir.path(), &[("TOLLGATE_CONFIG", &config)]);
    let token = tenant(&gw);

    let plain = chat(&gw, &token, "mock-plain", false);
    let streamed = chat(&gw, &token, "mock-chunks=4", true);
    let embedded = gw.client.call("POST", "/v1/embeddings", Some(&token), json!({"model": "openai/mock-embed", "input": ["trace this request please"]})).expect("embeddings");
    assert_eq!(embedded.status, 200, "{}", String::from_utf8_lossy(&embedded.body));
    let embeddings_id = embedded.header("x-request-id").expect("x-request-id").to_string();
    let responded = gw.client.call("POST", "/v1/responses", Some(&token), json!({"model": "openai/mock-plain", "input": "trace this request please"})).expect("responses");
    assert_eq!(responded.status, 200, "{}", String::from_utf8_lossy(&responded.body));
    let responses_id = responded.header("x-request-id").expect("x-request-id").to_string();
    // The first attempt fails (500) and the retry succeeds: two attempt spans.
    let (retried_id, _, _) = chat(&gw, &token, "mock-fail-first=1", false);
    terminate(&mut gw);
    // The batch is sent at shutdown; the receiver's threads may still be storing it.
    let spans_of = |id: &str| receiver.spans().into_iter().filter(|s| attribute(s, "tollgate.request_id") == Some(json!(id))).count();
    eventually(Duration::from_secs(10), || spans_of(&plain.0) == 1 && spans_of(&streamed.0) == 1);

    let spans = receiver.spans();
    for ((request_id, input_tokens, output_tokens), model, stream) in [(plain, "mock-plain", false), (streamed, "mock-chunks=4", true)] {
        let what = if stream { "streamed" } else { "plain" };
        let request = spans.iter().find(|s| attribute(s, "tollgate.request_id") == Some(json!(request_id))).unwrap_or_else(|| panic!("no request span for the {what} chat {request_id}: {spans:#?}"));
        assert_eq!(request["name"], "chat", "{what}");
        assert_eq!(attr(request, "tollgate.tenant_id"), json!(TENANT), "{what}");
        assert_eq!(attr(request, "http.request.method"), json!("POST"), "{what}");
        assert_eq!(attr(request, "url.path"), json!("/v1/chat/completions"), "{what}");
        assert_eq!(attr(request, "http.response.status_code"), json!(200), "{what}");
        let service = request["resource"]["attributes"].as_array().into_iter().flatten().find(|a| a["key"] == "service.name").map(|a| a["value"]["stringValue"].clone());
        assert_eq!(service, Some(json!("tollgate-otel-test")), "{what}");

        let route = child(&spans, request, "tollgate.policy.route", |s| s["name"] == "tollgate.policy.route");
        assert_eq!(attr(route, "tollgate.policy.decision"), json!("route"), "{what}");
        let reserve = child(&spans, request, "tollgate.reserve", |s| s["name"] == "tollgate.reserve");
        assert!(attr(reserve, "tollgate.reserve.microdollars").as_i64().is_some(), "{what}");

        let attempt = child(&spans, request, "upstream attempt", |s| attribute(s, "gen_ai.operation.name").is_some());
        assert_eq!(attempt["name"], json!(format!("chat {model}")), "{what}");
        assert_eq!(attr(attempt, "gen_ai.operation.name"), json!("chat"), "{what}");
        assert_eq!(attr(attempt, "gen_ai.provider.name"), json!("openai"), "{what}");
        assert_eq!(attr(attempt, "gen_ai.request.model"), json!(model), "{what}");
        assert_eq!(attr(attempt, "server.address"), json!("127.0.0.1"), "{what}");
        assert_eq!(attr(attempt, "http.response.status_code"), json!(200), "{what}");

        let settle = child(&spans, request, "tollgate.settle", |s| s["name"] == "tollgate.settle");
        assert_eq!(attr(settle, "tollgate.outcome"), json!("success"), "{what}");
        assert_eq!(attr(settle, "gen_ai.response.model"), json!(model), "{what}");
        assert_eq!(attr(settle, "gen_ai.usage.input_tokens"), json!(input_tokens), "{what}: the tokens the mock reported");
        assert_eq!(attr(settle, "gen_ai.usage.output_tokens"), json!(output_tokens), "{what}: the tokens the mock reported");
        assert!(input_tokens > 0 && output_tokens > 0, "{what}: the mock reports usage");
        assert!(attr(settle, "tollgate.cost_microdollars").as_i64().is_some(), "{what}");
    }

    let request = spans.iter().find(|s| attribute(s, "tollgate.request_id") == Some(json!(embeddings_id))).expect("the embeddings request span");
    assert_eq!(request["name"], "embeddings");
    let attempt = child(&spans, request, "upstream attempt", |s| attribute(s, "gen_ai.operation.name").is_some());
    assert_eq!((attr(attempt, "gen_ai.operation.name"), attempt["name"].clone()), (json!("embeddings"), json!("embeddings mock-embed")));
    let settle = child(&spans, request, "tollgate.settle", |s| s["name"] == "tollgate.settle");
    assert!(attr(settle, "gen_ai.usage.input_tokens").as_i64().is_some_and(|t| t > 0));

    // The Responses API runs the chat path: a chat attempt under a `responses` request.
    let request = spans.iter().find(|s| attribute(s, "tollgate.request_id") == Some(json!(responses_id))).expect("the responses request span");
    assert_eq!(request["name"], "responses");
    let attempt = child(&spans, request, "upstream attempt", |s| attribute(s, "gen_ai.operation.name").is_some());
    assert_eq!(attr(attempt, "gen_ai.operation.name"), json!("chat"));
    child(&spans, request, "tollgate.settle", |s| s["name"] == "tollgate.settle");

    let request = spans.iter().find(|s| attribute(s, "tollgate.request_id") == Some(json!(retried_id))).expect("the retried request span");
    let first = child(&spans, request, "first attempt", |s| attribute(s, "tollgate.attempt") == Some(json!(1)));
    assert_eq!((attr(first, "http.response.status_code"), attr(first, "error.type")), (json!(500), json!("500")));
    assert_eq!(first["status"]["code"], json!(2), "a failed attempt's span status is error: {first}");
    let second = child(&spans, request, "second attempt", |s| attribute(s, "tollgate.attempt") == Some(json!(2)));
    assert_eq!(attr(second, "http.response.status_code"), json!(200));
    assert!(attribute(second, "error.type").is_none());

    let raw = receiver.received.lock().unwrap().raw.clone();
    let text = String::from_utf8_lossy(&raw);
    for (name, secret) in [("provider key", PROVIDER_KEY), ("tenant token", token.as_str()), ("operator token", ADMIN)] {
        assert!(!text.contains(secret), "the {name} was exported");
    }
    assert!(!text.contains("trace this request please"), "prompt text was exported");
}

#[test]
fn nothing_is_exported_without_an_endpoint_even_with_the_sdk_environment() {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let upstream = runtime.block_on(mock::MockUpstream::start()).expect("mock upstream");
    let receiver = Receiver::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(dir.path(), &upstream.url(), None);
    let endpoint = format!("http://{}", receiver.addr);
    let mut gw = Gateway::start_with(dir.path(), &[("TOLLGATE_CONFIG", &config), ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint), ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", &endpoint)]);
    let token = tenant(&gw);
    chat(&gw, &token, "mock-plain", false);
    chat(&gw, &token, "mock-chunks=2", true);
    terminate(&mut gw);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(receiver.request_count(), 0, "spans were exported with no [telemetry] otlp_endpoint");
}
