"""The tenant's bounded policy log (32 lines per call by default)."""

from . import _host
from .types import Level


def write(level: Level, message: str) -> None:
    """Appends a message at `level`."""
    _host.current().log_write(level, message)


def info(message: str) -> None:
    """Appends an info message."""
    write(Level.INFO, message)


def warn(message: str) -> None:
    """Appends a warning."""
    write(Level.WARN, message)
