//! OpenAI-compatible chat completions: OpenAI itself, Azure-style deployments, vLLM,
//! Ollama, Groq and the rest. The body passes through unchanged (tools, response_format,
//! seed, logprobs, ...); streaming asks for usage with `stream_options.include_usage`.

use serde_json::{Map, Value};

use super::{bounded_json, embeddings, header_value, join_url, ChatCall, Embeddings, EmbeddingsCall, Provider, ProviderError, RelayedChunk, SseEvent, StreamTranslator, Translated, UpstreamRequest, Usage, UsageField};
use crate::secret::Secret;

/// The OpenAI-compatible adapter.
pub struct OpenAi;

/// Usage from an OpenAI `usage` object.
pub fn parse_usage(usage: &Value) -> Option<Usage> {
    let prompt = usage.get("prompt_tokens")?.as_u64()?;
    Some(Usage {
        prompt_tokens: prompt,
        completion_tokens: usage.get("completion_tokens").and_then(Value::as_u64).unwrap_or(0),
        cached_tokens: usage.pointer("/prompt_tokens_details/cached_tokens").and_then(Value::as_u64).unwrap_or(0),
        cache_write_tokens: 0,
    })
}

impl Provider for OpenAi {
    fn build(&self, base_url: &str, call: &ChatCall<'_>, key: Option<&Secret>) -> Result<UpstreamRequest, ProviderError> {
        let mut body: Map<String, Value> = call.body.clone();
        body.insert("model".into(), Value::String(call.model.into()));
        if call.stream {
            body.insert("stream".into(), Value::Bool(true));
            let options = body.entry("stream_options").or_insert_with(|| Value::Object(Map::new()));
            if let Value::Object(options) = options {
                options.insert("include_usage".into(), Value::Bool(true));
            }
        } else {
            body.remove("stream_options");
        }
        let mut headers = vec![(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"))];
        if let Some(key) = key {
            headers.push((http::header::AUTHORIZATION, header_value(&format!("Bearer {}", key.expose()))?));
        }
        let body = serde_json::to_vec(&body).map_err(|e| ProviderError::Unsupported(e.to_string()))?;
        Ok(UpstreamRequest { url: join_url(base_url, "chat/completions"), headers, body: body.into() })
    }

    fn translate(&self, body: &[u8], _model: &str, _request_id: &str) -> Result<(Value, Usage), ProviderError> {
        let value = bounded_json::parse(body, bounded_json::MAX_ANSWER_PARSE_BYTES)?;
        if value.get("choices").and_then(Value::as_array).is_none() {
            return Err(ProviderError::BadResponse("no choices in chat completion".into()));
        }
        let usage = value.get("usage").and_then(parse_usage).unwrap_or_default();
        Ok((value, usage))
    }

    fn stream(&self, _model: &str, _request_id: &str) -> Box<dyn StreamTranslator> {
        Box::new(OpenAiStream::default())
    }

    /// `POST {base}/embeddings`: the client's body with the target's model.
    fn build_embeddings(&self, base_url: &str, call: &EmbeddingsCall<'_>, key: Option<&Secret>) -> Result<UpstreamRequest, ProviderError> {
        let mut body: Map<String, Value> = call.body.clone();
        body.insert("model".into(), Value::String(call.model.into()));
        let mut headers = vec![(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"))];
        if let Some(key) = key {
            headers.push((http::header::AUTHORIZATION, header_value(&format!("Bearer {}", key.expose()))?));
        }
        let body = serde_json::to_vec(&body).map_err(|e| ProviderError::Unsupported(e.to_string()))?;
        Ok(UpstreamRequest { url: join_url(base_url, "embeddings"), headers, body: body.into() })
    }

    /// `data[].embedding` (floats or base64) ordered by `index`, and `usage`.
    fn translate_embeddings(&self, body: &[u8], call: &EmbeddingsCall<'_>) -> Result<Embeddings, ProviderError> {
        let value = bounded_json::parse(body, bounded_json::MAX_ANSWER_PARSE_BYTES)?;
        let data = value.get("data").and_then(Value::as_array).ok_or_else(|| ProviderError::BadResponse("no data in embeddings response".into()))?;
        let mut slots: Vec<Option<Vec<f32>>> = vec![None; call.inputs.len()];
        for (position, item) in data.iter().enumerate() {
            let index = item.get("index").and_then(Value::as_u64).map_or(position, |i| i as usize);
            let vector = embeddings::decode_vector(item.get("embedding").unwrap_or(&Value::Null))?;
            let slot = slots.get_mut(index).ok_or_else(|| ProviderError::BadResponse("an embedding index is out of range".into()))?;
            *slot = Some(vector);
        }
        let vectors: Vec<Vec<f32>> = slots.into_iter().collect::<Option<_>>().ok_or_else(|| ProviderError::BadResponse("upstream answered fewer embeddings than inputs".into()))?;
        embeddings::check_count(&vectors, call.inputs.len())?;
        let usage = value.get("usage").and_then(parse_usage).map(|u| Usage { completion_tokens: 0, ..u });
        Ok(Embeddings { vectors, usage })
    }
}

/// Passes chunks through, noting usage and `[DONE]`: read as [`RelayedChunk`]s, so the
/// pump forwards their bytes, or as `Value`s when they are not one line holding an object.
#[derive(Default)]
struct OpenAiStream {
    usage: Usage,
    text_bytes: u64,
    done: bool,
}

impl StreamTranslator for OpenAiStream {
    fn event(&mut self, event: &SseEvent) -> Result<Vec<Value>, ProviderError> {
        let data = event.data.trim();
        if data == "[DONE]" {
            self.done = true;
            return Ok(Vec::new());
        }
        if data.is_empty() {
            return Ok(Vec::new());
        }
        let chunk = bounded_json::parse(data.as_bytes(), bounded_json::MAX_EVENT_PARSE_BYTES)?;
        if let Some(usage) = chunk.get("usage").and_then(parse_usage) {
            self.usage = usage;
        }
        if let Some(choices) = chunk.get("choices").and_then(Value::as_array) {
            for choice in choices {
                if let Some(text) = choice.pointer("/delta/content").and_then(Value::as_str) {
                    self.text_bytes += text.len() as u64;
                }
                // Tool-call arguments are generated output too.
                for call in choice.pointer("/delta/tool_calls").and_then(Value::as_array).into_iter().flatten() {
                    self.text_bytes += call.pointer("/function/arguments").and_then(Value::as_str).map_or(0, str::len) as u64;
                }
            }
        }
        Ok(vec![chunk])
    }

    fn translate(&mut self, event: &SseEvent) -> Result<Translated, ProviderError> {
        let data = event.data.trim();
        let Some(chunk) = RelayedChunk::read(data) else { return self.event(event).map(Translated::Built) };
        if let UsageField::Present(Some(usage)) = chunk.usage {
            self.usage = usage;
        }
        self.text_bytes += chunk.completion_bytes;
        Ok(Translated::Relayed(chunk))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_keeps_unknown_fields_and_asks_for_stream_usage() -> Result<(), ProviderError> {
        let body: Map<String, Value> = serde_json::from_str(r#"{"model":"x","messages":[],"tools":[{"type":"function"}],"seed":7}"#).map_err(|e| ProviderError::Unsupported(e.to_string()))?;
        let call = ChatCall { body: &body, model: "gpt-4o", stream: true };
        let req = OpenAi.build("http://127.0.0.1:9/v1/", &call, Some(&Secret::new("sk-t".into())))?;
        assert_eq!(req.url, "http://127.0.0.1:9/v1/chat/completions");
        let sent: Value = serde_json::from_slice(&req.body).map_err(|e| ProviderError::BadResponse(e.to_string()))?;
        assert_eq!(sent["model"], "gpt-4o");
        assert_eq!(sent["seed"], 7);
        assert_eq!(sent["tools"][0]["type"], "function");
        assert_eq!(sent["stream_options"]["include_usage"], true);
        assert!(req.headers.iter().any(|(k, v)| k == http::header::AUTHORIZATION && v == "Bearer sk-t"));
        Ok(())
    }

    #[test]
    fn embeddings_pass_through_with_the_target_model() -> Result<(), ProviderError> {
        let body: Map<String, Value> = serde_json::from_str(r#"{"model":"alias","input":["a","b"],"dimensions":3,"encoding_format":"base64","user":"u"}"#).map_err(|e| ProviderError::Unsupported(e.to_string()))?;
        let inputs = vec!["a".to_string(), "b".to_string()];
        let call = EmbeddingsCall { body: &body, model: "text-embedding-3-small", inputs: &inputs, dimensions: Some(3) };
        let req = OpenAi.build_embeddings("http://127.0.0.1:9/v1", &call, Some(&Secret::new("sk-t".into())))?;
        assert_eq!(req.url, "http://127.0.0.1:9/v1/embeddings");
        let sent: Value = serde_json::from_slice(&req.body).map_err(|e| ProviderError::BadResponse(e.to_string()))?;
        assert_eq!(sent, serde_json::json!({"model":"text-embedding-3-small","input":["a","b"],"dimensions":3,"encoding_format":"base64","user":"u"}));
        let answer = serde_json::json!({"object":"list","data":[
            {"object":"embedding","index":1,"embedding":embeddings::encode_base64(&[0.5, 1.0])},
            {"object":"embedding","index":0,"embedding":[0.25, -1.0]}],
            "model":"text-embedding-3-small","usage":{"prompt_tokens":2,"total_tokens":2}});
        let got = OpenAi.translate_embeddings(answer.to_string().as_bytes(), &call)?;
        assert_eq!(got.vectors, vec![vec![0.25, -1.0], vec![0.5, 1.0]]);
        assert_eq!(got.usage.map(|u| u.prompt_tokens), Some(2));
        assert!(OpenAi.translate_embeddings(br#"{"data":[{"index":0,"embedding":[1]}]}"#, &call).is_err());
        Ok(())
    }

    #[test]
    fn stream_collects_usage_and_done() -> Result<(), ProviderError> {
        let events = [
            r#"{"choices":[{"delta":{"content":"hey"}}]}"#,
            r#"{"choices":[{"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{}"}}]}}]}"#,
            r#"{"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":1}}"#,
            "[DONE]",
        ];
        // Read as `Value`s, and as relayed chunks (the pump's way): the same figures.
        for relayed in [false, true] {
            let mut s = OpenAi.stream("m", "r");
            for data in events {
                let event = SseEvent { event: None, data: data.into() };
                if relayed {
                    s.translate(&event)?;
                } else {
                    s.event(&event)?;
                }
            }
            assert_eq!(s.usage(), Usage { prompt_tokens: 3, completion_tokens: 1, cached_tokens: 0, cache_write_tokens: 0 });
            assert_eq!(s.completion_bytes(), 5);
            assert!(s.finished());
        }
        Ok(())
    }

    #[test]
    fn chunks_are_relayed_unless_they_need_rewriting_on_one_line() -> Result<(), ProviderError> {
        let mut s = OpenAi.stream("m", "r");
        let one_line = SseEvent { event: None, data: r#"{"id":"x","choices":[{"delta":{"content":"hi"}}]}"#.into() };
        assert!(matches!(s.translate(&one_line)?, Translated::Relayed(c) if c.json() == one_line.data));
        // Several `data:` lines join with newlines: written out again as a `Value` on one.
        let two_lines = SseEvent { event: None, data: "{\"id\":\"x\",\n\"choices\":[{\"delta\":{\"content\":\"yo\"}}]}".into() };
        assert!(matches!(s.translate(&two_lines)?, Translated::Built(chunks) if chunks.len() == 1 && chunks[0]["choices"][0]["delta"]["content"] == "yo"));
        assert!(s.translate(&SseEvent { event: None, data: "{not json".into() }).is_err());
        assert_eq!(s.completion_bytes(), 4);
        Ok(())
    }
}
