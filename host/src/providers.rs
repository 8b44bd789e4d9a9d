//! Provider adapters behind one small trait, one file each. An adapter is pure: it builds
//! the upstream HTTP request from an OpenAI-shaped body and translates the upstream's
//! answer (whole or streamed) back into OpenAI's shape, extracting token usage. Sending,
//! retries and timeouts live in [`crate::upstream`], so adapters can be tested and fuzzed
//! without a network.
//!
//! The upstream host always comes from the operator's configuration (`base_url`); nothing
//! in a request, a credential or a policy decision can change it.

pub mod anthropic;
pub mod bounded_json;
pub mod demo;
pub mod embeddings;
pub mod gemini;
pub mod openai;
pub mod relayed_chunk;
pub mod sse;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::secret::Secret;

pub use embeddings::{Embeddings, EmbeddingsCall};
pub use relayed_chunk::{RelayedChunk, UsageField};
pub use sse::{SseEvent, SseParser};

/// Which wire format a provider speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    /// OpenAI chat completions (OpenAI, Azure-style, vLLM, Ollama, Groq, ...).
    Openai,
    /// Anthropic Messages API.
    Anthropic,
    /// Google Gemini `generateContent`.
    Gemini,
    /// Built-in deterministic provider; no network.
    Demo,
}

impl ProviderKind {
    /// The public endpoint, following each official SDK's convention (OpenAI's includes
    /// `/v1`; Anthropic's and Gemini's are the bare host).
    pub fn default_base_url(self) -> &'static str {
        match self {
            ProviderKind::Openai => "https://api.openai.com/v1",
            ProviderKind::Anthropic => "https://api.anthropic.com",
            ProviderKind::Gemini => "https://generativelanguage.googleapis.com",
            ProviderKind::Demo => "demo:",
        }
    }

    /// The adapter for this kind.
    pub fn adapter(self) -> &'static dyn Provider {
        match self {
            ProviderKind::Openai => &openai::OpenAi,
            ProviderKind::Anthropic => &anthropic::Anthropic,
            ProviderKind::Gemini => &gemini::Gemini,
            ProviderKind::Demo => &demo::Demo,
        }
    }
}

/// Token usage an upstream reported.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Prompt (input) tokens.
    pub prompt_tokens: u64,
    /// Completion (output) tokens.
    pub completion_tokens: u64,
    /// Prompt tokens served from the provider's cache.
    pub cached_tokens: u64,
    /// Prompt tokens written to the provider's cache (Anthropic's cache creation).
    #[serde(default)]
    pub cache_write_tokens: u64,
}

/// One chat call for one target: an OpenAI chat-completions body whose `model`,
/// `max_tokens` and `temperature` the gateway already set for that target.
#[derive(Debug)]
pub struct ChatCall<'a> {
    /// The body, OpenAI-shaped; fields the gateway does not interpret are kept.
    pub body: &'a Map<String, Value>,
    /// The model to ask for (also in `body`).
    pub model: &'a str,
    /// Whether to stream.
    pub stream: bool,
}

/// An HTTP request ready to send upstream.
#[derive(Debug)]
pub struct UpstreamRequest {
    /// Full URL: the operator's base URL plus the adapter's path.
    pub url: String,
    /// Headers, including authentication.
    pub headers: Vec<(http::HeaderName, http::HeaderValue)>,
    /// JSON body.
    pub body: Bytes,
}

/// An adapter could not build a request or read a response.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProviderError {
    /// The request cannot be expressed in this provider's format.
    #[error("request not supported by this provider: {0}")]
    Unsupported(String),
    /// The upstream's answer did not parse or lacked required fields.
    #[error("upstream sent an unreadable response: {0}")]
    BadResponse(String),
    /// No key was available for a provider that needs one.
    #[error("no provider key: assign a credential to this target or pass X-Provider-API-Key where allowed")]
    MissingKey,
}

/// A provider's wire format.
pub trait Provider: Send + Sync {
    /// Builds the upstream request under the operator's `base_url`.
    fn build(&self, base_url: &str, call: &ChatCall<'_>, key: Option<&Secret>) -> Result<UpstreamRequest, ProviderError>;

    /// Translates a 2xx non-streaming body into an OpenAI `chat.completion` object.
    fn translate(&self, body: &[u8], model: &str, request_id: &str) -> Result<(Value, Usage), ProviderError>;

    /// A translator for one streamed response.
    fn stream(&self, model: &str, request_id: &str) -> Box<dyn StreamTranslator>;

    /// The message of a non-2xx body, for the client's error (never headers). Whole: the
    /// caller redacts the key and then cuts it ([`crate::redact::Redactor::message`]).
    fn error_message(&self, status: u16, body: &[u8]) -> String {
        upstream_error_message(status, body)
    }

    /// Builds an embeddings request under the operator's `base_url`. Unsupported unless
    /// the provider has an embeddings endpoint.
    fn build_embeddings(&self, _base_url: &str, _call: &EmbeddingsCall<'_>, _key: Option<&Secret>) -> Result<UpstreamRequest, ProviderError> {
        Err(embeddings::unsupported())
    }

    /// Reads a 2xx embeddings body: one vector per input, in order.
    fn translate_embeddings(&self, _body: &[u8], _call: &EmbeddingsCall<'_>) -> Result<Embeddings, ProviderError> {
        Err(embeddings::unsupported())
    }

    /// Answers `request` in process instead of over the network: the body an upstream
    /// would have sent with status 200. Only the built-in `demo` provider does; every
    /// other provider is reached over HTTP.
    fn answer_in_process(&self, _request: &UpstreamRequest) -> Option<Result<bytes::Bytes, ProviderError>> {
        None
    }
}

/// Turns one streamed response into OpenAI `chat.completion.chunk` objects.
pub trait StreamTranslator: Send {
    /// Feeds one SSE event; returns the chunks to send to the client, in order.
    fn event(&mut self, event: &SseEvent) -> Result<Vec<Value>, ProviderError>;
    /// Feeds one SSE event for the stream pump: [`Translated::Relayed`] from a translator
    /// whose upstream sends OpenAI chunks already, so the pump can forward their bytes;
    /// by default the chunks [`Self::event`] builds.
    fn translate(&mut self, event: &SseEvent) -> Result<Translated, ProviderError> {
        self.event(event).map(Translated::Built)
    }
    /// Usage seen so far: a cut stream is billed for what flowed.
    fn usage(&self) -> Usage;
    /// Completion bytes seen so far, text plus tool-call arguments (estimates usage when
    /// the upstream sends none or the stream is cut).
    fn completion_bytes(&self) -> u64;
    /// Whether the upstream has signalled the end of the stream.
    fn finished(&self) -> bool;
}

/// What one upstream event becomes.
#[derive(Debug)]
pub enum Translated {
    /// Chunks the translator built (none for an event that carries no chunk).
    Built(Vec<Value>),
    /// The upstream's own chunk, read but not rebuilt.
    Relayed(RelayedChunk),
}

/// The `error.message` of an OpenAI/Anthropic/Gemini-shaped error body, else a generic
/// message with the status. Not cut here: a cut before the key is redacted could leave
/// the start of a key that straddled it.
pub fn upstream_error_message(status: u16, body: &[u8]) -> String {
    let message = bounded_json::parse(body, bounded_json::MAX_EVENT_PARSE_BYTES).ok().and_then(|v| {
        v.pointer("/error/message").and_then(Value::as_str).map(str::to_owned)
    });
    message.unwrap_or_else(|| format!("upstream answered HTTP {status}"))
}

/// Builds a header value, refusing bytes that would split or smuggle headers.
pub fn header_value(value: &str) -> Result<http::HeaderValue, ProviderError> {
    http::HeaderValue::from_str(value).map_err(|_| ProviderError::Unsupported("a header value contains forbidden characters".into()))
}

/// Joins a base URL and a path with exactly one slash.
pub fn join_url(base_url: &str, path: &str) -> String {
    format!("{}/{}", base_url.trim_end_matches('/'), path.trim_start_matches('/'))
}

/// Standard OpenAI `chat.completion.chunk` envelope around one choice delta.
pub fn chunk(request_id: &str, model: &str, created: u64, delta: Value, finish_reason: Option<&str>) -> Value {
    serde_json::json!({
        "id": format!("chatcmpl-{request_id}"),
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
    })
}

/// The final usage-only chunk OpenAI sends when `stream_options.include_usage` is set.
pub fn usage_chunk(request_id: &str, model: &str, created: u64, usage: Usage) -> Value {
    serde_json::json!({
        "id": format!("chatcmpl-{request_id}"),
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": [],
        "usage": usage_json(usage),
    })
}

/// OpenAI's `usage` object.
pub fn usage_json(usage: Usage) -> Value {
    serde_json::json!({
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        // Saturating: the counts come from the upstream, which may report anything.
        "total_tokens": usage.prompt_tokens.saturating_add(usage.completion_tokens),
        "prompt_tokens_details": {"cached_tokens": usage.cached_tokens},
    })
}

/// The text of an OpenAI message: a string `content`, or the text parts of an array.
pub fn openai_text(message: &Value) -> String {
    match message.get("content") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}
