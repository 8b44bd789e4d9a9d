//! Policies built for `tollgate:policy@0.1.0` (`wit/compat/policy-0.1.0.wit`) keep
//! working unchanged. Their imports are the current ones under the 0.1.0 names, forwarded
//! to the current implementations in `host.rs` (so limits and accounting are the same);
//! their `route` gets the current request without `operation` and `api`, and their
//! decision is converted into the current one before it is validated.

use super::bindings::tollgate::policy as current;
use super::host::CallState;

/// Host bindings generated from the frozen 0.1.0 contract.
mod bindings {
    wasmtime::component::bindgen!({ world: "policy", path: "../wit/compat/policy-0.1.0.wit", exports: { default: async }, imports: {
        "tollgate:policy/metering.budget": async | trappable,
        "tollgate:policy/metering.user-spend": async | trappable,
        "tollgate:policy/metering.tag-spend": async | trappable,
        "tollgate:policy/memory.get": async | trappable,
        "tollgate:policy/memory.set": async | trappable,
        "tollgate:policy/memory.delete": async | trappable,
        "tollgate:policy/memory.list-keys": async | trappable,
        "tollgate:policy/credentials.list": async | trappable,
        default: trappable,
    } });
}

use bindings::tollgate::policy::{catalog, credentials, log, memory, metering, types};

/// A 0.1.0 component, ready to instantiate.
pub(crate) type Pre = bindings::PolicyPre<CallState>;

/// Adds the 0.1.0 imports to `linker`, beside the current ones.
pub(crate) fn add_to_linker(linker: &mut wasmtime::component::Linker<CallState>) -> wasmtime::Result<()> {
    bindings::Policy::add_to_linker::<CallState, wasmtime::component::HasSelf<CallState>>(linker, |s| s)
}

/// Instantiates a 0.1.0 component and calls its `route`.
pub(crate) async fn route(
    pre: &Pre,
    store: &mut wasmtime::Store<CallState>,
    request: &current::types::Request,
    context: &current::types::Context,
) -> wasmtime::Result<current::types::Decision> {
    let policy = pre.instantiate_async(&mut *store).await?;
    let decision = policy.call_route(&mut *store, &old_request(request), &old_context(context)).await?;
    Ok(current_decision(decision))
}

/// Instantiates a 0.1.0 component and calls its `on-complete`.
pub(crate) async fn on_complete(
    pre: &Pre,
    store: &mut wasmtime::Store<CallState>,
    completion: &current::types::Completion,
    context: &current::types::Context,
) -> wasmtime::Result<()> {
    let policy = pre.instantiate_async(&mut *store).await?;
    policy.call_on_complete(&mut *store, &old_completion(completion), &old_context(context)).await
}

fn old_request(r: &current::types::Request) -> types::ChatRequest {
    types::ChatRequest {
        model: r.model.clone(),
        messages: r.messages.iter().map(|m| types::Message { role: m.role.clone(), text: m.text.clone(), image_count: m.image_count, tool_call_count: m.tool_call_count }).collect(),
        max_tokens: r.max_tokens,
        temperature: r.temperature,
        stream: r.stream,
        tool_count: r.tool_count,
        end_user: r.end_user.clone(),
        metadata: r.metadata.clone(),
        prompt_token_estimate: r.prompt_token_estimate,
    }
}

fn old_context(c: &current::types::Context) -> types::Context {
    types::Context { tenant_id: c.tenant_id.clone(), request_id: c.request_id.clone(), session_id: c.session_id.clone(), unix_millis: c.unix_millis, config: c.config.clone() }
}

fn old_completion(c: &current::types::Completion) -> types::Completion {
    use current::types::Outcome as O;
    types::Completion {
        request_id: c.request_id.clone(),
        outcome: match c.outcome {
            O::Success => types::Outcome::Success,
            O::UpstreamError => types::Outcome::UpstreamError,
            O::ClientDisconnected => types::Outcome::ClientDisconnected,
        },
        provider: c.provider.clone(),
        model: c.model.clone(),
        end_user: c.end_user.clone(),
        prompt_tokens: c.prompt_tokens,
        completion_tokens: c.completion_tokens,
        cost_microdollars: c.cost_microdollars,
        latency_ms: c.latency_ms,
        tags: c.tags.clone(),
    }
}

fn current_decision(d: types::Decision) -> current::types::Decision {
    use current::types as now;
    match d {
        types::Decision::Route(plan) => now::Decision::Route(now::Plan {
            targets: plan
                .targets
                .into_iter()
                .map(|t| now::Target { provider: t.provider, model: t.model, credential: t.credential, max_tokens: t.max_tokens, temperature: t.temperature })
                .collect(),
            reserve_microdollars: plan.reserve_microdollars,
            tags: plan.tags,
            trace: plan.trace,
            notify_complete: plan.notify_complete,
        }),
        types::Decision::Reject(r) => now::Decision::Reject(now::Rejection { status: r.status, code: r.code, message: r.message }),
    }
}

impl types::Host for CallState {}

impl credentials::Host for CallState {
    async fn list(&mut self) -> wasmtime::Result<Vec<credentials::CredentialInfo>> {
        let listed = current::credentials::Host::list(self).await?;
        Ok(listed.into_iter().map(|c| credentials::CredentialInfo { name: c.name, provider: c.provider }).collect())
    }
}

fn old_memory_error(e: current::memory::MemoryError) -> memory::MemoryError {
    use current::memory::MemoryError as E;
    match e {
        E::InvalidKey => memory::MemoryError::InvalidKey,
        E::ValueTooLarge => memory::MemoryError::ValueTooLarge,
        E::QuotaExceeded => memory::MemoryError::QuotaExceeded,
        E::TooManyOperations => memory::MemoryError::TooManyOperations,
        E::Unavailable(why) => memory::MemoryError::Unavailable(why),
    }
}

impl memory::Host for CallState {
    async fn get(&mut self, key: String) -> wasmtime::Result<Result<Option<Vec<u8>>, memory::MemoryError>> {
        Ok(current::memory::Host::get(self, key).await?.map_err(old_memory_error))
    }

    async fn set(&mut self, key: String, value: Vec<u8>) -> wasmtime::Result<Result<(), memory::MemoryError>> {
        Ok(current::memory::Host::set(self, key, value).await?.map_err(old_memory_error))
    }

    async fn delete(&mut self, key: String) -> wasmtime::Result<Result<(), memory::MemoryError>> {
        Ok(current::memory::Host::delete(self, key).await?.map_err(old_memory_error))
    }

    async fn list_keys(&mut self, prefix: String, limit: u32) -> wasmtime::Result<Result<Vec<String>, memory::MemoryError>> {
        Ok(current::memory::Host::list_keys(self, prefix, limit).await?.map_err(old_memory_error))
    }
}

impl metering::Host for CallState {
    async fn budget(&mut self) -> wasmtime::Result<metering::BudgetStatus> {
        let b = current::metering::Host::budget(self).await?;
        Ok(metering::BudgetStatus {
            period: b.period,
            period_id: b.period_id,
            limit_microdollars: b.limit_microdollars,
            spent_microdollars: b.spent_microdollars,
            reserved_microdollars: b.reserved_microdollars,
        })
    }

    async fn user_spend(&mut self, end_user: String) -> wasmtime::Result<u64> {
        current::metering::Host::user_spend(self, end_user).await
    }

    async fn tag_spend(&mut self, tag: String) -> wasmtime::Result<u64> {
        current::metering::Host::tag_spend(self, tag).await
    }
}

fn old_model(m: current::catalog::ModelInfo) -> catalog::ModelInfo {
    catalog::ModelInfo {
        provider: m.provider,
        model: m.model,
        input_microdollars_per_mtok: m.input_microdollars_per_mtok,
        output_microdollars_per_mtok: m.output_microdollars_per_mtok,
        context_window: m.context_window,
    }
}

impl catalog::Host for CallState {
    fn models(&mut self) -> wasmtime::Result<Vec<catalog::ModelInfo>> {
        Ok(current::catalog::Host::models(self)?.into_iter().map(old_model).collect())
    }

    fn lookup(&mut self, model: String) -> wasmtime::Result<Option<catalog::ModelInfo>> {
        Ok(current::catalog::Host::lookup(self, model)?.map(old_model))
    }
}

impl log::Host for CallState {
    fn write(&mut self, level: log::Level, message: String) -> wasmtime::Result<()> {
        use current::log::Level as L;
        let level = match level {
            log::Level::Trace => L::Trace,
            log::Level::Debug => L::Debug,
            log::Level::Info => L::Info,
            log::Level::Warn => L::Warn,
            log::Level::Error => L::Error,
        };
        current::log::Host::write(self, level, message)
    }
}
