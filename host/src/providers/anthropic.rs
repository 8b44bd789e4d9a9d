//! Anthropic Messages API (`POST /v1/messages`). OpenAI's chat shape is translated both
//! ways: system messages become the top-level `system`, tool calls and tool results become
//! `tool_use` / `tool_result` content blocks, and Anthropic's event stream becomes OpenAI
//! chunks. Fields with no Anthropic equivalent are dropped rather than forwarded, because
//! Anthropic refuses unknown fields.

use std::collections::HashMap;

use serde_json::{json, Map, Value};

use super::{bounded_json, chunk, header_value, join_url, openai_text, usage_json, ChatCall, Provider, ProviderError, SseEvent, StreamTranslator, UpstreamRequest, Usage};
use crate::secret::Secret;

/// The Anthropic adapter.
pub struct Anthropic;

/// The API version the translation is written against; Anthropic requires the header.
pub const API_VERSION: &str = "2023-06-01";

/// Anthropic requires `max_tokens`; this is used when the client sent none.
pub const DEFAULT_MAX_TOKENS: u64 = 4096;

impl Provider for Anthropic {
    fn build(&self, base_url: &str, call: &ChatCall<'_>, key: Option<&Secret>) -> Result<UpstreamRequest, ProviderError> {
        let key = key.ok_or(ProviderError::MissingKey)?;
        let body = request_body(call)?;
        let headers = vec![
            (http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json")),
            (http::HeaderName::from_static("x-api-key"), header_value(key.expose())?),
            (http::HeaderName::from_static("anthropic-version"), http::HeaderValue::from_static(API_VERSION)),
        ];
        let body = serde_json::to_vec(&body).map_err(|e| ProviderError::Unsupported(e.to_string()))?;
        Ok(UpstreamRequest { url: join_url(base_url, "v1/messages"), headers, body: body.into() })
    }

    fn translate(&self, body: &[u8], model: &str, request_id: &str) -> Result<(Value, Usage), ProviderError> {
        let message = bounded_json::parse(body, bounded_json::MAX_ANSWER_PARSE_BYTES)?;
        let blocks = message
            .get("content")
            .and_then(Value::as_array)
            .ok_or_else(|| ProviderError::BadResponse("no content in Anthropic message".into()))?;
        let mut text = String::new();
        let mut has_text = false;
        let mut tool_calls = Vec::new();
        for block in blocks {
            match block.get("type").and_then(Value::as_str) {
                Some("text") => {
                    has_text = true;
                    text.push_str(block.get("text").and_then(Value::as_str).unwrap_or(""));
                }
                Some("tool_use") => {
                    let input = block.get("input").cloned().unwrap_or_else(|| json!({}));
                    tool_calls.push(json!({
                        "id": block.get("id").and_then(Value::as_str).unwrap_or(""),
                        "type": "function",
                        "function": {
                            "name": block.get("name").and_then(Value::as_str).unwrap_or(""),
                            "arguments": input.to_string(),
                        },
                    }));
                }
                // Thinking and server-tool blocks have no OpenAI equivalent.
                _ => {}
            }
        }
        let mut out_message = json!({"role": "assistant", "content": if has_text { Value::String(text) } else { Value::Null }});
        if !tool_calls.is_empty() {
            out_message["tool_calls"] = Value::Array(tool_calls);
        }
        let stop_reason = message.get("stop_reason").and_then(Value::as_str);
        let usage = message.get("usage").map(|u| usage_from(u, Usage::default())).unwrap_or_default();
        let response = json!({
            "id": format!("chatcmpl-{request_id}"),
            "object": "chat.completion",
            "created": crate::clock::unix_millis() / 1000,
            "model": model,
            "choices": [{"index": 0, "message": out_message, "finish_reason": finish_reason(stop_reason.unwrap_or("end_turn"))}],
            "usage": usage_json(usage),
        });
        Ok((with_stop_sequence(response, message.get("stop_sequence")), usage))
    }

    fn stream(&self, model: &str, request_id: &str) -> Box<dyn StreamTranslator> {
        Box::new(AnthropicStream {
            model: model.into(),
            request_id: request_id.into(),
            created: crate::clock::unix_millis() / 1000,
            usage: Usage::default(),
            text_bytes: 0,
            sent_role: false,
            tool_index: HashMap::new(),
            done: false,
        })
    }
}

/// Keeps which of the client's stop sequences ended the answer, as `stop_sequence` on the
/// choice (an extension OpenAI's format lacks; clients ignore it): the Messages API
/// reports it, and OpenAI's `finish_reason: "stop"` cannot say it.
fn with_stop_sequence(mut completion_or_chunk: Value, stop_sequence: Option<&Value>) -> Value {
    if let (Some(sequence @ Value::String(_)), Some(choice)) = (stop_sequence, completion_or_chunk.pointer_mut("/choices/0")) {
        choice["stop_sequence"] = sequence.clone();
    }
    completion_or_chunk
}

/// OpenAI's `finish_reason` for an Anthropic `stop_reason`.
fn finish_reason(stop_reason: &str) -> &'static str {
    match stop_reason {
        "max_tokens" => "length",
        "tool_use" => "tool_calls",
        "refusal" => "content_filter",
        // end_turn, stop_sequence, pause_turn and reasons added later.
        _ => "stop",
    }
}

/// Usage from an Anthropic `usage` object, keeping `previous` for fields it lacks (a stream
/// reports input tokens at the start and output tokens at the end). Anthropic's
/// `input_tokens` excludes cache reads and writes; OpenAI's `prompt_tokens` includes them.
fn usage_from(usage: &Value, previous: Usage) -> Usage {
    let field = |name: &str| usage.get(name).and_then(Value::as_u64);
    let prompt = match (field("input_tokens"), field("cache_read_input_tokens"), field("cache_creation_input_tokens")) {
        (None, None, None) => None,
        // Saturating: the counts come from the upstream, which may report anything.
        (input, read, creation) => Some((input.unwrap_or(0).saturating_add(read.unwrap_or(0)).saturating_add(creation.unwrap_or(0)), read.unwrap_or(0), creation.unwrap_or(0))),
    };
    let (prompt_tokens, cached_tokens, cache_write_tokens) = prompt.unwrap_or((previous.prompt_tokens, previous.cached_tokens, previous.cache_write_tokens));
    Usage { prompt_tokens, completion_tokens: field("output_tokens").unwrap_or(previous.completion_tokens), cached_tokens, cache_write_tokens }
}

/// The Anthropic request body for an OpenAI-shaped call.
fn request_body(call: &ChatCall<'_>) -> Result<Value, ProviderError> {
    let body = call.body;
    let mut out = Map::new();
    out.insert("model".into(), Value::String(call.model.into()));

    let empty = Vec::new();
    let messages = body.get("messages").and_then(Value::as_array).unwrap_or(&empty);
    let mut system: Vec<String> = Vec::new();
    let mut turns: Vec<Turn> = Vec::new();
    for message in messages {
        let role = message.get("role").and_then(Value::as_str).unwrap_or("");
        let (role, blocks) = match role {
            "system" | "developer" => {
                system.push(openai_text(message));
                continue;
            }
            "user" => ("user", content_blocks(message)?),
            "assistant" => ("assistant", assistant_blocks(message)?),
            "tool" => ("user", vec![tool_result_block(message)]),
            other => return Err(ProviderError::Unsupported(format!("message role {other:?}"))),
        };
        // Anthropic wants alternating roles, and all results for one tool-use turn in one
        // user message, so consecutive same-role messages become one.
        match turns.last_mut() {
            Some(last) if last.role == role => last.blocks.extend(blocks),
            _ => turns.push(Turn { role, blocks }),
        }
    }
    if !system.is_empty() {
        out.insert("system".into(), Value::String(system.join("\n\n")));
    }
    out.insert("messages".into(), Value::Array(turns.into_iter().map(Turn::into_json).collect()));

    let max_tokens = body.get("max_tokens").or_else(|| body.get("max_completion_tokens")).and_then(Value::as_u64).unwrap_or(DEFAULT_MAX_TOKENS);
    out.insert("max_tokens".into(), max_tokens.into());
    for (from, to) in [("temperature", "temperature"), ("top_p", "top_p")] {
        if let Some(value) = body.get(from).filter(|v| v.is_number()) {
            out.insert(to.into(), value.clone());
        }
    }
    match body.get("stop") {
        Some(Value::String(stop)) => {
            out.insert("stop_sequences".into(), json!([stop]));
        }
        Some(Value::Array(stops)) if !stops.is_empty() => {
            out.insert("stop_sequences".into(), Value::Array(stops.clone()));
        }
        _ => {}
    }

    let tools = tools(body)?;
    if !tools.is_empty() {
        out.insert("tools".into(), Value::Array(tools));
        if let Some(choice) = tool_choice(body)? {
            out.insert("tool_choice".into(), choice);
        }
    }
    if call.stream {
        out.insert("stream".into(), Value::Bool(true));
    }
    Ok(Value::Object(out))
}

/// One Anthropic message under construction.
struct Turn {
    role: &'static str,
    blocks: Vec<Value>,
}

impl Turn {
    /// A lone plain text block is sent as a string, the common and most compact form.
    fn into_json(self) -> Value {
        let content = match self.blocks.as_slice() {
            [] => Value::String(String::new()),
            [only] if only.get("type").and_then(Value::as_str) == Some("text") && only.get("cache_control").is_none() => {
                only.get("text").cloned().unwrap_or_else(|| Value::String(String::new()))
            }
            _ => Value::Array(self.blocks),
        };
        json!({"role": self.role, "content": content})
    }
}

/// A text block, or nothing for empty text (Anthropic refuses empty text blocks, and
/// OpenAI histories often carry `content: ""` next to tool calls).
fn text_block(text: &str) -> Option<Value> {
    (!text.is_empty()).then(|| json!({"type": "text", "text": text}))
}

/// The blocks of a user message: text and image parts.
fn content_blocks(message: &Value) -> Result<Vec<Value>, ProviderError> {
    match message.get("content") {
        Some(Value::String(text)) => Ok(text_block(text).into_iter().collect()),
        Some(Value::Array(parts)) => {
            let mut blocks = Vec::new();
            for part in parts {
                match part.get("type").and_then(Value::as_str) {
                    Some("text") => {
                        let Some(mut block) = text_block(part.get("text").and_then(Value::as_str).unwrap_or("")) else { continue };
                        // Prompt-caching breakpoints are the one Anthropic field clients put on parts.
                        if let Some(cache) = part.get("cache_control") {
                            block["cache_control"] = cache.clone();
                        }
                        blocks.push(block);
                    }
                    Some("image_url") => {
                        let url = part
                            .pointer("/image_url/url")
                            .or_else(|| part.get("image_url").filter(|u| u.is_string()))
                            .and_then(Value::as_str)
                            .ok_or_else(|| ProviderError::Unsupported("image part without a URL".into()))?;
                        blocks.push(image_block(url)?);
                    }
                    other => return Err(ProviderError::Unsupported(format!("content part type {:?}", other.unwrap_or("(none)")))),
                }
            }
            Ok(blocks)
        }
        _ => Ok(Vec::new()),
    }
}

/// An image block: inline base64 for `data:` URLs, else a URL source Anthropic fetches.
fn image_block(url: &str) -> Result<Value, ProviderError> {
    if let Some(rest) = url.strip_prefix("data:") {
        let (media_type, data) = rest
            .split_once(";base64,")
            .ok_or_else(|| ProviderError::Unsupported("image data URL is not base64".into()))?;
        return Ok(json!({"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data}}));
    }
    Ok(json!({"type": "image", "source": {"type": "url", "url": url}}))
}

/// The blocks of an assistant message: its text, then a `tool_use` per tool call.
fn assistant_blocks(message: &Value) -> Result<Vec<Value>, ProviderError> {
    let mut blocks: Vec<Value> = text_block(&openai_text(message)).into_iter().collect();
    for call in message.get("tool_calls").and_then(Value::as_array).into_iter().flatten() {
        let name = call.pointer("/function/name").and_then(Value::as_str).unwrap_or("");
        blocks.push(json!({
            "type": "tool_use",
            "id": call.get("id").and_then(Value::as_str).unwrap_or(""),
            "name": name,
            "input": tool_arguments(call)?,
        }));
    }
    Ok(blocks)
}

/// The parsed `function.arguments` of an OpenAI tool call (`{}` when empty).
pub(crate) fn tool_arguments(call: &Value) -> Result<Value, ProviderError> {
    match call.pointer("/function/arguments") {
        Some(Value::String(args)) if args.trim().is_empty() => Ok(json!({})),
        Some(Value::String(args)) => serde_json::from_str(args).map_err(|_| ProviderError::Unsupported("tool call arguments are not JSON".into())),
        // Some clients send the arguments already parsed.
        Some(args @ Value::Object(_)) => Ok(args.clone()),
        _ => Ok(json!({})),
    }
}

/// A `tool_result` block for an OpenAI `role: "tool"` message.
fn tool_result_block(message: &Value) -> Value {
    json!({
        "type": "tool_result",
        "tool_use_id": message.get("tool_call_id").and_then(Value::as_str).unwrap_or(""),
        "content": openai_text(message),
    })
}

/// Anthropic tool definitions for OpenAI `tools`.
fn tools(body: &Map<String, Value>) -> Result<Vec<Value>, ProviderError> {
    let mut out = Vec::new();
    for tool in body.get("tools").and_then(Value::as_array).into_iter().flatten() {
        if tool.get("type").and_then(Value::as_str) != Some("function") {
            return Err(ProviderError::Unsupported("only function tools are supported".into()));
        }
        let function = tool.get("function").unwrap_or(&Value::Null);
        let mut def = Map::new();
        def.insert("name".into(), function.get("name").cloned().unwrap_or_else(|| Value::String(String::new())));
        if let Some(description) = function.get("description").filter(|d| d.is_string()) {
            def.insert("description".into(), description.clone());
        }
        // Anthropic requires a schema; OpenAI allows none for a function without parameters.
        let schema = function.get("parameters").cloned().unwrap_or_else(|| json!({"type": "object", "properties": {}}));
        def.insert("input_schema".into(), schema);
        out.push(Value::Object(def));
    }
    Ok(out)
}

/// Anthropic's `tool_choice` for OpenAI's, or `None` to leave the default (`auto`).
fn tool_choice(body: &Map<String, Value>) -> Result<Option<Value>, ProviderError> {
    let mut choice = match body.get("tool_choice") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s == "auto" => Some(json!({"type": "auto"})),
        Some(Value::String(s)) if s == "required" => Some(json!({"type": "any"})),
        // Tools are still sent (the conversation may hold earlier calls): Anthropic's own
        // `none` keeps the model from calling one, as the client asked.
        Some(Value::String(s)) if s == "none" => return Ok(Some(json!({"type": "none"}))),
        Some(choice) => match choice.pointer("/function/name").and_then(Value::as_str) {
            Some(name) => Some(json!({"type": "tool", "name": name})),
            None => return Err(ProviderError::Unsupported("tool_choice".into())),
        },
    };
    if body.get("parallel_tool_calls") == Some(&Value::Bool(false)) {
        let choice = choice.get_or_insert_with(|| json!({"type": "auto"}));
        choice["disable_parallel_tool_use"] = Value::Bool(true);
    }
    Ok(choice)
}

/// Translates one Anthropic event stream.
struct AnthropicStream {
    model: String,
    request_id: String,
    created: u64,
    usage: Usage,
    text_bytes: u64,
    sent_role: bool,
    /// Anthropic content-block index -> OpenAI tool-call index.
    tool_index: HashMap<u64, usize>,
    done: bool,
}

impl AnthropicStream {
    fn delta_chunk(&mut self, mut delta: Value) -> Value {
        if !self.sent_role {
            self.sent_role = true;
            delta["role"] = Value::String("assistant".into());
        }
        chunk(&self.request_id, &self.model, self.created, delta, None)
    }
}

impl StreamTranslator for AnthropicStream {
    fn event(&mut self, event: &SseEvent) -> Result<Vec<Value>, ProviderError> {
        let data = event.data.trim();
        if data.is_empty() {
            return Ok(Vec::new());
        }
        let value = bounded_json::parse(data.as_bytes(), bounded_json::MAX_EVENT_PARSE_BYTES)?;
        let kind = value.get("type").and_then(Value::as_str).or(event.event.as_deref()).unwrap_or("");
        match kind {
            "message_start" => {
                if let Some(usage) = value.pointer("/message/usage") {
                    self.usage = usage_from(usage, self.usage);
                }
                Ok(Vec::new())
            }
            "content_block_start" => {
                let block = value.get("content_block").unwrap_or(&Value::Null);
                match block.get("type").and_then(Value::as_str) {
                    Some("tool_use") => {
                        let tool = self.tool_index.len();
                        self.tool_index.insert(value.get("index").and_then(Value::as_u64).unwrap_or(0), tool);
                        let delta = json!({"tool_calls": [{
                            "index": tool,
                            "id": block.get("id").and_then(Value::as_str).unwrap_or(""),
                            "type": "function",
                            "function": {"name": block.get("name").and_then(Value::as_str).unwrap_or(""), "arguments": ""},
                        }]});
                        Ok(vec![self.delta_chunk(delta)])
                    }
                    Some("text") => {
                        let text = block.get("text").and_then(Value::as_str).unwrap_or("");
                        if text.is_empty() {
                            return Ok(Vec::new());
                        }
                        self.text_bytes += text.len() as u64;
                        Ok(vec![self.delta_chunk(json!({"content": text}))])
                    }
                    _ => Ok(Vec::new()),
                }
            }
            "content_block_delta" => {
                let delta = value.get("delta").unwrap_or(&Value::Null);
                match delta.get("type").and_then(Value::as_str) {
                    Some("text_delta") => {
                        let text = delta.get("text").and_then(Value::as_str).unwrap_or("");
                        self.text_bytes += text.len() as u64;
                        Ok(vec![self.delta_chunk(json!({"content": text}))])
                    }
                    Some("input_json_delta") => {
                        let fragment = delta.get("partial_json").and_then(Value::as_str).unwrap_or("");
                        // Tool-call arguments are generated output too.
                        self.text_bytes += fragment.len() as u64;
                        let block = value.get("index").and_then(Value::as_u64).unwrap_or(0);
                        let Some(&tool) = self.tool_index.get(&block) else {
                            return Err(ProviderError::BadResponse("tool input for a block that is not a tool call".into()));
                        };
                        if fragment.is_empty() {
                            return Ok(Vec::new());
                        }
                        Ok(vec![self.delta_chunk(json!({"tool_calls": [{"index": tool, "function": {"arguments": fragment}}]}))])
                    }
                    // Thinking and signature deltas have no OpenAI equivalent.
                    _ => Ok(Vec::new()),
                }
            }
            "message_delta" => {
                if let Some(usage) = value.get("usage") {
                    self.usage = usage_from(usage, self.usage);
                }
                match value.pointer("/delta/stop_reason").and_then(Value::as_str) {
                    Some(reason) => {
                        let last = chunk(&self.request_id, &self.model, self.created, json!({}), Some(finish_reason(reason)));
                        Ok(vec![with_stop_sequence(last, value.pointer("/delta/stop_sequence"))])
                    }
                    None => Ok(Vec::new()),
                }
            }
            "message_stop" => {
                self.done = true;
                Ok(Vec::new())
            }
            "error" => {
                let message = value.pointer("/error/message").and_then(Value::as_str).unwrap_or("upstream stream error");
                Err(ProviderError::BadResponse(message.into()))
            }
            // ping, content_block_stop, and event types Anthropic may add later.
            _ => Ok(Vec::new()),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn body(json: Value) -> Map<String, Value> {
        match json {
            Value::Object(map) => map,
            _ => Map::new(),
        }
    }

    fn sent(req: &UpstreamRequest) -> Result<Value, ProviderError> {
        serde_json::from_slice(&req.body).map_err(|e| ProviderError::BadResponse(e.to_string()))
    }

    fn event(kind: &str, data: Value) -> SseEvent {
        SseEvent { event: Some(kind.into()), data: data.to_string() }
    }

    #[test]
    fn build_translates_a_tool_conversation() -> Result<(), ProviderError> {
        let body = body(json!({
            "model": "ignored",
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "system", "content": [{"type": "text", "text": "Use tools."}]},
                {"role": "user", "content": "Weather in Paris?"},
                {"role": "user", "content": [
                    {"type": "text", "text": "And this?"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBOR"}},
                    {"type": "image_url", "image_url": {"url": "https://example.com/a.jpg"}},
                ]},
                {"role": "assistant", "content": "", "tool_calls": [
                    {"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Paris\"}"}},
                    {"id": "call_2", "type": "function", "function": {"name": "time", "arguments": ""}},
                ]},
                {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
                {"role": "tool", "tool_call_id": "call_2", "content": [{"type": "text", "text": "noon"}]},
                {"role": "assistant", "content": "Sunny at noon."},
            ],
            "tools": [
                {"type": "function", "function": {"name": "weather", "description": "Get weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}},
                {"type": "function", "function": {"name": "time"}},
            ],
            "tool_choice": {"type": "function", "function": {"name": "weather"}},
            "max_completion_tokens": 100,
            "temperature": 0.5,
            "top_p": 0.9,
            "stop": "END",
            "seed": 7,
            "response_format": {"type": "text"},
        }));
        let call = ChatCall { body: &body, model: "claude-sonnet-4", stream: true };
        let req = Anthropic.build("https://api.anthropic.com/", &call, Some(&Secret::new("sk-ant".into())))?;
        assert_eq!(req.url, "https://api.anthropic.com/v1/messages");
        let headers: Vec<(String, String)> = req.headers.iter().map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("?").to_string())).collect();
        assert_eq!(headers, vec![
            ("content-type".to_string(), "application/json".to_string()),
            ("x-api-key".to_string(), "sk-ant".to_string()),
            ("anthropic-version".to_string(), "2023-06-01".to_string()),
        ]);
        assert_eq!(sent(&req)?, json!({
            "model": "claude-sonnet-4",
            "system": "Be brief.\n\nUse tools.",
            "messages": [
                {"role": "user", "content": [
                    {"type": "text", "text": "Weather in Paris?"},
                    {"type": "text", "text": "And this?"},
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBOR"}},
                    {"type": "image", "source": {"type": "url", "url": "https://example.com/a.jpg"}},
                ]},
                {"role": "assistant", "content": [
                    {"type": "tool_use", "id": "call_1", "name": "weather", "input": {"city": "Paris"}},
                    {"type": "tool_use", "id": "call_2", "name": "time", "input": {}},
                ]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "call_1", "content": "sunny"},
                    {"type": "tool_result", "tool_use_id": "call_2", "content": "noon"},
                ]},
                {"role": "assistant", "content": "Sunny at noon."},
            ],
            "max_tokens": 100,
            "temperature": 0.5,
            "top_p": 0.9,
            "stop_sequences": ["END"],
            "tools": [
                {"name": "weather", "description": "Get weather", "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}},
                {"name": "time", "input_schema": {"type": "object", "properties": {}}},
            ],
            "tool_choice": {"type": "tool", "name": "weather"},
            "stream": true,
        }));
        Ok(())
    }

    #[test]
    fn build_defaults_max_tokens_and_maps_tool_choice() -> Result<(), ProviderError> {
        let tools = json!([{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]);
        let cases = [
            (json!("auto"), Some(json!({"type": "auto"}))),
            (json!("required"), Some(json!({"type": "any"}))),
            (json!("none"), Some(json!({"type": "none"}))),
        ];
        for (choice, expected) in cases {
            let body = body(json!({"messages": [{"role": "user", "content": "hi"}], "tools": tools, "tool_choice": choice, "stop": ["a", "b"]}));
            let call = ChatCall { body: &body, model: "m", stream: false };
            let mut expected_body = json!({
                "model": "m",
                "messages": [{"role": "user", "content": "hi"}],
                "max_tokens": 4096,
                "stop_sequences": ["a", "b"],
                "tools": [{"name": "f", "input_schema": {"type": "object"}}],
            });
            if let Some(expected) = expected {
                expected_body["tool_choice"] = expected;
            }
            assert_eq!(sent(&Anthropic.build("http://127.0.0.1:9", &call, Some(&Secret::new("k".into())))?)?, expected_body);
        }
        Ok(())
    }

    #[test]
    fn build_refuses_missing_key_and_header_injection() {
        let body = body(json!({"messages": []}));
        let call = ChatCall { body: &body, model: "m", stream: false };
        assert_eq!(Anthropic.build("http://127.0.0.1:9", &call, None).err(), Some(ProviderError::MissingKey));
        assert!(matches!(Anthropic.build("http://127.0.0.1:9", &call, Some(&Secret::new("k\r\nx: y".into()))), Err(ProviderError::Unsupported(_))));
    }

    #[test]
    fn translate_text_and_tool_use() -> Result<(), ProviderError> {
        let upstream = json!({
            "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-sonnet-4-20250514",
            "content": [
                {"type": "text", "text": "Let me check. "},
                {"type": "text", "text": "One moment."},
                {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {"city": "Paris"}},
            ],
            "stop_reason": "tool_use", "stop_sequence": null,
            "usage": {"input_tokens": 10, "output_tokens": 5, "cache_read_input_tokens": 100, "cache_creation_input_tokens": 20},
        });
        let (response, usage) = Anthropic.translate(upstream.to_string().as_bytes(), "claude-sonnet-4", "req1")?;
        assert_eq!(usage, Usage { prompt_tokens: 130, completion_tokens: 5, cached_tokens: 100, cache_write_tokens: 20 });
        assert_eq!(response, json!({
            "id": "chatcmpl-req1",
            "object": "chat.completion",
            "created": response["created"],
            "model": "claude-sonnet-4",
            "choices": [{"index": 0, "message": {
                "role": "assistant",
                "content": "Let me check. One moment.",
                "tool_calls": [{"id": "toolu_1", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Paris\"}"}}],
            }, "finish_reason": "tool_calls"}],
            "usage": {"prompt_tokens": 130, "completion_tokens": 5, "total_tokens": 135, "prompt_tokens_details": {"cached_tokens": 100}},
        }));
        assert!(response["created"].as_u64().is_some_and(|c| c > 1_600_000_000));
        Ok(())
    }

    #[test]
    fn translate_finish_reasons_and_no_text() -> Result<(), ProviderError> {
        for (stop, expected) in [("end_turn", "stop"), ("stop_sequence", "stop"), ("max_tokens", "length"), ("tool_use", "tool_calls")] {
            let upstream = json!({"type": "message", "content": [], "stop_reason": stop, "usage": {"input_tokens": 1, "output_tokens": 0}});
            let (response, usage) = Anthropic.translate(upstream.to_string().as_bytes(), "m", "r")?;
            assert_eq!(response["choices"][0]["finish_reason"], expected);
            assert_eq!(response["choices"][0]["message"], json!({"role": "assistant", "content": null}));
            assert_eq!(usage, Usage { prompt_tokens: 1, completion_tokens: 0, cached_tokens: 0, cache_write_tokens: 0 });
        }
        // Which stop sequence matched survives as an extension on the choice, for the
        // Messages API to report.
        let upstream = json!({"type": "message", "content": [], "stop_reason": "stop_sequence", "stop_sequence": "END", "usage": {"input_tokens": 1, "output_tokens": 0}});
        assert_eq!(Anthropic.translate(upstream.to_string().as_bytes(), "m", "r")?.0["choices"][0]["stop_sequence"], "END");
        let mut stream = Anthropic.stream("m", "r");
        let delta = SseEvent { event: Some("message_delta".into()), data: json!({"type": "message_delta", "delta": {"stop_reason": "stop_sequence", "stop_sequence": "END"}}).to_string() };
        assert_eq!(stream.event(&delta)?[0]["choices"][0]["stop_sequence"], "END");
        assert!(matches!(Anthropic.translate(b"{\"type\":\"message\"}", "m", "r"), Err(ProviderError::BadResponse(_))));
        assert!(matches!(Anthropic.translate(b"not json", "m", "r"), Err(ProviderError::BadResponse(_))));
        Ok(())
    }

    #[test]
    fn stream_text_and_tool_call() -> Result<(), ProviderError> {
        let mut s = Anthropic.stream("claude-sonnet-4", "req1");
        let mut out = Vec::new();
        let events = [
            event("message_start", json!({"type": "message_start", "message": {"id": "msg_1", "type": "message", "role": "assistant", "content": [], "usage": {"input_tokens": 25, "cache_read_input_tokens": 5, "cache_creation_input_tokens": 0, "output_tokens": 1}}})),
            event("content_block_start", json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}})),
            event("ping", json!({"type": "ping"})),
            event("content_block_delta", json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hello"}})),
            event("content_block_delta", json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": " there"}})),
            event("content_block_stop", json!({"type": "content_block_stop", "index": 0})),
            event("content_block_start", json!({"type": "content_block_start", "index": 1, "content_block": {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {}}})),
            event("content_block_delta", json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": ""}})),
            event("content_block_delta", json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": "{\"city\":"}})),
            event("content_block_delta", json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": "\"Paris\"}"}})),
            event("content_block_stop", json!({"type": "content_block_stop", "index": 1})),
            event("message_delta", json!({"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": null}, "usage": {"output_tokens": 15}})),
        ];
        for e in &events {
            out.extend(s.event(e)?);
        }
        assert!(!s.finished());
        out.extend(s.event(&event("message_stop", json!({"type": "message_stop"})))?);
        assert!(s.finished());
        let created = out.first().map(|c| c["created"].clone()).unwrap_or(Value::Null);
        let c = |delta: Value, finish: Value| json!({"id": "chatcmpl-req1", "object": "chat.completion.chunk", "created": created, "model": "claude-sonnet-4", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]});
        assert_eq!(out, vec![
            c(json!({"role": "assistant", "content": "Hello"}), Value::Null),
            c(json!({"content": " there"}), Value::Null),
            c(json!({"tool_calls": [{"index": 0, "id": "toolu_1", "type": "function", "function": {"name": "weather", "arguments": ""}}]}), Value::Null),
            c(json!({"tool_calls": [{"index": 0, "function": {"arguments": "{\"city\":"}}]}), Value::Null),
            c(json!({"tool_calls": [{"index": 0, "function": {"arguments": "\"Paris\"}"}}]}), Value::Null),
            c(json!({}), json!("tool_calls")),
        ]);
        assert_eq!(s.usage(), Usage { prompt_tokens: 30, completion_tokens: 15, cached_tokens: 5, cache_write_tokens: 0 });
        // "Hello there" and the tool input `{"city":"Paris"}`.
        assert_eq!(s.completion_bytes(), 11 + 16);
        Ok(())
    }

    #[test]
    fn stream_error_event_and_garbage_fail() {
        let mut s = Anthropic.stream("m", "r");
        let err = s.event(&event("error", json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})));
        assert_eq!(err, Err(ProviderError::BadResponse("Overloaded".into())));
        assert!(matches!(s.event(&SseEvent { event: Some("content_block_delta".into()), data: "{not json".into() }), Err(ProviderError::BadResponse(_))));
        assert!(!s.finished());
    }

    #[test]
    fn stream_tool_only_first_chunk_carries_role() -> Result<(), ProviderError> {
        let mut s = Anthropic.stream("m", "r");
        let out = s.event(&event("content_block_start", json!({"type": "content_block_start", "index": 0, "content_block": {"type": "tool_use", "id": "t", "name": "f", "input": {}}})))?;
        assert_eq!(out[0]["choices"][0]["delta"], json!({"role": "assistant", "tool_calls": [{"index": 0, "id": "t", "type": "function", "function": {"name": "f", "arguments": ""}}]}));
        Ok(())
    }
}
