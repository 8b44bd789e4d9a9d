"""The stock `budget-guard` policy in Python: serve with the primary model until the
tenant's spend passes a share of its budget, then downgrade to a cheaper model; cap each
end user's spend with counters kept in the tenant's memory. Same config, decisions and
memory layout as the Rust `policies/budget-guard`.

Config::

    {"primary": {"provider": "openai", "model": "gpt-4o", "credential": "oa"},
     "fallback": {"provider": "openai", "model": "gpt-4o-mini", "credential": "oa"},
     "downgrade_at": 0.8, "user_cap_microdollars": 2000000}

End-user spend is counted per budget period in memory keys `user-spend/<period>/<user>`
(little-endian u64), updated by `on_complete`; a user at the cap gets 429
`user_budget_exceeded`.
"""

from dataclasses import dataclass
from typing import Optional

from tollgate_policy import ConfigError, MemoryDenied, Plan, Target, log, memory, metering, reject

#: Counters saturate here, as the Rust policy's `saturating_add` does.
U64_MAX = 2**64 - 1


@dataclass
class TargetConfig:
    provider: str
    model: str
    credential: str = ""


@dataclass
class Config:
    #: Used while spend is below `downgrade_at`.
    primary: TargetConfig
    #: Used once spend passes `downgrade_at`.
    fallback: TargetConfig
    #: Share of the budget (spent plus reserved) at which to downgrade.
    downgrade_at: float = 0.8
    #: Per-end-user cap for the period, in micro-dollars.
    user_cap_microdollars: Optional[int] = None


def user_key(period_id: str, user: str) -> str:
    return f"user-spend/{period_id}/{user}"


def route(request, context):
    try:
        config = context.config(Config)
    except ConfigError as e:
        return e.rejection()
    budget = metering.budget()
    user = request.end_user
    if config.user_cap_microdollars is not None and user is not None:
        try:
            spent = memory.get_u64(user_key(budget.period_id, user))
        except MemoryDenied as e:
            # Fail closed: a cap that cannot be read is not enforced by guessing.
            return reject(429, "user_budget_unavailable", f"end-user budget unavailable: {e}")
        if spent >= config.user_cap_microdollars:
            return reject(429, "user_budget_exceeded", f"end user '{user}' has used its budget for {budget.period_id}")
    share = budget.used_share()
    if share >= config.downgrade_at:
        chosen, why = config.fallback, f"downgraded at {share * 100:.0f}% of budget"
    else:
        chosen, why = config.primary, f"primary at {share * 100:.0f}% of budget"
    notify = config.user_cap_microdollars is not None and user is not None
    return Plan.to(Target(chosen.provider, chosen.model, chosen.credential), trace=why, notify_complete=notify)


def on_complete(completion, context):
    user = completion.end_user
    if user is None:
        return
    key = user_key(metering.budget().period_id, user)
    try:
        spent = memory.get_u64(key)
    except MemoryDenied:
        spent = 0
    try:
        memory.set_u64(key, min(spent + completion.cost_microdollars, U64_MAX))
    except MemoryDenied as e:
        log.warn(f"could not record spend of end user '{user}': {e}")
