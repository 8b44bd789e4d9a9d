//! Plain Rust mirrors of the WIT types, so a policy reads and tests like ordinary Rust.

/// One chat message: role and text, with counts of the parts a policy does not see.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Message {
    /// `system`, `user`, `assistant` or `tool`.
    pub role: String,
    /// The text parts, joined with newlines.
    pub text: String,
    /// How many image parts the message carries.
    pub image_count: u32,
    /// How many tool calls an assistant message carries.
    pub tool_call_count: u32,
}

/// What the client asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Operation {
    /// A chat completion, whichever API the client spoke.
    #[default]
    Chat,
    /// Embeddings: `messages` holds the inputs as one user message; `max_tokens`,
    /// `temperature` and `stream` are unset.
    Embeddings,
}

/// The wire format the client spoke.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Api {
    /// OpenAI `POST /v1/chat/completions`.
    #[default]
    OpenaiChatCompletions,
    /// OpenAI `POST /v1/responses`.
    OpenaiResponses,
    /// Anthropic `POST /v1/messages`.
    AnthropicMessages,
    /// OpenAI `POST /v1/embeddings`.
    OpenaiEmbeddings,
}

/// The request the client sent, as validated by the gateway and translated into one shape
/// whatever API it came in.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Request {
    /// Which operation it is.
    pub operation: Operation,
    /// Which API the client spoke.
    pub api: Api,
    /// The `model` field exactly as sent (a model, `provider/model`, or a tenant alias).
    pub model: String,
    /// The conversation, oldest first.
    pub messages: Vec<Message>,
    /// The client's `max_tokens`, if set.
    pub max_tokens: Option<u32>,
    /// The client's `temperature`, if set.
    pub temperature: Option<f32>,
    /// Whether the client asked for a stream.
    pub stream: bool,
    /// How many tools the client offered.
    pub tool_count: u32,
    /// The end user from the request's `user` field.
    pub end_user: Option<String>,
    /// String metadata pairs the client sent.
    pub metadata: Vec<(String, String)>,
    /// The gateway's estimate of the prompt's size in tokens.
    pub prompt_token_estimate: u32,
}

/// Facts about the call that the client did not send.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Context {
    /// The tenant that owns the request.
    pub tenant_id: String,
    /// The gateway's request id.
    pub request_id: String,
    /// The session (`X-Session-ID`), if any.
    pub session_id: Option<String>,
    /// Milliseconds since the Unix epoch.
    pub unix_millis: u64,
    /// The tenant's policy configuration, a JSON document (`{}` if none).
    pub config: String,
}

/// One place to send the request.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Target {
    /// A provider name from the operator's configuration.
    pub provider: String,
    /// The model to ask that provider for.
    pub model: String,
    /// The tenant credential to use; empty for a per-request key or none.
    pub credential: String,
    /// Caps `max_tokens` for this target.
    pub max_tokens: Option<u32>,
    /// Overrides the temperature for this target.
    pub temperature: Option<f32>,
}

impl Target {
    /// A target for `model` on `provider` using the tenant credential `credential`.
    pub fn new(
        provider: impl Into<String>,
        model: impl Into<String>,
        credential: impl Into<String>,
    ) -> Self {
        Self {
            provider: provider.into(),
            model: model.into(),
            credential: credential.into(),
            ..Self::default()
        }
    }

    /// Caps `max_tokens` for this target.
    #[must_use]
    pub fn max_tokens(mut self, max_tokens: u32) -> Self {
        self.max_tokens = Some(max_tokens);
        self
    }

    /// Overrides the temperature for this target.
    #[must_use]
    pub fn temperature(mut self, temperature: f32) -> Self {
        self.temperature = Some(temperature);
        self
    }
}

/// What to do with an accepted request: targets in order, plus attribution.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Plan {
    /// Targets to try in order. Must not be empty.
    pub targets: Vec<Target>,
    /// Budget to reserve, in micro-dollars; `None` lets the gateway estimate.
    pub reserve_microdollars: Option<u64>,
    /// Usage-attribution labels.
    pub tags: Vec<String>,
    /// A short reason, returned in the `x-tollgate-policy-trace` header.
    pub trace: String,
    /// Whether the gateway should call `on_complete` afterwards.
    pub notify_complete: bool,
}

impl Plan {
    /// A plan with one target.
    pub fn to(target: Target) -> Self {
        Self {
            targets: vec![target],
            ..Self::default()
        }
    }

    /// Appends a fallback target, tried when the earlier ones fail.
    #[must_use]
    pub fn then(mut self, target: Target) -> Self {
        self.targets.push(target);
        self
    }

    /// Sets the trace string.
    #[must_use]
    pub fn trace(mut self, trace: impl Into<String>) -> Self {
        self.trace = trace.into();
        self
    }

    /// Adds an attribution tag.
    #[must_use]
    pub fn tag(mut self, tag: impl Into<String>) -> Self {
        self.tags.push(tag.into());
        self
    }

    /// Reserves this much budget instead of the gateway's estimate.
    #[must_use]
    pub fn reserve(mut self, microdollars: u64) -> Self {
        self.reserve_microdollars = Some(microdollars);
        self
    }

    /// Asks the gateway to call `on_complete` when the request finishes.
    #[must_use]
    pub fn notify_complete(mut self) -> Self {
        self.notify_complete = true;
        self
    }
}

/// A refusal, sent to the client as an OpenAI-style error.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Rejection {
    /// HTTP status, 400 to 499 (anything else becomes 403).
    pub status: u16,
    /// Machine-readable code, e.g. `model_not_allowed`.
    pub code: String,
    /// Message for the client.
    pub message: String,
}

/// The answer of [`Policy::route`](crate::Policy::route).
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Serve the request with this plan.
    Route(Plan),
    /// Refuse the request.
    Reject(Rejection),
}

impl Decision {
    /// Refuses with `status`, a machine-readable `code` and a message for the client.
    pub fn reject(status: u16, code: impl Into<String>, message: impl Into<String>) -> Self {
        Decision::Reject(Rejection {
            status,
            code: code.into(),
            message: message.into(),
        })
    }
}

impl From<Plan> for Decision {
    fn from(plan: Plan) -> Self {
        Decision::Route(plan)
    }
}

/// How a routed request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Outcome {
    /// An upstream answered and the answer reached the client.
    #[default]
    Success,
    /// Every target failed.
    UpstreamError,
    /// The client went away before the answer was complete.
    ClientDisconnected,
}

/// What happened to a routed request, given to `on_complete`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Completion {
    /// The request id.
    pub request_id: String,
    /// How it ended.
    pub outcome: Outcome,
    /// The provider that served it (empty if none did).
    pub provider: String,
    /// The model that served it (empty if none did).
    pub model: String,
    /// The end user the client named.
    pub end_user: Option<String>,
    /// Prompt tokens the upstream reported.
    pub prompt_tokens: u64,
    /// Completion tokens the upstream reported.
    pub completion_tokens: u64,
    /// Cost in micro-dollars.
    pub cost_microdollars: u64,
    /// Milliseconds from accept to last byte.
    pub latency_ms: u64,
    /// The plan's tags.
    pub tags: Vec<String>,
}

/// One of the tenant's credentials: name and provider, never the secret.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CredentialInfo {
    /// The credential's name.
    pub name: String,
    /// The provider it is for.
    pub provider: String,
}

/// Why a memory call was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MemoryError {
    /// The key is empty or too long.
    InvalidKey,
    /// The value is larger than the per-value limit.
    ValueTooLarge,
    /// The write would exceed the tenant's quota.
    QuotaExceeded,
    /// The call exceeded the per-call operation budget.
    TooManyOperations,
    /// The store failed.
    Unavailable(String),
}

impl std::fmt::Display for MemoryError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MemoryError::InvalidKey => f.write_str("invalid key"),
            MemoryError::ValueTooLarge => f.write_str("value too large"),
            MemoryError::QuotaExceeded => f.write_str("memory quota exceeded"),
            MemoryError::TooManyOperations => f.write_str("too many memory operations"),
            MemoryError::Unavailable(why) => write!(f, "memory unavailable: {why}"),
        }
    }
}

impl std::error::Error for MemoryError {}

/// The tenant's budget and spend in the current period, in micro-dollars.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BudgetStatus {
    /// `day`, `month` or `total`.
    pub period: String,
    /// The period's id, e.g. `2026-11`.
    pub period_id: String,
    /// The budget, or `None` when the tenant has none.
    pub limit_microdollars: Option<u64>,
    /// Settled spend in this period.
    pub spent_microdollars: u64,
    /// Reserved by requests in flight.
    pub reserved_microdollars: u64,
}

impl BudgetStatus {
    /// Spent plus reserved as a share of the budget (0.0 when there is no budget).
    pub fn used_share(&self) -> f64 {
        match self.limit_microdollars {
            Some(limit) if limit > 0 => {
                (self.spent_microdollars + self.reserved_microdollars) as f64 / limit as f64
            }
            _ => 0.0,
        }
    }
}

/// One model the operator offers, with the tenant's prices.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ModelInfo {
    /// Provider name in the operator's configuration.
    pub provider: String,
    /// Model name as the provider knows it.
    pub model: String,
    /// Micro-dollars per million prompt tokens.
    pub input_microdollars_per_mtok: u64,
    /// Micro-dollars per million completion tokens.
    pub output_microdollars_per_mtok: u64,
    /// Context window in tokens.
    pub context_window: u32,
}

/// Severity of a policy log message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// Very detailed.
    Trace,
    /// Debugging detail.
    Debug,
    /// Normal operation.
    Info,
    /// Something unexpected.
    Warn,
    /// Something failed.
    Error,
}
