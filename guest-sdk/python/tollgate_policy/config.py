"""Reading the tenant's JSON policy configuration into a typed dataclass.

Strict like the Rust SDK's serde (`deny_unknown_fields`): a typo in a field name, a
missing required field or a value of the wrong type is a `ConfigError` naming it, so a
tenant learns of the mistake on its first request instead of being routed by defaults.
"""

from __future__ import annotations

import dataclasses
import json
import typing

from .types import Rejection


class ConfigError(Exception):
    """The tenant's policy configuration did not match what the policy expects."""

    def __init__(self, why: str):
        super().__init__(f"invalid policy config: {why}")

    def rejection(self) -> Rejection:
        """The refusal a policy should answer with when its configuration is unusable: a
        400 `invalid_policy_config` that names the problem and nothing else."""
        return Rejection(400, "invalid_policy_config", str(self))


def parse(text: str, schema=None):
    """`text` (JSON) as an instance of the dataclass `schema`, or as a dict without one."""
    try:
        value = json.loads(text if text.strip() else "{}")
    except ValueError as e:
        raise ConfigError(str(e)) from None
    if schema is None:
        if not isinstance(value, dict):
            raise ConfigError(f"expected a JSON object, found {_kind(value)}")
        return value
    return _convert(value, schema, "")


def _kind(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def _at(path: str) -> str:
    return f" at `{path}`" if path else ""


def _convert(value, hint, path: str):
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin is typing.Union:
        if value is None and type(None) in args:
            return None
        rest = [a for a in args if a is not type(None)]
        if len(rest) == 1:
            return _convert(value, rest[0], path)
        raise TypeError("config schemas support Optional[T], not other unions")
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            raise ConfigError(f"expected an object{_at(path)}, found {_kind(value)}")
        fields = {f.name: f for f in dataclasses.fields(hint)}
        hints = typing.get_type_hints(hint)
        for key in value:
            if key not in fields:
                expected = ", ".join(f"`{name}`" for name in fields)
                raise ConfigError(f"unknown field `{key}`{_at(path)}, expected one of {expected}")
        kwargs = {}
        for name, f in fields.items():
            inner = f"{path}.{name}" if path else name
            if name in value:
                kwargs[name] = _convert(value[name], hints[name], inner)
            elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                if typing.get_origin(hints[name]) is typing.Union and type(None) in typing.get_args(hints[name]):
                    kwargs[name] = None
                else:
                    raise ConfigError(f"missing field `{inner}`")
        return hint(**kwargs)
    if origin in (list, typing.List):
        if not isinstance(value, list):
            raise ConfigError(f"expected an array{_at(path)}, found {_kind(value)}")
        return [_convert(v, args[0], f"{path}[{i}]") for i, v in enumerate(value)]
    if origin in (dict, typing.Dict):
        if not isinstance(value, dict):
            raise ConfigError(f"expected an object{_at(path)}, found {_kind(value)}")
        return {k: _convert(v, args[1], f"{path}.{k}") for k, v in value.items()}
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"expected a boolean{_at(path)}, found {_kind(value)}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"expected an integer{_at(path)}, found {_kind(value)}")
        if value < 0:
            raise ConfigError(f"expected a non-negative integer{_at(path)}, found {value}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"expected a number{_at(path)}, found {_kind(value)}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"expected a string{_at(path)}, found {_kind(value)}")
        return value
    if hint is typing.Any or hint is object:
        return value
    raise TypeError(f"config schemas do not support the type {hint!r}")
