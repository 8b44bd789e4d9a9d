"""tollgate_policy: write Tollgate routing policies in Python.

A policy is a module `policy.py` with a function `route(request, context)` that returns a
`Plan` (targets to try, in order) or a `Rejection`, and optionally
`on_complete(completion, context)`. It runs in the gateway as a WebAssembly component, in a
fresh sandbox per call, and sees only its own tenant's credentials (names, never secrets),
memory, spend and the operator's model catalog, through the modules `credentials`,
`memory`, `metering`, `catalog` and `log`.

Test it natively with `tollgate_policy.testing.Harness`; build it with
`guest-sdk/python/build.sh DIR` (writes `DIR/policy.wasm`).
"""

from . import catalog, credentials, log, memory, metering
from .config import ConfigError
from .types import (
    Api,
    BudgetStatus,
    Completion,
    Context,
    CredentialInfo,
    Decision,
    Level,
    MemoryDenied,
    Message,
    ModelInfo,
    Operation,
    Outcome,
    Plan,
    Rejection,
    Request,
    Target,
    reject,
)

__all__ = [
    "Api", "BudgetStatus", "Completion", "ConfigError", "Context", "CredentialInfo", "Decision",
    "Level", "MemoryDenied", "Message", "ModelInfo", "Operation", "Outcome", "Plan", "Rejection",
    "Request", "Target", "catalog", "credentials", "log", "memory", "metering", "reject",
]
