//! The official `anthropic` Python client against the gateway's Messages API, configured
//! with only a base URL and a tenant token: create, stream, token counting, a tools round
//! trip, and the exception classes its error statuses raise. Text answers come from the
//! demo provider; the tool call from the mock upstream (the demo calls no tools). The test
//! creates a virtual environment under `target/py-anthropic` with a pinned client (once;
//! later runs reuse it).


use tollgate_tests::mock::MockUpstream;

use crate::mocked;
use crate::support::Gateway;

/// The client version the test pins.
const ANTHROPIC_CLIENT: &str = "anthropic==2.10.0";

const SCRIPT: &str = r#"
import sys, anthropic
base, token, tools_token = sys.argv[1], sys.argv[2], sys.argv[3]
client = anthropic.Anthropic(base_url=base, api_key=token, max_retries=0)
m = client.messages.create(model="default", max_tokens=100, messages=[{"role": "user", "content": "Hello SDK"}])
print("create:", m.type, m.role, m.content[0].text, m.stop_reason, m.usage.input_tokens, m.usage.output_tokens)
with client.messages.stream(model="default", max_tokens=100, system="Be kind", messages=[{"role": "user", "content": "Hi"}]) as s:
    text = "".join(s.text_stream)
    final = s.get_final_message()
print("stream:", text, final.stop_reason, final.usage.output_tokens, final.content[0].text == text)
c = client.messages.count_tokens(model="default", messages=[{"role": "user", "content": "Hello world!"}])
print("count:", c.input_tokens)
tools = [{"name": "lookup", "description": "Looks things up", "input_schema": {"type": "object", "properties": {"q": {"type": "string"}}}}]
tc = anthropic.Anthropic(base_url=base, api_key=tools_token, max_retries=0)
asked = [{"role": "user", "content": "Find it"}]
m = tc.messages.create(model="mock-sdk", max_tokens=100, tools=tools, messages=asked)
call = m.content[0]
print("tool_use:", m.stop_reason, call.type, call.name, call.input)
answered = asked + [{"role": "assistant", "content": m.content}, {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "42"}]}]
m = tc.messages.create(model="mock-sdk", max_tokens=100, tools=tools, messages=answered)
print("tool_result:", m.stop_reason, m.content[0].text)
with tc.messages.stream(model="mock-sdk", max_tokens=100, tools=tools, messages=asked) as s:
    final = s.get_final_message()
print("stream tool_use:", final.stop_reason, final.content[0].name, final.content[0].input)
try:
    anthropic.Anthropic(base_url=base, api_key="wrong", max_retries=0).messages.create(model="default", max_tokens=10, messages=[{"role": "user", "content": "x"}])
except anthropic.AuthenticationError as e:
    print("auth:", e.status_code, e.body["error"]["type"])
try:
    client.messages.create(model="default", max_tokens=10, messages=[{"role": "robot", "content": "x"}])
except anthropic.BadRequestError as e:
    print("bad:", e.status_code, e.body["error"]["type"])
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_python_client_creates_streams_counts_calls_tools_and_raises() {
    let python = crate::support::python_with("py-anthropic", ANTHROPIC_CLIENT).await;
    let mock = MockUpstream::start().await.expect("mock");
    let gw = Gateway::start_with(mocked::config(&mock)).await;
    let token = gw.demo_tenant("sdk", 10.0).await;
    let tools_token = mocked::tenant(&gw, "tools", "openai", "sk-tools").await;
    let lines = crate::support::run_python(&python, SCRIPT, &[&format!("http://{}", gw.addr), &token, &tools_token]).await;
    assert_eq!(lines, vec![
        "create: message assistant Hello from the Tollgate demo provider. You said: Hello SDK end_turn 3 10",
        "stream: Hello from the Tollgate demo provider. You said: Hi end_turn 9 True",
        "count: 6",
        "tool_use: tool_use tool_use lookup {'q': 'mock'}",
        "tool_result: end_turn mock reply to: Find it",
        "stream tool_use: tool_use lookup {'q': 'mock'}",
        "auth: 401 authentication_error",
        "bad: 400 invalid_request_error",
    ]);
    // Each model call is one ledger row; counting is free.
    assert_eq!(mocked::ledger(&gw, "sdk").await.len(), 2);
    assert_eq!(mocked::ledger(&gw, "tools").await.len(), 3);
}
