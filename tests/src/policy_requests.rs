//! The policy request the benchmarks call policies with: realistic, not minimal.

use tollgate::policy::{Api, Message, Operation, Request};

/// A chat for `model` of 20 messages (user and assistant in turn, ~170 bytes each), with
/// `max_tokens`, a temperature, an end user and one metadata pair.
pub fn realistic(model: &str) -> Request {
    let messages = (0..20)
        .map(|i| Message {
            role: if i % 2 == 0 { "user".into() } else { "assistant".into() },
            text: format!("message {i}: {}", "a realistic sentence of conversation. ".repeat(4)),
            image_count: 0,
            tool_call_count: 0,
        })
        .collect();
    Request { operation: Operation::Chat, api: Api::OpenaiChatCompletions, model: model.into(), messages, max_tokens: Some(512), temperature: Some(0.7), stream: false, tool_count: 0, end_user: Some("user-42".into()), metadata: vec![("team".into(), "search".into())], prompt_token_estimate: 900 }
}
