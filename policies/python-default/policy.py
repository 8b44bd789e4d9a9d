"""The stock `default` policy in Python: route the requested model (or the tenant's default
model) to the provider and credential named in the tenant's config, within an allow-list.
Same config and decisions as the Rust `policies/default`.

Config (every field optional)::

    {"provider": "openai", "credential": "default", "model": "gpt-4o",
     "allowed_models": ["gpt-4o", "gpt-4o-mini"], "max_tokens": 2000, "temperature": 0.7}

A provider-qualified model (`anthropic/claude-sonnet-4`) goes to that provider with the
tenant's first credential for it.
"""

from dataclasses import dataclass, field
from typing import List, Optional

from tollgate_policy import ConfigError, Plan, Target, credentials, reject


@dataclass
class Config:
    #: Provider for unqualified models (default `demo`).
    provider: Optional[str] = None
    #: Credential name for that provider (default: the tenant's first for it, or none).
    credential: Optional[str] = None
    #: Model used when the request names `default` or nothing.
    model: Optional[str] = None
    #: If non-empty, the only models (bare names) the tenant may use.
    allowed_models: List[str] = field(default_factory=list)
    #: Cap on completion tokens.
    max_tokens: Optional[int] = None
    #: Temperature used when the client sets none.
    temperature: Optional[float] = None


def route(request, context):
    try:
        config = context.config(Config)
    except ConfigError as e:
        return e.rejection()
    requested = request.model
    if requested in ("", "default"):
        if config.model is None:
            return reject(400, "model_required", "the request names no model and the tenant has no default model")
        requested = config.model
    qualifier, _, model = requested.partition("/") if "/" in requested else (None, "", requested)
    if config.allowed_models and model not in config.allowed_models:
        allowed = ", ".join(config.allowed_models)
        return reject(400, "model_not_allowed", f"model '{model}' is not allowed for this tenant; allowed: {allowed}")
    provider = qualifier or config.provider or "demo"
    if qualifier is None and config.credential is not None:
        credential = config.credential
    else:
        found = credentials.for_provider(provider)
        credential = found.name if found else ""
    target = Target(provider, model, credential, max_tokens=config.max_tokens)
    if request.temperature is None:
        target.temperature = config.temperature
    return Plan.to(target, trace=f"default:{requested}")
