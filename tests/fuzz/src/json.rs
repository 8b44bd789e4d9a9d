//! Structured generators: JSON values biased towards the field names and values the
//! gateway and its adapters look at, so the fuzzer reaches translation logic instead of
//! spending its time on JSON syntax. Sizes are capped: allocation stays proportional to
//! the input.

use arbitrary::{Arbitrary, Result, Unstructured};
use serde_json::{Map, Number, Value};
use tollgate::policy::bindings::tollgate::policy::types;
use tollgate::providers::{ProviderKind, SseEvent};

/// Field names read by `wire::parse` and the adapters (requests and answers).
const KEYS: &[&str] = &[
    "model", "messages", "role", "content", "type", "text", "image_url", "url", "tool_calls", "function", "name", "arguments",
    "id", "tool_call_id", "max_tokens", "max_completion_tokens", "temperature", "top_p", "stream", "stream_options",
    "include_usage", "user", "metadata", "tools", "tool_choice", "stop", "session_id", "session_history", "parameters",
    "description", "choices", "delta", "usage", "prompt_tokens", "completion_tokens", "prompt_tokens_details", "cached_tokens",
    "index", "finish_reason", "message", "error", "input_tokens", "output_tokens", "cache_read_input_tokens",
    "cache_creation_input_tokens", "stop_reason", "content_block", "partial_json", "input", "candidates", "parts",
    "functionCall", "args", "finishReason", "usageMetadata", "promptTokenCount", "candidatesTokenCount",
    "thoughtsTokenCount", "cachedContentTokenCount", "promptFeedback", "blockReason", "thought", "cache_control",
];

/// String values the code branches on.
const STRINGS: &[&str] = &[
    "user", "assistant", "system", "developer", "tool", "function", "text", "image_url", "tool_use", "tool_result",
    "text_delta", "input_json_delta", "thinking_delta", "message_start", "content_block_start", "content_block_delta",
    "content_block_stop", "message_delta", "message_stop", "error", "ping", "[DONE]", "STOP", "MAX_TOKENS", "SAFETY",
    "end_turn", "max_tokens", "refusal", "auto", "required", "none", "data:image/png;base64,AAAA", "data:image/png,AAAA",
    "https://example.com/a.PNG?x#y", "gpt-4o", "demo-small", "claude-sonnet-4-20250514", "gemini-2.5-flash", "../x",
    "a/b", "a%2fb", "{}", "{\"city\":\"Paris\"}", "[1,2]", "", " ", "\r\n", "é", "\u{1F600}", "\u{0}",
];

/// Numbers at the edges the code converts or adds.
fn number(u: &mut Unstructured) -> Result<Value> {
    Ok(match u.int_in_range(0..=9u8)? {
        0 => Value::from(u64::MAX),
        1 => Value::from(u64::MAX / 2 + 1),
        2 => Value::from(u64::from(u32::MAX)),
        3 => Value::from(u64::from(u32::MAX) + 1),
        4 => Value::from(i64::MIN),
        5 => Value::from(u.int_in_range(0..=5000u64)?),
        6 => Value::from(-1),
        7 => Number::from_f64(f64::arbitrary(u)?).map(Value::Number).unwrap_or(Value::Null),
        8 => Number::from_f64(*u.choose(&[0.0, 0.5, 2.0, 2.000001, -0.0, 1e300, f64::MIN_POSITIVE])?).map(Value::Number).unwrap_or(Value::Null),
        _ => Value::from(u64::arbitrary(u)?),
    })
}

/// A string: a known one, or arbitrary text of at most 64 bytes.
pub fn string(u: &mut Unstructured) -> Result<String> {
    if bool::arbitrary(u)? {
        Ok(u.choose(STRINGS)?.to_string())
    } else {
        let s = <&str>::arbitrary(u)?;
        let mut end = s.len().min(64);
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        Ok(s[..end].to_string())
    }
}

fn key(u: &mut Unstructured) -> Result<String> {
    if u.ratio(7, 8)? { Ok(u.choose(KEYS)?.to_string()) } else { string(u) }
}

/// Any JSON value, nested at most `depth` deep, at most 6 items per container.
pub fn value(u: &mut Unstructured, depth: u32) -> Result<Value> {
    let kinds = if depth == 0 { 4 } else { 6 };
    Ok(match u.int_in_range(0..=kinds - 1)? {
        0 => Value::Null,
        1 => Value::Bool(bool::arbitrary(u)?),
        2 => number(u)?,
        3 => Value::String(string(u)?),
        4 => {
            let n = u.int_in_range(0..=6)?;
            Value::Array((0..n).map(|_| value(u, depth - 1)).collect::<Result<_>>()?)
        }
        _ => Value::Object(object(u, depth - 1)?),
    })
}

fn object(u: &mut Unstructured, depth: u32) -> Result<Map<String, Value>> {
    let n = u.int_in_range(0..=6)?;
    let mut map = Map::new();
    for _ in 0..n {
        map.insert(key(u)?, value(u, depth)?);
    }
    Ok(map)
}

/// A message part: text or image, sometimes mistyped.
fn part(u: &mut Unstructured) -> Result<Value> {
    Ok(match u.int_in_range(0..=3u8)? {
        0 => serde_json::json!({"type": "text", "text": string(u)?}),
        1 => serde_json::json!({"type": "image_url", "image_url": {"url": string(u)?}}),
        2 => serde_json::json!({"type": "image_url", "image_url": string(u)?}),
        _ => value(u, 2)?,
    })
}

/// A chat message as clients send them.
fn message(u: &mut Unstructured) -> Result<Value> {
    let mut m = Map::new();
    m.insert("role".into(), Value::String(u.choose(&["system", "developer", "user", "assistant", "tool", "function", "wizard"])?.to_string()));
    match u.int_in_range(0..=3u8)? {
        0 => {
            m.insert("content".into(), Value::String(string(u)?));
        }
        1 => {
            let n = u.int_in_range(0..=4)?;
            m.insert("content".into(), Value::Array((0..n).map(|_| part(u)).collect::<Result<_>>()?));
        }
        2 => {
            m.insert("content".into(), value(u, 2)?);
        }
        _ => {}
    }
    if bool::arbitrary(u)? {
        let n = u.int_in_range(0..=3)?;
        let calls = (0..n)
            .map(|_| Ok(serde_json::json!({"id": string(u)?, "type": "function", "function": {"name": string(u)?, "arguments": string(u)?}})))
            .collect::<Result<Vec<_>>>()?;
        m.insert("tool_calls".into(), Value::Array(calls));
    }
    if bool::arbitrary(u)? {
        m.insert("tool_call_id".into(), Value::String(string(u)?));
    }
    if u.ratio(1, 4)? {
        m.extend(object(u, 2)?);
    }
    Ok(Value::Object(m))
}

/// A request body: usually with messages, plus a few other fields.
pub fn chat_body(u: &mut Unstructured) -> Result<Value> {
    let mut body = Map::new();
    if u.ratio(7, 8)? {
        let n = u.int_in_range(0..=6)?;
        body.insert("messages".into(), Value::Array((0..n).map(|_| message(u)).collect::<Result<_>>()?));
    }
    if u.ratio(3, 4)? {
        body.insert("model".into(), Value::String(string(u)?));
    }
    if bool::arbitrary(u)? {
        let n = u.int_in_range(0..=3)?;
        let tools = (0..n)
            .map(|_| Ok(serde_json::json!({"type": *u.choose(&["function", "web_search"])?, "function": {"name": string(u)?, "parameters": value(u, 2)?}})))
            .collect::<Result<Vec<_>>>()?;
        body.insert("tools".into(), Value::Array(tools));
        body.insert("tool_choice".into(), value(u, 2)?);
    }
    body.extend(object(u, 3)?);
    Ok(Value::Object(body))
}

/// A whole (non-streaming) answer in `kind`'s shape, with fuzz-chosen values.
pub fn response(u: &mut Unstructured, kind: ProviderKind) -> Result<Value> {
    let mut v = match kind {
        ProviderKind::Openai => serde_json::json!({"choices": [{"message": {"content": string(u)?}}], "usage": usage(u, kind)?}),
        ProviderKind::Anthropic => {
            let n = u.int_in_range(0..=4)?;
            let blocks = (0..n).map(|_| content_block(u)).collect::<Result<Vec<_>>>()?;
            serde_json::json!({"content": blocks, "stop_reason": string(u)?, "usage": usage(u, kind)?})
        }
        ProviderKind::Gemini => {
            if u.ratio(1, 8)? {
                serde_json::json!({"promptFeedback": {"blockReason": "SAFETY"}, "usageMetadata": usage(u, kind)?})
            } else {
                serde_json::json!({"candidates": [gemini_candidate(u)?], "usageMetadata": usage(u, kind)?})
            }
        }
        ProviderKind::Demo => chat_body(u)?,
    };
    if u.ratio(1, 4)? {
        if let Value::Object(map) = &mut v {
            map.extend(object(u, 2)?);
        }
    }
    Ok(v)
}

/// A usage object in `kind`'s field names, with edge-case counts.
fn usage(u: &mut Unstructured, kind: ProviderKind) -> Result<Value> {
    let fields: &[&str] = match kind {
        ProviderKind::Anthropic => &["input_tokens", "output_tokens", "cache_read_input_tokens", "cache_creation_input_tokens"],
        ProviderKind::Gemini => &["promptTokenCount", "candidatesTokenCount", "thoughtsTokenCount", "cachedContentTokenCount"],
        _ => &["prompt_tokens", "completion_tokens"],
    };
    let mut map = Map::new();
    for field in fields {
        if u.ratio(3, 4)? {
            map.insert(field.to_string(), number(u)?);
        }
    }
    if kind == ProviderKind::Openai && bool::arbitrary(u)? {
        map.insert("prompt_tokens_details".into(), serde_json::json!({"cached_tokens": number(u)?}));
    }
    Ok(Value::Object(map))
}

fn content_block(u: &mut Unstructured) -> Result<Value> {
    Ok(match u.int_in_range(0..=3u8)? {
        0 => serde_json::json!({"type": "text", "text": string(u)?}),
        1 => serde_json::json!({"type": "tool_use", "id": string(u)?, "name": string(u)?, "input": value(u, 2)?}),
        2 => serde_json::json!({"type": "thinking", "thinking": string(u)?}),
        _ => value(u, 2)?,
    })
}

fn gemini_candidate(u: &mut Unstructured) -> Result<Value> {
    let n = u.int_in_range(0..=4)?;
    let parts = (0..n)
        .map(|_| {
            Ok(match u.int_in_range(0..=3u8)? {
                0 => serde_json::json!({"text": string(u)?}),
                1 => serde_json::json!({"text": string(u)?, "thought": true}),
                2 => serde_json::json!({"functionCall": {"name": string(u)?, "args": value(u, 2)?}}),
                _ => value(u, 2)?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let mut candidate = serde_json::json!({"content": {"parts": parts}});
    if bool::arbitrary(u)? {
        candidate["finishReason"] = Value::String(string(u)?);
    }
    Ok(candidate)
}

/// One streamed event in `kind`'s shape (or raw data).
pub fn stream_event(u: &mut Unstructured, kind: ProviderKind) -> Result<SseEvent> {
    if u.ratio(1, 8)? {
        let event = if bool::arbitrary(u)? { Some(string(u)?) } else { None };
        return Ok(SseEvent { event, data: string(u)? });
    }
    let (event, data) = match kind {
        ProviderKind::Openai => {
            let mut chunk = serde_json::json!({"choices": [{"delta": {"content": string(u)?}}]});
            if bool::arbitrary(u)? {
                chunk["choices"][0]["delta"]["tool_calls"] = serde_json::json!([{"index": number(u)?, "function": {"arguments": string(u)?}}]);
            }
            if bool::arbitrary(u)? {
                chunk["usage"] = usage(u, kind)?;
            }
            (None, if u.ratio(1, 8)? { "[DONE]".to_string() } else { chunk.to_string() })
        }
        ProviderKind::Anthropic => {
            let kinds = ["message_start", "content_block_start", "content_block_delta", "message_delta", "message_stop", "error", "ping"];
            let name = *u.choose(&kinds)?;
            let data = match name {
                "message_start" => serde_json::json!({"type": name, "message": {"usage": usage(u, kind)?}}),
                "content_block_start" => serde_json::json!({"type": name, "index": number(u)?, "content_block": content_block(u)?}),
                "content_block_delta" => {
                    let delta = match u.int_in_range(0..=2u8)? {
                        0 => serde_json::json!({"type": "text_delta", "text": string(u)?}),
                        1 => serde_json::json!({"type": "input_json_delta", "partial_json": string(u)?}),
                        _ => value(u, 2)?,
                    };
                    serde_json::json!({"type": name, "index": number(u)?, "delta": delta})
                }
                "message_delta" => serde_json::json!({"type": name, "delta": {"stop_reason": string(u)?}, "usage": usage(u, kind)?}),
                "error" => serde_json::json!({"type": name, "error": {"message": string(u)?}}),
                _ => serde_json::json!({"type": name}),
            };
            // The `event:` line may disagree with the data's `type`.
            let event = if u.ratio(7, 8)? { Some(name.to_string()) } else { Some(string(u)?) };
            (event, data.to_string())
        }
        ProviderKind::Gemini => {
            let mut data = serde_json::json!({"candidates": [gemini_candidate(u)?]});
            if bool::arbitrary(u)? {
                data["usageMetadata"] = usage(u, kind)?;
            }
            if u.ratio(1, 8)? {
                data = serde_json::json!({"promptFeedback": {"blockReason": string(u)?}});
            }
            if u.ratio(1, 16)? {
                data = serde_json::json!({"error": {"message": string(u)?}});
            }
            (None, data.to_string())
        }
        ProviderKind::Demo => {
            if bool::arbitrary(u)? {
                (Some("word".to_string()), string(u)?)
            } else {
                let a = number(u)?;
                let b = number(u)?;
                (Some("usage".to_string()), format!("{a} {b}"))
            }
        }
    };
    Ok(SseEvent { event, data })
}

/// A guest's decision, with strings that probe every bound (long, non-ASCII, control
/// characters) and temperatures including NaN and infinities.
pub fn decision(u: &mut Unstructured) -> Result<types::Decision> {
    if u.ratio(1, 4)? {
        return Ok(types::Decision::Reject(types::Rejection { status: u16::arbitrary(u)?, code: bounded_string(u)?, message: bounded_string(u)? }));
    }
    let n = u.int_in_range(0..=12)?;
    let targets = (0..n)
        .map(|_| {
            Ok(types::Target {
                provider: bounded_string(u)?,
                model: bounded_string(u)?,
                credential: bounded_string(u)?,
                max_tokens: Option::<u32>::arbitrary(u)?,
                temperature: if bool::arbitrary(u)? {
                    Some(*u.choose(&[0.0, 2.0, 2.0000002, -0.0, -1e-9, f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 1.0])?)
                } else {
                    Option::<f32>::arbitrary(u)?
                },
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let tags_n = u.int_in_range(0..=20)?;
    let tags = (0..tags_n).map(|_| bounded_string(u)).collect::<Result<Vec<_>>>()?;
    Ok(types::Decision::Route(types::Plan {
        targets,
        reserve_microdollars: Option::<u64>::arbitrary(u)?,
        tags,
        trace: bounded_string(u)?,
        notify_complete: bool::arbitrary(u)?,
    }))
}

/// A string for a decision field: short arbitrary text, or a fuzz-chosen character
/// repeated to a fuzz-chosen length of at most 2 KiB (past every limit).
fn bounded_string(u: &mut Unstructured) -> Result<String> {
    if u.ratio(1, 4)? {
        let c = *u.choose(&['a', 'é', '\u{1F600}', '\r', '\n', '\u{7f}', '\0', '~', ' '])?;
        let n = u.int_in_range(0..=2048usize)? / c.len_utf8();
        return Ok(std::iter::repeat_n(c, n).collect());
    }
    string(u)
}
