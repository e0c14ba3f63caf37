"""Image names: the pattern of a flavour's ``image_name`` (``{flavour}-{date}-{time}`` by
default), the fields it may use, and the name it gives a build. Pure: no cloud, no Salt."""
import string

from .problems import _bad, _suggest

NAME_FIELDS = ("flavour", "date", "time", "fingerprint", "build")
# without one of these, two builds of a flavour would want the same image name
# {date} alone is not enough: two builds of one day would share the name
UNIQUE_FIELDS = ("time", "fingerprint", "build")
NAME_FIELDS_HELP = ("{flavour}, {date} (YYYYMMDD), {time} (HHMMSS), {fingerprint}, {build}, "
                    "with format specs such as {fingerprint:.12}; {{ and }} for literal braces")
DEFAULT_IMAGE_NAME = "{flavour}-{date}-{time}"
# what validating a pattern renders it with: the build's real values have these lengths
SAMPLE_NAME_FIELDS = {"date": "20991231", "time": "235959", "fingerprint": "f" * 64, "build": "a1b2c3"}
GLANCE_MAX = 255        # Glance's limit on image names and on property names and values


def pattern_fields(pattern):
    """The fields an image name pattern uses; InvalidArgument naming the pattern for bad
    braces, unknown fields, or anything but a plain field with a format spec."""
    try:
        parsed = list(string.Formatter().parse(pattern))
    except ValueError as e:
        raise _bad(f"image name pattern {pattern!r}: {e}", NAME_FIELDS_HELP) from None
    used = set()
    for _, field, spec, conversion in parsed:
        if field is None:
            continue
        if field not in NAME_FIELDS:
            raise _bad(f"image name pattern {pattern!r}: unknown field {{{field}}}"
                       f"{_suggest(field, NAME_FIELDS)}", NAME_FIELDS_HELP)
        if conversion or "{" in spec:
            raise _bad(f"image name pattern {pattern!r}: {{{field}}} takes a format spec only, "
                       f"without conversions or nested fields", NAME_FIELDS_HELP)
        used.add(field)
    return used


def render_name(pattern, **fields):
    """The image name ``pattern`` gives with ``fields``: ``flavour``, ``date`` (YYYYMMDD) and
    ``time`` (HHMMSS) of the build, ``fingerprint``, ``build`` (a short build id). Values are
    formatted as strings, so ``{fingerprint:.12}`` keeps the first 12 characters."""
    unknown = sorted(set(fields) - set(NAME_FIELDS))
    if unknown:
        raise _bad(f"unknown image name fields: {', '.join(unknown)}", ", ".join(NAME_FIELDS))
    missing = sorted(pattern_fields(pattern) - set(fields))
    if missing:
        raise _bad(f"image name pattern {pattern!r} needs a value for {', '.join(missing)}")
    try:
        name = pattern.format(**{key: str(value) for key, value in fields.items()})
    except ValueError as e:
        raise _bad(f"image name pattern {pattern!r}: {e}", NAME_FIELDS_HELP) from None
    if not name.strip() or len(name) > GLANCE_MAX:
        raise _bad(f"image name pattern {pattern!r} gives {name!r}",
                   f"names of 1 to {GLANCE_MAX} characters, not only blanks")
    return name

