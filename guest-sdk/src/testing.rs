//! A native test harness: run a policy with `cargo test`, no wasm involved.
//!
//! The harness plays the gateway: it holds fake credentials, memory, metering and a
//! catalog, installs them for the duration of one call, and hands back what the policy
//! decided and what it wrote.
//!
//! ```
//! use tollgate_sdk::{testing::Harness, Context, Decision, Plan, Policy, Request, Target};
//!
//! struct Echo;
//! impl Policy for Echo {
//!     fn route(request: &Request, _context: &Context) -> Decision {
//!         Plan::to(Target::new("demo", &request.model, "")).into()
//!     }
//! }
//!
//! let decision = Harness::new().route::<Echo>(&Request::new("demo-small").user("hi"));
//! assert!(matches!(decision, Decision::Route(plan) if plan.targets[0].model == "demo-small"));
//! ```

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};

use crate::types::*;
use crate::Policy;

/// The fake gateway a native test runs a policy against.
#[derive(Debug, Clone, Default)]
pub struct Harness {
    state: FakeState,
    context: Context,
}

#[derive(Debug, Clone, Default)]
struct FakeState {
    credentials: Vec<CredentialInfo>,
    memory: BTreeMap<String, Vec<u8>>,
    memory_quota: Option<usize>,
    budget: BudgetStatus,
    user_spend: HashMap<String, u64>,
    tag_spend: HashMap<String, u64>,
    models: Vec<ModelInfo>,
    log: Vec<(Level, String)>,
}

thread_local! {
    static CURRENT: RefCell<Option<FakeState>> = const { RefCell::new(None) };
}

impl Harness {
    /// An empty gateway: no credentials, no budget, empty memory and catalog, config `{}`.
    pub fn new() -> Self {
        let mut harness = Self::default();
        harness.context.tenant_id = "test-tenant".into();
        harness.context.request_id = "test-request".into();
        harness.context.config = "{}".into();
        harness
    }

    /// Adds a credential the policy can see.
    #[must_use]
    pub fn credential(mut self, name: &str, provider: &str) -> Self {
        self.state.credentials.push(CredentialInfo { name: name.into(), provider: provider.into() });
        self
    }

    /// Adds a model to the catalog.
    #[must_use]
    pub fn model(mut self, provider: &str, model: &str, input: u64, output: u64, context_window: u32) -> Self {
        self.state.models.push(ModelInfo {
            provider: provider.into(),
            model: model.into(),
            input_microdollars_per_mtok: input,
            output_microdollars_per_mtok: output,
            context_window,
        });
        self
    }

    /// Sets the budget status the policy sees.
    #[must_use]
    pub fn budget(mut self, limit_microdollars: Option<u64>, spent_microdollars: u64) -> Self {
        self.state.budget = BudgetStatus {
            period: "month".into(),
            period_id: "2026-11".into(),
            limit_microdollars,
            spent_microdollars,
            reserved_microdollars: 0,
        };
        self
    }

    /// Sets one end user's settled spend.
    #[must_use]
    pub fn user_spend(mut self, end_user: &str, microdollars: u64) -> Self {
        self.state.user_spend.insert(end_user.into(), microdollars);
        self
    }

    /// Sets one tag's settled spend.
    #[must_use]
    pub fn tag_spend(mut self, tag: &str, microdollars: u64) -> Self {
        self.state.tag_spend.insert(tag.into(), microdollars);
        self
    }

    /// Limits the memory store to `bytes` of keys plus values.
    #[must_use]
    pub fn memory_quota(mut self, bytes: usize) -> Self {
        self.state.memory_quota = Some(bytes);
        self
    }

    /// Sets the tenant's policy configuration (a JSON document).
    #[must_use]
    pub fn config(mut self, json: &str) -> Self {
        self.context.config = json.into();
        self
    }

    /// Runs `P::route` against this fake gateway.
    pub fn route<P: Policy>(&mut self, request: &Request) -> Decision {
        let context = self.context.clone();
        self.with_installed(|| P::route(request, &context))
    }

    /// Runs `P::on_complete` against this fake gateway.
    pub fn on_complete<P: Policy>(&mut self, completion: &Completion) {
        let context = self.context.clone();
        self.with_installed(|| P::on_complete(completion, &context))
    }

    /// What the policy stored in memory.
    pub fn memory(&self) -> &BTreeMap<String, Vec<u8>> {
        &self.state.memory
    }

    /// What the policy logged.
    pub fn log(&self) -> &[(Level, String)] {
        &self.state.log
    }

    fn with_installed<R>(&mut self, call: impl FnOnce() -> R) -> R {
        CURRENT.with(|slot| *slot.borrow_mut() = Some(std::mem::take(&mut self.state)));
        let result = call();
        CURRENT.with(|slot| self.state = slot.borrow_mut().take().unwrap_or_default());
        result
    }
}

impl Request {
    /// A request for `model` with no messages yet.
    pub fn new(model: &str) -> Self {
        Request { model: model.into(), ..Request::default() }
    }

    /// Appends a user message and grows the prompt estimate (4 bytes per token).
    #[must_use]
    pub fn user(mut self, text: &str) -> Self {
        self.prompt_token_estimate += (text.len() as u32).div_ceil(4);
        self.messages.push(Message { role: "user".into(), text: text.into(), ..Message::default() });
        self
    }

    /// Sets the end user.
    #[must_use]
    pub fn end_user(mut self, end_user: &str) -> Self {
        self.end_user = Some(end_user.into());
        self
    }

    /// Sets `max_tokens`.
    #[must_use]
    pub fn max_tokens(mut self, max_tokens: u32) -> Self {
        self.max_tokens = Some(max_tokens);
        self
    }

    /// An embeddings request for `model` (through `POST /v1/embeddings`), with the inputs
    /// as one user message as the gateway passes them.
    pub fn embeddings(model: &str, inputs: &[&str]) -> Self {
        let mut request = Request { operation: Operation::Embeddings, api: Api::OpenaiEmbeddings, ..Request::new(model) };
        request = request.user(&inputs.join("\n"));
        request
    }

    /// Sets the API the client spoke.
    #[must_use]
    pub fn api(mut self, api: Api) -> Self {
        self.api = api;
        self
    }
}

/// The host functions as the native harness serves them.
pub(crate) mod fake {
    use super::*;

    const MAX_KEY_BYTES: usize = 256;

    fn with<R>(f: impl FnOnce(&mut FakeState) -> R) -> R {
        CURRENT.with(|slot| {
            let mut slot = slot.borrow_mut();
            #[allow(clippy::expect_used)]
            let state = slot.as_mut().expect("tollgate-sdk host functions run only inside Harness::route");
            f(state)
        })
    }

    fn valid_key(key: &str) -> Result<(), MemoryError> {
        if key.is_empty() || key.len() > MAX_KEY_BYTES { Err(MemoryError::InvalidKey) } else { Ok(()) }
    }

    pub(crate) fn credentials_list() -> Vec<CredentialInfo> {
        with(|s| s.credentials.clone())
    }

    pub(crate) fn memory_get(key: &str) -> Result<Option<Vec<u8>>, MemoryError> {
        valid_key(key)?;
        Ok(with(|s| s.memory.get(key).cloned()))
    }

    pub(crate) fn memory_set(key: &str, value: &[u8]) -> Result<(), MemoryError> {
        valid_key(key)?;
        with(|s| {
            if let Some(quota) = s.memory_quota {
                let used: usize = s.memory.iter().filter(|(k, _)| *k != key).map(|(k, v)| k.len() + v.len()).sum();
                if used + key.len() + value.len() > quota {
                    return Err(MemoryError::QuotaExceeded);
                }
            }
            s.memory.insert(key.into(), value.to_vec());
            Ok(())
        })
    }

    pub(crate) fn memory_delete(key: &str) -> Result<(), MemoryError> {
        valid_key(key)?;
        with(|s| s.memory.remove(key));
        Ok(())
    }

    pub(crate) fn memory_list_keys(prefix: &str, limit: u32) -> Result<Vec<String>, MemoryError> {
        Ok(with(|s| {
            s.memory.keys().filter(|k| k.starts_with(prefix)).take(limit.min(1000) as usize).cloned().collect()
        }))
    }

    pub(crate) fn metering_budget() -> BudgetStatus {
        with(|s| s.budget.clone())
    }

    pub(crate) fn metering_user_spend(end_user: &str) -> u64 {
        with(|s| s.user_spend.get(end_user).copied().unwrap_or(0))
    }

    pub(crate) fn metering_tag_spend(tag: &str) -> u64 {
        with(|s| s.tag_spend.get(tag).copied().unwrap_or(0))
    }

    pub(crate) fn catalog_models() -> Vec<ModelInfo> {
        with(|s| s.models.clone())
    }

    pub(crate) fn catalog_lookup(model: &str) -> Option<ModelInfo> {
        let (provider, name) = match model.split_once('/') {
            Some((p, m)) => (Some(p), m),
            None => (None, model),
        };
        with(|s| {
            s.models
                .iter()
                .filter(|m| provider.is_none_or(|p| p == m.provider))
                .find(|m| m.model == name || name.starts_with(&format!("{}-", m.model)))
                .cloned()
        })
    }

    pub(crate) fn log_write(level: Level, message: &str) {
        with(|s| s.log.push((level, message.into())))
    }
}
