//! `POST /v1/messages` and `POST /v1/messages/count_tokens`: Anthropic's Messages API as a
//! second inbound format over the chat path. A Messages body is decoded into the OpenAI
//! chat-completions body [`chat::handle_parsed`] takes, and its answer (a completion or an SSE
//! stream of chunks) is encoded back into Anthropic's shapes, so the official `anthropic`
//! SDKs and Claude Code work against every provider kind with only a base URL and a key.

use std::convert::Infallible;

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::BodyExt;
use serde_json::{json, Map, Value};

use super::reencode::{self, StreamEncoder};
use super::{chat, json_response, wire, Body};
use crate::app::App;
use crate::error::GatewayError;

fn bad(code: &'static str, message: impl Into<String>) -> GatewayError {
    GatewayError::bad_request(code, message)
}

/// `POST /v1/messages`: decodes, runs the chat path, encodes its answer.
pub async fn handle(app: &std::sync::Arc<App>, caller: chat::Caller, permit: crate::ratelimit::Permit, bytes: Bytes) -> Result<Response<Body>, GatewayError> {
    let decoded = decode(&bytes)?;
    let parsed = wire::from_value(Value::Object(decoded.body))?;
    // What `message_start` reports before the upstream says: the chat path's own estimate.
    let estimate = parsed.summary.prompt_token_estimate as u64;
    let response = chat::handle_parsed(app, caller, permit, parsed).await?;
    if decoded.stream {
        return Ok(reencode::respond(response, Encoder::new(decoded.model, estimate)));
    }
    let (parts, body) = response.into_parts();
    let bytes = body.collect().await.map_err(|never: Infallible| -> GatewayError { match never {} })?.to_bytes();
    let completion: Value = serde_json::from_slice(&bytes).map_err(|e| GatewayError::Internal(format!("the chat path answered with invalid JSON: {e}")))?;
    let mut out = json_response(parts.status, &encode_message(&completion, &decoded.model));
    for (name, value) in parts.headers.iter().filter(|(n, _)| n.as_str().starts_with("x-tollgate-")) {
        out.headers_mut().insert(name.clone(), value.clone());
    }
    Ok(out)
}

/// `POST /v1/messages/count_tokens`: the chat path's prompt estimate, with no upstream call
/// and nothing billed.
pub fn count_tokens(bytes: &[u8]) -> Result<Response<Body>, GatewayError> {
    let mut value = wire::parse_object(bytes)?;
    // The endpoint takes no `max_tokens`; the decoder requires one.
    value.entry("max_tokens").or_insert(json!(1));
    let decoded = decode_map(value)?;
    let parsed = wire::from_value(Value::Object(decoded.body))?;
    Ok(json_response(StatusCode::OK, &json!({"input_tokens": parsed.summary.prompt_token_estimate})))
}

/// A decoded Messages request.
#[derive(Debug)]
pub struct Decoded {
    /// The OpenAI chat-completions body.
    pub body: Map<String, Value>,
    /// The model as the client named it (echoed in the answer).
    pub model: String,
    /// Whether the client asked for a stream.
    pub stream: bool,
}


/// Decodes a Messages body into an OpenAI chat-completions body.
pub fn decode(bytes: &[u8]) -> Result<Decoded, GatewayError> {
    decode_map(wire::parse_object(bytes)?)
}

fn decode_map(body: Map<String, Value>) -> Result<Decoded, GatewayError> {
    let model = match body.get("model") {
        Some(Value::String(m)) => m.clone(),
        None => String::new(),
        Some(_) => return Err(bad("invalid_type", "'model' must be a string")),
    };
    let max_tokens = match body.get("max_tokens") {
        None | Some(Value::Null) => return Err(bad("missing_max_tokens", "'max_tokens' is required")),
        Some(v) => v.as_u64().filter(|n| *n > 0).ok_or_else(|| bad("invalid_type", "'max_tokens' must be a positive integer"))?,
    };
    let stream = match body.get("stream") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(bad("invalid_type", "'stream' must be a boolean")),
    };
    let mut messages = Vec::new();
    match body.get("system") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) => messages.push(json!({"role": "system", "content": s})),
        Some(Value::Array(blocks)) => {
            let text: Vec<&str> = blocks.iter().filter_map(|b| b.get("text").and_then(Value::as_str)).collect();
            messages.push(json!({"role": "system", "content": text.join("\n")}));
        }
        Some(_) => return Err(bad("invalid_type", "'system' must be a string or an array of text blocks")),
    }
    let Some(Value::Array(turns)) = body.get("messages") else {
        return Err(bad("missing_messages", "'messages' must be a non-empty array"));
    };
    for (i, turn) in turns.iter().enumerate() {
        match turn.get("role").and_then(Value::as_str) {
            Some("user") => decode_user(turn.get("content"), i, &mut messages)?,
            Some("assistant") => messages.push(decode_assistant(turn.get("content"), i)?),
            _ => return Err(bad("invalid_messages", format!("messages[{i}].role must be 'user' or 'assistant'"))),
        }
    }
    let mut out = Map::new();
    out.insert("model".into(), Value::String(model.clone()));
    out.insert("messages".into(), Value::Array(messages));
    out.insert("max_tokens".into(), max_tokens.into());
    for field in ["temperature", "top_p"] {
        if let Some(v) = body.get(field).filter(|v| !v.is_null()) {
            out.insert(field.into(), v.clone());
        }
    }
    if let Some(stop) = body.get("stop_sequences").filter(|v| !v.is_null()) {
        out.insert("stop".into(), stop.clone());
    }
    if let Some(user) = body.get("metadata").and_then(|m| m.get("user_id")).filter(|v| !v.is_null()) {
        out.insert("user".into(), user.clone());
    }
    if let Some(tools) = body.get("tools").filter(|v| !v.is_null()) {
        out.insert("tools".into(), decode_tools(tools)?);
    }
    if let Some(choice) = body.get("tool_choice").filter(|v| !v.is_null()) {
        let (choice, parallel) = decode_tool_choice(choice)?;
        out.insert("tool_choice".into(), choice);
        if parallel == Some(false) {
            out.insert("parallel_tool_calls".into(), Value::Bool(false));
        }
    }
    if stream {
        out.insert("stream".into(), Value::Bool(true));
        // The output token count `message_delta` reports comes from the usage chunk.
        out.insert("stream_options".into(), json!({"include_usage": true}));
    }
    Ok(Decoded { body: out, model, stream })
}

/// An Anthropic content field as blocks: a string is one text block.
fn blocks(content: Option<&Value>, i: usize) -> Result<Vec<Value>, GatewayError> {
    match content {
        Some(Value::String(s)) => Ok(vec![json!({"type": "text", "text": s})]),
        Some(Value::Array(blocks)) => Ok(blocks.clone()),
        _ => Err(bad("invalid_messages", format!("messages[{i}].content must be a string or an array of content blocks"))),
    }
}

/// An `image` block as an OpenAI `image_url` part.
fn image_part(block: &Value, i: usize) -> Result<Value, GatewayError> {
    let source = block.get("source").unwrap_or(&Value::Null);
    let url = match source.get("type").and_then(Value::as_str) {
        Some("base64") => {
            let media = source.get("media_type").and_then(Value::as_str).unwrap_or("image/png");
            let data = source.get("data").and_then(Value::as_str).unwrap_or_default();
            format!("data:{media};base64,{data}")
        }
        Some("url") => source.get("url").and_then(Value::as_str).unwrap_or_default().to_string(),
        _ => return Err(bad("invalid_messages", format!("messages[{i}]: an image source must be of type 'base64' or 'url'"))),
    };
    Ok(json!({"type": "image_url", "image_url": {"url": url}}))
}

/// A user turn: its `tool_result` blocks become `tool` messages (first, as OpenAI wants
/// them right after the assistant's calls), the rest one user message.
fn decode_user(content: Option<&Value>, i: usize, out: &mut Vec<Value>) -> Result<(), GatewayError> {
    if let Some(Value::String(s)) = content {
        out.push(json!({"role": "user", "content": s}));
        return Ok(());
    }
    let mut parts = Vec::new();
    for block in blocks(content, i)? {
        match block.get("type").and_then(Value::as_str) {
            Some("text") => parts.push(json!({"type": "text", "text": block.get("text").cloned().unwrap_or(Value::Null)})),
            Some("image") => parts.push(image_part(&block, i)?),
            Some("tool_result") => {
                let id = block.get("tool_use_id").and_then(Value::as_str).ok_or_else(|| bad("invalid_messages", format!("messages[{i}]: tool_result needs a tool_use_id")))?;
                let mut text = match block.get("content") {
                    Some(Value::String(s)) => s.clone(),
                    Some(Value::Array(inner)) => inner.iter().filter_map(|b| b.get("text").and_then(Value::as_str)).collect::<Vec<_>>().join("\n"),
                    _ => String::new(),
                };
                // OpenAI's tool message has no error flag: the model reads it in the text.
                if block.get("is_error") == Some(&Value::Bool(true)) {
                    text = format!("[tool error] {text}");
                }
                out.push(json!({"role": "tool", "tool_call_id": id, "content": text}));
            }
            // Thinking and other blocks the chat path has no place for are dropped.
            _ => {}
        }
    }
    if parts.is_empty() {
        return Ok(());
    }
    let only_text = parts.iter().all(|p| p.get("type").and_then(Value::as_str) == Some("text"));
    let content = if only_text && parts.len() == 1 { parts[0]["text"].clone() } else { Value::Array(parts) };
    out.push(json!({"role": "user", "content": content}));
    Ok(())
}

/// An assistant turn: text blocks joined, `tool_use` blocks as `tool_calls`.
fn decode_assistant(content: Option<&Value>, i: usize) -> Result<Value, GatewayError> {
    let mut texts = Vec::new();
    let mut calls = Vec::new();
    for block in blocks(content, i)? {
        match block.get("type").and_then(Value::as_str) {
            Some("text") => texts.push(block.get("text").and_then(Value::as_str).unwrap_or_default().to_string()),
            Some("tool_use") => {
                let arguments = block.get("input").cloned().unwrap_or_else(|| json!({})).to_string();
                calls.push(json!({"id": block.get("id").cloned().unwrap_or(Value::Null), "type": "function", "function": {"name": block.get("name").cloned().unwrap_or(Value::Null), "arguments": arguments}}));
            }
            _ => {}
        }
    }
    let text = if texts.is_empty() { Value::Null } else { Value::String(texts.join("")) };
    let mut message = json!({"role": "assistant", "content": text});
    if !calls.is_empty() {
        message["tool_calls"] = Value::Array(calls);
    }
    Ok(message)
}

fn decode_tools(tools: &Value) -> Result<Value, GatewayError> {
    let Value::Array(tools) = tools else {
        return Err(bad("invalid_type", "'tools' must be an array"));
    };
    let mut out = Vec::with_capacity(tools.len());
    for (i, tool) in tools.iter().enumerate() {
        if !matches!(tool.get("type").and_then(Value::as_str), None | Some("custom")) {
            return Err(bad("unsupported_tool", format!("tools[{i}]: Anthropic server tools are not supported; only client tools with an input_schema")));
        }
        let name = tool.get("name").and_then(Value::as_str).ok_or_else(|| bad("invalid_tools", format!("tools[{i}].name must be a string")))?;
        let mut function = json!({"name": name, "parameters": tool.get("input_schema").cloned().unwrap_or_else(|| json!({"type": "object"}))});
        if let Some(description) = tool.get("description").filter(|d| !d.is_null()) {
            function["description"] = description.clone();
        }
        out.push(json!({"type": "function", "function": function}));
    }
    Ok(Value::Array(out))
}

/// OpenAI's `tool_choice` for Anthropic's, and whether parallel calls are allowed.
fn decode_tool_choice(choice: &Value) -> Result<(Value, Option<bool>), GatewayError> {
    let parallel = choice.get("disable_parallel_tool_use").and_then(Value::as_bool).map(|disabled| !disabled);
    let openai = match choice.get("type").and_then(Value::as_str) {
        Some("auto") => json!("auto"),
        Some("any") => json!("required"),
        Some("none") => json!("none"),
        Some("tool") => {
            let name = choice.get("name").and_then(Value::as_str).ok_or_else(|| bad("invalid_tool_choice", "tool_choice of type 'tool' needs a name"))?;
            json!({"type": "function", "function": {"name": name}})
        }
        _ => return Err(bad("invalid_tool_choice", "tool_choice.type must be one of auto, any, tool, none")),
    };
    Ok((openai, parallel))
}

/// Anthropic's `stop_reason` for an OpenAI `finish_reason`.
fn stop_reason(finish: Option<&str>) -> &'static str {
    match finish {
        Some("length") => "max_tokens",
        Some("tool_calls" | "function_call") => "tool_use",
        Some("content_filter") => "refusal",
        _ => "end_turn",
    }
}

/// Anthropic's `usage` for an OpenAI one. Anthropic's `input_tokens` excludes cache reads.
fn usage(openai: &Value) -> Value {
    let count = |pointer: &str| openai.pointer(pointer).and_then(Value::as_u64).unwrap_or(0);
    let cached = count("/prompt_tokens_details/cached_tokens");
    json!({
        "input_tokens": count("/prompt_tokens").saturating_sub(cached),
        "output_tokens": count("/completion_tokens"),
        "cache_read_input_tokens": cached,
        "cache_creation_input_tokens": count("/prompt_tokens_details/cache_write_tokens"),
    })
}

fn message_id(completion_id: Option<&str>) -> String {
    let id = completion_id.unwrap_or_default();
    format!("msg_{}", id.strip_prefix("chatcmpl-").unwrap_or(id))
}

/// An OpenAI `chat.completion` as an Anthropic message.
pub fn encode_message(completion: &Value, model: &str) -> Value {
    let message = completion.pointer("/choices/0/message").unwrap_or(&Value::Null);
    // Only an Anthropic upstream says which stop sequence matched (see the adapter).
    let stop_sequence = completion.pointer("/choices/0/stop_sequence").filter(|s| s.is_string());
    let mut content = Vec::new();
    if let Some(text) = message.get("content").and_then(Value::as_str).filter(|t| !t.is_empty()) {
        content.push(json!({"type": "text", "text": text}));
    }
    for call in message.get("tool_calls").and_then(Value::as_array).into_iter().flatten() {
        let arguments = call.pointer("/function/arguments").and_then(Value::as_str).unwrap_or("{}");
        let input: Value = serde_json::from_str(arguments).unwrap_or_else(|_| json!({}));
        content.push(json!({"type": "tool_use", "id": call.get("id").cloned().unwrap_or(Value::Null), "name": call.pointer("/function/name").cloned().unwrap_or(Value::Null), "input": input}));
    }
    json!({
        "id": message_id(completion.get("id").and_then(Value::as_str)),
        "type": "message",
        "role": "assistant",
        "model": completion.get("model").and_then(Value::as_str).unwrap_or(model),
        "content": content,
        "stop_reason": stop_sequence.map_or_else(|| stop_reason(completion.pointer("/choices/0/finish_reason").and_then(Value::as_str)), |_| "stop_sequence"),
        "stop_sequence": stop_sequence,
        "usage": usage(completion.get("usage").unwrap_or(&Value::Null)),
    })
}

/// Anthropic's error `type` for a status.
fn error_type(status: StatusCode) -> &'static str {
    match status.as_u16() {
        401 => "authentication_error",
        402 | 403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        503 | 529 => "overloaded_error",
        s if s >= 500 => "api_error",
        _ => "invalid_request_error",
    }
}

/// Anthropic's error body for `error`: `{"type": "error", "error": {"type", "message"}}`.
pub fn error_body(error: &GatewayError) -> Value {
    let (status, _, _) = error.parts();
    json!({"type": "error", "error": {"type": error_type(status), "message": error.client_message()}})
}

fn event(name: &str, data: &Value) -> Bytes {
    Bytes::from(format!("event: {name}\ndata: {data}\n\n"))
}

impl StreamEncoder for Encoder {
    async fn data(&mut self, payload: &str) -> Vec<Bytes> {
        self.translate(payload)
    }

    fn ended(&self) -> bool {
        self.ended
    }

    fn fail(&mut self, message: &str) -> Vec<Bytes> {
        self.error(message)
    }
}

/// Turns OpenAI chunks into Anthropic events, tracking the open content block.
struct Encoder {
    model: String,
    estimate: u64,
    started: bool,
    /// Index of the open block and, for a tool call, its OpenAI call index.
    open: Option<(usize, Option<u64>)>,
    next_index: usize,
    stop_reason: &'static str,
    /// The stop sequence that ended the answer, when the upstream said (else null).
    stop_sequence: Value,
    usage: Value,
    ended: bool,
}

impl Encoder {
    fn new(model: String, estimate: u64) -> Self {
        Encoder { model, estimate, started: false, open: None, next_index: 0, stop_reason: "end_turn", stop_sequence: Value::Null, usage: Value::Null, ended: false }
    }

    fn start(&mut self, chunk: Option<&Value>, out: &mut Vec<Bytes>) {
        if self.started {
            return;
        }
        self.started = true;
        let id = message_id(chunk.and_then(|c| c.get("id")).and_then(Value::as_str));
        let model = chunk.and_then(|c| c.get("model")).and_then(Value::as_str).unwrap_or(&self.model).to_string();
        let message = json!({"id": id, "type": "message", "role": "assistant", "model": model, "content": [], "stop_reason": null, "stop_sequence": null,
            "usage": {"input_tokens": self.estimate, "output_tokens": 0, "cache_read_input_tokens": 0, "cache_creation_input_tokens": 0}});
        out.push(event("message_start", &json!({"type": "message_start", "message": message})));
        out.push(event("ping", &json!({"type": "ping"})));
    }

    fn close(&mut self, out: &mut Vec<Bytes>) {
        if let Some((index, _)) = self.open.take() {
            out.push(event("content_block_stop", &json!({"type": "content_block_stop", "index": index})));
        }
    }

    /// Opens a block unless the open one is `wanted`; returns its index.
    fn open_block(&mut self, wanted: Option<u64>, block: Value, out: &mut Vec<Bytes>) -> usize {
        if let Some((index, open)) = self.open {
            if open == wanted {
                return index;
            }
        }
        self.close(out);
        let index = self.next_index;
        self.next_index += 1;
        self.open = Some((index, wanted));
        out.push(event("content_block_start", &json!({"type": "content_block_start", "index": index, "content_block": block})));
        index
    }

    /// Events for one `data:` payload.
    fn translate(&mut self, payload: &str) -> Vec<Bytes> {
        let mut out = Vec::new();
        if payload == "[DONE]" {
            self.start(None, &mut out);
            self.close(&mut out);
            let mut usage = self.usage.clone();
            if usage.is_null() {
                usage = json!({"output_tokens": 0});
            }
            out.push(event("message_delta", &json!({"type": "message_delta", "delta": {"stop_reason": self.stop_reason, "stop_sequence": self.stop_sequence}, "usage": usage})));
            out.push(event("message_stop", &json!({"type": "message_stop"})));
            self.ended = true;
            return out;
        }
        let Ok(chunk) = serde_json::from_str::<Value>(payload) else {
            return self.error("the stream carried an unreadable chunk");
        };
        if let Some(error) = chunk.get("error") {
            let message = error.get("message").and_then(Value::as_str).unwrap_or("the stream failed");
            return self.error(message);
        }
        self.start(Some(&chunk), &mut out);
        if let Some(u) = chunk.get("usage").filter(|u| !u.is_null()) {
            self.usage = usage(u);
        }
        let Some(choice) = chunk.pointer("/choices/0") else { return out };
        if let Some(text) = choice.pointer("/delta/content").and_then(Value::as_str).filter(|t| !t.is_empty()) {
            let index = self.open_block(None, json!({"type": "text", "text": ""}), &mut out);
            out.push(event("content_block_delta", &json!({"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": text}})));
        }
        for call in choice.pointer("/delta/tool_calls").and_then(Value::as_array).into_iter().flatten() {
            let call_index = call.get("index").and_then(Value::as_u64).unwrap_or(0);
            let block = json!({"type": "tool_use", "id": call.get("id").cloned().unwrap_or(Value::Null), "name": call.pointer("/function/name").cloned().unwrap_or(Value::Null), "input": {}});
            let index = self.open_block(Some(call_index), block, &mut out);
            if let Some(arguments) = call.pointer("/function/arguments").and_then(Value::as_str).filter(|a| !a.is_empty()) {
                out.push(event("content_block_delta", &json!({"type": "content_block_delta", "index": index, "delta": {"type": "input_json_delta", "partial_json": arguments}})));
            }
        }
        if let Some(finish) = choice.get("finish_reason").and_then(Value::as_str) {
            self.stop_reason = stop_reason(Some(finish));
        }
        // Only an Anthropic upstream says which stop sequence matched (see the adapter).
        if let Some(sequence) = choice.get("stop_sequence").filter(|s| s.is_string()) {
            self.stop_reason = "stop_sequence";
            self.stop_sequence = sequence.clone();
        }
        out
    }

    /// An `error` event, which ends the stream.
    fn error(&mut self, message: &str) -> Vec<Bytes> {
        self.ended = true;
        vec![event("error", &json!({"type": "error", "error": {"type": "api_error", "message": message}}))]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_tools_results_images_and_choice() -> Result<(), GatewayError> {
        let body = json!({
            "model": "m", "max_tokens": 50, "system": [{"type": "text", "text": "be brief"}],
            "messages": [
                {"role": "user", "content": [{"type": "text", "text": "look"}, {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg", "data": "AAAA"}}]},
                {"role": "assistant", "content": [{"type": "text", "text": "calling"}, {"type": "tool_use", "id": "tu_1", "name": "f", "input": {"q": 1}}]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "tu_1", "content": "boom", "is_error": true}, {"type": "text", "text": "and?"}]},
            ],
            "tools": [{"name": "f", "description": "d", "input_schema": {"type": "object"}}],
            "tool_choice": {"type": "any", "disable_parallel_tool_use": true},
            "stop_sequences": ["X"], "metadata": {"user_id": "u9"}, "top_k": 3,
        });
        let decoded = decode(body.to_string().as_bytes())?;
        assert_eq!(Value::Object(decoded.body), json!({
            "model": "m", "max_tokens": 50, "stop": ["X"], "user": "u9",
            "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": [{"type": "text", "text": "look"}, {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,AAAA"}}]},
                {"role": "assistant", "content": "calling", "tool_calls": [{"id": "tu_1", "type": "function", "function": {"name": "f", "arguments": "{\"q\":1}"}}]},
                {"role": "tool", "tool_call_id": "tu_1", "content": "[tool error] boom"},
                {"role": "user", "content": "and?"},
            ],
            "tools": [{"type": "function", "function": {"name": "f", "description": "d", "parameters": {"type": "object"}}}],
            "tool_choice": "required", "parallel_tool_calls": false,
        }));
        Ok(())
    }

    #[test]
    fn encodes_stop_reasons_usage_and_errors() {
        let completion = |finish: &str| json!({"id": "chatcmpl-abc", "model": "m", "choices": [{"message": {"content": "hi"}, "finish_reason": finish}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 2, "prompt_tokens_details": {"cached_tokens": 4}}});
        let reasons: Vec<Value> = ["stop", "length", "tool_calls", "content_filter"].iter().map(|f| encode_message(&completion(*f), "m")["stop_reason"].clone()).collect();
        assert_eq!(reasons, [json!("end_turn"), json!("max_tokens"), json!("tool_use"), json!("refusal")]);
        let mut matched = completion("stop");
        matched["choices"][0]["stop_sequence"] = json!("END");
        let message = encode_message(&matched, "m");
        assert_eq!((message["stop_reason"].as_str(), message["stop_sequence"].as_str()), (Some("stop_sequence"), Some("END")));
        let message = encode_message(&completion("stop"), "m");
        assert_eq!(message["stop_sequence"], Value::Null);
        assert_eq!(message["id"], "msg_abc");
        assert_eq!(message["usage"], json!({"input_tokens": 6, "output_tokens": 2, "cache_read_input_tokens": 4, "cache_creation_input_tokens": 0}));
        let limited = GatewayError::RateLimited(crate::ratelimit::RateLimited { what: "requests", retry_after_secs: 1 });
        assert_eq!(error_body(&limited)["error"]["type"], "rate_limit_error");
        assert_eq!(error_body(&GatewayError::Unauthorized("invalid token")), json!({"type": "error", "error": {"type": "authentication_error", "message": "invalid token"}}));
        assert_eq!(error_body(&GatewayError::Internal("disk".into()))["error"]["type"], "api_error");
    }

    #[test]
    fn streams_text_then_a_tool_call() {
        let mut encoder = Encoder::new("m".into(), 7);
        let mut events = Vec::new();
        for payload in [
            r#"{"id":"chatcmpl-1","model":"m","choices":[{"index":0,"delta":{"role":"assistant","content":"Hi"},"finish_reason":null}]}"#,
            r#"{"id":"chatcmpl-1","model":"m","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"c1","type":"function","function":{"name":"f","arguments":"{\"q\""}}]},"finish_reason":null}]}"#,
            r#"{"id":"chatcmpl-1","model":"m","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":":1}"}}]},"finish_reason":"tool_calls"}]}"#,
            r#"{"id":"chatcmpl-1","model":"m","choices":[],"usage":{"prompt_tokens":5,"completion_tokens":3}}"#,
            "[DONE]",
        ] {
            events.extend(encoder.translate(payload));
        }
        let names: Vec<String> = events.iter().map(|e| String::from_utf8_lossy(e).lines().next().unwrap_or_default().to_string()).collect();
        assert_eq!(names, [
            "event: message_start", "event: ping", "event: content_block_start", "event: content_block_delta",
            "event: content_block_stop", "event: content_block_start", "event: content_block_delta", "event: content_block_delta",
            "event: content_block_stop", "event: message_delta", "event: message_stop",
        ]);
        let delta = String::from_utf8_lossy(&events[9]).to_string();
        assert!(delta.contains(r#""stop_reason":"tool_use""#) && delta.contains(r#""output_tokens":3"#), "{delta}");
    }
}
