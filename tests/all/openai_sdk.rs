//! The official `openai` Python client against the gateway: plain and streaming chat,
//! embeddings, the Responses API (plain, streamed, continued by `previous_response_id`,
//! deleted), and the exception classes its error statuses raise. The test creates a
//! virtual environment under `target/py-openai` with a pinned client (once; later runs
//! reuse it).


use crate::support::Gateway;

/// The client version the test pins.
const OPENAI_CLIENT: &str = "openai==3.57.0";

const SCRIPT: &str = r#"
import sys, openai
base, token = sys.argv[1], sys.argv[2]
client = openai.OpenAI(base_url=base, api_key=token, max_retries=0)
r = client.chat.completions.create(model="default", messages=[{"role": "user", "content": "Hello SDK"}])
print("plain:", r.choices[0].message.content, r.usage.prompt_tokens, r.usage.completion_tokens)
text, usage = "", None
for chunk in client.chat.completions.create(model="default", messages=[{"role": "user", "content": "Hi"}],
                                            stream=True, stream_options={"include_usage": True}):
    if chunk.choices and chunk.choices[0].delta.content:
        text += chunk.choices[0].delta.content
    if chunk.usage:
        usage = chunk.usage
print("stream:", text, usage.completion_tokens)
try:
    openai.OpenAI(base_url=base, api_key="wrong", max_retries=0).chat.completions.create(model="default", messages=[{"role": "user", "content": "x"}])
except openai.AuthenticationError as e:
    print("auth:", e.status_code, e.body["code"])
try:
    client.chat.completions.create(model="default", messages="not a list")
except openai.BadRequestError as e:
    print("bad:", e.status_code, e.body["code"])
# The SDK asks for base64 unless told otherwise, and decodes it.
e = client.embeddings.create(model="demo-embed", input=["hello", "hello", "other"])
v = e.data[0].embedding
print("embed:", len(e.data), len(v), v == e.data[1].embedding, v != e.data[2].embedding, round(sum(x * x for x in v), 3), e.usage.prompt_tokens)
f = client.embeddings.create(model="demo-embed", input="hello", encoding_format="float", dimensions=4)
print("embed-float:", len(f.data[0].embedding), f.usage.total_tokens, f.model)
rr = client.responses.create(model="default", input="Hello responses", instructions="Be kind")
print("responses:", rr.output_text, rr.status, rr.usage.input_tokens, rr.usage.output_tokens, rr.usage.total_tokens)
with client.responses.stream(model="default", input=[{"role": "user", "content": [{"type": "input_text", "text": "Streamed"}]}]) as s:
    text = "".join(e.delta for e in s if e.type == "response.output_text.delta")
    final = s.get_final_response()
print("responses-stream:", text, final.output_text == text, final.status, final.usage.output_tokens)
follow = client.responses.create(model="default", input="Again", previous_response_id=rr.id)
print("responses-follow:", follow.output_text, follow.previous_response_id == rr.id, follow.usage.input_tokens > rr.usage.input_tokens)
client.responses.delete(follow.id)
try:
    client.responses.create(model="default", input="x", previous_response_id=follow.id)
except openai.NotFoundError as e:
    print("responses-deleted:", e.status_code, e.body["code"])
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_python_client_works_plain_streaming_and_errors() {
    let python = crate::support::python_with("py-openai", OPENAI_CLIENT).await;
    let gw = Gateway::start().await;
    let token = gw.demo_tenant("sdk", 10.0).await;
    let lines = crate::support::run_python(&python, SCRIPT, &[&format!("http://{}/v1", gw.addr), &token]).await;
    assert_eq!(lines, vec![
        "plain: Hello from the Tollgate demo provider. You said: Hello SDK 3 10",
        "stream: Hello from the Tollgate demo provider. You said: Hi 9",
        "auth: 401 invalid_api_key",
        "bad: 400 missing_messages",
        "embed: 3 8 True True 1.0 4",
        "embed-float: 4 2 demo-embed",
        "responses: Hello from the Tollgate demo provider. You said: Hello responses completed 6 10 16",
        "responses-stream: Hello from the Tollgate demo provider. You said: Streamed True completed 9",
        "responses-follow: Hello from the Tollgate demo provider. You said: Again True True",
        "responses-deleted: 404 previous_response_not_found",
    ]);
}
