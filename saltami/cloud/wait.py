"""Polling with a deadline, shared by every wait in the library.

The services offer no events to a user, so a wait asks again and again. It asks often at
first (most waits end within seconds: a server becomes active, a volume available) and then
less often as the wait goes on: the next question comes after a share (RATIO) of the time
waited so far, between FIRST_INTERVAL and MAX_INTERVAL. What a wait overshoots the moment
its resource got ready is then at most that share of it, and a long wait asks a number of
times that grows with the logarithm of its length, not with the length.
"""
import time

from ..errors import ResourceFailed, Timeout

FIRST_INTERVAL = 0.5
MAX_INTERVAL = 5.0
RATIO = 0.15


def next_interval(waited, first=FIRST_INTERVAL):
    """Seconds until the next question, ``waited`` seconds into a wait."""
    return min(max(waited * RATIO, first), MAX_INTERVAL)


def wait_for(fetch, done, what, timeout, failed=None, describe=str, interval=FIRST_INTERVAL):
    """Call ``fetch()`` until ``done(obj)``; return that obj.

    ``failed(obj)`` returns a reason string when the resource reached a state it will not
    leave (then ResourceFailed is raised at once), or None. ``describe(obj)`` renders the last
    state for the timeout message. ``fetch`` may return None for "gone", which ``done`` sees.
    ``interval`` is the shortest time between two questions.
    """
    if timeout is None or timeout <= 0:
        raise ValueError(f"timeout must be a positive number of seconds, not {timeout!r}")
    start = time.monotonic()
    deadline = start + timeout
    while True:
        obj = fetch()
        if done(obj):
            return obj
        reason = failed(obj) if failed else None
        if reason:
            raise ResourceFailed(f"{what}: {reason}")
        now = time.monotonic()
        left = deadline - now
        if left <= 0:
            raise Timeout(f"timed out after {timeout:g}s waiting for {what} (last seen: {describe(obj)})")
        time.sleep(min(next_interval(now - start, interval), left))
