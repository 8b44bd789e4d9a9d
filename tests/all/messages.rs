//! `POST /v1/messages` and `/v1/messages/count_tokens` end to end: Anthropic Messages
//! bodies as the upstreams receive them (OpenAI, Anthropic, Gemini kinds on the mock),
//! answers and streams in Anthropic's shapes, tools both ways, usage and ledger rows,
//! Anthropic-shaped errors, token counting and the demo provider.

use serde_json::{json, Value};
use tollgate::catalog::ModelEntry;
use tollgate_tests::mock::MockUpstream;

use crate::mocked;
use crate::support::{Gateway, Reply};

/// `input` and `output` micro-dollars a token.
fn priced(provider: &str, model: &str, input: f64, output: f64) -> ModelEntry {
    ModelEntry {
        provider: provider.into(),
        model: model.into(),
        input_usd_per_mtok: input,
        output_usd_per_mtok: output,
        context_window: 8_192,
        cached_input_usd_per_mtok: None,
        cache_write_usd_per_mtok: None,
    }
}

/// Sends a Messages request the way the anthropic SDK does: the token in `x-api-key`.
async fn messages(gw: &Gateway, token: &str, body: Value) -> Reply {
    let headers = [("x-api-key", token), ("anthropic-version", "2023-06-01")];
    gw.call("POST", "/v1/messages", None, &headers, body.to_string().into_bytes()).await
}

async fn count(gw: &Gateway, token: &str, body: Value) -> Reply {
    gw.call("POST", "/v1/messages/count_tokens", None, &[("x-api-key", token)], body.to_string().into_bytes()).await
}

/// The events of an Anthropic SSE body: `(event name, data)`, checking the name matches
/// the data's `type`.
fn events(reply: &Reply) -> Vec<(String, Value)> {
    let text = reply.text();
    assert!(text.ends_with("\n\n"), "the stream does not end with a blank line: {text:?}");
    text.trim_end_matches("\n\n")
        .split("\n\n")
        .map(|frame| {
            let (name, data) = frame.split_once('\n').unwrap_or_else(|| panic!("frame {frame:?} is not event + data"));
            let name = name.strip_prefix("event: ").unwrap_or_else(|| panic!("no event line in {frame:?}"));
            let data: Value = serde_json::from_str(data.strip_prefix("data: ").unwrap_or_else(|| panic!("no data line in {frame:?}"))).expect("data is JSON");
            assert_eq!(data["type"], name, "{frame}");
            (name.to_string(), data)
        })
        .collect()
}

fn names(events: &[(String, Value)]) -> Vec<&str> {
    events.iter().map(|(name, _)| name.as_str()).collect()
}

/// The concatenated `text_delta` texts and `input_json_delta` fragments.
fn deltas(events: &[(String, Value)], kind: &str, field: &str) -> String {
    events.iter().filter(|(_, d)| d["delta"]["type"] == kind).filter_map(|(_, d)| d["delta"][field].as_str()).collect()
}

#[tokio::test]
async fn a_plain_request_is_translated_exactly_and_billed() {
    let mock = MockUpstream::start().await.expect("mock");
    let mut config = mocked::config(&mock);
    config.models.push(priced("openai", "mock-m", 1.0, 2.0));
    let gw = Gateway::start_with(config).await;
    let token = mocked::tenant(&gw, "oa", "openai", "sk-oa").await;

    let reply = messages(&gw, &token, json!({
        "model": "mock-m", "max_tokens": 64, "system": "Be brief",
        "messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": [{"type": "text", "text": "Hello"}]}, {"role": "user", "content": "How?"}],
        "stop_sequences": ["END"], "temperature": 0.5, "top_p": 0.9, "metadata": {"user_id": "u1"},
    }))
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let sent = &mock.requests()[0];
    assert_eq!(sent.path, "/v1/chat/completions");
    assert_eq!(sent.header("authorization"), Some("Bearer sk-oa"));
    assert_eq!(sent.json(), Some(json!({
        "model": "mock-m", "max_tokens": 64, "stop": ["END"], "temperature": 0.5, "top_p": 0.9, "user": "u1",
        "messages": [
            {"role": "system", "content": "Be brief"},
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello"},
            {"role": "user", "content": "How?"},
        ],
    })));

    let body = reply.json();
    assert!(body["id"].as_str().is_some_and(|id| id.starts_with("msg_")), "{body}");
    let mut stable = body.clone();
    stable["id"] = Value::Null;
    // The mock: (8 + 2 + 5 + 4) prompt bytes / 4 = 5 tokens; four words of reply.
    assert_eq!(stable, json!({
        "id": null, "type": "message", "role": "assistant", "model": "mock-m",
        "content": [{"type": "text", "text": "mock reply to: How?"}],
        "stop_reason": "end_turn", "stop_sequence": null,
        "usage": {"input_tokens": 5, "output_tokens": 4, "cache_read_input_tokens": 0, "cache_creation_input_tokens": 0},
    }));
    assert_eq!(reply.header("x-tollgate-target"), "openai/mock-m");
    let row = mocked::ledger_row(&gw, "oa", &reply.header("x-request-id")).await;
    assert_eq!((row["provider"].as_str(), row["model"].as_str(), row["outcome"].as_str(), row["end_user"].as_str()), (Some("openai"), Some("mock-m"), Some("success"), Some("u1")), "{row}");
    assert_eq!((row["prompt_tokens"].as_u64(), row["completion_tokens"].as_u64(), row["cost_microdollars"].as_u64()), (Some(5), Some(4), Some(13)), "{row}");
}

#[tokio::test]
async fn tools_round_trip_through_an_anthropic_upstream() {
    let mock = MockUpstream::start().await.expect("mock");
    let gw = Gateway::start_with(mocked::config(&mock)).await;
    let token = mocked::tenant(&gw, "an", "anthropic", "sk-ant").await;
    let tools = json!([{"name": "lookup", "description": "Looks things up", "input_schema": {"type": "object", "properties": {"q": {"type": "string"}}}}]);

    let reply = messages(&gw, &token, json!({"model": "mock-t", "max_tokens": 100, "tools": tools, "tool_choice": {"type": "auto"}, "messages": [{"role": "user", "content": "Find it"}]})).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let sent = mock.requests()[0].json().expect("json");
    assert_eq!(sent["tools"], tools, "tools reach Anthropic as they were sent");
    assert_eq!(sent["tool_choice"], json!({"type": "auto"}));
    let body = reply.json();
    assert_eq!(body["stop_reason"], "tool_use", "{body}");
    assert_eq!(body["content"], json!([{"type": "tool_use", "id": "toolu_mock_1", "name": "lookup", "input": {"q": "mock"}}]));

    // The tool's answer, marked as an error, goes back as a tool_result.
    let reply = messages(&gw, &token, json!({"model": "mock-t", "max_tokens": 100, "tools": tools, "messages": [
        {"role": "user", "content": "Find it"},
        {"role": "assistant", "content": body["content"]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_mock_1", "content": [{"type": "text", "text": "not found"}], "is_error": true}]},
    ]}))
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let sent = mock.requests()[1].json().expect("json");
    assert_eq!(sent["messages"][1]["content"], json!([{"type": "tool_use", "id": "toolu_mock_1", "name": "lookup", "input": {"q": "mock"}}]), "{sent}");
    let result = &sent["messages"][2]["content"][0];
    assert_eq!((result["type"].as_str(), result["tool_use_id"].as_str()), (Some("tool_result"), Some("toolu_mock_1")), "{sent}");
    assert!(result.to_string().contains("[tool error] not found"), "{result}");
    let body = reply.json();
    assert_eq!(body["stop_reason"], "end_turn", "{body}");
    assert_eq!(body["content"][0]["type"], "text");
}

#[tokio::test]
async fn images_reach_openai_and_gemini_upstreams() {
    let mock = MockUpstream::start().await.expect("mock");
    let gw = Gateway::start_with(mocked::config(&mock)).await;
    let openai = mocked::tenant(&gw, "oa", "openai", "sk-oa").await;
    let gemini = mocked::tenant(&gw, "gm", "gemini", "AIza-gm").await;
    let content = json!([
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBOR"}},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/a.jpg"}},
        {"type": "text", "text": "What is this?"},
    ]);
    let body = json!({"model": "mock-i", "max_tokens": 10, "messages": [{"role": "user", "content": content}]});

    let reply = messages(&gw, &openai, body.clone()).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(mock.requests()[0].json().expect("json")["messages"][0]["content"], json!([
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBOR"}},
        {"type": "image_url", "image_url": {"url": "https://example.com/a.jpg"}},
        {"type": "text", "text": "What is this?"},
    ]));
    assert_eq!(reply.json()["content"][0]["text"], "mock reply to: What is this?");

    let reply = messages(&gw, &gemini, json!({"model": "mock-i", "max_tokens": 10, "messages": [{"role": "user", "content": [content[0].clone(), content[2].clone()]}]})).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let sent = mock.requests()[1].json().expect("json");
    assert_eq!(sent["contents"][0]["parts"][0]["inlineData"], json!({"mimeType": "image/png", "data": "iVBOR"}), "{sent}");
    assert_eq!(reply.json()["content"][0]["text"], "mock reply to: What is this?");
}

#[tokio::test]
async fn streams_are_anthropic_events_in_order() {
    let mock = MockUpstream::start().await.expect("mock");
    let mut config = mocked::config(&mock);
    config.models.push(priced("gemini", "mock-s", 1.0, 1.0));
    let gw = Gateway::start_with(config).await;
    for (id, kind) in [("oa", mocked::OPENAI), ("an", mocked::ANTHROPIC), ("gm", mocked::GEMINI)] {
        let token = mocked::tenant(&gw, id, kind.name, "key-1").await;
        let reply = messages(&gw, &token, json!({"model": "mock-s", "max_tokens": 50, "stream": true, "messages": [{"role": "user", "content": "Hi there"}]})).await;
        assert_eq!(reply.status, 200, "{id}: {}", reply.text());
        assert_eq!(reply.header("content-type"), "text/event-stream");
        let events = events(&reply);
        let names = names(&events);
        assert_eq!(names[..4], ["message_start", "ping", "content_block_start", "content_block_delta"], "{id}: {names:?}");
        assert_eq!(names[names.len() - 3..], ["content_block_stop", "message_delta", "message_stop"], "{id}: {names:?}");
        assert!(names[3..names.len() - 3].iter().all(|n| *n == "content_block_delta"), "{id}: {names:?}");
        assert_eq!(events[0].1["message"]["role"], "assistant");
        assert_eq!(events[2].1["content_block"], json!({"type": "text", "text": ""}));
        assert_eq!(deltas(&events, "text_delta", "text"), "mock reply to: Hi there", "{id}");
        let delta = &events[events.len() - 2].1;
        assert_eq!(delta["delta"]["stop_reason"], "end_turn", "{id}");
        assert_eq!(delta["usage"]["output_tokens"], 5, "{id}: {delta}");
        let row = mocked::ledger_row(&gw, id, &reply.header("x-request-id")).await;
        assert_eq!((row["completion_tokens"].as_u64(), row["outcome"].as_str()), (Some(5), Some("success")), "{id}: {row}");
    }
}

#[tokio::test]
async fn a_streamed_tool_call_is_input_json_deltas() {
    let mock = MockUpstream::start().await.expect("mock");
    let gw = Gateway::start_with(mocked::config(&mock)).await;
    let token = mocked::tenant(&gw, "oa", "openai", "sk-oa").await;
    let reply = messages(&gw, &token, json!({"model": "mock-chunks=4", "max_tokens": 50, "stream": true,
        "tools": [{"name": "lookup", "input_schema": {"type": "object"}}], "messages": [{"role": "user", "content": "Find"}]}))
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let events = events(&reply);
    assert_eq!(names(&events), [
        "message_start", "ping", "content_block_start", "content_block_delta", "content_block_delta", "content_block_delta", "content_block_delta",
        "content_block_stop", "message_delta", "message_stop",
    ]);
    assert_eq!(events[2].1["content_block"], json!({"type": "tool_use", "id": "call_mock_1", "name": "lookup", "input": {}}));
    assert_eq!(serde_json::from_str::<Value>(&deltas(&events, "input_json_delta", "partial_json")).ok(), Some(json!({"q": "mock"})));
    assert_eq!(events[8].1["delta"]["stop_reason"], "tool_use");
    assert_eq!(events[8].1["usage"]["output_tokens"], tollgate_tests::mock::TOOL_CALL_TOKENS);
}

#[tokio::test]
async fn a_stream_cut_midway_ends_with_an_error_event() {
    let mock = MockUpstream::start().await.expect("mock");
    let gw = Gateway::start_with(mocked::config(&mock)).await;
    let token = mocked::tenant(&gw, "an", "anthropic", "sk-ant").await;
    let reply = messages(&gw, &token, json!({"model": "mock-cut=1", "max_tokens": 50, "stream": true, "messages": [{"role": "user", "content": "Hi"}]})).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let events = events(&reply);
    let (last, data) = events.last().expect("events");
    assert_eq!(last, "error", "{:?}", names(&events));
    assert_eq!(data["error"]["type"], "api_error");
    assert!(!names(&events).contains(&"message_stop"));
}

#[tokio::test]
async fn errors_are_in_anthropic_shape() {
    let mock = MockUpstream::start().await.expect("mock");
    let gw = Gateway::start_with(mocked::config(&mock)).await;
    let token = mocked::tenant(&gw, "oa", "openai", "sk-oa").await;
    let ok = json!({"model": "mock-e", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]});
    let error = |reply: &Reply| (reply.status, reply.json()["type"].clone(), reply.json()["error"]["type"].clone());

    let reply = messages(&gw, "tg-not-a-token", ok.clone()).await;
    assert_eq!(error(&reply), (401, json!("error"), json!("authentication_error")), "{}", reply.text());
    assert!(reply.json()["error"]["message"].is_string());
    let reply = gw.call("POST", "/v1/messages", None, &[], ok.to_string().into_bytes()).await;
    assert_eq!(error(&reply), (401, json!("error"), json!("authentication_error")), "{}", reply.text());
    // The operator token is not taken from x-api-key.
    let reply = messages(&gw, crate::support::ADMIN, ok.clone()).await;
    assert_eq!(error(&reply), (401, json!("error"), json!("authentication_error")), "{}", reply.text());

    let reply = messages(&gw, &token, json!({"model": "mock-e", "messages": [{"role": "user", "content": "x"}]})).await;
    assert_eq!(error(&reply), (400, json!("error"), json!("invalid_request_error")), "{}", reply.text());
    assert!(reply.json()["error"]["message"].as_str().is_some_and(|m| m.contains("max_tokens")), "{}", reply.text());
    let reply = gw.call("POST", "/v1/messages", None, &[("x-api-key", token.as_str())], b"{not json".to_vec()).await;
    assert_eq!(error(&reply), (400, json!("error"), json!("invalid_request_error")), "{}", reply.text());
    let reply = messages(&gw, &token, json!({"model": "mock-e", "max_tokens": 5, "messages": [{"role": "system", "content": "x"}]})).await;
    assert_eq!(error(&reply), (400, json!("error"), json!("invalid_request_error")), "{}", reply.text());
    let reply = messages(&gw, &token, json!({"model": "mock-500", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]})).await;
    assert_eq!(error(&reply), (502, json!("error"), json!("api_error")), "{}", reply.text());
    let reply = gw.call("GET", "/v1/messages", None, &[("x-api-key", token.as_str())], Vec::new()).await;
    assert_eq!(reply.status, 405);
    assert_eq!(reply.json()["type"], "error");
    // Only the upstream failure reached the upstream: once and its one retry.
    assert_eq!(mock.requests().len(), 2);
    // Chat completions keep OpenAI's shape, also with x-api-key.
    let reply = gw.call("POST", "/v1/chat/completions", None, &[("x-api-key", "tg-not-a-token")], mocked::chat("m", "x").to_string().into_bytes()).await;
    assert_eq!((reply.status, reply.error_code()), (401, "invalid_api_key".to_string()));
}

#[tokio::test]
async fn count_tokens_is_the_chat_estimate_and_free() {
    let mock = MockUpstream::start().await.expect("mock");
    let gw = Gateway::start_with(mocked::config(&mock)).await;
    let token = mocked::tenant(&gw, "oa", "openai", "sk-oa").await;

    // 12 bytes at 4 a token, plus 3 for the message's framing.
    let reply = count(&gw, &token, json!({"model": "mock-c", "messages": [{"role": "user", "content": "Hello world!"}]})).await;
    assert_eq!((reply.status, reply.json()), (200, json!({"input_tokens": 6})), "{}", reply.text());
    // A system prompt is one more message.
    let reply = count(&gw, &token, json!({"model": "mock-c", "system": "abcdefgh", "messages": [{"role": "user", "content": "Hello world!"}]})).await;
    assert_eq!(reply.json(), json!({"input_tokens": 11}));
    let chat = gw.chat(&token, json!({"model": "mock-c", "messages": [{"role": "system", "content": "abcdefgh"}, {"role": "user", "content": "Hello world!"}]})).await;
    assert_eq!(chat.status, 200);
    let billed = gw.call("POST", "/v1/messages/count_tokens", None, &[("x-api-key", "tg-wrong")], b"{}".to_vec()).await;
    assert_eq!((billed.status, billed.json()["error"]["type"].clone()), (401, json!("authentication_error")));
    assert_eq!(mock.requests().len(), 1, "counting calls no upstream");
    assert_eq!(mocked::ledger(&gw, "oa").await.len(), 1, "counting is not billed");
}

#[tokio::test]
async fn the_demo_provider_answers_whole_and_streamed() {
    let gw = Gateway::start().await;
    let token = gw.demo_tenant("dm", 1.0).await;
    let reply = messages(&gw, &token, json!({"model": "default", "max_tokens": 100, "messages": [{"role": "user", "content": "Hello"}]})).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let body = reply.json();
    assert_eq!(body["content"], json!([{"type": "text", "text": "Hello from the Tollgate demo provider. You said: Hello"}]));
    assert_eq!((body["stop_reason"].as_str(), body["usage"]["input_tokens"].as_u64(), body["usage"]["output_tokens"].as_u64()), (Some("end_turn"), Some(2), Some(9)), "{body}");

    let reply = messages(&gw, &token, json!({"model": "default", "max_tokens": 100, "stream": true, "messages": [{"role": "user", "content": "Hi"}]})).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let events = events(&reply);
    assert_eq!(deltas(&events, "text_delta", "text"), "Hello from the Tollgate demo provider. You said: Hi");
    assert_eq!(names(&events).last(), Some(&"message_stop"));
    assert_eq!(events[events.len() - 2].1["usage"]["output_tokens"], 9);
    let rows = mocked::ledger(&gw, "dm").await;
    assert_eq!(rows.len(), 2, "{rows:?}");
}
