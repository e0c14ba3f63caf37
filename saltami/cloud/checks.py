"""Argument checks shared by the cloud modules: each raises InvalidArgument naming the
value and what is allowed, before anything is created."""
from ..errors import InvalidArgument


def string_list(what, value):
    values = [value] if isinstance(value, str) else value
    if not isinstance(values, (list, tuple)) or not values or \
            not all(isinstance(v, str) and v for v in values):
        raise InvalidArgument(f"{what} must be a non-empty string or list of strings, not {value!r}")
    return list(values)


def check_str(what, value):
    if not isinstance(value, str) or not value:
        raise InvalidArgument(f"{what} must be a non-empty string, not {value!r}")


def check_properties(what, props):
    """Glance stores custom properties as strings; anything else is refused by its schema."""
    if not isinstance(props, dict):
        raise InvalidArgument(f"{what} must be a mapping of names to strings, not {props!r}")
    for key, value in props.items():
        if not isinstance(key, str) or not key:
            raise InvalidArgument(f"{what}: property names must be non-empty strings, not {key!r}")
        if not isinstance(value, str):
            raise InvalidArgument(f"{what}: property {key!r} must be a string (Glance stores "
                                  f"properties as strings; quote it), not {value!r}")


def check_choice(what, value, allowed):
    if value not in allowed:
        raise InvalidArgument(f"{what} {value!r} is not accepted here; allowed: {', '.join(allowed)}")


def check_timeout(timeout):
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0:
        raise InvalidArgument(f"timeout must be a positive number of seconds, not {timeout!r}")


def check_progress(progress):
    if progress is not None and not callable(progress):
        raise InvalidArgument(f"progress must be a callable(bytes_done, total), not {progress!r}")
