"""Which host the capability modules call: the gateway's imports inside a component
(installed by `_component`), or the fake gateway of `testing.Harness` in a native test."""

_current = None


def current():
    """The installed host; a capability called outside a route call is a bug."""
    if _current is None:
        raise RuntimeError("tollgate_policy host functions run only inside the gateway or Harness.route")
    return _current


def install(host):
    """Makes `host` the one the capability modules call; returns the previous one."""
    global _current
    previous, _current = _current, host
    return previous
