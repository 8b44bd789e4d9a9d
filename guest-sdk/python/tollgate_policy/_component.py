"""The wasm side: conversions between componentize-py's generated bindings and the SDK's
types. Policy authors never import this; `build.sh` generates the module that does.

Only importable inside a component (the `wit_world` bindings exist only there).
"""

from wit_world.imports import catalog as wit_catalog
from wit_world.imports import credentials as wit_credentials
from wit_world.imports import log as wit_log
from wit_world.imports import memory as wit_memory
from wit_world.imports import metering as wit_metering
from wit_world.imports import types as wit
from componentize_py_types import Err

from . import _host
from .types import (
    Api,
    BudgetStatus,
    Completion,
    Context,
    CredentialInfo,
    Level,
    MemoryDenied,
    Message,
    ModelInfo,
    Operation,
    Outcome,
    Plan,
    Rejection,
    Request,
)

_MEMORY_ERRORS = {
    wit_memory.MemoryError_InvalidKey: "invalid-key",
    wit_memory.MemoryError_ValueTooLarge: "value-too-large",
    wit_memory.MemoryError_QuotaExceeded: "quota-exceeded",
    wit_memory.MemoryError_TooManyOperations: "too-many-operations",
    wit_memory.MemoryError_Unavailable: "unavailable",
}


def _denied(err: Err) -> MemoryDenied:
    value = err.value
    return MemoryDenied(_MEMORY_ERRORS.get(type(value), "unavailable"), getattr(value, "value", "") or "")


def _model(m) -> ModelInfo:
    return ModelInfo(m.provider, m.model, m.input_microdollars_per_mtok, m.output_microdollars_per_mtok, m.context_window)


class _WitHost:
    """The host functions as the gateway's imports serve them."""

    def credentials_list(self):
        return [CredentialInfo(c.name, c.provider) for c in wit_credentials.list()]

    def memory_get(self, key):
        try:
            return wit_memory.get(key)
        except Err as e:
            raise _denied(e) from None

    def memory_set(self, key, value):
        try:
            wit_memory.set(key, value)
        except Err as e:
            raise _denied(e) from None

    def memory_delete(self, key):
        try:
            wit_memory.delete(key)
        except Err as e:
            raise _denied(e) from None

    def memory_list_keys(self, prefix, limit):
        try:
            return wit_memory.list_keys(prefix, limit)
        except Err as e:
            raise _denied(e) from None

    def metering_budget(self):
        b = wit_metering.budget()
        return BudgetStatus(b.period, b.period_id, b.limit_microdollars, b.spent_microdollars, b.reserved_microdollars)

    def metering_user_spend(self, end_user):
        return wit_metering.user_spend(end_user)

    def metering_tag_spend(self, tag):
        return wit_metering.tag_spend(tag)

    def catalog_models(self):
        return [_model(m) for m in wit_catalog.models()]

    def catalog_lookup(self, model):
        m = wit_catalog.lookup(model)
        return None if m is None else _model(m)

    def log_write(self, level, message):
        wit_log.write(wit_log.Level[level.name], message)


def _request(r) -> Request:
    return Request(
        model=r.model,
        operation=Operation[r.operation.name],
        api=Api[r.api.name],
        messages=[Message(m.role, m.text, m.image_count, m.tool_call_count) for m in r.messages],
        max_tokens=r.max_tokens,
        temperature=r.temperature,
        stream=r.stream,
        tool_count=r.tool_count,
        end_user=r.end_user,
        metadata=[(k, v) for k, v in r.metadata],
        prompt_token_estimate=r.prompt_token_estimate,
    )


def _context(c) -> Context:
    return Context(c.tenant_id, c.request_id, c.session_id, c.unix_millis, c.config)


def _completion(c) -> Completion:
    return Completion(
        c.request_id, Outcome[c.outcome.name], c.provider, c.model, c.end_user,
        c.prompt_tokens, c.completion_tokens, c.cost_microdollars, c.latency_ms, list(c.tags),
    )


def _decision(d):
    if isinstance(d, Plan):
        targets = [wit.Target(t.provider, t.model, t.credential, t.max_tokens, t.temperature) for t in d.targets]
        plan = wit.Plan(targets, d.reserve_microdollars, list(d.tags), d.trace, bool(d.notify_complete))
        return wit.Decision_Route(plan)
    if isinstance(d, Rejection):
        return wit.Decision_Reject(wit.Rejection(d.status, d.code, d.message))
    raise TypeError(f"route must return a Plan or a Rejection, not {type(d).__name__}")


def _traceback(e: BaseException) -> str:
    """The traceback without source lines: `traceback` would read them from files, and a
    component built with stubbed WASI traps on any file access."""
    lines = ["Traceback (most recent call last):"]
    tb = e.__traceback__
    while tb is not None:
        code = tb.tb_frame.f_code
        lines.append(f'  File "{code.co_filename}", line {tb.tb_lineno}, in {code.co_name}')
        tb = tb.tb_next
    lines.append(f"{type(e).__name__}: {e}")
    return "\n".join(lines)


def _logged(call):
    """Runs `call`; an exception fails the call (the gateway answers `policy_failed`) after
    its traceback went to the tenant's policy log, where the author can read it."""
    try:
        return call()
    except Exception as e:
        wit_log.write(wit_log.Level.ERROR, _traceback(e)[-1000:])
        raise


def export(route, on_complete=None):
    """The class componentize-py exports as the world's `route` and `on-complete`."""
    _host.install(_WitHost())

    class WitWorld:
        def route(self, request, context):
            return _logged(lambda: _decision(route(_request(request), _context(context))))

        def on_complete(self, completion, context):
            if on_complete is not None:
                _logged(lambda: on_complete(_completion(completion), _context(context)))

    return WitWorld
