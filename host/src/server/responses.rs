//! `POST /v1/responses`: OpenAI's Responses API as a third inbound format over the chat
//! path. A Responses body is decoded into the OpenAI chat-completions body
//! [`chat::handle_parsed`] takes, and its answer (a completion or an SSE stream of chunks) is
//! encoded back into a `response` object or the typed Responses stream events (see
//! [`stream`]), so the official `openai` SDKs' `client.responses` work against every
//! provider kind.
//!
//! Unless the request says `"store": false`, the conversation (its input and output) is
//! stored per tenant ([`crate::stored_responses`]) under the response id, and a later
//! request naming it in `previous_response_id` continues it.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::Response;
use http_body_util::BodyExt;
use serde_json::{json, Map, Value};

mod stream;

use super::{chat, json_response, wire, Body};
use crate::app::App;
use crate::error::GatewayError;
use crate::stored_responses::{StoredResponse, TenantResponses, MAX_RESPONSE_ID_BYTES};

fn bad(code: &'static str, message: impl Into<String>) -> GatewayError {
    GatewayError::bad_request(code, message)
}

/// Request fields this format accepts. Anything else is refused by name rather than
/// silently dropped: it would change what the client gets.
const KNOWN_FIELDS: &[&str] = &[
    "model", "input", "instructions", "max_output_tokens", "temperature", "top_p", "tools", "tool_choice", "parallel_tool_calls", "user", "metadata", "stream",
    "store", "previous_response_id", "text", "reasoning", "truncation", "include", "service_tier", "safety_identifier", "prompt_cache_key", "stream_options",
    "background",
];

/// `POST /v1/responses`: decodes, prepends a stored conversation, runs the chat path,
/// encodes its answer and stores the conversation.
pub async fn handle(app: &Arc<App>, caller: chat::Caller, permit: crate::ratelimit::Permit, bytes: Bytes) -> Result<Response<Body>, GatewayError> {
    let decoded = decode(&bytes)?;
    let stored = app.responses.tenant(caller.tenant.storage_id());
    let history = match &decoded.previous_response_id {
        Some(id) => stored.conversation(id).await?.ok_or_else(|| GatewayError::NotFoundCode {
            code: "previous_response_not_found",
            message: format!("Previous response with id '{id}' not found."),
        })?,
        None => Vec::new(),
    };
    let meta = Meta { id: format!("resp_{}", caller.request_id), request_id: caller.request_id.clone(), created_at: caller.unix_millis / 1000, echo: decoded.echo.clone() };
    let store = decoded.store.then(|| Store { responses: stored, previous: decoded.previous_response_id.clone(), input: decoded.input.clone() });
    let response = run_chat(app, caller, permit, decoded.chat_body(history)).await?;
    if decoded.stream {
        return Ok(stream::encode(response, meta, store));
    }
    let (parts, body) = response.into_parts();
    let bytes = body.collect().await.map_err(|never: Infallible| -> GatewayError { match never {} })?.to_bytes();
    let completion: Value = serde_json::from_slice(&bytes).map_err(|e| GatewayError::Internal(format!("the chat path answered with invalid JSON: {e}")))?;
    let message = completion.pointer("/choices/0/message").cloned().unwrap_or(Value::Null);
    if let Some(store) = store {
        store.save(&meta.id, assistant_message(&message)).await;
    }
    let mut out = json_response(parts.status, &encode_response(&completion, &meta));
    for (name, value) in parts.headers.iter().filter(|(n, _)| n.as_str().starts_with("x-tollgate-")) {
        out.headers_mut().insert(name.clone(), value.clone());
    }
    Ok(out)
}

/// `DELETE /v1/responses/{id}`: forgets a stored response of the caller's tenant (404 if
/// it stored none), giving its bytes back to the memory quota.
pub async fn delete(app: &App, tenant: &crate::tenants::Tenant, id: &str) -> Result<Response<Body>, GatewayError> {
    let deleted = app.responses.tenant(tenant.storage_id()).delete(id).await.map_err(|e| GatewayError::Internal(format!("deleting a stored response: {e}")))?;
    if !deleted {
        return Err(GatewayError::NotFound(format!("No response found with id '{id}'.")));
    }
    Ok(json_response(http::StatusCode::OK, &json!({"id": id, "object": "response.deleted", "deleted": true})))
}

/// The one call into the chat path (kept in one place: its signature is the seam every
/// inbound format shares).
async fn run_chat(app: &Arc<App>, caller: chat::Caller, permit: crate::ratelimit::Permit, body: Map<String, Value>) -> Result<Response<Body>, GatewayError> {
    chat::handle_parsed(app, caller, permit, wire::from_value(Value::Object(body))?).await
}

/// What a response echoes of its request (the SDK's `Response` model requires most).
#[derive(Debug, Clone)]
struct Echo {
    model: String,
    instructions: Value,
    max_output_tokens: Value,
    temperature: Value,
    top_p: Value,
    tools: Value,
    tool_choice: Value,
    parallel_tool_calls: bool,
    metadata: Value,
    user: Value,
    previous_response_id: Value,
    store: bool,
    text: Value,
    reasoning: Value,
}

/// A decoded Responses request.
#[derive(Debug)]
pub struct Decoded {
    /// The chat-completions body without its messages.
    body: Map<String, Value>,
    /// The system message from `instructions`, if any.
    system: Option<Value>,
    /// The input as chat messages (what is stored).
    input: Vec<Value>,
    stream: bool,
    store: bool,
    previous_response_id: Option<String>,
    echo: Echo,
}

impl Decoded {
    /// The chat body: instructions first, then the stored conversation, then the input.
    fn chat_body(&self, history: Vec<Value>) -> Map<String, Value> {
        let mut body = self.body.clone();
        let messages: Vec<Value> = self.system.iter().cloned().chain(history).chain(self.input.iter().cloned()).collect();
        body.insert("messages".into(), Value::Array(messages));
        body
    }
}


fn optional_bool(body: &Map<String, Value>, field: &str, default: bool) -> Result<bool, GatewayError> {
    match body.get(field) {
        None | Some(Value::Null) => Ok(default),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(bad("invalid_type", format!("'{field}' must be a boolean"))),
    }
}

/// `field` if present and not null.
fn present<'a>(body: &'a Map<String, Value>, field: &str) -> Option<&'a Value> {
    body.get(field).filter(|v| !v.is_null())
}

/// Decodes a Responses body into a chat-completions body and what the answer echoes.
pub fn decode(bytes: &[u8]) -> Result<Decoded, GatewayError> {
    let body = wire::parse_object(bytes)?;
    if let Some(unknown) = body.keys().find(|k| !KNOWN_FIELDS.contains(&k.as_str())) {
        return Err(bad("unsupported_parameter", format!("'{unknown}' is not supported on /v1/responses by this gateway")));
    }
    let model = match body.get("model") {
        Some(Value::String(m)) => m.clone(),
        None | Some(Value::Null) => String::new(),
        Some(_) => return Err(bad("invalid_type", "'model' must be a string")),
    };
    if optional_bool(&body, "background", false)? {
        return Err(bad("unsupported_parameter", "'background' responses are not supported by this gateway"));
    }
    if let Some(truncation) = present(&body, "truncation").filter(|t| t.as_str() != Some("disabled")) {
        return Err(bad("unsupported_parameter", format!("'truncation' {truncation} is not supported; only 'disabled'")));
    }
    let stream = optional_bool(&body, "stream", false)?;
    let store = optional_bool(&body, "store", true)?;
    let previous_response_id = match present(&body, "previous_response_id") {
        None => None,
        Some(Value::String(id)) if !id.is_empty() && id.len() <= MAX_RESPONSE_ID_BYTES => Some(id.clone()),
        Some(_) => return Err(bad("invalid_type", format!("'previous_response_id' must be a response id of 1 to {MAX_RESPONSE_ID_BYTES} bytes"))),
    };
    if previous_response_id.is_some() && !store {
        return Err(bad("invalid_request", "'previous_response_id' cannot be used with 'store': false (the continued conversation is stored)"));
    }
    let system = match present(&body, "instructions") {
        None => None,
        Some(Value::String(s)) => Some(json!({"role": "system", "content": s})),
        Some(_) => return Err(bad("invalid_type", "'instructions' must be a string")),
    };
    let input = match body.get("input") {
        Some(Value::String(s)) => vec![json!({"role": "user", "content": s})],
        Some(Value::Array(items)) if !items.is_empty() => decode_items(items)?,
        _ => return Err(bad("missing_input", "'input' must be a string or a non-empty array of input items")),
    };

    let mut out = Map::new();
    out.insert("model".into(), Value::String(model.clone()));
    if let Some(limit) = present(&body, "max_output_tokens") {
        let limit = limit.as_u64().filter(|n| *n > 0).ok_or_else(|| bad("invalid_type", "'max_output_tokens' must be a positive integer"))?;
        out.insert("max_tokens".into(), limit.into());
    }
    for field in ["temperature", "top_p", "service_tier", "prompt_cache_key"] {
        if let Some(v) = present(&body, field) {
            out.insert(field.into(), v.clone());
        }
    }
    match present(&body, "user").or_else(|| present(&body, "safety_identifier")) {
        None => {}
        Some(Value::String(user)) => {
            out.insert("user".into(), Value::String(user.clone()));
        }
        Some(_) => return Err(bad("invalid_type", "'user' must be a string")),
    }
    if present(&body, "metadata").is_some_and(|m| !m.as_object().is_some_and(|m| m.values().all(Value::is_string))) {
        return Err(bad("invalid_type", "'metadata' must be an object of string values"));
    }
    let tools = present(&body, "tools").cloned().unwrap_or_else(|| json!([]));
    let chat_tools = decode_tools(&tools)?;
    if !chat_tools.is_empty() {
        out.insert("tools".into(), Value::Array(chat_tools));
    }
    let tool_choice = present(&body, "tool_choice").cloned().unwrap_or_else(|| json!("auto"));
    if present(&body, "tool_choice").is_some() {
        out.insert("tool_choice".into(), decode_tool_choice(&tool_choice)?);
    }
    let parallel_tool_calls = optional_bool(&body, "parallel_tool_calls", true)?;
    if present(&body, "parallel_tool_calls").is_some() {
        out.insert("parallel_tool_calls".into(), Value::Bool(parallel_tool_calls));
    }
    let text = present(&body, "text").cloned().unwrap_or_else(|| json!({"format": {"type": "text"}}));
    if let Some(format) = decode_text_format(&text)? {
        out.insert("response_format".into(), format);
    }
    let reasoning = present(&body, "reasoning").cloned().unwrap_or(Value::Null);
    if let Some(effort) = reasoning.get("effort").filter(|e| !e.is_null()) {
        out.insert("reasoning_effort".into(), effort.clone());
    }
    if stream {
        out.insert("stream".into(), Value::Bool(true));
        // The final usage `response.completed` reports comes from the usage chunk.
        out.insert("stream_options".into(), json!({"include_usage": true}));
    }
    let echo = Echo {
        model,
        instructions: present(&body, "instructions").cloned().unwrap_or(Value::Null),
        max_output_tokens: present(&body, "max_output_tokens").cloned().unwrap_or(Value::Null),
        temperature: present(&body, "temperature").cloned().unwrap_or(json!(1.0)),
        top_p: present(&body, "top_p").cloned().unwrap_or(json!(1.0)),
        tools,
        tool_choice,
        parallel_tool_calls,
        metadata: present(&body, "metadata").cloned().unwrap_or_else(|| json!({})),
        user: present(&body, "user").cloned().unwrap_or(Value::Null),
        previous_response_id: previous_response_id.clone().map_or(Value::Null, Value::String),
        store,
        text,
        reasoning,
    };
    Ok(Decoded { body: out, system, input, stream, store, previous_response_id, echo })
}

/// Input items as chat messages. Consecutive `function_call` items (and one right after
/// an assistant message) are one assistant message with several `tool_calls`, as the chat
/// format wants parallel calls.
fn decode_items(items: &[Value]) -> Result<Vec<Value>, GatewayError> {
    let mut messages: Vec<Value> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let kind = item.get("type").and_then(Value::as_str);
        match kind {
            None | Some("message") => messages.push(decode_message(item, i)?),
            Some("function_call") => {
                let field = |name: &str| item.get(name).and_then(Value::as_str).ok_or_else(|| bad("invalid_input", format!("input[{i}]: a function_call needs a string '{name}'")));
                let call = json!({"id": field("call_id")?, "type": "function", "function": {"name": field("name")?, "arguments": field("arguments")?}});
                match messages.last_mut().filter(|m| m["role"] == "assistant") {
                    Some(last) => match last.get_mut("tool_calls").and_then(Value::as_array_mut) {
                        Some(calls) => calls.push(call),
                        None => last["tool_calls"] = json!([call]),
                    },
                    None => messages.push(json!({"role": "assistant", "content": null, "tool_calls": [call]})),
                }
            }
            Some("function_call_output") => {
                let id = item.get("call_id").and_then(Value::as_str).ok_or_else(|| bad("invalid_input", format!("input[{i}]: a function_call_output needs a string 'call_id'")))?;
                let output = match item.get("output") {
                    Some(Value::String(s)) => s.clone(),
                    Some(Value::Array(parts)) => parts.iter().filter_map(|p| p.get("text").and_then(Value::as_str)).collect::<Vec<_>>().join("\n"),
                    _ => return Err(bad("invalid_input", format!("input[{i}]: a function_call_output needs an 'output' string"))),
                };
                messages.push(json!({"role": "tool", "tool_call_id": id, "content": output}));
            }
            // Reasoning a previous response returned has no place in a chat request.
            Some("reasoning") => {}
            Some(other) => return Err(bad("unsupported_input_item", format!("input[{i}]: items of type '{other}' are not supported; use message, function_call and function_call_output"))),
        }
    }
    if messages.is_empty() {
        return Err(bad("missing_input", "'input' holds no message"));
    }
    Ok(messages)
}

/// A message item as a chat message: its content parts as chat parts (text alone as a
/// string), an assistant's as one text.
fn decode_message(item: &Value, i: usize) -> Result<Value, GatewayError> {
    let role = match item.get("role").and_then(Value::as_str) {
        Some(role @ ("user" | "system" | "developer" | "assistant")) => role,
        _ => return Err(bad("invalid_input", format!("input[{i}].role must be one of user, system, developer, assistant"))),
    };
    let parts = match item.get("content") {
        Some(Value::String(s)) => return Ok(json!({"role": role, "content": s})),
        Some(Value::Array(parts)) => parts,
        _ => return Err(bad("invalid_input", format!("input[{i}].content must be a string or an array of content parts"))),
    };
    let mut out = Vec::with_capacity(parts.len());
    for (j, part) in parts.iter().enumerate() {
        let text = |field: &str| part.get(field).and_then(Value::as_str).map(str::to_owned).ok_or_else(|| bad("invalid_input", format!("input[{i}].content[{j}] needs a string '{field}'")));
        match part.get("type").and_then(Value::as_str) {
            Some("input_text" | "output_text" | "text") => out.push(json!({"type": "text", "text": text("text")?})),
            Some("refusal") => out.push(json!({"type": "text", "text": text("refusal")?})),
            Some("input_image") => {
                let Some(url) = part.get("image_url").and_then(Value::as_str) else {
                    return Err(bad("unsupported_input_item", format!("input[{i}].content[{j}]: only images given by 'image_url' (a URL or a data URL) are supported, not file ids")));
                };
                let mut image = json!({"url": url});
                if let Some(detail) = part.get("detail").and_then(Value::as_str) {
                    image["detail"] = json!(detail);
                }
                out.push(json!({"type": "image_url", "image_url": image}));
            }
            other => return Err(bad("unsupported_input_item", format!("input[{i}].content[{j}]: parts of type {} are not supported; use input_text and input_image", other.map_or("(none)".into(), |o| format!("'{o}'"))))),
        }
    }
    let only_text = out.iter().all(|p| p["type"] == "text");
    let content = if only_text && (role != "user" || out.len() == 1) {
        // The chat format's system and assistant messages take one text.
        Value::String(out.iter().filter_map(|p| p["text"].as_str()).collect::<Vec<_>>().join(""))
    } else {
        Value::Array(out)
    };
    Ok(json!({"role": role, "content": content}))
}

/// Function tools as chat tools; any other tool type is refused.
fn decode_tools(tools: &Value) -> Result<Vec<Value>, GatewayError> {
    let Value::Array(tools) = tools else {
        return Err(bad("invalid_type", "'tools' must be an array"));
    };
    let mut out = Vec::with_capacity(tools.len());
    for (i, tool) in tools.iter().enumerate() {
        match tool.get("type").and_then(Value::as_str) {
            Some("function") => {}
            other => {
                return Err(bad("unsupported_tool", format!("tools[{i}]: tools of type {} are not supported; only function tools", other.map_or("(none)".into(), |o| format!("'{o}'")))));
            }
        }
        let name = tool.get("name").and_then(Value::as_str).ok_or_else(|| bad("invalid_tools", format!("tools[{i}].name must be a string")))?;
        let mut function = json!({"name": name, "parameters": present_in(tool, "parameters").cloned().unwrap_or_else(|| json!({"type": "object", "properties": {}}))});
        for field in ["description", "strict"] {
            if let Some(v) = present_in(tool, field) {
                function[field] = v.clone();
            }
        }
        out.push(json!({"type": "function", "function": function}));
    }
    Ok(out)
}

fn present_in<'a>(value: &'a Value, field: &str) -> Option<&'a Value> {
    value.get(field).filter(|v| !v.is_null())
}

/// The chat `tool_choice` for a Responses one.
fn decode_tool_choice(choice: &Value) -> Result<Value, GatewayError> {
    match choice {
        Value::String(s) if matches!(s.as_str(), "auto" | "none" | "required") => Ok(choice.clone()),
        Value::Object(o) if o.get("type").and_then(Value::as_str) == Some("function") => {
            let name = o.get("name").and_then(Value::as_str).ok_or_else(|| bad("invalid_tool_choice", "tool_choice of type 'function' needs a name"))?;
            Ok(json!({"type": "function", "function": {"name": name}}))
        }
        _ => Err(bad("invalid_tool_choice", "tool_choice must be 'auto', 'none', 'required' or {\"type\": \"function\", \"name\": ...}")),
    }
}

/// The chat `response_format` for `text.format` (none for plain text).
fn decode_text_format(text: &Value) -> Result<Option<Value>, GatewayError> {
    let Some(format) = present_in(text, "format") else { return Ok(None) };
    match format.get("type").and_then(Value::as_str) {
        Some("text") => Ok(None),
        Some("json_object") => Ok(Some(json!({"type": "json_object"}))),
        Some("json_schema") => {
            let mut schema = json!({"name": format.get("name").cloned().unwrap_or(json!("response")), "schema": format.get("schema").cloned().unwrap_or(json!({}))});
            for field in ["description", "strict"] {
                if let Some(v) = present_in(format, field) {
                    schema[field] = v.clone();
                }
            }
            Ok(Some(json!({"type": "json_schema", "json_schema": schema})))
        }
        _ => Err(bad("invalid_type", "text.format.type must be one of text, json_object, json_schema")),
    }
}

/// Where and what to store once the answer is complete.
struct Store {
    responses: TenantResponses,
    previous: Option<String>,
    input: Vec<Value>,
}

impl Store {
    /// Stores the input and the reply under `id`. A response that cannot be stored (over
    /// the quota or the size cap) is still answered; a later `previous_response_id` naming
    /// it gets 404.
    async fn save(self, id: &str, reply: Value) {
        let mut messages = self.input;
        messages.push(reply);
        let record = StoredResponse { previous: self.previous, messages, unix_millis: crate::clock::unix_millis() };
        if let Err(e) = self.responses.put(id, &record).await {
            tracing::warn!(response = %id, error = %e, "response not stored");
        }
    }
}

/// The assistant message of a chat completion as stored: its text and tool calls.
fn assistant_message(message: &Value) -> Value {
    let mut stored = json!({"role": "assistant", "content": message.get("content").cloned().unwrap_or(Value::Null)});
    if let Some(calls) = message.get("tool_calls").filter(|c| c.as_array().is_some_and(|a| !a.is_empty())) {
        stored["tool_calls"] = calls.clone();
    }
    stored
}

/// Identity and echo of the response being built.
struct Meta {
    id: String,
    request_id: String,
    created_at: u64,
    echo: Echo,
}

impl Meta {
    fn message_id(&self) -> String {
        format!("msg_{}", self.request_id)
    }

    fn call_id(&self, index: u64) -> String {
        format!("fc_{}_{index}", self.request_id)
    }

    /// The `response` object; `output` and `usage` as known so far.
    fn response(&self, model: &str, status: &str, output: Vec<Value>, usage: Value, incomplete: Option<&str>, error: Value) -> Value {
        let e = &self.echo;
        json!({
            "id": self.id, "object": "response", "created_at": self.created_at, "status": status,
            "background": false, "error": error,
            "incomplete_details": incomplete.map(|reason| json!({"reason": reason})),
            "instructions": e.instructions, "max_output_tokens": e.max_output_tokens, "model": model,
            "output": output, "parallel_tool_calls": e.parallel_tool_calls, "previous_response_id": e.previous_response_id,
            "reasoning": e.reasoning, "store": e.store, "temperature": e.temperature, "text": e.text,
            "tool_choice": e.tool_choice, "tools": e.tools, "top_p": e.top_p, "truncation": "disabled",
            "usage": usage, "user": e.user, "metadata": e.metadata,
        })
    }
}

/// The `response` status and incomplete reason for a chat `finish_reason`.
fn status(finish: Option<&str>) -> (&'static str, Option<&'static str>) {
    match finish {
        Some("length") => ("incomplete", Some("max_output_tokens")),
        Some("content_filter") => ("incomplete", Some("content_filter")),
        _ => ("completed", None),
    }
}

/// The Responses `usage` for a chat one.
fn usage(openai: &Value) -> Value {
    let count = |pointer: &str| openai.pointer(pointer).and_then(Value::as_u64).unwrap_or(0);
    let (input, output) = (count("/prompt_tokens"), count("/completion_tokens"));
    json!({
        "input_tokens": input,
        "input_tokens_details": {"cached_tokens": count("/prompt_tokens_details/cached_tokens"), "cache_write_tokens": count("/prompt_tokens_details/cache_write_tokens")},
        "output_tokens": output,
        "output_tokens_details": {"reasoning_tokens": count("/completion_tokens_details/reasoning_tokens")},
        "total_tokens": input + output,
    })
}

fn text_part(text: &str) -> Value {
    json!({"type": "output_text", "text": text, "annotations": [], "logprobs": []})
}

fn message_item(id: &str, status: &str, content: Vec<Value>) -> Value {
    json!({"type": "message", "id": id, "status": status, "role": "assistant", "content": content})
}

fn call_item(id: &str, call_id: &Value, name: &Value, arguments: &str, status: &str) -> Value {
    json!({"type": "function_call", "id": id, "call_id": call_id, "name": name, "arguments": arguments, "status": status})
}

/// An OpenAI `chat.completion` as a `response` object.
fn encode_response(completion: &Value, meta: &Meta) -> Value {
    let message = completion.pointer("/choices/0/message").unwrap_or(&Value::Null);
    let (status, incomplete) = status(completion.pointer("/choices/0/finish_reason").and_then(Value::as_str));
    let item_status = if status == "completed" { "completed" } else { "incomplete" };
    let mut output = Vec::new();
    let mut content = Vec::new();
    if let Some(text) = message.get("content").and_then(Value::as_str).filter(|t| !t.is_empty()) {
        content.push(text_part(text));
    }
    if let Some(refusal) = message.get("refusal").and_then(Value::as_str).filter(|t| !t.is_empty()) {
        content.push(json!({"type": "refusal", "refusal": refusal}));
    }
    if !content.is_empty() {
        output.push(message_item(&meta.message_id(), item_status, content));
    }
    for (i, call) in message.get("tool_calls").and_then(Value::as_array).into_iter().flatten().enumerate() {
        let arguments = call.pointer("/function/arguments").and_then(Value::as_str).unwrap_or("{}");
        output.push(call_item(&meta.call_id(i as u64), call.get("id").unwrap_or(&Value::Null), call.pointer("/function/name").unwrap_or(&Value::Null), arguments, "completed"));
    }
    let model = completion.get("model").and_then(Value::as_str).unwrap_or(&meta.echo.model);
    meta.response(model, status, output, usage(completion.get("usage").unwrap_or(&Value::Null)), incomplete, Value::Null)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(body: Value) -> String {
        match decode(body.to_string().as_bytes()) {
            Err(GatewayError::BadRequest { code, .. }) => code.into(),
            other => format!("{other:?}"),
        }
    }

    #[test]
    fn decodes_items_tools_and_choice() -> Result<(), GatewayError> {
        let decoded = decode(json!({
            "model": "m", "instructions": "be brief", "max_output_tokens": 50, "temperature": 0.2, "user": "u1",
            "input": [
                {"role": "user", "content": [{"type": "input_text", "text": "look"}, {"type": "input_image", "image_url": "data:image/png;base64,AAAA", "detail": "low"}]},
                {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "calling", "annotations": []}]},
                {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{\"q\":1}"},
                {"type": "function_call", "call_id": "c2", "name": "f", "arguments": "{}"},
                {"type": "function_call_output", "call_id": "c1", "output": "one"},
                {"type": "function_call_output", "call_id": "c2", "output": "two"},
            ],
            "tools": [{"type": "function", "name": "f", "description": "d", "parameters": {"type": "object"}, "strict": true}],
            "tool_choice": {"type": "function", "name": "f"}, "parallel_tool_calls": false,
        }).to_string().as_bytes())?;
        assert_eq!(Value::Object(decoded.chat_body(vec![json!({"role": "user", "content": "before"})])), json!({
            "model": "m", "max_tokens": 50, "temperature": 0.2, "user": "u1",
            "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": "before"},
                {"role": "user", "content": [{"type": "text", "text": "look"}, {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA", "detail": "low"}}]},
                {"role": "assistant", "content": "calling", "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{\"q\":1}"}},
                    {"id": "c2", "type": "function", "function": {"name": "f", "arguments": "{}"}},
                ]},
                {"role": "tool", "tool_call_id": "c1", "content": "one"},
                {"role": "tool", "tool_call_id": "c2", "content": "two"},
            ],
            "tools": [{"type": "function", "function": {"name": "f", "description": "d", "parameters": {"type": "object"}, "strict": true}}],
            "tool_choice": {"type": "function", "function": {"name": "f"}}, "parallel_tool_calls": false,
        }));
        assert!(decoded.store && !decoded.stream);
        Ok(())
    }

    #[test]
    fn refuses_what_it_cannot_honour() {
        assert_eq!(code(json!({"model": "m"})), "missing_input");
        assert_eq!(code(json!({"model": "m", "input": []})), "missing_input");
        assert_eq!(code(json!({"model": "m", "input": "x", "tools": [{"type": "web_search"}]})), "unsupported_tool");
        assert_eq!(code(json!({"model": "m", "input": "x", "conversation": "c"})), "unsupported_parameter");
        assert_eq!(code(json!({"model": "m", "input": "x", "background": true})), "unsupported_parameter");
        assert_eq!(code(json!({"model": "m", "input": [{"type": "item_reference", "id": "x"}]})), "unsupported_input_item");
        assert_eq!(code(json!({"model": "m", "input": [{"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}]})), "unsupported_input_item");
        assert_eq!(code(json!({"model": "m", "input": [{"role": "wizard", "content": "x"}]})), "invalid_input");
        assert_eq!(code(json!({"model": "m", "input": "x", "store": false, "previous_response_id": "resp_1"})), "invalid_request");
        assert_eq!(code(json!({"model": "m", "input": "x", "max_output_tokens": 0})), "invalid_type");
    }

    pub(super) fn meta() -> Meta {
        let echo = decode(json!({"model": "m", "input": "x"}).to_string().as_bytes()).map(|d| d.echo).unwrap_or_else(|e| panic!("{e}"));
        Meta { id: "resp_r1".into(), request_id: "r1".into(), created_at: 7, echo }
    }

    #[test]
    fn encodes_text_calls_status_and_usage() {
        let completion = json!({"model": "m", "choices": [{"message": {"content": "hi", "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}, "finish_reason": "length"}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 2, "prompt_tokens_details": {"cached_tokens": 4}}});
        let response = encode_response(&completion, &meta());
        assert_eq!((response["status"].as_str(), response["incomplete_details"]["reason"].as_str()), (Some("incomplete"), Some("max_output_tokens")));
        assert_eq!(response["output"], json!([
            {"type": "message", "id": "msg_r1", "status": "incomplete", "role": "assistant", "content": [{"type": "output_text", "text": "hi", "annotations": [], "logprobs": []}]},
            {"type": "function_call", "id": "fc_r1_0", "call_id": "c1", "name": "f", "arguments": "{}", "status": "completed"},
        ]));
        assert_eq!(response["usage"], json!({"input_tokens": 10, "input_tokens_details": {"cached_tokens": 4, "cache_write_tokens": 0}, "output_tokens": 2, "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 12}));
    }
}
