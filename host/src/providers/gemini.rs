//! Google Gemini `generateContent` / `streamGenerateContent` (the Generative Language API).
//! OpenAI's chat shape is translated both ways: system messages become
//! `systemInstruction`, assistant turns become role `model`, tool calls and results become
//! `functionCall` / `functionResponse` parts. The model name is part of the URL path, so it
//! is checked to be a single plain path segment.

use serde_json::{json, Map, Value};

use super::{bounded_json, chunk, embeddings, header_value, join_url, openai_text, usage_json, ChatCall, Embeddings, EmbeddingsCall, Provider, ProviderError, SseEvent, StreamTranslator, UpstreamRequest, Usage};
use crate::secret::Secret;

/// The Gemini adapter.
pub struct Gemini;

impl Provider for Gemini {
    /// `models/{model}:batchEmbedContents`, one request per input, each naming the model
    /// (`models/{model}`) and the client's `dimensions` as `outputDimensionality`.
    fn build_embeddings(&self, base_url: &str, call: &EmbeddingsCall<'_>, key: Option<&Secret>) -> Result<UpstreamRequest, ProviderError> {
        check_model(call.model)?;
        let key = key.ok_or(ProviderError::MissingKey)?;
        let requests: Vec<Value> = call
            .inputs
            .iter()
            .map(|text| {
                let mut request = json!({"model": format!("models/{}", call.model), "content": {"parts": [{"text": text}]}});
                if let (Some(dimensions), Value::Object(map)) = (call.dimensions, &mut request) {
                    map.insert("outputDimensionality".into(), json!(dimensions));
                }
                request
            })
            .collect();
        let body = serde_json::to_vec(&json!({"requests": requests})).map_err(|e| ProviderError::Unsupported(e.to_string()))?;
        let headers = vec![
            (http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json")),
            (http::HeaderName::from_static("x-goog-api-key"), header_value(key.expose())?),
        ];
        Ok(UpstreamRequest { url: join_url(base_url, &format!("v1beta/models/{}:batchEmbedContents", call.model)), headers, body: body.into() })
    }

    /// `embeddings[].values`, in request order. Gemini reports no usage.
    fn translate_embeddings(&self, body: &[u8], call: &EmbeddingsCall<'_>) -> Result<Embeddings, ProviderError> {
        let value = bounded_json::parse(body, bounded_json::MAX_ANSWER_PARSE_BYTES)?;
        let items = value.get("embeddings").and_then(Value::as_array).ok_or_else(|| ProviderError::BadResponse("no embeddings in batchEmbedContents response".into()))?;
        let vectors = items.iter().map(|item| embeddings::decode_vector(item.get("values").unwrap_or(&Value::Null))).collect::<Result<Vec<_>, _>>()?;
        embeddings::check_count(&vectors, call.inputs.len())?;
        Ok(Embeddings { vectors, usage: None })
    }

    fn build(&self, base_url: &str, call: &ChatCall<'_>, key: Option<&Secret>) -> Result<UpstreamRequest, ProviderError> {
        check_model(call.model)?;
        let key = key.ok_or(ProviderError::MissingKey)?;
        let body = request_body(call.body)?;
        let path = if call.stream {
            format!("v1beta/models/{}:streamGenerateContent?alt=sse", call.model)
        } else {
            format!("v1beta/models/{}:generateContent", call.model)
        };
        let headers = vec![
            (http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json")),
            (http::HeaderName::from_static("x-goog-api-key"), header_value(key.expose())?),
        ];
        let body = serde_json::to_vec(&body).map_err(|e| ProviderError::Unsupported(e.to_string()))?;
        Ok(UpstreamRequest { url: join_url(base_url, &path), headers, body: body.into() })
    }

    fn translate(&self, body: &[u8], model: &str, request_id: &str) -> Result<(Value, Usage), ProviderError> {
        let response = bounded_json::parse(body, bounded_json::MAX_ANSWER_PARSE_BYTES)?;
        let candidate = match response.pointer("/candidates/0") {
            Some(candidate) => candidate,
            // A blocked prompt is a 200 with `promptFeedback` and no candidates.
            None if response.pointer("/promptFeedback/blockReason").is_some() => &Value::Null,
            None => return Err(ProviderError::BadResponse("no candidates in Gemini response".into())),
        };
        let mut text = String::new();
        let mut has_text = false;
        let mut tool_calls = Vec::new();
        for part in parts(candidate) {
            if let Some(t) = part_text(part) {
                has_text = true;
                text.push_str(t);
            } else if let Some(call) = part.get("functionCall") {
                tool_calls.push(tool_call(call, tool_calls.len()));
            }
        }
        let finish = match candidate.get("finishReason").and_then(Value::as_str) {
            _ if !tool_calls.is_empty() => "tool_calls",
            Some(reason) => finish_reason(reason),
            None if candidate.is_null() => "content_filter",
            None => "stop",
        };
        let mut message = json!({"role": "assistant", "content": if has_text { Value::String(text) } else { Value::Null }});
        if !tool_calls.is_empty() {
            message["tool_calls"] = Value::Array(tool_calls);
        }
        let usage = response.get("usageMetadata").map(usage_from).unwrap_or_default();
        let out = json!({
            "id": format!("chatcmpl-{request_id}"),
            "object": "chat.completion",
            "created": crate::clock::unix_millis() / 1000,
            "model": model,
            "choices": [{"index": 0, "message": message, "finish_reason": finish}],
            "usage": usage_json(usage),
        });
        Ok((out, usage))
    }

    fn stream(&self, model: &str, request_id: &str) -> Box<dyn StreamTranslator> {
        Box::new(GeminiStream {
            model: model.into(),
            request_id: request_id.into(),
            created: crate::clock::unix_millis() / 1000,
            usage: Usage::default(),
            text_bytes: 0,
            sent_role: false,
            tool_calls: 0,
            done: false,
        })
    }
}

/// Refuses model names that are not one plain path segment: the name is spliced into the
/// URL path, so separators, dot segments, query/fragment markers, percent-escapes (which
/// some servers decode to `/`), `:` (which selects the method) and whitespace could aim the
/// request at another endpoint.
fn check_model(model: &str) -> Result<(), ProviderError> {
    let bad_char = |c: char| matches!(c, '/' | '\\' | '?' | '#' | '%' | ':') || c.is_whitespace() || c.is_control() || !c.is_ascii();
    if model.is_empty() || model.contains("..") || model.chars().any(bad_char) {
        return Err(ProviderError::Unsupported(format!("model name {model:?} is not allowed in a Gemini URL")));
    }
    Ok(())
}

/// OpenAI's `finish_reason` for a Gemini `finishReason` (without tool calls).
fn finish_reason(reason: &str) -> &'static str {
    match reason {
        "STOP" => "stop",
        "MAX_TOKENS" => "length",
        // SAFETY, RECITATION, BLOCKLIST, PROHIBITED_CONTENT, SPII, MALFORMED_FUNCTION_CALL, ...
        _ => "content_filter",
    }
}

/// Usage from `usageMetadata`. Gemini's prompt count already includes cached tokens, as
/// OpenAI's does; thinking tokens are billed as output, so they count as completion.
fn usage_from(meta: &Value) -> Usage {
    let field = |name: &str| meta.get(name).and_then(Value::as_u64).unwrap_or(0);
    Usage {
        prompt_tokens: field("promptTokenCount"),
        // Saturating: the counts come from the upstream, which may report anything.
        completion_tokens: field("candidatesTokenCount").saturating_add(field("thoughtsTokenCount")),
        cached_tokens: field("cachedContentTokenCount"),
        cache_write_tokens: 0,
    }
}

/// The parts of a candidate's content.
fn parts(candidate: &Value) -> impl Iterator<Item = &Value> {
    candidate.pointer("/content/parts").and_then(Value::as_array).into_iter().flatten()
}

/// A part's answer text; thought summaries are not part of the answer.
fn part_text(part: &Value) -> Option<&str> {
    if part.get("thought").and_then(Value::as_bool) == Some(true) {
        return None;
    }
    part.get("text").and_then(Value::as_str)
}

/// An OpenAI tool call for a `functionCall` part; Gemini has no call ids, so they are made
/// from the call's position in the answer.
fn tool_call(call: &Value, index: usize) -> Value {
    json!({
        "id": format!("call_{index}"),
        "type": "function",
        "function": {
            "name": call.get("name").and_then(Value::as_str).unwrap_or(""),
            "arguments": call.get("args").cloned().unwrap_or_else(|| json!({})).to_string(),
        },
    })
}

/// The Gemini request body for an OpenAI-shaped body.
fn request_body(body: &Map<String, Value>) -> Result<Value, ProviderError> {
    let mut out = Map::new();
    let empty = Vec::new();
    let messages = body.get("messages").and_then(Value::as_array).unwrap_or(&empty);
    let mut system: Vec<String> = Vec::new();
    let mut contents: Vec<(&'static str, Vec<Value>)> = Vec::new();
    // Tool results name the function they answer; OpenAI only gives the call id.
    let mut call_names: Vec<(&str, &str)> = Vec::new();
    for message in messages {
        let role = message.get("role").and_then(Value::as_str).unwrap_or("");
        let (role, parts) = match role {
            "system" | "developer" => {
                system.push(openai_text(message));
                continue;
            }
            "user" => ("user", content_parts(message)?),
            "assistant" => {
                let mut parts: Vec<Value> = text_part(&openai_text(message)).into_iter().collect();
                for call in message.get("tool_calls").and_then(Value::as_array).into_iter().flatten() {
                    let name = call.pointer("/function/name").and_then(Value::as_str).unwrap_or("");
                    if let Some(id) = call.get("id").and_then(Value::as_str) {
                        call_names.push((id, name));
                    }
                    parts.push(json!({"functionCall": {"name": name, "args": super::anthropic::tool_arguments(call)?}}));
                }
                ("model", parts)
            }
            "tool" => {
                let id = message.get("tool_call_id").and_then(Value::as_str).unwrap_or("");
                let name = call_names
                    .iter()
                    .rev()
                    .find(|(call_id, _)| *call_id == id)
                    .map(|(_, name)| *name)
                    .or_else(|| message.get("name").and_then(Value::as_str))
                    .ok_or_else(|| ProviderError::Unsupported(format!("tool result {id:?} answers no earlier tool call")))?;
                let text = openai_text(message);
                // Structured results stay structured; anything else is passed as text.
                let content = match serde_json::from_str::<Value>(&text) {
                    Ok(parsed @ (Value::Object(_) | Value::Array(_))) => parsed,
                    _ => Value::String(text),
                };
                ("user", vec![json!({"functionResponse": {"name": name, "response": {"content": content}}})])
            }
            other => return Err(ProviderError::Unsupported(format!("message role {other:?}"))),
        };
        // All responses to one model turn's calls must be in one content, so consecutive
        // same-role messages are merged.
        match contents.last_mut() {
            Some((last_role, last_parts)) if *last_role == role => last_parts.extend(parts),
            _ => contents.push((role, parts)),
        }
    }
    out.insert("contents".into(), Value::Array(contents.into_iter().map(|(role, parts)| json!({"role": role, "parts": parts})).collect()));
    if !system.is_empty() {
        out.insert("systemInstruction".into(), json!({"parts": [{"text": system.join("\n\n")}]}));
    }

    let declarations = function_declarations(body)?;
    if !declarations.is_empty() {
        out.insert("tools".into(), json!([{"functionDeclarations": declarations}]));
        if let Some(config) = tool_config(body)? {
            out.insert("toolConfig".into(), config);
        }
    }

    let mut generation = Map::new();
    if let Some(max) = body.get("max_tokens").or_else(|| body.get("max_completion_tokens")).and_then(Value::as_u64) {
        generation.insert("maxOutputTokens".into(), max.into());
    }
    for (from, to) in [("temperature", "temperature"), ("top_p", "topP")] {
        if let Some(value) = body.get(from).filter(|v| v.is_number()) {
            generation.insert(to.into(), value.clone());
        }
    }
    match body.get("stop") {
        Some(Value::String(stop)) => {
            generation.insert("stopSequences".into(), json!([stop]));
        }
        Some(Value::Array(stops)) if !stops.is_empty() => {
            generation.insert("stopSequences".into(), Value::Array(stops.clone()));
        }
        _ => {}
    }
    if !generation.is_empty() {
        out.insert("generationConfig".into(), Value::Object(generation));
    }
    Ok(Value::Object(out))
}

/// A text part, or nothing for empty text (OpenAI histories carry `content: ""` next to
/// tool calls, and Gemini refuses empty parts).
fn text_part(text: &str) -> Option<Value> {
    (!text.is_empty()).then(|| json!({"text": text}))
}

/// The parts of a user message: text and images.
fn content_parts(message: &Value) -> Result<Vec<Value>, ProviderError> {
    match message.get("content") {
        Some(Value::String(text)) => Ok(text_part(text).into_iter().collect()),
        Some(Value::Array(items)) => {
            let mut parts = Vec::new();
            for item in items {
                match item.get("type").and_then(Value::as_str) {
                    Some("text") => parts.extend(text_part(item.get("text").and_then(Value::as_str).unwrap_or(""))),
                    Some("image_url") => {
                        let url = item
                            .pointer("/image_url/url")
                            .or_else(|| item.get("image_url").filter(|u| u.is_string()))
                            .and_then(Value::as_str)
                            .ok_or_else(|| ProviderError::Unsupported("image part without a URL".into()))?;
                        parts.push(image_part(url)?);
                    }
                    other => return Err(ProviderError::Unsupported(format!("content part type {:?}", other.unwrap_or("(none)")))),
                }
            }
            Ok(parts)
        }
        _ => Ok(Vec::new()),
    }
}

/// Inline data for `data:` URLs, else a file reference Gemini fetches.
fn image_part(url: &str) -> Result<Value, ProviderError> {
    if let Some(rest) = url.strip_prefix("data:") {
        let (mime, data) = rest
            .split_once(";base64,")
            .ok_or_else(|| ProviderError::Unsupported("image data URL is not base64".into()))?;
        return Ok(json!({"inlineData": {"mimeType": mime, "data": data}}));
    }
    let path = url.split(['?', '#']).next().unwrap_or(url).to_ascii_lowercase();
    let mime = [(".png", "image/png"), (".jpg", "image/jpeg"), (".jpeg", "image/jpeg"), (".webp", "image/webp"), (".gif", "image/gif"), (".heic", "image/heic")]
        .iter()
        .find(|(ext, _)| path.ends_with(ext))
        .map(|(_, mime)| *mime);
    Ok(match mime {
        Some(mime) => json!({"fileData": {"mimeType": mime, "fileUri": url}}),
        None => json!({"fileData": {"fileUri": url}}),
    })
}

/// Gemini function declarations for OpenAI `tools`.
fn function_declarations(body: &Map<String, Value>) -> Result<Vec<Value>, ProviderError> {
    let mut out = Vec::new();
    for tool in body.get("tools").and_then(Value::as_array).into_iter().flatten() {
        if tool.get("type").and_then(Value::as_str) != Some("function") {
            return Err(ProviderError::Unsupported("only function tools are supported".into()));
        }
        let function = tool.get("function").unwrap_or(&Value::Null);
        let mut decl = Map::new();
        decl.insert("name".into(), function.get("name").cloned().unwrap_or_else(|| Value::String(String::new())));
        if let Some(description) = function.get("description").filter(|d| d.is_string()) {
            decl.insert("description".into(), description.clone());
        }
        if let Some(parameters) = function.get("parameters") {
            decl.insert("parameters".into(), parameters.clone());
        }
        out.push(Value::Object(decl));
    }
    Ok(out)
}

/// Gemini's `toolConfig` for OpenAI's `tool_choice`, or `None` for the default (`AUTO`).
fn tool_config(body: &Map<String, Value>) -> Result<Option<Value>, ProviderError> {
    let config = match body.get("tool_choice") {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::String(s)) if s == "auto" => json!({"mode": "AUTO"}),
        Some(Value::String(s)) if s == "required" => json!({"mode": "ANY"}),
        Some(Value::String(s)) if s == "none" => json!({"mode": "NONE"}),
        Some(choice) => match choice.pointer("/function/name").and_then(Value::as_str) {
            Some(name) => json!({"mode": "ANY", "allowedFunctionNames": [name]}),
            None => return Err(ProviderError::Unsupported("tool_choice".into())),
        },
    };
    Ok(Some(json!({"functionCallingConfig": config})))
}

/// Translates one Gemini SSE stream (`alt=sse`): every event is a whole
/// `GenerateContentResponse` carrying the next piece of the answer.
struct GeminiStream {
    model: String,
    request_id: String,
    created: u64,
    usage: Usage,
    text_bytes: u64,
    sent_role: bool,
    tool_calls: usize,
    done: bool,
}

impl GeminiStream {
    fn delta_chunk(&mut self, mut delta: Value) -> Value {
        if !self.sent_role {
            self.sent_role = true;
            delta["role"] = Value::String("assistant".into());
        }
        chunk(&self.request_id, &self.model, self.created, delta, None)
    }
}

impl StreamTranslator for GeminiStream {
    fn event(&mut self, event: &SseEvent) -> Result<Vec<Value>, ProviderError> {
        let data = event.data.trim();
        if data.is_empty() {
            return Ok(Vec::new());
        }
        let response = bounded_json::parse(data.as_bytes(), bounded_json::MAX_EVENT_PARSE_BYTES)?;
        if let Some(error) = response.get("error") {
            let message = error.get("message").and_then(Value::as_str).unwrap_or("upstream stream error");
            return Err(ProviderError::BadResponse(message.into()));
        }
        if let Some(meta) = response.get("usageMetadata") {
            self.usage = usage_from(meta);
        }
        let mut out = Vec::new();
        let Some(candidate) = response.pointer("/candidates/0") else {
            if response.pointer("/promptFeedback/blockReason").is_some() {
                self.done = true;
                out.push(chunk(&self.request_id, &self.model, self.created, json!({}), Some("content_filter")));
            }
            return Ok(out);
        };
        for part in parts(candidate) {
            if let Some(text) = part_text(part) {
                if text.is_empty() {
                    continue;
                }
                self.text_bytes += text.len() as u64;
                out.push(self.delta_chunk(json!({"content": text})));
            } else if let Some(call) = part.get("functionCall") {
                let index = self.tool_calls;
                self.tool_calls += 1;
                let mut call = tool_call(call, index);
                call["index"] = index.into();
                // Tool-call arguments are generated output too.
                self.text_bytes += call.pointer("/function/arguments").and_then(Value::as_str).map_or(0, str::len) as u64;
                out.push(self.delta_chunk(json!({"tool_calls": [call]})));
            }
        }
        if let Some(reason) = candidate.get("finishReason").and_then(Value::as_str) {
            let finish = if self.tool_calls > 0 { "tool_calls" } else { finish_reason(reason) };
            self.done = true;
            out.push(chunk(&self.request_id, &self.model, self.created, json!({}), Some(finish)));
        }
        Ok(out)
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
    fn embeddings_batch_request_and_answer() -> Result<(), ProviderError> {
        let body = Map::new();
        let inputs = vec!["hi".to_string(), "there".to_string()];
        let call = EmbeddingsCall { body: &body, model: "gemini-embedding-001", inputs: &inputs, dimensions: Some(8) };
        let req = Gemini.build_embeddings("http://127.0.0.1:9/", &call, Some(&Secret::new("AIza".into())))?;
        assert_eq!(req.url, "http://127.0.0.1:9/v1beta/models/gemini-embedding-001:batchEmbedContents");
        let sent: Value = serde_json::from_slice(&req.body).map_err(|e| ProviderError::BadResponse(e.to_string()))?;
        assert_eq!(sent, json!({"requests": [
            {"model": "models/gemini-embedding-001", "content": {"parts": [{"text": "hi"}]}, "outputDimensionality": 8},
            {"model": "models/gemini-embedding-001", "content": {"parts": [{"text": "there"}]}, "outputDimensionality": 8}]}));
        let got = Gemini.translate_embeddings(br#"{"embeddings":[{"values":[0.5]},{"values":[-0.25]}]}"#, &call)?;
        assert_eq!(got.vectors, vec![vec![0.5], vec![-0.25]]);
        assert_eq!(got.usage, None);
        assert!(Gemini.translate_embeddings(br#"{"embeddings":[{"values":[0.5]}]}"#, &call).is_err());
        assert_eq!(Gemini.build_embeddings("http://x", &call, None).err(), Some(ProviderError::MissingKey));
        Ok(())
    }

    fn body(json: Value) -> Map<String, Value> {
        match json {
            Value::Object(map) => map,
            _ => Map::new(),
        }
    }

    fn sent(req: &UpstreamRequest) -> Result<Value, ProviderError> {
        serde_json::from_slice(&req.body).map_err(|e| ProviderError::BadResponse(e.to_string()))
    }

    fn data(json: Value) -> SseEvent {
        SseEvent { event: None, data: json.to_string() }
    }

    #[test]
    fn build_translates_a_tool_conversation() -> Result<(), ProviderError> {
        let body = body(json!({
            "model": "ignored",
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "developer", "content": "Use tools."},
                {"role": "user", "content": [
                    {"type": "text", "text": "Weather here?"},
                    {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,/9j/4A"}},
                    {"type": "image_url", "image_url": {"url": "https://example.com/a.PNG?x=1"}},
                ]},
                {"role": "assistant", "content": null, "tool_calls": [
                    {"id": "call_a", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Paris\"}"}},
                    {"id": "call_b", "type": "function", "function": {"name": "time", "arguments": ""}},
                ]},
                {"role": "tool", "tool_call_id": "call_a", "content": "{\"sky\":\"sunny\"}"},
                {"role": "tool", "tool_call_id": "call_b", "content": "noon"},
                {"role": "user", "content": "Thanks"},
                {"role": "assistant", "content": "You're welcome."},
            ],
            "tools": [
                {"type": "function", "function": {"name": "weather", "description": "Get weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}},
                {"type": "function", "function": {"name": "time"}},
            ],
            "tool_choice": "required",
            "max_tokens": 64,
            "temperature": 0.2,
            "top_p": 0.8,
            "stop": ["END"],
            "seed": 1,
        }));
        let call = ChatCall { body: &body, model: "gemini-2.5-flash", stream: false };
        let req = Gemini.build("https://generativelanguage.googleapis.com/", &call, Some(&Secret::new("AIza".into())))?;
        assert_eq!(req.url, "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.5-flash:generateContent");
        let headers: Vec<(String, String)> = req.headers.iter().map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("?").to_string())).collect();
        assert_eq!(headers, vec![
            ("content-type".to_string(), "application/json".to_string()),
            ("x-goog-api-key".to_string(), "AIza".to_string()),
        ]);
        assert_eq!(sent(&req)?, json!({
            "contents": [
                {"role": "user", "parts": [
                    {"text": "Weather here?"},
                    {"inlineData": {"mimeType": "image/jpeg", "data": "/9j/4A"}},
                    {"fileData": {"mimeType": "image/png", "fileUri": "https://example.com/a.PNG?x=1"}},
                ]},
                {"role": "model", "parts": [
                    {"functionCall": {"name": "weather", "args": {"city": "Paris"}}},
                    {"functionCall": {"name": "time", "args": {}}},
                ]},
                {"role": "user", "parts": [
                    {"functionResponse": {"name": "weather", "response": {"content": {"sky": "sunny"}}}},
                    {"functionResponse": {"name": "time", "response": {"content": "noon"}}},
                    {"text": "Thanks"},
                ]},
                {"role": "model", "parts": [{"text": "You're welcome."}]},
            ],
            "systemInstruction": {"parts": [{"text": "Be brief.\n\nUse tools."}]},
            "tools": [{"functionDeclarations": [
                {"name": "weather", "description": "Get weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}},
                {"name": "time"},
            ]}],
            "toolConfig": {"functionCallingConfig": {"mode": "ANY"}},
            "generationConfig": {"maxOutputTokens": 64, "temperature": 0.2, "topP": 0.8, "stopSequences": ["END"]},
        }));
        Ok(())
    }

    #[test]
    fn build_stream_url_and_minimal_body() -> Result<(), ProviderError> {
        let body = body(json!({"messages": [{"role": "user", "content": "hi"}], "stop": "x", "tools": [{"type": "function", "function": {"name": "f"}}], "tool_choice": {"type": "function", "function": {"name": "f"}}}));
        let call = ChatCall { body: &body, model: "gemini-2.0-flash", stream: true };
        let req = Gemini.build("http://127.0.0.1:9", &call, Some(&Secret::new("k".into())))?;
        assert_eq!(req.url, "http://127.0.0.1:9/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse");
        assert_eq!(sent(&req)?, json!({
            "contents": [{"role": "user", "parts": [{"text": "hi"}]}],
            "tools": [{"functionDeclarations": [{"name": "f"}]}],
            "toolConfig": {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["f"]}},
            "generationConfig": {"stopSequences": ["x"]},
        }));
        Ok(())
    }

    #[test]
    fn build_refuses_path_tricks_missing_key_and_orphan_tool_results() {
        let body = body(json!({"messages": [{"role": "user", "content": "hi"}]}));
        for model in ["", "a/b", "../x", "a..b", "m?key=1", "m#f", "m x", "m\n", "m%2Fx", "m:countTokens", "é"] {
            let call = ChatCall { body: &body, model, stream: false };
            assert!(matches!(Gemini.build("http://127.0.0.1:9", &call, Some(&Secret::new("k".into()))), Err(ProviderError::Unsupported(_))), "{model:?}");
        }
        let call = ChatCall { body: &body, model: "mock-latency=5-chunks=2", stream: false };
        assert!(Gemini.build("http://127.0.0.1:9", &call, Some(&Secret::new("k".into()))).is_ok());
        assert_eq!(Gemini.build("http://127.0.0.1:9", &call, None).err(), Some(ProviderError::MissingKey));
        let orphan = super::tests::body(json!({"messages": [{"role": "tool", "tool_call_id": "nope", "content": "x"}]}));
        let call = ChatCall { body: &orphan, model: "m", stream: false };
        assert!(matches!(Gemini.build("http://127.0.0.1:9", &call, Some(&Secret::new("k".into()))), Err(ProviderError::Unsupported(_))));
    }

    #[test]
    fn translate_text_tool_calls_and_usage() -> Result<(), ProviderError> {
        let upstream = json!({
            "candidates": [{"content": {"role": "model", "parts": [
                {"text": "thinking...", "thought": true},
                {"text": "Checking "},
                {"text": "now."},
                {"functionCall": {"name": "weather", "args": {"city": "Paris"}}},
                {"functionCall": {"name": "time"}},
            ]}, "finishReason": "STOP", "index": 0}],
            "usageMetadata": {"promptTokenCount": 40, "candidatesTokenCount": 7, "thoughtsTokenCount": 3, "cachedContentTokenCount": 32, "totalTokenCount": 50},
            "modelVersion": "gemini-2.5-flash",
        });
        let (response, usage) = Gemini.translate(upstream.to_string().as_bytes(), "gemini-2.5-flash", "req1")?;
        assert_eq!(usage, Usage { prompt_tokens: 40, completion_tokens: 10, cached_tokens: 32, cache_write_tokens: 0 });
        assert_eq!(response, json!({
            "id": "chatcmpl-req1",
            "object": "chat.completion",
            "created": response["created"],
            "model": "gemini-2.5-flash",
            "choices": [{"index": 0, "message": {
                "role": "assistant",
                "content": "Checking now.",
                "tool_calls": [
                    {"id": "call_0", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Paris\"}"}},
                    {"id": "call_1", "type": "function", "function": {"name": "time", "arguments": "{}"}},
                ],
            }, "finish_reason": "tool_calls"}],
            "usage": {"prompt_tokens": 40, "completion_tokens": 10, "total_tokens": 50, "prompt_tokens_details": {"cached_tokens": 32}},
        }));
        Ok(())
    }

    #[test]
    fn translate_finish_reasons_and_blocked_prompts() -> Result<(), ProviderError> {
        for (reason, expected) in [("STOP", "stop"), ("MAX_TOKENS", "length"), ("SAFETY", "content_filter"), ("RECITATION", "content_filter"), ("OTHER", "content_filter")] {
            let upstream = json!({"candidates": [{"content": {"parts": [{"text": "x"}]}, "finishReason": reason}]});
            let (response, usage) = Gemini.translate(upstream.to_string().as_bytes(), "m", "r")?;
            assert_eq!(response["choices"][0]["finish_reason"], expected);
            assert_eq!(response["choices"][0]["message"], json!({"role": "assistant", "content": "x"}));
            assert_eq!(usage, Usage::default());
        }
        let blocked = json!({"promptFeedback": {"blockReason": "SAFETY"}, "usageMetadata": {"promptTokenCount": 5}});
        let (response, usage) = Gemini.translate(blocked.to_string().as_bytes(), "m", "r")?;
        assert_eq!(response["choices"][0]["finish_reason"], "content_filter");
        assert_eq!(response["choices"][0]["message"], json!({"role": "assistant", "content": null}));
        assert_eq!(usage.prompt_tokens, 5);
        assert!(matches!(Gemini.translate(b"{}", "m", "r"), Err(ProviderError::BadResponse(_))));
        Ok(())
    }

    #[test]
    fn stream_text_then_tool_call_then_finish() -> Result<(), ProviderError> {
        let mut s = Gemini.stream("gemini-2.5-flash", "req1");
        let mut out = Vec::new();
        out.extend(s.event(&data(json!({"candidates": [{"content": {"role": "model", "parts": [{"text": "Hel"}]}}], "usageMetadata": {"promptTokenCount": 9, "totalTokenCount": 9}})))?);
        out.extend(s.event(&data(json!({"candidates": [{"content": {"role": "model", "parts": [{"text": "lo"}, {"functionCall": {"name": "f", "args": {"q": 1}}}]}}]})))?);
        assert!(!s.finished());
        out.extend(s.event(&data(json!({"candidates": [{"content": {"role": "model", "parts": [{"text": ""}]}, "finishReason": "STOP"}], "usageMetadata": {"promptTokenCount": 9, "candidatesTokenCount": 4, "cachedContentTokenCount": 2}})))?);
        assert!(s.finished());
        let created = out.first().map(|c| c["created"].clone()).unwrap_or(Value::Null);
        let c = |delta: Value, finish: Value| json!({"id": "chatcmpl-req1", "object": "chat.completion.chunk", "created": created, "model": "gemini-2.5-flash", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]});
        assert_eq!(out, vec![
            c(json!({"role": "assistant", "content": "Hel"}), Value::Null),
            c(json!({"content": "lo"}), Value::Null),
            c(json!({"tool_calls": [{"index": 0, "id": "call_0", "type": "function", "function": {"name": "f", "arguments": "{\"q\":1}"}}]}), Value::Null),
            c(json!({}), json!("tool_calls")),
        ]);
        assert_eq!(s.usage(), Usage { prompt_tokens: 9, completion_tokens: 4, cached_tokens: 2, cache_write_tokens: 0 });
        // "Hello" and the call's arguments `{"q":1}`.
        assert_eq!(s.completion_bytes(), 5 + 7);
        Ok(())
    }

    #[test]
    fn stream_finish_reason_errors_and_garbage() -> Result<(), ProviderError> {
        let mut s = Gemini.stream("m", "r");
        let out = s.event(&data(json!({"candidates": [{"content": {"parts": [{"text": "cut"}]}, "finishReason": "MAX_TOKENS"}]})))?;
        assert_eq!(out[1]["choices"][0], json!({"index": 0, "delta": {}, "finish_reason": "length"}));
        assert!(s.finished());
        let mut s = Gemini.stream("m", "r");
        assert_eq!(s.event(&data(json!({"error": {"code": 500, "message": "Internal error", "status": "INTERNAL"}}))), Err(ProviderError::BadResponse("Internal error".into())));
        assert!(matches!(s.event(&SseEvent { event: None, data: "{not json".into() }), Err(ProviderError::BadResponse(_))));
        assert!(!s.finished());
        Ok(())
    }
}
