//! Parsing and validating an OpenAI chat-completions request body. The body stays a JSON
//! map so fields the gateway does not interpret pass through unchanged; the fields it does
//! interpret are checked here and summarised for the policy.

use serde_json::{Map, Value};

use crate::error::GatewayError;
use crate::policy::{Api, Message, Operation, Request};

/// Most messages in one request.
pub const MAX_MESSAGES: usize = 4096;
/// Deepest JSON nesting accepted (serde_json's own recursion limit is 128; we refuse well
/// before, with a clear error, so hostile nesting never reaches the policy or an upstream).
pub const MAX_JSON_DEPTH: usize = 64;
/// Most metadata pairs handed to the policy.
pub const MAX_METADATA: usize = 16;
/// Longest `model` field.
pub const MAX_MODEL_BYTES: usize = 256;
/// Most choices (`n`) one request may ask for; OpenAI's own limit.
pub const MAX_CHOICES: u64 = 128;
/// Prompt tokens counted per image part: the most a provider bills for one image at its
/// default detail (Anthropic about 1,600 for 1.15 megapixels, gpt-4o up to about 1,100).
/// Settlement never bills past the reservation, so an underestimate costs the operator,
/// never the tenant's cap.
pub const IMAGE_PART_TOKENS: u64 = 1_600;
/// Base64 bytes of audio per prompt token counted: about 25 tokens a second of speech
/// is what OpenAI bills, and 128 bytes per token covers formats down to 24 kbit/s.
pub const AUDIO_BASE64_BYTES_PER_TOKEN: u64 = 128;
/// Prompt tokens counted per message for its role and framing.
const MESSAGE_OVERHEAD_TOKENS: u64 = 3;

/// A validated chat request.
#[derive(Debug)]
pub struct ChatBody {
    /// The body as sent, minus fields the gateway owns (`stream_options` is re-derived).
    pub body: Map<String, Value>,
    /// What the policy sees.
    pub summary: Request,
    /// Whether the client asked for usage in the stream.
    pub include_usage: bool,
    /// The session id from the body (`session_id`), if any.
    pub session_id: Option<String>,
    /// Whether the body asks for the session's history (`session_history: true`).
    pub session_history: bool,
    /// Choices asked for (`n`, 1 when absent): each may run to the completion limit.
    pub choices: u64,
}

fn depth_of(value: &Value) -> usize {
    // Iterative, so hostile nesting cannot overflow our own stack either.
    let mut deepest = 0;
    let mut stack = vec![(value, 1usize)];
    while let Some((v, d)) = stack.pop() {
        deepest = deepest.max(d);
        match v {
            Value::Array(items) => stack.extend(items.iter().map(|i| (i, d + 1))),
            Value::Object(map) => stack.extend(map.values().map(|i| (i, d + 1))),
            _ => {}
        }
    }
    deepest
}

fn bad(code: &'static str, message: impl Into<String>) -> GatewayError {
    GatewayError::bad_request(code, message)
}

fn message_text(message: &Value) -> (String, u32) {
    match message.get("content") {
        Some(Value::String(s)) => (s.clone(), 0),
        Some(Value::Array(parts)) => {
            let images = parts.iter().filter(|p| p.get("type").and_then(Value::as_str) == Some("image_url")).count() as u32;
            (crate::providers::openai_text(message), images)
        }
        _ => (String::new(), 0),
    }
}

/// Bytes of a JSON value as it is sent on.
fn json_bytes(value: &Value) -> u64 {
    serde_json::to_vec(value).map_or(0, |v| v.len() as u64)
}

/// Prompt tokens a message's parts other than text cost: images at [`IMAGE_PART_TOKENS`],
/// audio by its size, anything else (files) at its JSON size; plus its tool calls'
/// names and arguments.
fn media_and_tool_call_tokens(message: &Value) -> u64 {
    let mut tokens = 0u64;
    if let Some(Value::Array(parts)) = message.get("content") {
        for part in parts {
            tokens = tokens.saturating_add(match part.get("type").and_then(Value::as_str) {
                Some("text") => 0,
                Some("image_url") => IMAGE_PART_TOKENS,
                Some("input_audio") => {
                    let data = part.pointer("/input_audio/data").and_then(Value::as_str).map_or(0, str::len) as u64;
                    data.div_ceil(AUDIO_BASE64_BYTES_PER_TOKEN)
                }
                _ => json_bytes(part).div_ceil(4),
            });
        }
    }
    for field in ["tool_calls", "function_call"] {
        if let Some(calls) = message.get(field) {
            tokens = tokens.saturating_add(json_bytes(calls).div_ceil(4));
        }
    }
    tokens
}

/// Prompt tokens of what the request sends besides its messages: tool and function
/// schemas and a structured-output schema.
fn schema_tokens(body: &Map<String, Value>) -> u64 {
    ["tools", "functions", "response_format"].iter().filter_map(|f| body.get(*f)).map(|v| json_bytes(v).div_ceil(4)).sum()
}

impl ChatBody {
    /// Inserts stored session turns after the leading system messages, for the upstream
    /// and for the policy's view alike.
    pub fn prepend_history(&mut self, turns: &[crate::sessions::Turn]) {
        if turns.is_empty() {
            return;
        }
        let Some(Value::Array(messages)) = self.body.get_mut("messages") else { return };
        let at = messages.iter().take_while(|m| matches!(m.get("role").and_then(Value::as_str), Some("system" | "developer"))).count();
        let history: Vec<Value> = turns.iter().map(|t| serde_json::json!({"role": t.role, "content": t.content})).collect();
        messages.splice(at..at, history);
        let summary_at = self.summary.messages.iter().take_while(|m| m.role == "system" || m.role == "developer").count();
        let added: Vec<Message> = turns.iter().map(|t| Message { role: t.role.clone(), text: t.content.clone(), image_count: 0, tool_call_count: 0 }).collect();
        let extra_bytes: usize = turns.iter().map(|t| t.content.len()).sum();
        self.summary.messages.splice(summary_at..summary_at, added);
        self.summary.prompt_token_estimate = self.summary.prompt_token_estimate.saturating_add((extra_bytes as u64).div_ceil(4).min(u32::MAX as u64) as u32 + 3 * turns.len() as u32);
    }

    /// The text of the request's last user message (what a session stores as the turn).
    pub fn last_user_text(&self) -> Option<String> {
        self.summary.messages.iter().rev().find(|m| m.role == "user").map(|m| m.text.clone())
    }
}

/// A request body that must be a JSON object: every inbound API's first check.
pub fn parse_object(bytes: &[u8]) -> Result<Map<String, Value>, GatewayError> {
    match serde_json::from_slice(bytes) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(bad("invalid_request", "request body must be a JSON object")),
        Err(e) => Err(bad("invalid_json", format!("request body is not valid JSON: {e}"))),
    }
}

/// Parses and validates a body.
pub fn parse(bytes: &[u8]) -> Result<ChatBody, GatewayError> {
    let value: Value = serde_json::from_slice(bytes).map_err(|e| bad("invalid_json", format!("request body is not valid JSON: {e}")))?;
    from_value(value)
}

/// Validates a body already parsed: a chat body, or another API's translated into one
/// (which then needs no second JSON round trip).
pub fn from_value(value: Value) -> Result<ChatBody, GatewayError> {
    if depth_of(&value) > MAX_JSON_DEPTH {
        return Err(bad("invalid_json", format!("request body nests deeper than {MAX_JSON_DEPTH} levels")));
    }
    let Value::Object(mut body) = value else {
        return Err(bad("invalid_request", "request body must be a JSON object"));
    };
    let model = match body.get("model") {
        Some(Value::String(m)) if m.len() <= MAX_MODEL_BYTES => m.clone(),
        Some(Value::String(_)) => return Err(bad("invalid_model", format!("'model' is longer than {MAX_MODEL_BYTES} bytes"))),
        None => String::new(),
        Some(_) => return Err(bad("invalid_type", "'model' must be a string")),
    };
    let Some(Value::Array(messages)) = body.get("messages") else {
        return Err(bad("missing_messages", "'messages' must be a non-empty array"));
    };
    if messages.is_empty() || messages.len() > MAX_MESSAGES {
        return Err(bad("invalid_messages", format!("'messages' must hold 1 to {MAX_MESSAGES} messages")));
    }
    let message_count = messages.len() as u64;
    let mut summary_messages = Vec::with_capacity(messages.len());
    let mut prompt_bytes = 0usize;
    let mut extra_tokens = schema_tokens(&body);
    for (i, m) in messages.iter().enumerate() {
        let Some(role) = m.get("role").and_then(Value::as_str) else {
            return Err(bad("invalid_messages", format!("messages[{i}].role must be a string")));
        };
        if !matches!(role, "system" | "developer" | "user" | "assistant" | "tool" | "function") {
            return Err(bad("invalid_messages", format!("messages[{i}].role '{role}' is not one of system, developer, user, assistant, tool")));
        }
        match m.get("content") {
            None | Some(Value::Null) | Some(Value::String(_)) | Some(Value::Array(_)) => {}
            Some(_) => return Err(bad("invalid_messages", format!("messages[{i}].content must be a string or an array of parts"))),
        }
        let (text, image_count) = message_text(m);
        prompt_bytes += text.len();
        extra_tokens = extra_tokens.saturating_add(media_and_tool_call_tokens(m));
        let tool_call_count = m.get("tool_calls").and_then(Value::as_array).map(|a| a.len() as u32).unwrap_or(0);
        summary_messages.push(Message { role: role.into(), text, image_count, tool_call_count });
    }
    // Both limits are checked, and the smaller one is the request's: an upstream may
    // honour either, and the reservation must cover whichever it does.
    let mut max_tokens: Option<u32> = None;
    for field in ["max_completion_tokens", "max_tokens"] {
        match body.get(field) {
            None | Some(Value::Null) => {}
            Some(v) => {
                let limit = v.as_u64().filter(|n| *n > 0 && *n <= u32::MAX as u64).ok_or_else(|| bad("invalid_type", format!("'{field}' must be a positive integer")))? as u32;
                max_tokens = Some(max_tokens.map_or(limit, |m| m.min(limit)));
            }
        }
    }
    let choices = match body.get("n") {
        None | Some(Value::Null) => 1,
        Some(v) => v.as_u64().filter(|n| (1..=MAX_CHOICES).contains(n)).ok_or_else(|| bad("invalid_type", format!("'n' must be an integer from 1 to {MAX_CHOICES}")))?,
    };
    let temperature = match body.get("temperature") {
        None | Some(Value::Null) => None,
        Some(v) => Some(v.as_f64().filter(|t| (0.0..=2.0).contains(t)).ok_or_else(|| bad("invalid_type", "'temperature' must be a number from 0 to 2"))? as f32),
    };
    let stream = match body.get("stream") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(bad("invalid_type", "'stream' must be a boolean")),
    };
    let include_usage = body.get("stream_options").and_then(|o| o.get("include_usage")).and_then(Value::as_bool).unwrap_or(false);
    body.remove("stream_options");
    let end_user = match body.get("user") {
        None | Some(Value::Null) => None,
        Some(Value::String(u)) if u.len() <= 256 => Some(u.clone()),
        Some(_) => return Err(bad("invalid_type", "'user' must be a string of at most 256 bytes")),
    };
    let metadata = match body.get("metadata") {
        Some(Value::Object(map)) => map.iter().filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_string()))).take(MAX_METADATA).collect(),
        _ => Vec::new(),
    };
    let session_id = body.remove("session_id").and_then(|v| v.as_str().map(str::to_owned));
    let session_history = body.remove("session_history").and_then(|v| v.as_bool()).unwrap_or(false);
    let tool_count = body.get("tools").and_then(Value::as_array).map(|a| a.len() as u32).unwrap_or(0);
    let summary = Request {
        operation: Operation::Chat,
        // The chat path sets the API the client actually spoke (see `Caller::api`).
        api: Api::OpenaiChatCompletions,
        model,
        messages: summary_messages,
        max_tokens,
        temperature,
        stream,
        tool_count,
        end_user,
        metadata,
        prompt_token_estimate: (prompt_bytes as u64).div_ceil(4).saturating_add(extra_tokens).saturating_add(MESSAGE_OVERHEAD_TOKENS * message_count).min(u32::MAX as u64) as u32,
    };
    Ok(ChatBody { body, summary, include_usage, session_id, session_history, choices })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(bytes: &[u8]) -> String {
        match parse(bytes) {
            Err(GatewayError::BadRequest { code, .. }) => code.into(),
            other => format!("{other:?}"),
        }
    }

    #[test]
    fn bad_bodies_get_specific_codes() {
        assert_eq!(code(b"{not json"), "invalid_json");
        assert_eq!(code(b"[]"), "invalid_request");
        assert_eq!(code(br#"{"model":1,"messages":[]}"#), "invalid_type");
        assert_eq!(code(br#"{"model":"m"}"#), "missing_messages");
        assert_eq!(code(br#"{"model":"m","messages":[{"role":"wizard","content":"x"}]}"#), "invalid_messages");
        assert_eq!(code(br#"{"model":"m","messages":[{"role":"user","content":"x"}],"max_tokens":-1}"#), "invalid_type");
        assert_eq!(code(br#"{"model":"m","messages":[{"role":"user","content":"x"}],"temperature":9}"#), "invalid_type");
        let deep = format!("{{\"model\":\"m\",\"messages\":[{{\"role\":\"user\",\"content\":\"x\"}}],\"x\":{}{}}}", "[".repeat(100), "]".repeat(100));
        assert_eq!(code(deep.as_bytes()), "invalid_json");
        let very_deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert_eq!(code(very_deep.as_bytes()), "invalid_json");
    }

    #[test]
    fn limits_and_choices_are_validated_and_the_smaller_limit_wins() -> Result<(), GatewayError> {
        let base = r#""model":"m","messages":[{"role":"user","content":"x"}]"#;
        let parsed = parse(format!("{{{base},\"max_tokens\":10,\"max_completion_tokens\":100000,\"n\":4}}").as_bytes())?;
        assert_eq!((parsed.summary.max_tokens, parsed.choices), (Some(10), 4));
        assert_eq!(code(format!("{{{base},\"n\":0}}").as_bytes()), "invalid_type");
        assert_eq!(code(format!("{{{base},\"n\":1000}}").as_bytes()), "invalid_type");
        assert_eq!(code(format!("{{{base},\"max_completion_tokens\":\"9\"}}").as_bytes()), "invalid_type");
        Ok(())
    }

    #[test]
    fn tools_media_and_tool_calls_count_towards_the_prompt_estimate() -> Result<(), GatewayError> {
        let plain = parse(br#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#)?.summary.prompt_token_estimate;
        let schema = "x".repeat(4000);
        let with_tools = parse(format!(r#"{{"model":"m","messages":[{{"role":"user","content":"hi"}}],"tools":[{{"type":"function","function":{{"name":"f","description":"{schema}"}}}}]}}"#).as_bytes())?;
        assert!(with_tools.summary.prompt_token_estimate >= plain + 1000, "{}", with_tools.summary.prompt_token_estimate);
        let image = parse(br#"{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"hi"},{"type":"image_url","image_url":{"url":"data:image/png;base64,AAAA"}}]}]}"#)?;
        assert!(image.summary.prompt_token_estimate as u64 >= plain as u64 + IMAGE_PART_TOKENS);
        let audio = format!(r#"{{"model":"m","messages":[{{"role":"user","content":[{{"type":"input_audio","input_audio":{{"data":"{}","format":"wav"}}}}]}}]}}"#, "A".repeat(128_000));
        assert!(parse(audio.as_bytes())?.summary.prompt_token_estimate >= 1000);
        let args = "y".repeat(8000);
        let call = format!(r#"{{"model":"m","messages":[{{"role":"user","content":"hi"}},{{"role":"assistant","content":null,"tool_calls":[{{"id":"c","type":"function","function":{{"name":"f","arguments":"{args}"}}}}]}}]}}"#);
        assert!(parse(call.as_bytes())?.summary.prompt_token_estimate >= plain + 2000);
        Ok(())
    }

    #[test]
    fn summary_and_passthrough() -> Result<(), GatewayError> {
        let parsed = parse(br#"{"model":"gpt-4o","messages":[{"role":"user","content":[{"type":"text","text":"hi"},{"type":"image_url","image_url":{"url":"x"}}]}],
            "stream":true,"stream_options":{"include_usage":true},"tools":[{}],"seed":3,"user":"u1","max_tokens":10}"#)?;
        assert!(parsed.include_usage && parsed.summary.stream);
        assert_eq!(parsed.summary.messages[0].image_count, 1);
        assert_eq!(parsed.summary.tool_count, 1);
        assert_eq!(parsed.summary.end_user.as_deref(), Some("u1"));
        assert_eq!(parsed.body["seed"], 3);
        assert!(!parsed.body.contains_key("stream_options"));
        Ok(())
    }
}
