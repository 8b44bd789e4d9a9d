//! One conformance suite run against every upstream kind (OpenAI, Anthropic, Gemini)
//! through the loopback mock: the exact OpenAI bodies the client gets back (whole and
//! streamed, text and tool calls, usage with cached tokens), the exact upstream request the
//! mock received (path, auth header, translated body), and every error class.

use std::time::Duration;

use serde_json::{json, Value};
use tollgate_tests::mock::{MockUpstream, RecordedRequest};

use crate::mocked::{self, Kind, KeyEchoStub, KINDS};
use crate::support::{Gateway, Reply};

const PROMPT: &str = "Hello conformance";
const SYSTEM: &str = "Be brief.";
const ANSWER: &str = "mock reply to: Hello conformance";
/// ("Be brief." + "Hello conformance") = 26 bytes -> 7 tokens by the mock's count.
const PROMPT_TOKENS: u64 = 7;
/// Words in ANSWER.
const COMPLETION_TOKENS: u64 = 5;

fn key(kind: Kind) -> String {
    format!("sk-conformance-{}-0123456789", kind.name)
}

fn tenant_id(kind: Kind) -> String {
    format!("conf-{}", kind.name)
}

/// A gateway on the mock with one tenant per kind.
struct Setup {
    mock: MockUpstream,
    gw: Gateway,
    tokens: Vec<(Kind, String)>,
}

async fn setup() -> Setup {
    let mock = MockUpstream::start().await.expect("mock");
    let gw = Gateway::start_with(mocked::config(&mock)).await;
    let mut tokens = Vec::new();
    for kind in KINDS {
        tokens.push((kind, mocked::tenant(&gw, &tenant_id(kind), kind.name, &key(kind)).await));
    }
    Setup { mock, gw, tokens }
}

/// The conversation every check sends, plus `extra` fields.
fn body(model: &str, extra: Value) -> Value {
    let mut body = json!({"model": model, "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": PROMPT}]});
    if let (Some(map), Value::Object(extra)) = (body.as_object_mut(), extra) {
        map.extend(extra);
    }
    body
}

fn usage(prompt: u64, completion: u64, cached: u64) -> Value {
    json!({"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion, "prompt_tokens_details": {"cached_tokens": cached}})
}

/// The whole-response body every kind must produce, given its message and finish reason.
/// OpenAI's own answer passes through, so it keeps OpenAI's extra null fields.
fn expected_completion(kind: Kind, model: &str, mut message: Value, finish: &str, usage: Value) -> Value {
    let mut choice = json!({"index": 0, "message": message.clone(), "finish_reason": finish});
    if kind.name == "openai" {
        message["refusal"] = Value::Null;
        choice["message"] = message;
        choice["logprobs"] = Value::Null;
    }
    json!({"object": "chat.completion", "model": model, "choices": [choice], "usage": usage})
}

/// The one request the mock received since `before` (asserting there was exactly one).
fn only_request_since(mock: &MockUpstream, before: usize) -> RecordedRequest {
    let requests = mock.requests();
    assert_eq!(requests.len(), before + 1, "expected exactly one upstream request, got {:?}", &requests[before..]);
    requests[before].clone()
}

/// Checks the upstream saw the right path and auth for `kind`, the key only where it
/// belongs, and never the tenant's gateway token.
fn assert_upstream_auth(kind: Kind, request: &RecordedRequest, model: &str, stream: bool, gateway_token: &str) {
    assert_eq!(request.method, "POST");
    assert_eq!(request.path, kind.path(model, stream), "{}", kind.name);
    assert_eq!(request.header(kind.auth_header), Some(kind.auth_value(&key(kind)).as_str()), "{}: {:?}", kind.name, request.headers);
    for other in ["authorization", "x-api-key", "x-goog-api-key"].into_iter().filter(|h| *h != kind.auth_header) {
        assert_eq!(request.header(other), None, "{} must not send {other}", kind.name);
    }
    assert!(!request.path.contains(&key(kind)), "the key must not be in the URL: {}", request.path);
    for (name, value) in &request.headers {
        assert!(!value.contains(gateway_token), "{}: the gateway token leaked upstream in {name}", kind.name);
    }
    assert!(!String::from_utf8_lossy(&request.body).contains(gateway_token));
    assert_eq!(request.header("content-type"), Some("application/json"));
    if kind.name == "anthropic" {
        assert_eq!(request.header("anthropic-version"), Some("2023-06-01"));
    }
}

/// The translated upstream body for [`body`] with `extra` OpenAI fields, per kind.
fn expected_upstream_body(kind: Kind, model: &str, stream: bool, sent: &Value) -> Value {
    let tools = sent.get("tools").cloned();
    match kind.name {
        "openai" => {
            let mut out = sent.clone();
            out["model"] = json!(model);
            if let Some(map) = out.as_object_mut() {
                map.remove("stream_options");
            }
            if stream {
                out["stream"] = json!(true);
                out["stream_options"] = json!({"include_usage": true});
            }
            out
        }
        "anthropic" => {
            let mut out = json!({"model": model, "system": SYSTEM, "messages": [{"role": "user", "content": PROMPT}], "max_tokens": 50, "temperature": 0.5});
            if let Some(tools) = tools {
                out["tools"] = Value::Array(
                    tools
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|t| json!({"name": t["function"]["name"], "description": t["function"]["description"], "input_schema": t["function"]["parameters"]}))
                        .collect(),
                );
            }
            if stream {
                out["stream"] = json!(true);
            }
            out
        }
        _ => {
            let mut out = json!({
                "contents": [{"role": "user", "parts": [{"text": PROMPT}]}],
                "systemInstruction": {"parts": [{"text": SYSTEM}]},
                "generationConfig": {"maxOutputTokens": 50, "temperature": 0.5},
            });
            if let Some(tools) = tools {
                let declarations: Vec<Value> = tools
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|t| json!({"name": t["function"]["name"], "description": t["function"]["description"], "parameters": t["function"]["parameters"]}))
                    .collect();
                out["tools"] = json!([{"functionDeclarations": declarations}]);
            }
            out
        }
    }
}

fn tools() -> Value {
    json!([{"type": "function", "function": {"name": "lookup", "description": "Look something up", "parameters": {"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]}}}])
}

fn common() -> Value {
    json!({"max_tokens": 50, "temperature": 0.5})
}

#[tokio::test]
async fn plain_chat_is_translated_exactly_for_every_kind() {
    let s = setup().await;
    for (kind, token) in &s.tokens {
        let kind = *kind;
        let model = "mock-plain";
        let before = s.mock.requests().len();
        let sent = body(model, common());
        let reply = s.gw.chat(token, sent.clone()).await;
        assert_eq!(reply.status, 200, "{}: {}", kind.name, reply.text());
        assert_eq!(reply.header("content-type"), "application/json");
        assert_eq!(reply.header("x-tollgate-target"), format!("{}/{model}", kind.name));
        let got = reply.json();
        assert!(got["id"].as_str().is_some_and(|id| !id.is_empty()), "{}: {got}", kind.name);
        assert!(got["created"].as_u64().is_some_and(|c| c > 1_600_000_000), "{}: {got}", kind.name);
        let expected = expected_completion(kind, model, json!({"role": "assistant", "content": ANSWER}), "stop", usage(PROMPT_TOKENS, COMPLETION_TOKENS, 0));
        assert_eq!(mocked::normalised(got), expected, "{}", kind.name);

        let upstream = only_request_since(&s.mock, before);
        assert_upstream_auth(kind, &upstream, model, false, token);
        assert_eq!(upstream.json().expect("upstream JSON"), expected_upstream_body(kind, model, false, &sent), "{}", kind.name);

        let row = mocked::ledger_row(&s.gw, &tenant_id(kind), &reply.header("x-request-id")).await;
        assert_eq!((row["outcome"].as_str(), row["provider"].as_str(), row["model"].as_str()), (Some("success"), Some(kind.name), Some(model)));
        assert_eq!((row["prompt_tokens"].as_u64(), row["completion_tokens"].as_u64()), (Some(PROMPT_TOKENS), Some(COMPLETION_TOKENS)));
    }
}

/// The OpenAI chunk envelope, with OpenAI's own extras when its chunks pass through.
fn expected_chunk(kind: Kind, model: &str, delta: Value, finish: Value, include_usage: bool) -> Value {
    let mut choice = json!({"index": 0, "delta": delta, "finish_reason": finish});
    let mut chunk = json!({"object": "chat.completion.chunk", "model": model});
    if kind.name == "openai" {
        choice["logprobs"] = Value::Null;
        if include_usage {
            chunk["usage"] = Value::Null;
        }
    }
    chunk["choices"] = json!([choice]);
    chunk
}

fn usage_chunk(model: &str, usage: Value) -> Value {
    json!({"object": "chat.completion.chunk", "model": model, "choices": [], "usage": usage})
}

#[tokio::test]
async fn streaming_is_translated_exactly_for_every_kind() {
    let s = setup().await;
    for (kind, token) in &s.tokens {
        let kind = *kind;
        for include_usage in [true, false] {
            let model = "mock-chunks=4";
            let before = s.mock.requests().len();
            let sent = mocked::streamed(body(model, common()), include_usage);
            let reply = s.gw.chat(token, sent.clone()).await;
            assert_eq!(reply.status, 200, "{}: {}", kind.name, reply.text());
            assert_eq!(reply.header("content-type"), "text/event-stream");
            assert_eq!(reply.header("x-tollgate-target"), format!("{}/{model}", kind.name));
            let data = mocked::sse_data(&reply);
            assert_eq!(data.last().map(String::as_str), Some("[DONE]"), "{}: {data:?}", kind.name);
            assert_eq!(data.iter().filter(|d| *d == "[DONE]").count(), 1);
            let chunks = mocked::sse_chunks(&reply);
            assert_eq!(mocked::streamed_text(&chunks), ANSWER, "{}", kind.name);
            for chunk in &chunks {
                assert!(chunk["id"].as_str().is_some_and(|id| !id.is_empty()), "{}: {chunk}", kind.name);
                assert!(chunk["created"].as_u64().is_some(), "{}: {chunk}", kind.name);
            }
            let chunks: Vec<Value> = chunks.into_iter().map(mocked::normalised).collect();
            // The content pieces, as the upstream split them (four, by `chunks=4`).
            let pieces: Vec<String> = chunks
                .iter()
                .filter_map(|c| c.pointer("/choices/0/delta/content").and_then(Value::as_str))
                .filter(|t| !t.is_empty())
                .map(str::to_owned)
                .collect();
            assert_eq!(pieces.len(), 4, "{}: {chunks:?}", kind.name);
            let mut expected = Vec::new();
            if kind.name == "openai" {
                // OpenAI's first chunk carries the role and empty content.
                expected.push(expected_chunk(kind, model, json!({"role": "assistant", "content": ""}), Value::Null, include_usage));
            }
            for (i, piece) in pieces.iter().enumerate() {
                let delta = if i == 0 && kind.name != "openai" { json!({"role": "assistant", "content": piece}) } else { json!({"content": piece}) };
                expected.push(expected_chunk(kind, model, delta, Value::Null, include_usage));
            }
            expected.push(expected_chunk(kind, model, json!({}), json!("stop"), include_usage));
            if include_usage {
                expected.push(usage_chunk(model, usage(PROMPT_TOKENS, COMPLETION_TOKENS, 0)));
            }
            assert_eq!(chunks, expected, "{} include_usage={include_usage}", kind.name);
            if !include_usage {
                assert!(!reply.text().contains("\"usage\""), "{}: usage sent without include_usage: {}", kind.name, reply.text());
            }

            let upstream = only_request_since(&s.mock, before);
            assert_upstream_auth(kind, &upstream, model, true, token);
            assert_eq!(upstream.json().expect("upstream JSON"), expected_upstream_body(kind, model, true, &sent), "{}", kind.name);

            let row = mocked::ledger_row(&s.gw, &tenant_id(kind), &reply.header("x-request-id")).await;
            assert_eq!(row["outcome"], "success", "{}", kind.name);
            assert_eq!((row["prompt_tokens"].as_u64(), row["completion_tokens"].as_u64()), (Some(PROMPT_TOKENS), Some(COMPLETION_TOKENS)), "{}", kind.name);
        }
    }
}

#[tokio::test]
async fn tool_calls_come_back_as_openai_tool_calls_for_every_kind() {
    let s = setup().await;
    let tool_usage = usage(PROMPT_TOKENS, tollgate_tests::mock::TOOL_CALL_TOKENS, 0);
    for (kind, token) in &s.tokens {
        let kind = *kind;
        let model = "mock-tools";
        let mut extra = common();
        extra["tools"] = tools();

        // Whole.
        let before = s.mock.requests().len();
        let sent = body(model, extra.clone());
        let reply = s.gw.chat(token, sent.clone()).await;
        assert_eq!(reply.status, 200, "{}: {}", kind.name, reply.text());
        let got = reply.json();
        let call_id = got.pointer("/choices/0/message/tool_calls/0/id").and_then(Value::as_str).unwrap_or("");
        assert!(!call_id.is_empty(), "{}: tool call without id: {got}", kind.name);
        let message = json!({"role": "assistant", "content": null, "tool_calls": [{"type": "function", "function": {"name": "lookup", "arguments": "{\"q\":\"mock\"}"}}]});
        assert_eq!(mocked::normalised(got), expected_completion(kind, model, message, "tool_calls", tool_usage.clone()), "{}", kind.name);
        let upstream = only_request_since(&s.mock, before);
        assert_upstream_auth(kind, &upstream, model, false, token);
        assert_eq!(upstream.json().expect("upstream JSON"), expected_upstream_body(kind, model, false, &sent), "{}", kind.name);

        // Streamed.
        let before = s.mock.requests().len();
        let sent = mocked::streamed(body(model, extra), true);
        let reply = s.gw.chat(token, sent.clone()).await;
        assert_eq!(reply.status, 200, "{}: {}", kind.name, reply.text());
        let data = mocked::sse_data(&reply);
        assert_eq!(data.last().map(String::as_str), Some("[DONE]"), "{}", kind.name);
        let chunks = mocked::sse_chunks(&reply);
        let calls: Vec<&Value> = chunks.iter().filter_map(|c| c.pointer("/choices/0/delta/tool_calls/0")).collect();
        assert!(!calls.is_empty(), "{}: no tool-call deltas: {chunks:?}", kind.name);
        assert_eq!(calls[0]["index"], 0, "{}", kind.name);
        assert_eq!(calls[0]["type"], "function", "{}", kind.name);
        assert_eq!(calls[0]["function"]["name"], "lookup", "{}", kind.name);
        assert!(calls[0]["id"].as_str().is_some_and(|id| !id.is_empty()), "{}: {:?}", kind.name, calls[0]);
        assert!(calls[1..].iter().all(|c| c.get("id").is_none() && c["index"] == 0), "{}: later deltas continue call 0: {calls:?}", kind.name);
        let arguments: String = calls.iter().filter_map(|c| c.pointer("/function/arguments").and_then(Value::as_str)).collect();
        assert_eq!(serde_json::from_str::<Value>(&arguments).ok(), Some(json!({"q": "mock"})), "{}: arguments {arguments:?}", kind.name);
        let finishes: Vec<&Value> = chunks.iter().filter_map(|c| c.pointer("/choices/0/finish_reason")).filter(|f| !f.is_null()).collect();
        assert_eq!(finishes, vec![&json!("tool_calls")], "{}", kind.name);
        assert_eq!(mocked::normalised(chunks.last().cloned().unwrap_or_default()), usage_chunk(model, tool_usage.clone()), "{}", kind.name);
        assert_eq!(mocked::streamed_text(&chunks), "", "{}: a tool call is not content", kind.name);
        let upstream = only_request_since(&s.mock, before);
        assert_upstream_auth(kind, &upstream, model, true, token);
        assert_eq!(upstream.json().expect("upstream JSON"), expected_upstream_body(kind, model, true, &sent), "{}", kind.name);
    }
}

#[tokio::test]
async fn cached_tokens_are_reported_whole_streamed_and_in_the_ledger_for_every_kind() {
    let s = setup().await;
    for (kind, token) in &s.tokens {
        let kind = *kind;
        let model = "mock-cached=3";
        let whole = s.gw.chat(token, body(model, json!({}))).await;
        assert_eq!(whole.status, 200, "{}: {}", kind.name, whole.text());
        assert_eq!(whole.json()["usage"], usage(PROMPT_TOKENS, COMPLETION_TOKENS, 3), "{}", kind.name);

        let reply = s.gw.chat(token, mocked::streamed(body(model, json!({})), true)).await;
        assert_eq!(reply.status, 200, "{}: {}", kind.name, reply.text());
        assert_eq!(mocked::sse_data(&reply).last().map(String::as_str), Some("[DONE]"));
        let chunks = mocked::sse_chunks(&reply);
        let with_usage: Vec<&Value> = chunks.iter().filter(|c| c.get("usage").is_some_and(|u| !u.is_null())).collect();
        assert_eq!(with_usage.len(), 1, "{}: exactly one usage chunk: {chunks:?}", kind.name);
        assert_eq!(mocked::normalised(with_usage[0].clone()), usage_chunk(model, usage(PROMPT_TOKENS, COMPLETION_TOKENS, 3)), "{}", kind.name);
        assert_eq!(chunks.last(), Some(with_usage[0]), "{}: the usage chunk is the last before [DONE]", kind.name);

        let row = mocked::ledger_row(&s.gw, &tenant_id(kind), &reply.header("x-request-id")).await;
        assert_eq!((row["prompt_tokens"].as_u64(), row["completion_tokens"].as_u64(), row["cached_tokens"].as_u64()), (Some(PROMPT_TOKENS), Some(COMPLETION_TOKENS), Some(3)), "{}", kind.name);
    }
}

/// Sends `model` and returns the reply and how many upstream requests it caused.
async fn failing(s: &Setup, token: &str, model: &str, stream: bool) -> (Reply, usize) {
    let before = s.mock.hits();
    let mut sent = body(model, json!({}));
    if stream {
        sent = mocked::streamed(sent, true);
    }
    let reply = s.gw.chat(token, sent).await;
    (reply, s.mock.hits() - before)
}

#[tokio::test]
async fn upstream_error_classes_map_to_client_statuses_for_every_kind() {
    let s = setup().await;
    let attempts = s.gw.app.config.upstream.attempts_per_target as usize;
    assert_eq!(attempts, 2);
    for (kind, token) in &s.tokens {
        let kind = *kind;
        for stream in [false, true] {
            // (model, status, code, upstream hits): 4xx is not retried; 429, 5xx and broken
            // connections are, attempts_per_target times.
            let cases: [(&str, u16, &str, usize); 4] = [
                ("mock-400", 400, "upstream_rejected", 1),
                ("mock-429", 429, "upstream_rate_limited", attempts),
                ("mock-500", 502, "upstream_error", attempts),
                ("mock-reset", 502, "upstream_unreachable", attempts),
            ];
            for (model, status, code, hits) in cases {
                let (reply, seen) = failing(&s, token, model, stream).await;
                let what = format!("{} {model} stream={stream}", kind.name);
                assert_eq!((reply.status, reply.error_code().as_str()), (status, code), "{what}: {}", reply.text());
                assert_eq!(reply.header("content-type"), "application/json", "{what}");
                assert_eq!(seen, hits, "{what}: upstream hits");
                let error = &reply.json()["error"];
                assert_eq!(error["type"], if status >= 500 { "server_error" } else { "invalid_request_error" }, "{what}");
                let message = error["message"].as_str().unwrap_or("");
                assert!(message.starts_with(&format!("{}: ", kind.name)), "{what}: {message}");
                if model != "mock-reset" {
                    let forced = model.trim_start_matches("mock-");
                    assert_eq!(message, format!("{}: mock: forced {forced}", kind.name), "{what}");
                }
                let row = mocked::ledger_row(&s.gw, &tenant_id(kind), &reply.header("x-request-id")).await;
                assert_eq!(row["outcome"], "upstream_error", "{what}");
                assert_eq!((row["prompt_tokens"].as_u64(), row["completion_tokens"].as_u64()), (Some(0), Some(0)), "{what}: nothing flowed, nothing billed");
            }
        }
    }
}

#[tokio::test]
async fn a_hanging_upstream_is_a_504_after_each_attempt_times_out() {
    let mock = MockUpstream::start().await.expect("mock");
    let mut config = mocked::config(&mock);
    config.upstream.timeout = Duration::from_millis(600);
    let gw = Gateway::start_with(config).await;
    let mut tokens = Vec::new();
    for kind in KINDS {
        tokens.push((kind, mocked::tenant(&gw, &tenant_id(kind), kind.name, &key(kind)).await));
    }
    let started = std::time::Instant::now();
    // The three kinds at once, so the test waits for one round of timeouts, not three.
    let replies = futures_util::future::join_all(tokens.iter().map(|(kind, token)| {
        let gw = &gw;
        async move { (*kind, gw.chat(token, body(&format!("mock-hang-{}", kind.name), json!({}))).await) }
    }))
    .await;
    for (kind, reply) in replies {
        assert_eq!((reply.status, reply.error_code().as_str()), (504, "upstream_timeout"), "{}: {}", kind.name, reply.text());
        assert_eq!(reply.json()["error"]["message"], format!("{}: no response within 600 ms", kind.name));
    }
    assert_eq!(mock.hits(), 3 * 2, "each kind tried attempts_per_target times");
    assert!(started.elapsed() >= Duration::from_millis(1200), "two attempts of 600 ms each");
    assert!(started.elapsed() < Duration::from_secs(4), "{:?}", started.elapsed());
}

#[tokio::test]
async fn a_refused_key_is_a_502_upstream_auth_failed_without_the_key() {
    let mock = MockUpstream::start().await.expect("mock");
    let mut config = mocked::config(&mock);
    let mut stubs = Vec::new();
    for kind in KINDS {
        let stub = KeyEchoStub::start(kind).await;
        mocked::point(&mut config, &format!("{}-denied", kind.name), kind, &stub.url());
        stubs.push((kind, stub));
    }
    let gw = Gateway::start_with(config).await;
    for (kind, stub) in &stubs {
        let kind = *kind;
        let provider = format!("{}-denied", kind.name);
        let token = mocked::tenant(&gw, &format!("denied-{}", kind.name), &provider, &key(kind)).await;
        for stream in [false, true] {
            let before = stub.hits();
            let mut sent = body("mock", json!({}));
            if stream {
                sent = mocked::streamed(sent, true);
            }
            let reply = gw.chat(&token, sent).await;
            assert_eq!((reply.status, reply.error_code().as_str()), (502, "upstream_auth_failed"), "{}: {}", kind.name, reply.text());
            assert_eq!(stub.hits() - before, 1, "{}: a refused key is not retried", kind.name);
            let message = reply.json()["error"]["message"].as_str().unwrap_or("").to_string();
            assert_eq!(message, format!("{provider}: Incorrect API key provided: [redacted]. You can find your API key in your account."));
            assert!(!reply.text().contains(&key(kind)));
            assert!(reply.headers.iter().all(|(_, v)| !String::from_utf8_lossy(v.as_bytes()).contains(&key(kind))));
        }
        assert_eq!(stub.keys(), vec![key(kind), key(kind)], "{}: the stub was sent the key", kind.name);
    }
    assert_eq!(mock.hits(), 0);
}

#[tokio::test]
async fn malformed_sse_mid_stream_ends_with_the_cut_event_and_no_done_for_every_kind() {
    let s = setup().await;
    for (kind, token) in &s.tokens {
        let kind = *kind;
        let (reply, hits) = failing(&s, token, "mock-badsse", true).await;
        assert_eq!(reply.status, 200, "{}: the stream had started", kind.name);
        assert_eq!(hits, 1, "{}: a started stream is not retried", kind.name);
        let data = mocked::sse_data(&reply);
        assert!(!data.iter().any(|d| d == "[DONE]"), "{}: {data:?}", kind.name);
        let chunks = mocked::sse_chunks(&reply);
        let last = chunks.last().cloned().unwrap_or_default();
        assert_eq!(last, json!({"error": {"message": "the upstream stream ended early", "type": "server_error", "code": "upstream_stream_cut"}}), "{}", kind.name);
        // The first piece arrived before the bad event.
        let text = mocked::streamed_text(&chunks);
        assert!(!text.is_empty() && ANSWER.starts_with(&text) && text != ANSWER, "{}: {text:?}", kind.name);
        let row = mocked::ledger_row(&s.gw, &tenant_id(kind), &reply.header("x-request-id")).await;
        assert_eq!(row["outcome"], "upstream_cut", "{}", kind.name);
        assert!(row["completion_tokens"].as_u64().unwrap_or(0) >= (text.len() as u64).div_ceil(4), "{}: what flowed ({text:?}) is billed: {row}", kind.name);
    }
}

#[tokio::test]
async fn an_answer_without_usage_is_billed_by_estimate_for_every_kind() {
    let s = setup().await;
    for (kind, token) in &s.tokens {
        let kind = *kind;
        for stream in [false, true] {
            let mut sent = body("mock-nousage", json!({}));
            if stream {
                sent = mocked::streamed(sent, true);
            }
            let reply = s.gw.chat(token, sent).await;
            assert_eq!(reply.status, 200, "{} stream={stream}: {}", kind.name, reply.text());
            let text = if stream { mocked::streamed_text(&mocked::sse_chunks(&reply)) } else { reply.json()["choices"][0]["message"]["content"].as_str().unwrap_or("").to_string() };
            assert_eq!(text, ANSWER, "{} stream={stream}", kind.name);
            let row = mocked::ledger_row(&s.gw, &tenant_id(kind), &reply.header("x-request-id")).await;
            assert_eq!(row["outcome"], "success");
            // The gateway's own estimate: prompt bytes / 4 plus 3 per message; the answer at
            // 4 bytes per token.
            let prompt_estimate = ((SYSTEM.len() + PROMPT.len()) as u64).div_ceil(4) + 3 * 2;
            assert_eq!(
                (row["prompt_tokens"].as_u64(), row["completion_tokens"].as_u64()),
                (Some(prompt_estimate), Some((ANSWER.len() as u64).div_ceil(4))),
                "{} stream={stream}: an answer the upstream did not count is billed by estimate: {row}",
                kind.name
            );
        }
    }
}

#[tokio::test]
async fn a_tool_call_without_usage_is_billed_by_estimate_for_every_kind() {
    let s = setup().await;
    let arguments = r#"{"q":"mock"}"#;
    for (kind, token) in &s.tokens {
        let kind = *kind;
        for stream in [false, true] {
            let mut sent = body("mock-nousage", json!({"tools": tools()}));
            if stream {
                sent = mocked::streamed(sent, true);
            }
            let reply = s.gw.chat(token, sent).await;
            assert_eq!(reply.status, 200, "{} stream={stream}: {}", kind.name, reply.text());
            let row = mocked::ledger_row(&s.gw, &tenant_id(kind), &reply.header("x-request-id")).await;
            assert_eq!(row["outcome"], "success");
            assert_eq!(row["completion_tokens"].as_u64(), Some((arguments.len() as u64).div_ceil(4)), "{} stream={stream}: tool-call arguments are output too: {row}", kind.name);
        }
    }
}

#[tokio::test]
async fn an_upstream_that_stalls_mid_stream_is_cut_after_the_idle_timeout_for_every_kind() {
    let mock = MockUpstream::start().await.expect("mock");
    let mut config = mocked::config(&mock);
    config.upstream.timeout = Duration::from_millis(400);
    let gw = Gateway::start_with(config).await;
    let mut tokens = Vec::new();
    for kind in KINDS {
        tokens.push((kind, mocked::tenant(&gw, &tenant_id(kind), kind.name, &key(kind)).await));
    }
    let started = std::time::Instant::now();
    // The first piece comes at once, the next after 3 s of silence.
    let replies = futures_util::future::join_all(tokens.iter().map(|(kind, token)| {
        let gw = &gw;
        async move { (*kind, gw.chat(token, mocked::streamed(body("mock-chunks=2-pace=3000", json!({})), true)).await) }
    }))
    .await;
    assert!(started.elapsed() < Duration::from_millis(2500), "the stall was cut, not waited out: {:?}", started.elapsed());
    for (kind, reply) in replies {
        assert_eq!(reply.status, 200, "{}", kind.name);
        let chunks = mocked::sse_chunks(&reply);
        assert!(!mocked::sse_data(&reply).iter().any(|d| d == "[DONE]"), "{}", kind.name);
        assert_eq!(chunks.last().map(|c| c["error"]["code"].clone()), Some(json!("upstream_stream_cut")), "{}: {chunks:?}", kind.name);
        let text = mocked::streamed_text(&chunks);
        assert!(!text.is_empty() && ANSWER.starts_with(&text) && text != ANSWER, "{}: {text:?}", kind.name);
        let row = mocked::ledger_row(&gw, &tenant_id(kind), &reply.header("x-request-id")).await;
        assert_eq!(row["outcome"], "upstream_cut", "{}", kind.name);
    }
    assert_eq!(mock.hits(), 3, "a started stream is not retried");
}
