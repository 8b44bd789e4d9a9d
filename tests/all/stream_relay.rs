//! An OpenAI-compatible upstream's stream reaches the client as the upstream wrote it:
//! each chunk's bytes unchanged but for a `usage` the client did not ask for, billed from
//! the upstream's usage, and with the tenant's key redacted however the upstream spells it.

use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use serde_json::Value;

use crate::mocked::{self, OPENAI};
use crate::support::Gateway;

const KEY: &str = "sk-relay-4c1e9a7f3b2d8e60";

/// Chunks in OpenAI's own field order (not sorted), as an upstream asked for usage sends
/// them: `"usage": null` on each, then a usage-only chunk.
fn upstream_chunks(texts: &[&str]) -> Vec<String> {
    let mut chunks: Vec<String> = texts
        .iter()
        .map(|text| format!(r#"{{"id":"chatcmpl-up","object":"chat.completion.chunk","created":1733600000,"model":"gpt-up","system_fingerprint":"fp_1","choices":[{{"index":0,"delta":{{"content":"{text}"}},"logprobs":null,"finish_reason":null}}],"usage":null}}"#))
        .collect();
    chunks.push(r#"{"id":"chatcmpl-up","object":"chat.completion.chunk","created":1733600000,"model":"gpt-up","system_fingerprint":"fp_1","choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}],"usage":null}"#.into());
    chunks.push(r#"{"id":"chatcmpl-up","object":"chat.completion.chunk","created":1733600000,"model":"gpt-up","system_fingerprint":"fp_1","choices":[],"usage":{"prompt_tokens":9,"completion_tokens":3,"total_tokens":12}}"#.into());
    chunks
}

/// An upstream that streams the same chunks, then `[DONE]`, to every request.
struct CannedStream {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl CannedStream {
    async fn start(chunks: &[String]) -> CannedStream {
        let body: String = chunks.iter().map(|c| format!("data: {c}\n\n")).chain(["data: [DONE]\n\n".to_string()]).collect();
        let (addr, task) = mocked::serve(move |req| {
            let body = body.clone();
            async move {
                let _ = req.into_body().collect().await;
                let mut response = hyper::Response::new(Full::new(Bytes::from(body)));
                response.headers_mut().insert("content-type", http::HeaderValue::from_static("text/event-stream"));
                response
            }
        })
        .await;
        CannedStream { addr, task }
    }
}

impl Drop for CannedStream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A gateway whose `openai` provider is `upstream`, and a tenant on it holding [`KEY`].
async fn gateway(upstream: &CannedStream) -> (Gateway, String) {
    let mock = tollgate_tests::mock::MockUpstream::start().await.expect("mock");
    let mut config = mocked::config(&mock);
    mocked::point(&mut config, "openai", OPENAI, &format!("http://{}", upstream.addr));
    let gw = Gateway::start_with(config).await;
    let token = mocked::tenant(&gw, "relay", "openai", KEY).await;
    (gw, token)
}

/// Streams `chunks` to a client that did or did not ask for usage, and returns the
/// `data:` payloads it got, after checking the request was billed from the upstream's
/// usage chunk.
async fn relayed(chunks: &[String], include_usage: bool) -> Vec<String> {
    let upstream = CannedStream::start(chunks).await;
    let (gw, token) = gateway(&upstream).await;
    let reply = gw.chat(&token, mocked::streamed(mocked::chat("gpt-up", "Hi"), include_usage)).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let row = mocked::ledger_row(&gw, "relay", &reply.header("x-request-id")).await;
    assert_eq!((row["prompt_tokens"].as_u64(), row["completion_tokens"].as_u64()), (Some(9), Some(3)), "billed from the upstream's usage: {row}");
    mocked::sse_data(&reply)
}

#[tokio::test]
async fn chunks_reach_a_client_that_asked_for_usage_byte_for_byte() {
    let chunks = upstream_chunks(&["Hel", "lo"]);
    let mut expected = chunks.clone();
    expected.push("[DONE]".into());
    assert_eq!(relayed(&chunks, true).await, expected);
}

#[tokio::test]
async fn a_client_that_did_not_ask_for_usage_gets_the_chunks_without_it() {
    let chunks = upstream_chunks(&["Hel", "lo"]);
    // Only the `usage` field goes, every other byte stays; the usage-only chunk goes whole.
    let mut expected: Vec<String> = chunks[..chunks.len() - 1].iter().map(|c| c.replace(r#","usage":null"#, "")).collect();
    expected.push("[DONE]".into());
    assert_eq!(relayed(&chunks, false).await, expected);
}

#[tokio::test]
async fn a_key_the_upstream_spells_with_json_escapes_is_redacted() {
    let escaped: String = KEY.chars().map(|c| format!("\\u{:04x}", c as u32)).collect();
    let mut chunks = upstream_chunks(&["your key is ", &escaped, " and ", KEY]);
    // In an object key too.
    chunks.insert(1, format!(r#"{{"id":"chatcmpl-up","choices":[{{"index":0,"delta":{{}}}}],"{escaped}":1}}"#));
    let upstream = CannedStream::start(&chunks).await;
    let (gw, token) = gateway(&upstream).await;
    let reply = gw.chat(&token, mocked::streamed(mocked::chat("gpt-up", "Hi"), true)).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    // Decoded, as a client reads them: no run of the key, in any string or name.
    let decoded: Vec<String> = mocked::sse_chunks(&reply).iter().map(Value::to_string).collect();
    assert_eq!(decoded.len(), chunks.len());
    for chunk in &decoded {
        assert!(!chunk.contains(&KEY[..8]) && !chunk.contains(&KEY[KEY.len() - 8..]), "{chunk}");
    }
    assert_eq!(mocked::streamed_text(&mocked::sse_chunks(&reply)), "your key is [redacted] and [redacted]");
    assert!(decoded[1].contains(r#""[redacted]":1"#), "{}", decoded[1]);
}
