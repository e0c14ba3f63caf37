"""Polling with a deadline and backoff, shared by every wait in the library."""
import time

from ..errors import ResourceFailed, Timeout

FIRST_INTERVAL = 0.5
MAX_INTERVAL = 5.0
BACKOFF = 1.5


def wait_for(fetch, done, what, timeout, failed=None, describe=str, interval=FIRST_INTERVAL):
    """Call ``fetch()`` until ``done(obj)``; return that obj.

    ``failed(obj)`` returns a reason string when the resource reached a state it will not
    leave (then ResourceFailed is raised at once), or None. ``describe(obj)`` renders the last
    state for the timeout message. ``fetch`` may return None for "gone", which ``done`` sees.
    """
    if timeout is None or timeout <= 0:
        raise ValueError(f"timeout must be a positive number of seconds, not {timeout!r}")
    deadline = time.monotonic() + timeout
    while True:
        obj = fetch()
        if done(obj):
            return obj
        reason = failed(obj) if failed else None
        if reason:
            raise ResourceFailed(f"{what}: {reason}")
        left = deadline - time.monotonic()
        if left <= 0:
            raise Timeout(f"timed out after {timeout:g}s waiting for {what} (last seen: {describe(obj)})")
        time.sleep(min(interval, left))
        interval = min(interval * BACKOFF, MAX_INTERVAL)
