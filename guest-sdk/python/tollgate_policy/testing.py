"""A native test harness: run a policy with `python -m unittest`, no wasm involved.

The harness plays the gateway: it holds fake credentials, memory, metering and a catalog,
installs them for the duration of one call, and keeps what the policy wrote::

    from tollgate_policy import Plan, Request
    from tollgate_policy.testing import Harness
    import policy

    h = Harness().config({"provider": "openai", "credential": "main"})
    plan = h.route(policy.route, Request("gpt-4o").user("hi"))
    assert isinstance(plan, Plan) and plan.targets[0].credential == "main"
"""

from __future__ import annotations

import json
from typing import Callable, Dict, List, Optional, Tuple, Union

from . import _host
from .types import (
    BudgetStatus,
    Completion,
    Context,
    CredentialInfo,
    Level,
    MemoryDenied,
    ModelInfo,
    Plan,
    Rejection,
    Request,
)

#: The host's key limit (`memory::MAX_KEY_BYTES`).
MAX_KEY_BYTES = 256
#: The host caps `list_keys` at this many keys.
MAX_LIST_KEYS = 1000


class Harness:
    """The fake gateway a native test runs a policy against. Starts empty: no credentials,
    no budget, empty memory and catalog, config `{}`."""

    def __init__(self) -> None:
        self.context = Context()
        self.credentials: List[CredentialInfo] = []
        #: What the policy stored in memory, key to bytes.
        self.memory: Dict[str, bytes] = {}
        self.quota: Optional[int] = None
        self.budget_status = BudgetStatus(period="month", period_id="2026-11")
        self.user_spends: Dict[str, int] = {}
        self.tag_spends: Dict[str, int] = {}
        self.models: List[ModelInfo] = []
        #: What the policy logged, as (level, message) pairs.
        self.log: List[Tuple[Level, str]] = []

    # Setting up the fake gateway; each returns the harness so calls chain.

    def config(self, config: Union[str, dict]) -> "Harness":
        """Sets the tenant's policy configuration (a JSON string or a dict)."""
        self.context.config_json = config if isinstance(config, str) else json.dumps(config)
        return self

    def credential(self, name: str, provider: str) -> "Harness":
        """Adds a credential the policy can see."""
        self.credentials.append(CredentialInfo(name, provider))
        return self

    def model(self, provider: str, model: str, input: int, output: int, context_window: int) -> "Harness":  # noqa: A002
        """Adds a model to the catalog (prices in micro-dollars per million tokens)."""
        self.models.append(ModelInfo(provider, model, input, output, context_window))
        return self

    def budget(self, limit_microdollars: Optional[int], spent_microdollars: int) -> "Harness":
        """Sets the budget the policy sees (period `month`, id `2026-11`)."""
        self.budget_status = BudgetStatus("month", "2026-11", limit_microdollars, spent_microdollars, 0)
        return self

    def user_spend(self, end_user: str, microdollars: int) -> "Harness":
        """Sets one end user's settled spend."""
        self.user_spends[end_user] = microdollars
        return self

    def tag_spend(self, tag: str, microdollars: int) -> "Harness":
        """Sets one tag's settled spend."""
        self.tag_spends[tag] = microdollars
        return self

    def memory_quota(self, limit: int) -> "Harness":
        """Limits the memory store to `limit` bytes of keys plus values."""
        self.quota = limit
        return self

    # Running the policy.

    def route(self, route: Callable[[Request, Context], object], request: Request):
        """Runs `route(request, context)` against this fake gateway; returns its `Plan` or
        `Rejection`, and raises `TypeError` for anything else, as the gateway would refuse it."""
        decision = self._installed(lambda: route(request, self.context))
        if not isinstance(decision, (Plan, Rejection)):
            raise TypeError(f"route must return a Plan or a Rejection, not {type(decision).__name__}")
        return decision

    def on_complete(self, on_complete: Callable[[Completion, Context], None], completion: Completion) -> None:
        """Runs `on_complete(completion, context)` against this fake gateway."""
        self._installed(lambda: on_complete(completion, self.context))

    def _installed(self, call):
        previous = _host.install(_FakeHost(self))
        try:
            return call()
        finally:
            _host.install(previous)


class _FakeHost:
    """The host functions as the harness serves them."""

    def __init__(self, harness: Harness) -> None:
        self.h = harness

    @staticmethod
    def _valid_key(key: str) -> None:
        if not key or len(key.encode()) > MAX_KEY_BYTES:
            raise MemoryDenied("invalid-key")

    def credentials_list(self) -> List[CredentialInfo]:
        return [CredentialInfo(c.name, c.provider) for c in self.h.credentials]

    def memory_get(self, key: str) -> Optional[bytes]:
        self._valid_key(key)
        return self.h.memory.get(key)

    def memory_set(self, key: str, value: bytes) -> None:
        self._valid_key(key)
        if self.h.quota is not None:
            used = sum(len(k.encode()) + len(v) for k, v in self.h.memory.items() if k != key)
            if used + len(key.encode()) + len(value) > self.h.quota:
                raise MemoryDenied("quota-exceeded")
        self.h.memory[key] = bytes(value)

    def memory_delete(self, key: str) -> None:
        self._valid_key(key)
        self.h.memory.pop(key, None)

    def memory_list_keys(self, prefix: str, limit: int) -> List[str]:
        keys = sorted((k for k in self.h.memory if k.startswith(prefix)), key=str.encode)
        return keys[: min(limit, MAX_LIST_KEYS)]

    def metering_budget(self) -> BudgetStatus:
        b = self.h.budget_status
        return BudgetStatus(b.period, b.period_id, b.limit_microdollars, b.spent_microdollars, b.reserved_microdollars)

    def metering_user_spend(self, end_user: str) -> int:
        return self.h.user_spends.get(end_user, 0)

    def metering_tag_spend(self, tag: str) -> int:
        return self.h.tag_spends.get(tag, 0)

    def catalog_models(self) -> List[ModelInfo]:
        return list(self.h.models)

    def catalog_lookup(self, model: str) -> Optional[ModelInfo]:
        provider, name = model.split("/", 1) if "/" in model else (None, model)
        for m in self.h.models:
            if provider is not None and m.provider != provider:
                continue
            if m.model == name or name.startswith(m.model + "-"):
                return m
        return None

    def log_write(self, level: Level, message: str) -> None:
        self.h.log.append((level, message))
