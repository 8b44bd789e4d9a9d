//! The built-in `demo` provider: deterministic answers with usage and no network, so the
//! quickstart works with no keys. It is a provider like the others: its requests are
//! OpenAI's, and its "upstream" ([`Provider::answer_in_process`]) is a pure function of
//! the request, so the gateway dispatches, retries, translates and streams it on the same
//! path as a real one.
//!
//! The answer echoes the last user message; usage counts 4 bytes of prompt text per token
//! (at least 1) and one token per word of the answer.

use serde_json::{json, Map, Value};

use bytes::Bytes;

use super::openai::OpenAi;
use super::{chunk, embeddings, join_url, ChatCall, Embeddings, EmbeddingsCall, Provider, ProviderError, SseEvent, StreamTranslator, UpstreamRequest, Usage};
use crate::secret::Secret;

/// The demo adapter.
pub struct Demo;

/// The demo's answer text and usage for an OpenAI-shaped body.
pub fn answer(body: &Map<String, Value>) -> (String, Usage) {
    let messages = body.get("messages").and_then(Value::as_array).cloned().unwrap_or_default();
    let prompt_bytes: usize = messages.iter().map(|m| super::openai_text(m).len()).sum();
    let last_user = messages
        .iter()
        .rev()
        .find(|m| m.get("role").and_then(Value::as_str) == Some("user"))
        .map(super::openai_text)
        .unwrap_or_default();
    let max_tokens = body.get("max_tokens").or_else(|| body.get("max_completion_tokens")).and_then(Value::as_u64).unwrap_or(u64::MAX);
    let full = format!("Hello from the Tollgate demo provider. You said: {last_user}");
    let words: Vec<&str> = full.split_whitespace().take(max_tokens.min(4096) as usize).collect();
    let text = words.join(" ");
    let usage = Usage { prompt_tokens: (prompt_bytes as u64).div_ceil(4).max(1), completion_tokens: words.len() as u64, cached_tokens: 0, cache_write_tokens: 0 };
    (text, usage)
}

impl Provider for Demo {
    /// `{base}/chat/completions` with the OpenAI body, as the OpenAI adapter would send.
    fn build(&self, base_url: &str, call: &ChatCall<'_>, _key: Option<&Secret>) -> Result<UpstreamRequest, ProviderError> {
        let mut body = call.body.clone();
        body.insert("model".into(), Value::String(call.model.into()));
        body.insert("stream".into(), Value::Bool(call.stream));
        let body = serde_json::to_vec(&body).map_err(|e| ProviderError::Unsupported(e.to_string()))?;
        Ok(UpstreamRequest { url: join_url(base_url, CHAT_PATH), headers: Vec::new(), body: body.into() })
    }

    /// The in-process answer ([`Demo::answer_in_process`]) is an OpenAI `chat.completion`
    /// with a placeholder id; the id becomes the request's, as the gateway's own.
    fn translate(&self, body: &[u8], model: &str, request_id: &str) -> Result<(Value, Usage), ProviderError> {
        let (mut value, usage) = OpenAi.translate(body, model, request_id)?;
        value["id"] = Value::String(format!("chatcmpl-{request_id}"));
        Ok((value, usage))
    }

    fn stream(&self, model: &str, request_id: &str) -> Box<dyn StreamTranslator> {
        Box::new(DemoStream { model: model.into(), request_id: request_id.into(), usage: Usage::default(), text_bytes: 0, done: false })
    }

    /// `{base}/embeddings` with the client's body, as the OpenAI adapter would send.
    fn build_embeddings(&self, base_url: &str, call: &EmbeddingsCall<'_>, key: Option<&Secret>) -> Result<UpstreamRequest, ProviderError> {
        let mut request = OpenAi.build_embeddings(base_url, call, key)?;
        request.headers.clear();
        Ok(request)
    }

    /// The in-process answer is OpenAI's embeddings shape.
    fn translate_embeddings(&self, body: &[u8], call: &EmbeddingsCall<'_>) -> Result<Embeddings, ProviderError> {
        OpenAi.translate_embeddings(body, call)
    }

    /// The demo's "upstream": a pure function of the request, answered without a network.
    fn answer_in_process(&self, request: &UpstreamRequest) -> Option<Result<Bytes, ProviderError>> {
        let body: Map<String, Value> = match serde_json::from_slice(&request.body) {
            Ok(body) => body,
            Err(e) => return Some(Err(ProviderError::Unsupported(e.to_string()))),
        };
        Some(Ok(if request.url.ends_with(EMBEDDINGS_PATH) {
            embeddings_answer(&body)
        } else if body.get("stream").and_then(Value::as_bool) == Some(true) {
            stream_answer(&body)
        } else {
            completion_answer(&body)
        }))
    }
}

const CHAT_PATH: &str = "chat/completions";
const EMBEDDINGS_PATH: &str = "embeddings";

/// A `chat.completion` echoing the last user message.
fn completion_answer(body: &Map<String, Value>) -> Bytes {
    let (text, usage) = answer(body);
    let model = body.get("model").cloned().unwrap_or(Value::Null);
    let response = json!({
        "id": "chatcmpl-demo",
        "object": "chat.completion",
        "created": crate::clock::unix_millis() / 1000,
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": super::usage_json(usage),
    });
    Bytes::from(response.to_string())
}

/// The SSE body of a streamed answer: one `word` event per word, then `usage`.
fn stream_answer(body: &Map<String, Value>) -> Bytes {
    let mut out = String::new();
    for event in stream_events(body) {
        out.push_str("event: ");
        out.push_str(event.event.as_deref().unwrap_or_default());
        out.push('\n');
        // A word may hold a newline (the user's text is echoed): one `data:` line each.
        for line in event.data.split('\n') {
            out.push_str("data: ");
            out.push_str(line);
            out.push('\n');
        }
        out.push('\n');
    }
    Bytes::from(out)
}

/// OpenAI's embeddings shape for the body's `input` (a string or strings), at its
/// `dimensions` (see [`vector`]).
fn embeddings_answer(body: &Map<String, Value>) -> Bytes {
    let inputs: Vec<String> = match body.get("input") {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) => items.iter().map(|i| i.as_str().unwrap_or_default().to_string()).collect(),
        _ => Vec::new(),
    };
    let dimensions = body.get("dimensions").and_then(Value::as_u64).unwrap_or(DEMO_DIMENSIONS).clamp(1, MAX_DEMO_DIMENSIONS) as usize;
    let data: Vec<Value> = inputs.iter().enumerate().map(|(index, text)| json!({"object": "embedding", "index": index, "embedding": vector(text, dimensions)})).collect();
    let tokens = embeddings::estimate_tokens(&inputs);
    Bytes::from(json!({"object": "list", "data": data, "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}).to_string())
}

/// The demo's vector length when the client asks for none: small, so tests read it.
pub const DEMO_DIMENSIONS: u64 = 8;
/// The longest demo vector: a client's `dimensions` cannot make the gateway allocate more.
pub const MAX_DEMO_DIMENSIONS: u64 = 4096;

/// A deterministic unit vector for `text`: FNV-1a of the text seeds a xorshift generator.
/// Equal texts get equal vectors, so similarity search demos behave.
pub fn vector(text: &str, dimensions: usize) -> Vec<f32> {
    let mut state: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in text.bytes() {
        state = (state ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
    }
    state |= 1;
    let mut values: Vec<f32> = (0..dimensions)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect();
    let norm = values.iter().map(|v| v * v).sum::<f32>().sqrt();
    if norm > 0.0 {
        values.iter_mut().for_each(|v| *v /= norm);
    }
    values
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_vectors_are_deterministic_unit_vectors() -> Result<(), ProviderError> {
        let body: Map<String, Value> = serde_json::from_str(r#"{"model":"demo-embed","input":["hello","hello","other"]}"#).map_err(|e| ProviderError::BadResponse(e.to_string()))?;
        let inputs = vec!["hello".to_string(), "hello".to_string(), "other".to_string()];
        let call = EmbeddingsCall { body: &body, model: "demo-embed", inputs: &inputs, dimensions: None };
        let request = Demo.build_embeddings("demo:", &call, None)?;
        let answered = Demo.answer_in_process(&request).ok_or(ProviderError::MissingKey)??;
        let got = Demo.translate_embeddings(&answered, &call)?;
        assert_eq!(got.vectors.len(), 3);
        assert_eq!(got.vectors[0].len(), DEMO_DIMENSIONS as usize);
        assert_eq!(got.vectors[0], got.vectors[1]);
        assert_ne!(got.vectors[0], got.vectors[2]);
        let norm: f32 = got.vectors[0].iter().map(|v| v * v).sum();
        assert!((norm - 1.0).abs() < 1e-4);
        assert_eq!(got.usage.map(|u| u.prompt_tokens), Some(4));
        Ok(())
    }
}

/// Demo streams are produced locally as one event per word; see [`stream_events`].
struct DemoStream {
    model: String,
    request_id: String,
    usage: Usage,
    text_bytes: u64,
    done: bool,
}

/// The events the demo "upstream" sends for a streamed body: one per word, then usage.
pub fn stream_events(body: &Map<String, Value>) -> Vec<SseEvent> {
    let (text, usage) = answer(body);
    let mut events: Vec<SseEvent> = text
        .split(' ')
        .enumerate()
        .map(|(i, word)| SseEvent { event: Some("word".into()), data: if i == 0 { word.to_string() } else { format!(" {word}") } })
        .collect();
    events.push(SseEvent { event: Some("usage".into()), data: format!("{} {}", usage.prompt_tokens, usage.completion_tokens) });
    events
}

impl StreamTranslator for DemoStream {
    fn event(&mut self, event: &SseEvent) -> Result<Vec<Value>, ProviderError> {
        let created = crate::clock::unix_millis() / 1000;
        match event.event.as_deref() {
            Some("word") => {
                let first = self.text_bytes == 0;
                self.text_bytes += event.data.len() as u64;
                let delta = if first { json!({"role": "assistant", "content": event.data}) } else { json!({"content": event.data}) };
                Ok(vec![chunk(&self.request_id, &self.model, created, delta, None)])
            }
            Some("usage") => {
                let mut parts = event.data.split(' ').map(|p| p.parse::<u64>().unwrap_or(0));
                self.usage = Usage { prompt_tokens: parts.next().unwrap_or(0), completion_tokens: parts.next().unwrap_or(0), cached_tokens: 0, cache_write_tokens: 0 };
                self.done = true;
                Ok(vec![chunk(&self.request_id, &self.model, created, json!({}), Some("stop"))])
            }
            _ => Err(ProviderError::BadResponse("unknown demo event".into())),
        }
    }

    fn usage(&self) -> Usage {
        self.usage
    }

    fn completion_bytes(&self) -> u64 {
        self.text_bytes
    }

    fn finished(&self) -> bool {
        self.done
    }
}
