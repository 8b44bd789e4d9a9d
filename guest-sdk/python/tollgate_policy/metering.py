"""Read-only view of the tenant's spend, in micro-dollars."""

from . import _host
from .types import BudgetStatus


def budget() -> BudgetStatus:
    """Budget and spend in the current period."""
    return _host.current().metering_budget()


def user_spend(end_user: str) -> int:
    """Settled spend of one end user this period."""
    return _host.current().metering_user_spend(end_user)


def tag_spend(tag: str) -> int:
    """Settled spend under one tag this period."""
    return _host.current().metering_tag_spend(tag)
