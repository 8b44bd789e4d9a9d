"""The operator's model catalog with the tenant's prices."""

from typing import List, Optional

from . import _host
from .types import ModelInfo


def models() -> List[ModelInfo]:
    """Every model on offer."""
    return _host.current().catalog_models()


def lookup(model: str) -> Optional[ModelInfo]:
    """One model by name (`gpt-4o` or `openai/gpt-4o`); dated variants resolve to their family."""
    return _host.current().catalog_lookup(model)
