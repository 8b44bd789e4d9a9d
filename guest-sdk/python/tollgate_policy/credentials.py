"""The calling tenant's credentials: names and providers, never secrets."""

from typing import List, Optional

from . import _host
from .types import CredentialInfo


def list() -> List[CredentialInfo]:  # noqa: A001 - the WIT function's name
    """Lists the tenant's credentials."""
    return _host.current().credentials_list()


def for_provider(provider: str) -> Optional[CredentialInfo]:
    """The first credential stored for `provider`, if any."""
    return next((c for c in _host.current().credentials_list() if c.provider == provider), None)
