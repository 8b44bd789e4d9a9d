"""The tenant's key-value store, with a quota. Refusals raise `MemoryDenied`."""

from typing import List, Optional

from . import _host


def get(key: str) -> Optional[bytes]:
    """Reads a value; `None` if absent."""
    return _host.current().memory_get(key)


def set(key: str, value: bytes) -> None:  # noqa: A001 - the WIT function's name
    """Writes a value. Raises `MemoryDenied` (`quota-exceeded`, `value-too-large`,
    `invalid-key`, ...)."""
    _host.current().memory_set(key, bytes(value))


def delete(key: str) -> None:
    """Deletes a key (absent keys are fine)."""
    _host.current().memory_delete(key)


def list_keys(prefix: str, limit: int) -> List[str]:
    """Keys starting with `prefix`, in byte order, at most `limit` (the host caps it at 1000)."""
    return _host.current().memory_list_keys(prefix, limit)


def get_u64(key: str) -> int:
    """Reads a little-endian u64 counter (absent or malformed reads as 0); the same bytes
    the Rust SDK's `memory::get_u64` reads, so policies in either language share counters."""
    value = get(key)
    if value is None or len(value) != 8:
        return 0
    return int.from_bytes(value, "little")


def set_u64(key: str, value: int) -> None:
    """Writes a little-endian u64 counter (0 to 2**64 - 1)."""
    set(key, int(value).to_bytes(8, "little"))
