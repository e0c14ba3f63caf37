"""How a flavour's problems are worded: what is wrong with a value, and what is allowed
instead. Shared by the parts of the flavour package (names with a leading underscore are the
package's own, not for callers outside it); imports nothing of saltami but its errors."""
import difflib
import reprlib

from ..errors import InvalidArgument


def _allowed(problem, allowed=None):
    return f"{problem} (allowed: {allowed})" if allowed else problem


def _bad(problem, allowed=None):
    return InvalidArgument(_allowed(problem, allowed))


def _describe(value):
    # shortened: a value in the wrong place may be a whole pillar, secrets included
    return f"{type(value).__name__} {reprlib.repr(value)}"


def _suggest(word, choices):
    close = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""
