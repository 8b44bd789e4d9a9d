//! What each tenant's policy decided its recent requests on, kept so a candidate policy
//! can be replayed against real traffic before it is assigned (`server/replay.rs`).
//!
//! One record per routed request, in a bounded journal per tenant (the newest
//! `[policy] decision_inputs_kept`, 0 keeps none) on the policy log's machinery
//! (`policy_log.rs`, [`Stream::DecisionInputs`]): stored under the tenant's incarnation and
//! deleted with it. A record holds the request as the policy saw it, but message text
//! only for requests in a session (`X-Session-ID`), whose text the tenant chose to store
//! anyway; otherwise each message keeps its role, counts and length, never its words.
//! Written after the decision, off the request's wait.

use serde::{Deserialize, Serialize};

use crate::policy::{Api, Context, LogLine, Message, Operation, Request};
use crate::policy_log::{PolicyLog, PolicyLogs, Stream};

/// The journal level of a decision input line.
const LEVEL: &str = "input";

/// Every tenant's decision-input journal.
#[derive(Clone)]
pub struct DecisionInputs {
    journals: PolicyLogs,
}

impl DecisionInputs {
    /// Beside `logs` (the same store), keeping `keep` per tenant.
    pub fn beside(logs: &PolicyLogs, keep: usize) -> Self {
        Self { journals: logs.stream(Stream::DecisionInputs, keep) }
    }

    /// Whether any are kept.
    pub fn enabled(&self) -> bool {
        self.journals.keep() > 0
    }

    /// The journal of the tenant stored under `storage_id`.
    pub fn tenant(&self, storage_id: &str) -> PolicyLog {
        self.journals.tenant(storage_id)
    }

    /// Removes a deleted tenant's records (see [`PolicyLogs::purge_tenant`]).
    pub async fn purge_tenant(&self, storage_id: &str) -> Result<(), crate::store::StoreError> {
        self.journals.purge_tenant(storage_id).await
    }

    /// The newest `limit` records at or after `since_millis`, oldest first.
    pub async fn read(&self, storage_id: &str, since_millis: u64, limit: usize) -> Result<Vec<DecisionInput>, crate::store::StoreError> {
        let lines = self.tenant(storage_id).read(self.journals.keep()).await?;
        let mut inputs: Vec<DecisionInput> = lines.iter().filter(|l| l.level == LEVEL).filter_map(|l| serde_json::from_str(&l.message).ok()).filter(|i: &DecisionInput| i.unix_millis >= since_millis).collect();
        let excess = inputs.len().saturating_sub(limit);
        inputs.drain(..excess);
        Ok(inputs)
    }
}

/// One routed request's decision and what it was made on.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DecisionInput {
    /// The request.
    pub request_id: String,
    /// When it arrived.
    pub unix_millis: u64,
    /// Its session, if any.
    pub session_id: Option<String>,
    /// What the policy was handed.
    pub request: RecordedRequest,
    /// The policy that decided (hash).
    pub policy: String,
    /// What it decided (as `server/compare.rs` summarises decisions).
    pub decision: serde_json::Value,
}

impl DecisionInput {
    /// The line to journal for `request`, decided by `policy` in `context`.
    pub fn line(request: &Request, context: &Context, policy: &str, decision: serde_json::Value) -> LogLine {
        let input = DecisionInput {
            request_id: context.request_id.clone(),
            unix_millis: context.unix_millis,
            session_id: context.session_id.clone(),
            request: RecordedRequest::of(request, context.session_id.is_some()),
            policy: policy.to_string(),
            decision,
        };
        LogLine { unix_millis: context.unix_millis, level: LEVEL.into(), message: serde_json::to_string(&input).unwrap_or_default(), request_id: context.request_id.clone() }
    }
}

/// A policy request as recorded.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RecordedRequest {
    /// `chat` or `embeddings`.
    pub operation: String,
    /// The inbound API.
    pub api: String,
    pub model: String,
    pub messages: Vec<RecordedMessage>,
    pub max_tokens: Option<u32>,
    pub temperature: Option<f32>,
    pub stream: bool,
    pub tool_count: u32,
    pub end_user: Option<String>,
    pub metadata: Vec<(String, String)>,
    pub prompt_token_estimate: u32,
}

/// A message as recorded: its text only when the request was in a session.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RecordedMessage {
    pub role: String,
    /// Empty unless kept.
    pub text: String,
    /// The text's length in bytes (kept or not).
    pub text_bytes: usize,
    pub image_count: u32,
    pub tool_call_count: u32,
}

impl RecordedRequest {
    fn of(request: &Request, keep_text: bool) -> Self {
        Self {
            operation: match request.operation {
                Operation::Chat => "chat",
                Operation::Embeddings => "embeddings",
            }
            .into(),
            api: match request.api {
                Api::OpenaiChatCompletions => "openai-chat-completions",
                Api::OpenaiResponses => "openai-responses",
                Api::AnthropicMessages => "anthropic-messages",
                Api::OpenaiEmbeddings => "openai-embeddings",
            }
            .into(),
            model: request.model.clone(),
            messages: request
                .messages
                .iter()
                .map(|m| RecordedMessage { role: m.role.clone(), text: if keep_text { m.text.clone() } else { String::new() }, text_bytes: m.text.len(), image_count: m.image_count, tool_call_count: m.tool_call_count })
                .collect(),
            max_tokens: request.max_tokens,
            temperature: request.temperature,
            stream: request.stream,
            tool_count: request.tool_count,
            end_user: request.end_user.clone(),
            metadata: request.metadata.clone(),
            prompt_token_estimate: request.prompt_token_estimate,
        }
    }

    /// The request to hand a policy on replay.
    pub fn to_request(&self) -> Request {
        Request {
            operation: if self.operation == "embeddings" { Operation::Embeddings } else { Operation::Chat },
            api: match self.api.as_str() {
                "openai-responses" => Api::OpenaiResponses,
                "anthropic-messages" => Api::AnthropicMessages,
                "openai-embeddings" => Api::OpenaiEmbeddings,
                _ => Api::OpenaiChatCompletions,
            },
            model: self.model.clone(),
            messages: self.messages.iter().map(|m| Message { role: m.role.clone(), text: m.text.clone(), image_count: m.image_count, tool_call_count: m.tool_call_count }).collect(),
            max_tokens: self.max_tokens,
            temperature: self.temperature,
            stream: self.stream,
            tool_count: self.tool_count,
            end_user: self.end_user.clone(),
            metadata: self.metadata.clone(),
            prompt_token_estimate: self.prompt_token_estimate,
        }
    }
}
