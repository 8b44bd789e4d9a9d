"""Plain Python mirrors of the WIT types, so a policy reads and tests like ordinary Python.

Integers the WIT declares `u64` (micro-dollars, milliseconds, token counts) are plain
`int`s; `option<T>` is `Optional[T]` (`None` when absent).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import List, Optional, Tuple, Union


class Operation(enum.Enum):
    """What the client asked for."""

    #: A chat completion, whichever API the client spoke.
    CHAT = "chat"
    #: Embeddings: `messages` holds the inputs as one user message; `max_tokens`,
    #: `temperature` and `stream` are unset.
    EMBEDDINGS = "embeddings"


class Api(enum.Enum):
    """The wire format the client spoke."""

    OPENAI_CHAT_COMPLETIONS = "openai-chat-completions"
    OPENAI_RESPONSES = "openai-responses"
    ANTHROPIC_MESSAGES = "anthropic-messages"
    OPENAI_EMBEDDINGS = "openai-embeddings"


class Outcome(enum.Enum):
    """How a routed request ended."""

    SUCCESS = "success"
    UPSTREAM_ERROR = "upstream-error"
    CLIENT_DISCONNECTED = "client-disconnected"


class Level(enum.Enum):
    """Severity of a policy log message."""

    TRACE = "trace"
    DEBUG = "debug"
    INFO = "info"
    WARN = "warn"
    ERROR = "error"


@dataclass
class Message:
    """One chat message: role and text, with counts of the parts a policy does not see."""

    role: str
    text: str
    image_count: int = 0
    tool_call_count: int = 0


@dataclass
class Request:
    """The request the client sent, validated by the gateway and translated into one shape
    whatever API it came in.

    In tests, build one with `Request("gpt-4o").user("hi")`.
    """

    #: The `model` field exactly as sent (a model, `provider/model`, or a tenant alias).
    model: str
    operation: Operation = Operation.CHAT
    api: Api = Api.OPENAI_CHAT_COMPLETIONS
    #: The conversation, oldest first.
    messages: List[Message] = field(default_factory=list)
    max_tokens: Optional[int] = None
    temperature: Optional[float] = None
    stream: bool = False
    tool_count: int = 0
    #: The end user from the request's `user` field.
    end_user: Optional[str] = None
    #: String metadata pairs the client sent.
    metadata: List[Tuple[str, str]] = field(default_factory=list)
    #: The gateway's estimate of the prompt's size in tokens.
    prompt_token_estimate: int = 0

    def user(self, text: str) -> "Request":
        """Appends a user message and grows the prompt estimate (4 bytes per token)."""
        self.prompt_token_estimate += -(-len(text.encode()) // 4)
        self.messages.append(Message("user", text))
        return self

    @classmethod
    def embeddings(cls, model: str, inputs: List[str]) -> "Request":
        """An embeddings request (`POST /v1/embeddings`), inputs as one user message."""
        return cls(model, operation=Operation.EMBEDDINGS, api=Api.OPENAI_EMBEDDINGS).user("\n".join(inputs))


@dataclass
class Context:
    """Facts about the call that the client did not send."""

    tenant_id: str = "test-tenant"
    request_id: str = "test-request"
    #: The session (`X-Session-ID`), if any.
    session_id: Optional[str] = None
    #: Milliseconds since the Unix epoch.
    unix_millis: int = 0
    #: The tenant's policy configuration, a JSON document (`{}` if none); read it typed
    #: with `config(...)`.
    config_json: str = "{}"

    def config(self, schema=None):
        """Parses the tenant's configuration: into the dataclass `schema` (strictly: unknown
        fields, missing required fields and wrong types raise `ConfigError`), or, with no
        schema, into a plain `dict`. An empty string reads as `{}`."""
        from .config import parse

        return parse(self.config_json, schema)


@dataclass
class Target:
    """One place to send the request: `Target("openai", "gpt-4o", "main", max_tokens=500)`."""

    #: A provider name from the operator's configuration.
    provider: str
    #: The model to ask that provider for.
    model: str
    #: The tenant credential to use; empty for a per-request key or none.
    credential: str = ""
    #: Caps `max_tokens` for this target.
    max_tokens: Optional[int] = None
    #: Overrides the temperature for this target.
    temperature: Optional[float] = None


@dataclass
class Plan:
    """What to do with an accepted request: targets in order, plus attribution.

    `Plan.to(Target(...), trace="why").then(Target(...))`.
    """

    #: Targets to try in order; the next is tried when one fails before any byte was sent.
    targets: List[Target] = field(default_factory=list)
    #: Budget to reserve, in micro-dollars; `None` lets the gateway estimate.
    reserve_microdollars: Optional[int] = None
    #: Usage-attribution labels.
    tags: List[str] = field(default_factory=list)
    #: A short reason, returned in the `x-tollgate-policy-trace` header.
    trace: str = ""
    #: Whether the gateway should call `on_complete` afterwards.
    notify_complete: bool = False

    @classmethod
    def to(cls, target: Target, **fields) -> "Plan":
        """A plan with one target; keyword arguments set the other fields."""
        return cls(targets=[target], **fields)

    def then(self, target: Target) -> "Plan":
        """Appends a fallback target, tried when the earlier ones fail."""
        self.targets.append(target)
        return self


@dataclass
class Rejection:
    """A refusal, sent to the client as an OpenAI-style error."""

    #: HTTP status, 400 to 499 (anything else becomes 403).
    status: int
    #: Machine-readable code, e.g. `model_not_allowed`.
    code: str
    #: Message for the client.
    message: str


#: What `route` returns: serve with a plan, or refuse.
Decision = Union[Plan, Rejection]


def reject(status: int, code: str, message: str) -> Rejection:
    """Refuses with `status`, a machine-readable `code` and a message for the client."""
    return Rejection(status, code, message)


@dataclass
class Completion:
    """What happened to a routed request, given to `on_complete`."""

    request_id: str = "test-request"
    outcome: Outcome = Outcome.SUCCESS
    #: The provider and model that served it (empty if none did).
    provider: str = ""
    model: str = ""
    end_user: Optional[str] = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_microdollars: int = 0
    latency_ms: int = 0
    tags: List[str] = field(default_factory=list)


@dataclass
class CredentialInfo:
    """One of the tenant's credentials: name and provider, never the secret."""

    name: str
    provider: str


@dataclass
class BudgetStatus:
    """The tenant's budget and spend in the current period, in micro-dollars."""

    period: str = "month"
    period_id: str = ""
    #: The budget, or `None` when the tenant has none.
    limit_microdollars: Optional[int] = None
    spent_microdollars: int = 0
    reserved_microdollars: int = 0

    def used_share(self) -> float:
        """Spent plus reserved as a share of the budget (0.0 when there is no budget)."""
        if not self.limit_microdollars:
            return 0.0
        return (self.spent_microdollars + self.reserved_microdollars) / self.limit_microdollars


@dataclass
class ModelInfo:
    """One model the operator offers, with the tenant's prices."""

    provider: str
    model: str
    input_microdollars_per_mtok: int = 0
    output_microdollars_per_mtok: int = 0
    context_window: int = 0


class MemoryDenied(Exception):
    """A memory call was refused. `kind` is the WIT case: `invalid-key`, `value-too-large`,
    `quota-exceeded`, `too-many-operations` or `unavailable` (then `detail` says why)."""

    _MESSAGES = {
        "invalid-key": "invalid key",
        "value-too-large": "value too large",
        "quota-exceeded": "memory quota exceeded",
        "too-many-operations": "too many memory operations",
    }

    def __init__(self, kind: str, detail: str = ""):
        self.kind = kind
        self.detail = detail
        if kind == "unavailable":
            message = f"memory unavailable: {detail}"
        else:
            message = self._MESSAGES.get(kind, kind)
        super().__init__(message)
