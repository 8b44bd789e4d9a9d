//! The Responses stream: the chat path's OpenAI SSE chunks re-encoded as the typed
//! Responses events (`response.created`, `response.in_progress`, per output item
//! `response.output_item.added` ... `response.output_item.done`, and last
//! `response.completed`, `response.incomplete` or `response.failed`), each numbered by
//! `sequence_number`.

use bytes::Bytes;
use http::Response;
use serde_json::{json, Value};

use super::{call_item, message_item, status, text_part, usage, Meta, Store};
use crate::server::reencode::{self, StreamEncoder};
use crate::server::Body;

fn event(data: Value) -> Bytes {
    let name = data.get("type").and_then(Value::as_str).unwrap_or("error").to_string();
    Bytes::from(format!("event: {name}\ndata: {data}\n\n"))
}

/// Re-encodes the chat path's OpenAI SSE stream as Responses stream events.
pub(super) fn encode(response: Response<Body>, meta: Meta, store: Option<Store>) -> Response<Body> {
    reencode::respond(response, Storing { encoder: Encoder::new(meta), store })
}

/// The encoder, and the conversation to store before the final event, so a client that
/// continues it at once finds it.
struct Storing {
    encoder: Encoder,
    store: Option<Store>,
}

impl StreamEncoder for Storing {
    async fn data(&mut self, payload: &str) -> Vec<Bytes> {
        let mut out = self.encoder.data(payload);
        if self.encoder.completed {
            let last = out.pop();
            if let Some(store) = self.store.take() {
                store.save(&self.encoder.meta.id, self.encoder.reply()).await;
            }
            out.extend(last);
        }
        out
    }

    fn ended(&self) -> bool {
        self.encoder.ended
    }

    fn fail(&mut self, message: &str) -> Vec<Bytes> {
        self.encoder.fail(message)
    }
}

/// An output item being streamed.
enum Item {
    /// The assistant text.
    Text { output_index: usize, text: String },
    /// A tool call, by its chat call index.
    Call { output_index: usize, index: u64, id: String, call_id: Value, name: Value, arguments: String },
}

/// Turns OpenAI chunks into Responses events, tracking the open output item.
struct Encoder {
    meta: Meta,
    model: String,
    sequence: u64,
    started: bool,
    open: Option<Item>,
    /// Finished output items, in output order.
    done: Vec<Value>,
    /// Every tool call seen, for the stored reply.
    calls: Vec<Value>,
    text: String,
    finish: Option<String>,
    usage: Value,
    /// `[DONE]` was translated (the last event is the final response).
    completed: bool,
    ended: bool,
}

impl Encoder {
    fn new(meta: Meta) -> Self {
        let model = meta.echo.model.clone();
        Encoder { meta, model, sequence: 0, started: false, open: None, done: Vec::new(), calls: Vec::new(), text: String::new(), finish: None, usage: Value::Null, completed: false, ended: false }
    }

    /// Numbers and frames one event.
    fn push(&mut self, mut data: Value, out: &mut Vec<Bytes>) {
        data["sequence_number"] = json!(self.sequence);
        self.sequence += 1;
        out.push(event(data));
    }

    fn start(&mut self, chunk: Option<&Value>, out: &mut Vec<Bytes>) {
        if self.started {
            return;
        }
        self.started = true;
        if let Some(model) = chunk.and_then(|c| c.get("model")).and_then(Value::as_str) {
            self.model = model.to_string();
        }
        let response = self.meta.response(&self.model, "in_progress", Vec::new(), Value::Null, None, Value::Null);
        self.push(json!({"type": "response.created", "response": response}), out);
        self.push(json!({"type": "response.in_progress", "response": response}), out);
    }

    fn next_index(&self) -> usize {
        self.done.len() + usize::from(self.open.is_some())
    }

    /// Closes the open item: its `.done` events.
    fn close(&mut self, out: &mut Vec<Bytes>) {
        let status = if status(self.finish.as_deref()).0 == "completed" { "completed" } else { "incomplete" };
        match self.open.take() {
            None => {}
            Some(Item::Text { output_index, text }) => {
                let id = self.meta.message_id();
                self.push(json!({"type": "response.output_text.done", "item_id": id, "output_index": output_index, "content_index": 0, "text": text, "logprobs": []}), out);
                self.push(json!({"type": "response.content_part.done", "item_id": id, "output_index": output_index, "content_index": 0, "part": text_part(&text)}), out);
                let item = message_item(&id, status, vec![text_part(&text)]);
                self.push(json!({"type": "response.output_item.done", "output_index": output_index, "item": item}), out);
                self.done.push(item);
            }
            Some(Item::Call { output_index, id, call_id, name, arguments, .. }) => {
                self.push(json!({"type": "response.function_call_arguments.done", "item_id": id, "output_index": output_index, "name": name, "arguments": arguments}), out);
                let item = call_item(&id, &call_id, &name, &arguments, "completed");
                self.push(json!({"type": "response.output_item.done", "output_index": output_index, "item": item}), out);
                self.calls.push(json!({"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}));
                self.done.push(item);
            }
        }
    }

    fn text_delta(&mut self, delta: &str, out: &mut Vec<Bytes>) {
        if !matches!(self.open, Some(Item::Text { .. })) {
            self.close(out);
            let output_index = self.next_index();
            let id = self.meta.message_id();
            self.push(json!({"type": "response.output_item.added", "output_index": output_index, "item": message_item(&id, "in_progress", Vec::new())}), out);
            self.push(json!({"type": "response.content_part.added", "item_id": id, "output_index": output_index, "content_index": 0, "part": text_part("")}), out);
            self.open = Some(Item::Text { output_index, text: String::new() });
        }
        let Some(Item::Text { output_index, text }) = &mut self.open else { return };
        text.push_str(delta);
        self.text.push_str(delta);
        let output_index = *output_index;
        self.push(json!({"type": "response.output_text.delta", "item_id": self.meta.message_id(), "output_index": output_index, "content_index": 0, "delta": delta, "logprobs": []}), out);
    }

    fn call_delta(&mut self, call: &Value, out: &mut Vec<Bytes>) {
        let index = call.get("index").and_then(Value::as_u64).unwrap_or(0);
        if !matches!(self.open, Some(Item::Call { index: open, .. }) if open == index) {
            self.close(out);
            let output_index = self.next_index();
            let id = self.meta.call_id(index);
            let (call_id, name) = (call.get("id").cloned().unwrap_or(Value::Null), call.pointer("/function/name").cloned().unwrap_or(Value::Null));
            self.push(json!({"type": "response.output_item.added", "output_index": output_index, "item": call_item(&id, &call_id, &name, "", "in_progress")}), out);
            self.open = Some(Item::Call { output_index, index, id, call_id, name, arguments: String::new() });
        }
        let Some(delta) = call.pointer("/function/arguments").and_then(Value::as_str).filter(|a| !a.is_empty()) else { return };
        let Some(Item::Call { output_index, id, arguments, .. }) = &mut self.open else { return };
        arguments.push_str(delta);
        let data = json!({"type": "response.function_call_arguments.delta", "item_id": id, "output_index": *output_index, "delta": delta});
        self.push(data, out);
    }

    /// The reply as stored: the streamed text and tool calls.
    fn reply(&self) -> Value {
        let mut reply = json!({"role": "assistant", "content": if self.text.is_empty() { Value::Null } else { Value::String(self.text.clone()) }});
        if !self.calls.is_empty() {
            reply["tool_calls"] = Value::Array(self.calls.clone());
        }
        reply
    }

    /// Events for one `data:` payload.
    fn data(&mut self, payload: &str) -> Vec<Bytes> {
        let mut out = Vec::new();
        if payload == "[DONE]" {
            self.start(None, &mut out);
            self.close(&mut out);
            let (status, incomplete) = status(self.finish.as_deref());
            let usage = if self.usage.is_null() { usage(&Value::Null) } else { self.usage.clone() };
            let response = self.meta.response(&self.model, status, self.done.clone(), usage, incomplete, Value::Null);
            let kind = if status == "completed" { "response.completed" } else { "response.incomplete" };
            self.push(json!({"type": kind, "response": response}), &mut out);
            self.completed = true;
            self.ended = true;
            return out;
        }
        let Ok(chunk) = serde_json::from_str::<Value>(payload) else {
            return self.fail("the stream carried an unreadable chunk");
        };
        if let Some(error) = chunk.get("error") {
            let message = error.get("message").and_then(Value::as_str).unwrap_or("the stream failed").to_string();
            return self.fail(&message);
        }
        self.start(Some(&chunk), &mut out);
        if let Some(u) = chunk.get("usage").filter(|u| !u.is_null()) {
            self.usage = usage(u);
        }
        let Some(choice) = chunk.pointer("/choices/0") else { return out };
        if let Some(text) = choice.pointer("/delta/content").and_then(Value::as_str).filter(|t| !t.is_empty()) {
            self.text_delta(text, &mut out);
        }
        for call in choice.pointer("/delta/tool_calls").and_then(Value::as_array).into_iter().flatten() {
            self.call_delta(call, &mut out);
        }
        if let Some(finish) = choice.get("finish_reason").and_then(Value::as_str) {
            self.finish = Some(finish.to_string());
        }
        out
    }

    /// A `response.failed` event with what was output so far, which ends the stream.
    fn fail(&mut self, message: &str) -> Vec<Bytes> {
        let mut out = Vec::new();
        self.start(None, &mut out);
        self.ended = true;
        let mut output = self.done.clone();
        match &self.open {
            Some(Item::Text { text, .. }) => output.push(message_item(&self.meta.message_id(), "incomplete", vec![text_part(text)])),
            Some(Item::Call { id, call_id, name, arguments, .. }) => output.push(call_item(id, call_id, name, arguments, "incomplete")),
            None => {}
        }
        let error = json!({"code": "server_error", "message": message});
        let response = self.meta.response(&self.model, "failed", output, self.usage.clone(), None, error);
        self.push(json!({"type": "response.failed", "response": response}), &mut out);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::meta;
    use super::*;

    #[test]
    fn streams_text_then_a_tool_call_with_numbered_events() {
        let mut encoder = Encoder::new(meta());
        let mut events = Vec::new();
        for payload in [
            r#"{"id":"chatcmpl-1","model":"m","choices":[{"index":0,"delta":{"role":"assistant","content":"Hi"},"finish_reason":null}]}"#,
            r#"{"id":"chatcmpl-1","model":"m","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"c1","type":"function","function":{"name":"f","arguments":"{\"q\""}}]},"finish_reason":null}]}"#,
            r#"{"id":"chatcmpl-1","model":"m","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":":1}"}}]},"finish_reason":"tool_calls"}]}"#,
            r#"{"id":"chatcmpl-1","model":"m","choices":[],"usage":{"prompt_tokens":5,"completion_tokens":3}}"#,
            "[DONE]",
        ] {
            events.extend(encoder.data(payload));
        }
        let parsed: Vec<Value> = events.iter().map(|e| String::from_utf8_lossy(e).split_once("\ndata: ").and_then(|(_, d)| serde_json::from_str(d.trim_end()).ok()).unwrap_or(Value::Null)).collect();
        let types: Vec<&str> = parsed.iter().map(|e| e["type"].as_str().unwrap_or_default()).collect();
        assert_eq!(types, [
            "response.created", "response.in_progress", "response.output_item.added", "response.content_part.added", "response.output_text.delta",
            "response.output_text.done", "response.content_part.done", "response.output_item.done", "response.output_item.added",
            "response.function_call_arguments.delta", "response.function_call_arguments.delta", "response.function_call_arguments.done",
            "response.output_item.done", "response.completed",
        ]);
        assert!(parsed.iter().enumerate().all(|(i, e)| e["sequence_number"] == json!(i)));
        let last = &parsed[parsed.len() - 1]["response"];
        assert_eq!(last["output"][1]["arguments"], "{\"q\":1}");
        assert_eq!(last["usage"]["total_tokens"], 8);
        assert_eq!(encoder.reply(), json!({"role": "assistant", "content": "Hi", "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{\"q\":1}"}}]}));
    }
}
