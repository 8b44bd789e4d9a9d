//! `POST /v1/responses` end to end: Responses bodies as the upstreams receive them, answers
//! and typed stream events in the Responses shapes, function tools both ways, usage and
//! ledger rows, stored conversations continued with `previous_response_id` (per tenant,
//! purged with the tenant, charged to its memory quota, deleted by id, on both stores), and
//! refusals.

use serde_json::{json, Value};
use tollgate::catalog::ModelEntry;
use tollgate::stored_responses::{StoredResponse, StoredResponses};
use tollgate_tests::mock::MockUpstream;

use crate::mocked;
use crate::support::{Gateway, Reply};

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

async fn responses(gw: &Gateway, token: &str, body: Value) -> Reply {
    gw.call("POST", "/v1/responses", Some(token), &[], body.to_string().into_bytes()).await
}

/// The events of a Responses SSE body, checking each frame's event name is its `type`
/// and the sequence numbers count up from 0.
fn events(reply: &Reply) -> Vec<Value> {
    let text = reply.text();
    assert!(text.ends_with("\n\n"), "the stream does not end with a blank line: {text:?}");
    let events: Vec<Value> = text
        .trim_end_matches("\n\n")
        .split("\n\n")
        .map(|frame| {
            let (name, data) = frame.split_once('\n').unwrap_or_else(|| panic!("frame {frame:?} is not event + data"));
            let name = name.strip_prefix("event: ").unwrap_or_else(|| panic!("no event line in {frame:?}"));
            let data: Value = serde_json::from_str(data.strip_prefix("data: ").unwrap_or_else(|| panic!("no data line in {frame:?}"))).expect("data is JSON");
            assert_eq!(data["type"], name, "{frame}");
            data
        })
        .collect();
    for (i, event) in events.iter().enumerate() {
        assert_eq!(event["sequence_number"], json!(i), "{event}");
    }
    events
}

fn types(events: &[Value]) -> Vec<&str> {
    events.iter().map(|e| e["type"].as_str().unwrap_or_default()).collect()
}

fn deltas(events: &[Value], kind: &str) -> String {
    events.iter().filter(|e| e["type"] == kind).filter_map(|e| e["delta"].as_str()).collect()
}

/// The id of a response, and the response with its generated ids and time blanked.
fn stable(mut body: Value) -> (String, Value) {
    let id = body["id"].as_str().unwrap_or_else(|| panic!("no id in {body}")).to_string();
    assert!(id.starts_with("resp_"), "{body}");
    assert!(body["created_at"].as_u64().is_some_and(|t| t > 1_700_000_000), "{body}");
    body["id"] = Value::Null;
    body["created_at"] = Value::Null;
    for item in body["output"].as_array_mut().into_iter().flatten() {
        let prefix = if item["type"] == "message" { "msg_" } else { "fc_" };
        assert!(item["id"].as_str().is_some_and(|i| i.starts_with(prefix)), "{item}");
        item["id"] = Value::Null;
    }
    (id, body)
}

#[tokio::test]
async fn a_plain_request_is_translated_exactly_and_billed() {
    let mock = MockUpstream::start().await.expect("mock");
    let mut config = mocked::config(&mock);
    config.models.push(priced("openai", "mock-m", 1.0, 2.0));
    let gw = Gateway::start_with(config).await;
    let token = mocked::tenant(&gw, "oa", "openai", "sk-oa").await;

    let reply = responses(&gw, &token, json!({
        "model": "mock-m", "instructions": "Be brief", "max_output_tokens": 64, "temperature": 0.5, "top_p": 0.9, "user": "u1", "metadata": {"k": "v"},
        "input": [
            {"role": "user", "content": "Hi"},
            {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Hello", "annotations": []}]},
            {"role": "user", "content": [{"type": "input_text", "text": "How?"}]},
        ],
    }))
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let sent = &mock.requests()[0];
    assert_eq!(sent.path, "/v1/chat/completions");
    assert_eq!(sent.header("authorization"), Some("Bearer sk-oa"));
    assert_eq!(sent.json(), Some(json!({
        "model": "mock-m", "max_tokens": 64, "temperature": 0.5, "top_p": 0.9, "user": "u1",
        "messages": [
            {"role": "system", "content": "Be brief"},
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello"},
            {"role": "user", "content": "How?"},
        ],
    })));
    let (_, body) = stable(reply.json());
    // The mock: (8 + 2 + 5 + 4) prompt bytes / 4 = 5 tokens; four words of reply.
    assert_eq!(body, json!({
        "id": null, "object": "response", "created_at": null, "status": "completed", "background": false, "error": null, "incomplete_details": null,
        "instructions": "Be brief", "max_output_tokens": 64, "model": "mock-m",
        "output": [{"type": "message", "id": null, "status": "completed", "role": "assistant",
            "content": [{"type": "output_text", "text": "mock reply to: How?", "annotations": [], "logprobs": []}]}],
        "parallel_tool_calls": true, "previous_response_id": null, "reasoning": null, "store": true, "temperature": 0.5,
        "text": {"format": {"type": "text"}}, "tool_choice": "auto", "tools": [], "top_p": 0.9, "truncation": "disabled",
        "usage": {"input_tokens": 5, "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0}, "output_tokens": 4, "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 9},
        "user": "u1", "metadata": {"k": "v"},
    }));
    assert_eq!(reply.header("x-tollgate-target"), "openai/mock-m");
    assert!(!reply.header("x-tollgate-policy").is_empty());
    let row = mocked::ledger_row(&gw, "oa", &reply.header("x-request-id")).await;
    assert_eq!((row["provider"].as_str(), row["model"].as_str(), row["outcome"].as_str(), row["end_user"].as_str()), (Some("openai"), Some("mock-m"), Some("success"), Some("u1")), "{row}");
    assert_eq!((row["prompt_tokens"].as_u64(), row["completion_tokens"].as_u64(), row["cost_microdollars"].as_u64()), (Some(5), Some(4), Some(13)), "{row}");

    // A string input is one user message.
    let reply = responses(&gw, &token, json!({"model": "mock-m", "input": "Just this"})).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(mock.requests()[1].json().map(|b| b["messages"].clone()), Some(json!([{"role": "user", "content": "Just this"}])));
    assert_eq!(reply.json()["output"][0]["content"][0]["text"], "mock reply to: Just this");
}

#[tokio::test]
async fn spend_moves_the_budget_until_it_refuses() {
    let mock = MockUpstream::start().await.expect("mock");
    let mut config = mocked::config(&mock);
    config.models.push(priced("openai", "mock-m", 1.0, 2.0));
    let gw = Gateway::start_with(config).await;
    // 200 micro-dollars; each answer costs about 11, its worst case about 23.
    let token = mocked::create_tenant(&gw, "bu", json!({"budget_usd": 0.0002})).await;
    mocked::put_credential(&gw, "bu", "main", "openai", "sk-bu").await;
    mocked::default_policy(&gw, "bu", json!({"provider": "openai", "credential": "main"})).await;
    let mut answered = 0;
    let refused = loop {
        let stream = answered % 2 == 1;
        let reply = responses(&gw, &token, json!({"model": "mock-m", "input": "Go on", "max_output_tokens": 10, "stream": stream})).await;
        if reply.status != 200 {
            break reply;
        }
        answered += 1;
        assert!(answered < 40, "the budget never ran out");
    };
    assert_eq!((refused.status, refused.error_code()), (402, "budget_exceeded".to_string()), "{}", refused.text());
    // A stream settles just after its last byte: wait for its row.
    let mut rows = mocked::ledger(&gw, "bu").await;
    for _ in 0..100 {
        if rows.len() >= answered {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        rows = mocked::ledger(&gw, "bu").await;
    }
    let spent: u64 = rows.iter().map(|r| r["cost_microdollars"].as_u64().unwrap_or(0)).sum();
    assert_eq!(rows.len(), answered, "one ledger row per answer, streamed or not");
    assert!(answered >= 5 && (150..=200).contains(&spent), "{answered} answers spent {spent} of 200");
}

#[tokio::test]
async fn function_tools_round_trip() {
    let mock = MockUpstream::start().await.expect("mock");
    let gw = Gateway::start_with(mocked::config(&mock)).await;
    let token = mocked::tenant(&gw, "oa", "openai", "sk-oa").await;
    let tools = json!([{"type": "function", "name": "lookup", "description": "Looks things up", "parameters": {"type": "object", "properties": {"q": {"type": "string"}}}, "strict": false}]);

    let reply = responses(&gw, &token, json!({"model": "mock-t", "tools": tools, "tool_choice": "auto", "input": "Find it", "store": false})).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let sent = mock.requests()[0].json().expect("json");
    assert_eq!(sent["tools"], json!([{"type": "function", "function": {"name": "lookup", "description": "Looks things up", "parameters": {"type": "object", "properties": {"q": {"type": "string"}}}, "strict": false}}]));
    assert_eq!(sent["tool_choice"], "auto");
    let body = reply.json();
    assert_eq!((body["tools"].clone(), body["store"].clone()), (tools.clone(), json!(false)), "the request's tools are echoed");
    let output = body["output"].as_array().expect("output");
    assert_eq!(output.len(), 1, "{body}");
    let call = &output[0];
    let call_id = call["call_id"].as_str().expect("call_id").to_string();
    assert!(call_id.starts_with("call_mock_"), "{call}");
    assert_eq!((call["type"].as_str(), call["name"].as_str(), call["arguments"].as_str(), call["status"].as_str()), (Some("function_call"), Some("lookup"), Some(r#"{"q":"mock"}"#), Some("completed")), "{call}");
    assert_eq!(body["usage"]["output_tokens"], tollgate_tests::mock::TOOL_CALL_TOKENS);

    // The call and its output go back as input items: an assistant tool call, then a tool message.
    let reply = responses(&gw, &token, json!({"model": "mock-t", "tools": tools, "input": [
        {"role": "user", "content": "Find it"},
        call,
        {"type": "function_call_output", "call_id": call_id, "output": "not found"},
    ]}))
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let sent = mock.requests()[1].json().expect("json");
    assert_eq!(sent["messages"], json!([
        {"role": "user", "content": "Find it"},
        {"role": "assistant", "content": null, "tool_calls": [{"id": call_id, "type": "function", "function": {"name": "lookup", "arguments": r#"{"q":"mock"}"#}}]},
        {"role": "tool", "tool_call_id": call_id, "content": "not found"},
    ]));
    let body = reply.json();
    assert_eq!(body["output"][0]["type"], "message", "{body}");
    assert_eq!(body["status"], "completed");
}

#[tokio::test]
async fn streams_are_typed_events_in_order() {
    let mock = MockUpstream::start().await.expect("mock");
    let mut config = mocked::config(&mock);
    config.models.push(priced("gemini", "mock-s", 1.0, 1.0));
    let gw = Gateway::start_with(config).await;
    for (id, kind) in [("oa", mocked::OPENAI), ("an", mocked::ANTHROPIC), ("gm", mocked::GEMINI)] {
        let token = mocked::tenant(&gw, id, kind.name, "key-1").await;
        let reply = responses(&gw, &token, json!({"model": "mock-s", "stream": true, "input": "Hi there"})).await;
        assert_eq!(reply.status, 200, "{id}: {}", reply.text());
        assert_eq!(reply.header("content-type"), "text/event-stream");
        assert!(!reply.header("x-tollgate-target").is_empty());
        let events = events(&reply);
        let types = types(&events);
        assert_eq!(types[..5], ["response.created", "response.in_progress", "response.output_item.added", "response.content_part.added", "response.output_text.delta"], "{id}: {types:?}");
        let n = types.len();
        assert_eq!(types[n - 4..], ["response.output_text.done", "response.content_part.done", "response.output_item.done", "response.completed"], "{id}: {types:?}");
        assert!(types[4..n - 4].iter().all(|t| *t == "response.output_text.delta"), "{id}: {types:?}");
        let response_id = events[0]["response"]["id"].clone();
        assert_eq!((events[0]["response"]["status"].as_str(), events[n - 1]["response"]["id"].clone()), (Some("in_progress"), response_id), "{id}");
        assert_eq!(events[2]["item"], json!({"type": "message", "id": events[2]["item"]["id"], "status": "in_progress", "role": "assistant", "content": []}));
        assert_eq!(deltas(&events, "response.output_text.delta"), "mock reply to: Hi there", "{id}");
        assert_eq!(events[n - 4]["text"], "mock reply to: Hi there");
        let done = &events[n - 1]["response"];
        assert_eq!(done["status"], "completed");
        assert_eq!(done["output"][0]["content"][0]["text"], "mock reply to: Hi there", "{id}: {done}");
        assert_eq!(done["usage"]["output_tokens"], 5, "{id}: {done}");
        assert_eq!(done["usage"]["total_tokens"], done["usage"]["input_tokens"].as_u64().unwrap_or(0) + 5, "{id}: {done}");
        let row = mocked::ledger_row(&gw, id, &reply.header("x-request-id")).await;
        assert_eq!((row["completion_tokens"].as_u64(), row["outcome"].as_str()), (Some(5), Some("success")), "{id}: {row}");
    }
}

#[tokio::test]
async fn a_streamed_tool_call_is_argument_deltas() {
    let mock = MockUpstream::start().await.expect("mock");
    let gw = Gateway::start_with(mocked::config(&mock)).await;
    let token = mocked::tenant(&gw, "oa", "openai", "sk-oa").await;
    let reply = responses(&gw, &token, json!({"model": "mock-chunks=4", "stream": true, "tools": [{"type": "function", "name": "lookup", "parameters": {"type": "object"}}], "input": "Find"})).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let events = events(&reply);
    assert_eq!(types(&events), [
        "response.created", "response.in_progress", "response.output_item.added",
        "response.function_call_arguments.delta", "response.function_call_arguments.delta", "response.function_call_arguments.delta", "response.function_call_arguments.delta",
        "response.function_call_arguments.done", "response.output_item.done", "response.completed",
    ]);
    let added = &events[2]["item"];
    assert_eq!((added["type"].as_str(), added["call_id"].as_str(), added["name"].as_str(), added["arguments"].as_str()), (Some("function_call"), Some("call_mock_1"), Some("lookup"), Some("")), "{added}");
    assert_eq!(deltas(&events, "response.function_call_arguments.delta"), r#"{"q":"mock"}"#);
    assert_eq!(events[7]["arguments"], r#"{"q":"mock"}"#);
    let done = &events[9]["response"];
    assert_eq!(done["output"], json!([{"type": "function_call", "id": added["id"], "call_id": "call_mock_1", "name": "lookup", "arguments": r#"{"q":"mock"}"#, "status": "completed"}]));
    assert_eq!(done["usage"]["output_tokens"], tollgate_tests::mock::TOOL_CALL_TOKENS);
}

#[tokio::test]
async fn a_stream_cut_midway_ends_with_response_failed() {
    let mock = MockUpstream::start().await.expect("mock");
    let gw = Gateway::start_with(mocked::config(&mock)).await;
    let token = mocked::tenant(&gw, "an", "anthropic", "sk-ant").await;
    let reply = responses(&gw, &token, json!({"model": "mock-cut=1", "stream": true, "input": "Hi"})).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let events = events(&reply);
    let last = events.last().expect("events");
    assert_eq!(last["type"], "response.failed", "{:?}", types(&events));
    assert_eq!((last["response"]["status"].as_str(), last["response"]["error"]["code"].as_str()), (Some("failed"), Some("server_error")), "{last}");
    assert!(!types(&events).contains(&"response.completed"));
    // Nothing was stored for a failed stream.
    let id = last["response"]["id"].as_str().expect("id");
    let reply = responses(&gw, &token, json!({"model": "mock-x", "input": "again", "previous_response_id": id})).await;
    assert_eq!((reply.status, reply.error_code()), (404, "previous_response_not_found".to_string()), "{}", reply.text());
}

#[tokio::test]
async fn previous_response_id_continues_a_stored_conversation_of_its_own_tenant() {
    let mock = MockUpstream::start().await.expect("mock");
    let gw = Gateway::start_with(mocked::config(&mock)).await;
    let token = mocked::tenant(&gw, "oa", "openai", "sk-oa").await;
    let other = mocked::tenant(&gw, "ob", "openai", "sk-ob").await;
    let memory_used = |gw: &Gateway| gw.app.memory.tenant(&gw.storage_id("oa"));
    assert_eq!(memory_used(&gw).used_bytes().await.expect("usage"), 0);

    let first = responses(&gw, &token, json!({"model": "mock-p", "instructions": "Be brief", "input": "My name is Ann"})).await;
    assert_eq!(first.status, 200, "{}", first.text());
    let first_id = first.json()["id"].as_str().expect("id").to_string();
    assert!(memory_used(&gw).used_bytes().await.expect("usage") > 0, "a stored response counts against the memory quota");

    // Instructions are not carried over; the stored input and output are.
    let second = responses(&gw, &token, json!({"model": "mock-p", "instructions": "Be terse", "input": "What is my name?", "previous_response_id": first_id})).await;
    assert_eq!(second.status, 200, "{}", second.text());
    assert_eq!(second.json()["previous_response_id"], first_id.as_str());
    assert_eq!(mock.requests()[1].json().map(|b| b["messages"].clone()), Some(json!([
        {"role": "system", "content": "Be terse"},
        {"role": "user", "content": "My name is Ann"},
        {"role": "assistant", "content": "mock reply to: My name is Ann"},
        {"role": "user", "content": "What is my name?"},
    ])));
    let second_id = second.json()["id"].as_str().expect("id").to_string();

    // A streamed continuation is stored too, before its final event.
    let third = responses(&gw, &token, json!({"model": "mock-p", "stream": true, "input": "Third", "previous_response_id": second_id})).await;
    assert_eq!(third.status, 200, "{}", third.text());
    let third_id = events(&third)[0]["response"]["id"].as_str().expect("id").to_string();
    let fourth = responses(&gw, &token, json!({"model": "mock-p", "input": "Fourth", "previous_response_id": third_id})).await;
    assert_eq!(fourth.status, 200, "{}", fourth.text());
    let texts: Vec<Value> = mock.requests()[3].json().expect("json")["messages"].as_array().expect("messages").iter().map(|m| m["content"].clone()).collect();
    assert_eq!(texts, [
        json!("My name is Ann"), json!("mock reply to: My name is Ann"), json!("What is my name?"), json!("mock reply to: What is my name?"),
        json!("Third"), json!("mock reply to: Third"), json!("Fourth"),
    ]);

    // Another tenant cannot name it; nothing reaches the upstream.
    let before = mock.requests().len();
    let reply = responses(&gw, &other, json!({"model": "mock-p", "input": "x", "previous_response_id": first_id})).await;
    assert_eq!((reply.status, reply.error_code()), (404, "previous_response_not_found".to_string()), "{}", reply.text());
    assert_eq!(reply.json()["error"]["type"], "invalid_request_error");
    let reply = responses(&gw, &token, json!({"model": "mock-p", "input": "x", "previous_response_id": "resp_unknown"})).await;
    assert_eq!((reply.status, reply.error_code()), (404, "previous_response_not_found".to_string()), "{}", reply.text());
    let reply = responses(&gw, &token, json!({"model": "mock-p", "input": "x", "store": false, "previous_response_id": first_id})).await;
    assert_eq!((reply.status, reply.error_code()), (400, "invalid_request".to_string()), "{}", reply.text());
    assert_eq!(mock.requests().len(), before);

    // `store: false` answers but keeps nothing.
    let unstored = responses(&gw, &token, json!({"model": "mock-p", "input": "forget me", "store": false})).await;
    let unstored_id = unstored.json()["id"].as_str().expect("id").to_string();
    let reply = responses(&gw, &token, json!({"model": "mock-p", "input": "x", "previous_response_id": unstored_id})).await;
    assert_eq!(reply.status, 404, "{}", reply.text());

    // DELETE /v1/responses/{id} forgets one, for its own tenant only, and frees its bytes.
    let fourth_id = fourth.json()["id"].as_str().expect("id").to_string();
    let path = format!("/v1/responses/{fourth_id}");
    let reply = gw.call("DELETE", &path, Some(&other), &[], Vec::new()).await;
    assert_eq!((reply.status, reply.error_code()), (404, "not_found".to_string()), "{}", reply.text());
    let used = memory_used(&gw).used_bytes().await.expect("usage");
    let reply = gw.call("DELETE", &path, Some(&token), &[], Vec::new()).await;
    assert_eq!((reply.status, reply.json()), (200, json!({"id": fourth_id, "object": "response.deleted", "deleted": true})), "{}", reply.text());
    assert!(memory_used(&gw).used_bytes().await.expect("usage") < used);
    let reply = responses(&gw, &token, json!({"model": "mock-p", "input": "x", "previous_response_id": fourth_id})).await;
    assert_eq!(reply.status, 404, "{}", reply.text());
    let reply = gw.call("DELETE", &path, Some(&token), &[], Vec::new()).await;
    assert_eq!(reply.status, 404, "{}", reply.text());
    assert_eq!(gw.call("GET", &path, Some(&token), &[], Vec::new()).await.status, 405);

    // Deleting the tenant deletes its stored responses (and a new incarnation sees none).
    let storage_id = gw.storage_id("oa");
    assert!(gw.app.responses.tenant(&storage_id).conversation(&first_id).await.expect("read").is_some());
    let deleted = gw.admin("DELETE", "/admin/v1/tenants/oa", Value::Null).await;
    assert!(deleted.status < 300, "{}", deleted.text());
    assert_eq!(gw.app.responses.tenant(&storage_id).conversation(&first_id).await.expect("read"), None);
}

#[tokio::test]
async fn malformed_requests_are_refused_with_codes() {
    let mock = MockUpstream::start().await.expect("mock");
    let gw = Gateway::start_with(mocked::config(&mock)).await;
    let token = mocked::tenant(&gw, "oa", "openai", "sk-oa").await;
    let refused = |reply: &Reply| (reply.status, reply.json()["error"]["type"].clone(), reply.error_code());
    let cases = [
        (json!({"model": "m"}), "missing_input"),
        (json!({"model": "m", "input": 3}), "missing_input"),
        (json!({"model": "m", "input": [{"role": "wizard", "content": "x"}]}), "invalid_input"),
        (json!({"model": "m", "input": [{"type": "item_reference", "id": "msg_1"}]}), "unsupported_input_item"),
        (json!({"model": "m", "input": [{"role": "user", "content": [{"type": "input_file", "file_id": "file-1"}]}]}), "unsupported_input_item"),
        (json!({"model": "m", "input": "x", "tools": [{"type": "web_search"}]}), "unsupported_tool"),
        (json!({"model": "m", "input": "x", "conversation": "conv_1"}), "unsupported_parameter"),
        (json!({"model": "m", "input": "x", "tool_choice": {"type": "file_search"}}), "invalid_tool_choice"),
        (json!({"model": "m", "input": "x", "stream": "yes"}), "invalid_type"),
    ];
    for (body, code) in cases {
        let reply = responses(&gw, &token, body.clone()).await;
        assert_eq!(refused(&reply), (400, json!("invalid_request_error"), code.to_string()), "{body}: {}", reply.text());
    }
    let reply = gw.call("POST", "/v1/responses", Some(&token), &[], b"{not json".to_vec()).await;
    assert_eq!(refused(&reply), (400, json!("invalid_request_error"), "invalid_json".to_string()));
    let reply = gw.call("POST", "/v1/responses", Some("tg-wrong"), &[], json!({"input": "x"}).to_string().into_bytes()).await;
    assert_eq!((reply.status, reply.error_code()), (401, "invalid_api_key".to_string()));
    let reply = gw.call("GET", "/v1/responses", Some(&token), &[], Vec::new()).await;
    assert_eq!(reply.status, 405);
    assert_eq!(mock.requests().len(), 0, "no refusal reached the upstream");
}

#[tokio::test]
async fn the_demo_provider_answers_whole_and_streamed() {
    let gw = Gateway::start().await;
    let token = gw.demo_tenant("dm", 1.0).await;
    let reply = responses(&gw, &token, json!({"model": "default", "input": "Hello"})).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let body = reply.json();
    assert_eq!(body["output"][0]["content"][0]["text"], "Hello from the Tollgate demo provider. You said: Hello");
    assert_eq!((body["usage"]["input_tokens"].as_u64(), body["usage"]["output_tokens"].as_u64()), (Some(2), Some(9)), "{body}");

    let reply = responses(&gw, &token, json!({"model": "default", "stream": true, "input": "Hi"})).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let events = events(&reply);
    assert_eq!(deltas(&events, "response.output_text.delta"), "Hello from the Tollgate demo provider. You said: Hi");
    assert_eq!(events.last().map(|e| e["response"]["usage"]["output_tokens"].clone()), Some(json!(9)));
    assert_eq!(mocked::ledger(&gw, "dm").await.len(), 2);
}

/// The stored-responses store on PostgreSQL gives the embedded store's answers: chains read
/// oldest first, tenants isolated, the quota charged the same bytes, a purge leaving nothing.
#[tokio::test]
async fn stored_responses_on_postgres_match_the_embedded_store() {
    let Some(server) = tollgate_tests::postgres::Server::start() else { return };
    let pool = tollgate::postgres::connect(&server.url()).expect("pool");
    tollgate::postgres::migrate(&pool).await.expect("migrate");
    let store = tollgate::Store::temporary().expect("store");
    let shared = StoredResponses::shared(tollgate::postgres::responses::PgResponses::new(pool.clone()), 1 << 20);
    let embedded = StoredResponses::embedded(store.clone(), 1 << 20);
    let memory = [tollgate::memory::Memory::shared(tollgate::postgres::memory::PgMemory::new(pool), 1 << 20), tollgate::memory::Memory::embedded(store.clone(), 1 << 20)];
    let link = |previous: Option<&str>, text: &str| StoredResponse { previous: previous.map(str::to_owned), messages: vec![json!({"role": "user", "content": text}), json!({"role": "assistant", "content": "\u{0}ok"})], unix_millis: 5 };
    let mut used = Vec::new();
    for (responses, memory) in [&shared, &embedded].into_iter().zip(&memory) {
        let (a, b) = (responses.tenant("a"), responses.tenant("b"));
        a.put("resp_1", &link(None, "one")).await.expect("put");
        a.put("resp_2", &link(Some("resp_1"), "two")).await.expect("put");
        let conversation = a.conversation("resp_2").await.expect("read").expect("stored");
        assert_eq!(conversation.iter().map(|m| m["content"].as_str().unwrap_or_default()).collect::<Vec<_>>(), ["one", "\u{0}ok", "two", "\u{0}ok"]);
        assert_eq!(b.conversation("resp_2").await.expect("read"), None);
        assert!(responses.tenant("q").put("big", &link(None, &"x".repeat(2 << 20 >> 4))).await.is_ok());
        used.push(memory.tenant("a").used_bytes().await.expect("usage"));
    }
    assert_eq!(used[0], used[1], "both stores charge the same bytes");
    let tiny = StoredResponses::shared(tollgate::postgres::responses::PgResponses::new(tollgate::postgres::connect(&server.url()).expect("pool")), 100);
    assert!(tiny.tenant("c").put("r", &link(None, &"x".repeat(200))).await.is_err(), "over the quota");
    assert_eq!(tiny.tenant("c").conversation("r").await.expect("read"), None);
    assert!(!shared.tenant("b").delete("resp_2").await.expect("delete"), "another tenant cannot delete it");
    assert!(shared.tenant("a").delete("resp_1").await.expect("delete"));
    assert_eq!(shared.tenant("a").conversation("resp_2").await.expect("read").map(|m| m.len()), Some(2), "the chain now starts after the deleted link");
    assert_eq!(memory[0].tenant("a").used_bytes().await.expect("usage"), used[0] - tollgate::store::encode(&link(None, "one")).len() as u64 - "resp_1".len() as u64);
    shared.purge_tenant("a").await.expect("purge");
    assert_eq!(shared.tenant("a").conversation("resp_1").await.expect("read"), None);
}

/// On the shared store, through HTTP: a conversation stored through one replica continues
/// through another, another tenant gets 404, and deleting the tenant leaves no row.
#[tokio::test]
async fn previous_response_id_works_across_replicas_of_the_shared_store() {
    let Some(server) = tollgate_tests::postgres::Server::start() else { return };
    let dirs = (tempfile::tempdir().expect("dir"), tempfile::tempdir().expect("dir"));
    let one = Gateway::serving(crate::support::shared_gateway(&server, dirs.0.path()).await).await;
    let two = Gateway::serving(crate::support::shared_gateway(&server, dirs.1.path()).await).await;
    let token = one.demo_tenant("pa", 1.0).await;
    let other = one.demo_tenant("pb", 1.0).await;

    let first = responses(&one, &token, json!({"model": "default", "input": "Remember 42"})).await;
    assert_eq!(first.status, 200, "{}", first.text());
    let first_id = first.json()["id"].as_str().expect("id").to_string();
    let mut follow = None;
    // The other replica learns of the tenant and its token through the change feed.
    for _ in 0..100 {
        let reply = responses(&two, &token, json!({"model": "default", "input": "Which number?", "previous_response_id": first_id})).await;
        if reply.status != 401 {
            follow = Some(reply);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let follow = follow.expect("the second replica serves the tenant");
    assert_eq!(follow.status, 200, "{}", follow.text());
    let usage = &follow.json()["usage"];
    assert!(usage["input_tokens"].as_u64() > first.json()["usage"]["input_tokens"].as_u64(), "the stored turn was prepended: {usage}");
    let reply = responses(&two, &other, json!({"model": "default", "input": "x", "previous_response_id": first_id})).await;
    assert_eq!((reply.status, reply.error_code()), (404, "previous_response_not_found".to_string()), "{}", reply.text());

    let storage_id = one.storage_id("pa");
    let rows = |server: &tollgate_tests::postgres::Server, id: String| {
        let pool = tollgate::postgres::connect(&server.url()).expect("pool");
        async move { pool.get().await.expect("client").query_one("SELECT count(*) FROM stored_responses WHERE tenant_id = $1", &[&id]).await.expect("count").get::<_, i64>(0) }
    };
    assert_eq!(rows(&server, storage_id.clone()).await, 2);
    let deleted = one.admin("DELETE", "/admin/v1/tenants/pa", Value::Null).await;
    assert!(deleted.status < 300, "{}", deleted.text());
    assert_eq!(rows(&server, storage_id).await, 0);
}
