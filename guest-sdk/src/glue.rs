//! The wasm side: generated bindings and conversions between them and the SDK's types.
//! Policy authors never touch this module; [`export_policy!`](crate::export_policy) does.

use crate::bindings::tollgate::policy as wit;
use crate::bindings::tollgate::policy::types as t;
use crate::types::*;

fn request_from(r: t::Request) -> Request {
    Request {
        operation: match r.operation {
            t::Operation::Chat => Operation::Chat,
            t::Operation::Embeddings => Operation::Embeddings,
        },
        api: match r.api {
            t::Api::OpenaiChatCompletions => Api::OpenaiChatCompletions,
            t::Api::OpenaiResponses => Api::OpenaiResponses,
            t::Api::AnthropicMessages => Api::AnthropicMessages,
            t::Api::OpenaiEmbeddings => Api::OpenaiEmbeddings,
        },
        model: r.model,
        messages: r
            .messages
            .into_iter()
            .map(|m| Message {
                role: m.role,
                text: m.text,
                image_count: m.image_count,
                tool_call_count: m.tool_call_count,
            })
            .collect(),
        max_tokens: r.max_tokens,
        temperature: r.temperature,
        stream: r.stream,
        tool_count: r.tool_count,
        end_user: r.end_user,
        metadata: r.metadata,
        prompt_token_estimate: r.prompt_token_estimate,
    }
}

fn context_from(c: t::Context) -> Context {
    Context {
        tenant_id: c.tenant_id,
        request_id: c.request_id,
        session_id: c.session_id,
        unix_millis: c.unix_millis,
        config: c.config,
    }
}

fn decision_into(d: Decision) -> t::Decision {
    match d {
        Decision::Route(p) => t::Decision::Route(t::Plan {
            targets: p
                .targets
                .into_iter()
                .map(|x| t::Target {
                    provider: x.provider,
                    model: x.model,
                    credential: x.credential,
                    max_tokens: x.max_tokens,
                    temperature: x.temperature,
                })
                .collect(),
            reserve_microdollars: p.reserve_microdollars,
            tags: p.tags,
            trace: p.trace,
            notify_complete: p.notify_complete,
        }),
        Decision::Reject(r) => t::Decision::Reject(t::Rejection {
            status: r.status,
            code: r.code,
            message: r.message,
        }),
    }
}

fn completion_from(c: t::Completion) -> Completion {
    Completion {
        request_id: c.request_id,
        outcome: match c.outcome {
            t::Outcome::Success => Outcome::Success,
            t::Outcome::UpstreamError => Outcome::UpstreamError,
            t::Outcome::ClientDisconnected => Outcome::ClientDisconnected,
        },
        provider: c.provider,
        model: c.model,
        end_user: c.end_user,
        prompt_tokens: c.prompt_tokens,
        completion_tokens: c.completion_tokens,
        cost_microdollars: c.cost_microdollars,
        latency_ms: c.latency_ms,
        tags: c.tags,
    }
}

/// Called by the exported `route`.
#[doc(hidden)]
pub fn route<P: crate::Policy>(r: t::Request, c: t::Context) -> t::Decision {
    decision_into(P::route(&request_from(r), &context_from(c)))
}

/// Called by the exported `on-complete`.
#[doc(hidden)]
pub fn on_complete<P: crate::Policy>(done: t::Completion, c: t::Context) {
    P::on_complete(&completion_from(done), &context_from(c))
}

fn memory_error(e: wit::memory::MemoryError) -> MemoryError {
    use wit::memory::MemoryError as E;
    match e {
        E::InvalidKey => MemoryError::InvalidKey,
        E::ValueTooLarge => MemoryError::ValueTooLarge,
        E::QuotaExceeded => MemoryError::QuotaExceeded,
        E::TooManyOperations => MemoryError::TooManyOperations,
        E::Unavailable(why) => MemoryError::Unavailable(why),
    }
}

pub(crate) fn credentials_list() -> Vec<CredentialInfo> {
    wit::credentials::list()
        .into_iter()
        .map(|c| CredentialInfo { name: c.name, provider: c.provider })
        .collect()
}

pub(crate) fn memory_get(key: &str) -> Result<Option<Vec<u8>>, MemoryError> {
    wit::memory::get(key).map_err(memory_error)
}

pub(crate) fn memory_set(key: &str, value: &[u8]) -> Result<(), MemoryError> {
    wit::memory::set(key, value).map_err(memory_error)
}

pub(crate) fn memory_delete(key: &str) -> Result<(), MemoryError> {
    wit::memory::delete(key).map_err(memory_error)
}

pub(crate) fn memory_list_keys(prefix: &str, limit: u32) -> Result<Vec<String>, MemoryError> {
    wit::memory::list_keys(prefix, limit).map_err(memory_error)
}

pub(crate) fn metering_budget() -> BudgetStatus {
    let b = wit::metering::budget();
    BudgetStatus {
        period: b.period,
        period_id: b.period_id,
        limit_microdollars: b.limit_microdollars,
        spent_microdollars: b.spent_microdollars,
        reserved_microdollars: b.reserved_microdollars,
    }
}

pub(crate) fn metering_user_spend(end_user: &str) -> u64 {
    wit::metering::user_spend(end_user)
}

pub(crate) fn metering_tag_spend(tag: &str) -> u64 {
    wit::metering::tag_spend(tag)
}

fn model_from(m: wit::catalog::ModelInfo) -> ModelInfo {
    ModelInfo {
        provider: m.provider,
        model: m.model,
        input_microdollars_per_mtok: m.input_microdollars_per_mtok,
        output_microdollars_per_mtok: m.output_microdollars_per_mtok,
        context_window: m.context_window,
    }
}

pub(crate) fn catalog_models() -> Vec<ModelInfo> {
    wit::catalog::models().into_iter().map(model_from).collect()
}

pub(crate) fn catalog_lookup(model: &str) -> Option<ModelInfo> {
    wit::catalog::lookup(model).map(model_from)
}

pub(crate) fn log_write(level: Level, message: &str) {
    use wit::log::Level as L;
    let level = match level {
        Level::Trace => L::Trace,
        Level::Debug => L::Debug,
        Level::Info => L::Info,
        Level::Warn => L::Warn,
        Level::Error => L::Error,
    };
    wit::log::write(level, message)
}
