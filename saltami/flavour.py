"""Image flavours: the recipes in pillar ``ami:flavours``, each a base image, the SLS applied
to it, and how the result is published.

    ami:
      defaults: {...}      # optional: keys every flavour inherits
      flavours:
        NAME: {...}

pillar.example documents every key. A flavour is merged from, weakest first: ``ami:defaults``,
the flavours it ``extends`` (the root first), then its own keys:

- mappings (``pillar``, ``properties``, ``test``, ``timeouts``...) merge key by key,
  recursively; the child's value wins;
- lists replace the inherited list, except ``sls`` and ``tags``, which are appended to it
  (duplicates dropped, first position kept): a child adds SLS, it cannot remove one;
- ``base`` replaces the inherited base whole: merging two image filters would silently
  require both to match;
- a key set to null drops the inherited value, so the key's default applies.

``extends`` and ``from_parent`` are a flavour's own, never inherited nor defaults. A flavour
with ``from_parent: true`` builds from its parent's newest promoted image (an image family):
its ``sls`` are its own only (the parent's image holds the parent's already), and its base is
that image, found by the build (``provenance.parent_image``), whatever ``base`` says.

The merged flavour is validated as a whole and every problem is reported in one error.
Nothing here talks to a cloud or to Salt: whether the SLS exist is asked of the master's
file server through ``check_sls``.
"""
import copy
import datetime
import difflib
import functools
import hashlib
import json
import os
import re
import reprlib
import string
import uuid
from collections.abc import Mapping, Sequence

from .cloud.glance import VISIBILITIES
from .errors import InvalidArgument, NotFound
from .vanilla import RELEASES as VANILLA_RELEASES

# A flavour's name goes into image names, minion ids, event tags and file names.
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
NAME_HELP = "letters, digits, '.', '_' and '-', starting with a letter or a digit, at most 64 characters"
SLS_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]*(\.[A-Za-z0-9_][A-Za-z0-9_-]*)*")
SLS_HELP = "dotted names of letters, digits, '_' and '-', such as postgres or postgres.client"
# snapshot: boot the base, apply the SLS through a minion, snapshot the server;
# volume: a volume from the base, the SLS applied through a chroot on a builder, uploaded;
# local: a copy of a local base image, the SLS applied through a chroot on this machine
STRATEGIES = ("snapshot", "volume", "local")
# what the local provider writes (and uploads, with a cloud): compressed qcow2 (zlib, which
# every qemu reads, or zstd, smaller and faster, qemu >= 5.1), a raw disk, the AMI triplet
OUTPUTS = ("qcow2", "qcow2-zstd", "raw", "ami")
DISK_FORMATS = ("qcow2", "raw")

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

RESERVED_PREFIX = "ami_"
# Glance's own image attributes: Glance refuses them as custom properties, or the build sets them
GLANCE_ATTRIBUTES = frozenset((
    "id", "name", "status", "visibility", "protected", "os_hidden", "checksum", "os_hash_algo",
    "os_hash_value", "owner", "size", "virtual_size", "disk_format", "container_format",
    "created_at", "updated_at", "tags", "min_disk", "min_ram", "direct_url", "locations",
    "self", "file", "schema", "stores"))
FLAVOUR_KEY_OF_ATTRIBUTE = {"name": "image_name", "visibility": "visibility", "tags": "tags",
                            "min_disk": "min_disk", "min_ram": "min_ram"}

APPENDED = ("sls", "tags")
REPLACED = ("base",)

# claim: how long a build waits for another build of its flavour to finish
TIMEOUTS = {"boot": 600, "minion": 300, "apply": 1800, "snapshot": 1800, "validate": 900, "claim": 3600}

# The keys that change what the image holds or how it boots. The others only change how it
# is published (image_name, visibility, members, tags, keep, prune_shared, description), how the builder
# is reached (networks, key_name, security_groups, master, timeouts) or how it is tested.
# base and pillar enter the fingerprint as the base image's id and hash and the pillar's hash.
# What becomes of salt in the image: kept as it is; the image's own minion service disabled
# (no clone starts a minion of its own at boot); or what the build installed removed
SALT_IN_IMAGE = ("disable", "keep", "remove")
# What pruning does to an image other projects may use (visibility shared, community, public)
PRUNE_SHARED = ("hide", "deactivate", "delete")
IMAGE_KEYS = ("sls", "strategy", "volume_size", "flavor", "properties", "min_disk", "min_ram", "outputs",
              "salt", "master_pillar")


# ------------------------------------------------------------------------------ problems
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


class _Where:
    """A key of one flavour, and the list of problems that every key of it adds to."""

    def __init__(self, flavour, key="", problems=None):
        self.flavour = flavour
        self.key = key
        self.problems = [] if problems is None else problems

    def sub(self, key):
        return _Where(self.flavour, f"{self.key}.{key}" if self.key else str(key), self.problems)

    def add(self, problem):
        self.problems.append(f"flavour {self.flavour!r}: key {self.key!r}: {problem}")

    def check(self, check, value):
        """``check(value, self)``, or None once its problem is recorded."""
        try:
            return check(value, self)
        except InvalidArgument as e:
            self.add(str(e))
            return None

    def raise_problems(self):
        if self.problems:
            raise InvalidArgument("\n".join(self.problems))


class _Required:
    """The default of a key that has none; ``hint`` says what to give."""

    def __init__(self, hint):
        self.hint = hint


# ------------------------------------------------------------------------------ checks
# Each check takes (value, where) and returns the value normalised, or raises InvalidArgument
# for one problem; checks of mappings record their entries' problems at their own keys.

def _text(value, where):
    if not isinstance(value, str) or not value:
        raise _bad(f"must be a non-empty string, not {_describe(value)}")
    return value


def _boolean(value, where):
    if not isinstance(value, bool):
        raise _bad(f"must be a boolean, not {_describe(value)}", "true, false")
    return value


def _integer(minimum):
    def check(value, where):
        if isinstance(value, bool) or not isinstance(value, int):
            raise _bad(f"must be an integer, not {_describe(value)}", f"integers >= {minimum}")
        if value < minimum:
            raise _bad(f"{value} is too small", f"integers >= {minimum}")
        return value
    return check


def _choice(allowed):
    def check(value, where):
        if not isinstance(value, str) or value not in allowed:
            raise _bad(f"{value!r} is not accepted", ", ".join(allowed))
        return value
    return check


def _as_list(value):
    """One string stands for a list of one."""
    return [value] if isinstance(value, str) else value


def _unique(items):
    kept = []
    for item in items:
        if item not in kept:
            kept.append(item)
    return kept


def _is_strings(items):
    return isinstance(items, list) and all(isinstance(i, str) and i for i in items)


def _strings(value, where):
    items = _as_list(value)
    if not isinstance(items, list):
        raise _bad(f"must be a list of non-empty strings, not {_describe(value)}")
    if not _is_strings(items):
        bad = [i for i in items if not isinstance(i, str) or not i]
        raise _bad(f"must hold non-empty strings only, not {', '.join(map(_describe, bad))}")
    return items


def _tags(value, where):
    return _unique(_strings(value, where))


def _sls_names(value, where):
    names = _unique(_strings(value, where))
    bad = [n for n in names if not SLS_RE.fullmatch(n)]
    if bad:
        raise _bad(f"not SLS names: {', '.join(map(repr, bad))}", SLS_HELP)
    return names


def _outputs(value, where):
    names = _unique(_strings(value, where))
    bad = [n for n in names if n not in OUTPUTS]
    if bad or not names:
        raise _bad(f"not outputs: {', '.join(map(repr, bad))}" if bad else "must name at least one output",
                   ", ".join(OUTPUTS))
    return names


def _some_sls(value, where):
    names = _sls_names(value, where)
    if not names:
        raise _bad("is empty: a flavour applies at least one SLS", SLS_HELP)
    return names


def _mapping(value, where):
    if not isinstance(value, dict):
        raise _bad(f"must be a mapping, not {_describe(value)}")
    return value


def _pillar(value, where):
    # the build fingerprints it: data that cannot be hashed fails now, not after a boot
    canonical_hash(_mapping(value, where))
    return value


def _property_problem(key, value):
    if not isinstance(key, str) or not key:
        return f"a property name must be a non-empty string, not {_describe(key)}"
    if not isinstance(value, str):
        return f"must be a string, not {_describe(value)}: Glance stores strings (quote numbers and booleans)"
    if len(key) > GLANCE_MAX or len(value) > GLANCE_MAX:
        return f"Glance limits property names and values to {GLANCE_MAX} characters"
    return None


def _property_values(value, where):
    for key, item in _mapping(value, where).items():
        problem = _property_problem(key, item)
        if problem:
            where.sub(key).add(problem)
    return value


def _properties(value, where):
    for key in _property_values(value, where):
        if str(key).startswith(RESERVED_PREFIX):
            where.sub(key).add(_allowed(f"names starting with {RESERVED_PREFIX} are reserved for the "
                                        "build's own provenance properties", "any other name"))
        elif key in FLAVOUR_KEY_OF_ATTRIBUTE:
            where.sub(key).add(f"is a Glance image attribute, not a custom property: set it with the "
                               f"flavour's own key {FLAVOUR_KEY_OF_ATTRIBUTE[key]!r}")
        elif key in GLANCE_ATTRIBUTES:
            where.sub(key).add("is a Glance image attribute, not a custom property: Glance or the "
                               "build sets it")
    return value


def _image_id(value, where):
    try:
        uuid.UUID(_text(value, where))
    except ValueError:
        raise _bad(f"{value!r} is not a Glance image id", "a UUID; to find an image by its name, "
                   "use name") from None
    return value


BASE_HELP = ("a Glance image id or name, or a mapping with id alone, or with name, tags, "
             "properties (and optionally visibility, owner); with strategy local, {file: PATH} "
             "or {vanilla: RELEASE}")
# the bases of strategy local: an image file on this machine, or a vanilla image made here
LOCAL_BASE_KEYS = ("file", "vanilla")
LOCAL_BASE_HELP = (f"{{file: /absolute/path/to/image.raw or .qcow2}} or "
                   f"{{vanilla: {' or '.join(VANILLA_RELEASES)}}}")


def is_local_base(base):
    return isinstance(base, dict) and bool(set(base) & set(LOCAL_BASE_KEYS))


def _local_base(value, where):
    """``{file: PATH}`` (absolute) or ``{vanilla: RELEASE}``, alone."""
    others = sorted(set(value) - set(LOCAL_BASE_KEYS), key=str)
    given = [key for key in LOCAL_BASE_KEYS if key in value]
    if others or len(given) != 1:
        raise _bad(f"a local base takes one of {', '.join(LOCAL_BASE_KEYS)} alone, not "
                   f"{', '.join(map(str, sorted(value, key=str)))}", LOCAL_BASE_HELP)
    key = given[0]
    item = value[key]
    if key == "file" and (not isinstance(item, str) or not os.path.isabs(item)):
        raise _bad(f"file {_describe(item)} is not an absolute path", LOCAL_BASE_HELP)
    if key == "vanilla" and item not in VANILLA_RELEASES:
        raise _bad(f"no vanilla image {_describe(item)}", ", ".join(VANILLA_RELEASES))
    return {key: item}


def _base(value, where):
    """What ``glance.find_image`` takes: a string as is (an id, else a name), ``{id: X}`` as X,
    and a filter mapping with ``tags`` renamed to its ``tag``; a local base as it is."""
    if isinstance(value, str):
        return _text(value, where)
    if not isinstance(value, dict):
        raise _bad(f"must be a string or a mapping, not {_describe(value)}", BASE_HELP)
    if is_local_base(value):
        return _local_base(value, where)
    ref = _fields(value, BASE_FIELDS, where)
    # the keys given decide the form, even when a value was refused (and reported) above
    given = [key for key in BASE_FIELDS if value.get(key) is not None]
    if "id" in given:
        if len(given) > 1:
            others = ", ".join(key for key in given if key != "id")
            raise _bad(f"id names one image: it cannot be combined with {others}", BASE_HELP)
        return ref["id"]
    if not {"name", "tags", "properties"} & set(given):
        raise _bad("names no image", BASE_HELP)
    ref = {key: ref[key] for key in given}
    if "tags" in ref:
        ref["tag"] = ref.pop("tags")
    return ref


def _networks(value, where):
    if value in ("none", "auto"):
        return value
    networks = _as_list(value)
    if not networks or not _is_strings(networks):
        raise _bad(f"must be 'none', 'auto' or a list of network names or ids, not {_describe(value)}")
    return networks


def _image_name(value, where):
    pattern = _text(value, where)
    if not pattern_fields(pattern) & set(UNIQUE_FIELDS):
        raise _bad(f"image name pattern {pattern!r} would give two builds the same name: it needs "
                   f"one of {', '.join('{%s}' % f for f in UNIQUE_FIELDS)}", NAME_FIELDS_HELP)
    # bad format specs and names too long for Glance show only when rendered
    render_name(pattern, flavour=where.flavour, **SAMPLE_NAME_FIELDS)
    return pattern


def _directory(value, where):
    if not isinstance(value, str) or not os.path.isabs(value):
        raise _bad(f"must be an absolute path, not {_describe(value)}")
    return value


def _url(value, where):
    if not isinstance(value, str) or not re.fullmatch(r"(https?|socks5h?)://[^\s/]+(:\d+)?/?", value):
        raise _bad(f"{_describe(value)} is not a proxy URL", "http://HOST:PORT, https://HOST:PORT")
    return value


def _nested(fields):
    return lambda value, where: _fields(value, fields, where)


BASE_FIELDS = {
    "id": (None, _image_id),
    "name": (None, _text),
    "tags": (None, _tags),
    "properties": (None, _property_values),
    "visibility": (None, _choice(VISIBILITIES + ("all",))),
    "owner": (None, _text),
}

TEST_FIELDS = {
    "sls": (None, _sls_names),      # None: the flavour's own sls, filled in by _across
    "cmd": (None, _text),
    "expect_no_changes": (True, _boolean),
}

# a flavour's own keys: ami:defaults cannot hold them, and a child does not inherit them
OWN_KEYS = ("extends", "from_parent")
FROM_PARENT_SLS_HELP = (f"{SLS_HELP}: with from_parent, the SLS this flavour applies on its parent's "
                        "image, which holds the parent's already")

FIELDS = {
    "description": (None, _text),
    "extends": (None, _text),
    "from_parent": (False, _boolean),
    "base": (_Required(BASE_HELP), _base),
    "builder": (None, _base),
    "sls": (_Required(SLS_HELP), _some_sls),
    "pillar": ({}, _pillar),
    "flavor": (None, _text),
    "networks": ("none", _networks),
    "key_name": (None, _text),
    "security_groups": ([], _strings),
    "volume_size": (None, _integer(1)),
    "strategy": ("snapshot", _choice(STRATEGIES)),
    "disk_format": ("qcow2", _choice(DISK_FORMATS)),
    "outputs": (["qcow2"], _outputs),
    "output_dir": (None, _directory),
    "image_name": (DEFAULT_IMAGE_NAME, _image_name),
    "properties": ({}, _properties),
    "tags": ([], _tags),
    "visibility": ("private", _choice(VISIBILITIES)),
    "members": ([], _strings),
    "keep": (3, _integer(1)),
    "prune_shared": ("hide", _choice(PRUNE_SHARED)),
    "min_disk": (None, _integer(0)),
    "min_ram": (None, _integer(0)),
    "validate": (True, _boolean),
    "test": ({}, _nested(TEST_FIELDS)),
    "master": (None, _text),
    "master_pillar": (False, _boolean),
    "proxy": (None, _url),
    "config_drive": (None, _boolean),
    "salt": ("disable", _choice(SALT_IN_IMAGE)),
    "timeouts": ({}, _nested({key: (seconds, _integer(1)) for key, seconds in TIMEOUTS.items()})),
}


def _fields(value, fields, where):
    """``value`` checked against ``fields`` ({key: (default, check)}), defaults filled in for
    missing or null keys; every problem is recorded at its key."""
    if not isinstance(value, dict):
        raise _bad(f"must be a mapping, not {_describe(value)}", "keys " + ", ".join(fields))
    for key in sorted(set(value) - set(fields), key=str):
        where.sub(key).add(_allowed(f"unknown key{_suggest(key, fields)}", ", ".join(fields)))
    return {key: _field(value.get(key), default, check, where.sub(key))
            for key, (default, check) in fields.items()}


def _field(value, default, check, where):
    if value is None:
        if isinstance(default, _Required):
            where.add(_allowed("required, and not set", default.hint))
            return None
        if default is None:
            return None
        # defaults go through the check too: it fills nested defaults and normalises
        value = copy.deepcopy(default)
    return where.check(check, value)


def _across(merged, flavour, where, own=None):
    """Rules and defaults across keys; ``merged`` tells an unset key from one whose value was
    refused, ``own`` (the flavour's own layer) a key set from one inherited."""
    if flavour["from_parent"]:
        if flavour["extends"] is None:
            where.sub("from_parent").add(_allowed(
                "builds from the image of the flavour this one extends, and it extends none",
                "from_parent: true with extends: PARENT"))
        elif flavour["strategy"] == "local":
            where.sub("from_parent").add(_allowed(
                "builds from its parent's image in Glance, and strategy 'local' bakes a local base",
                "strategy snapshot or volume"))
        elif (own or {}).get("base") is not None:
            where.sub("base").add(_allowed(
                "a flavour with from_parent builds from its parent's newest promoted image: it names "
                "no base of its own", "no base key, or from_parent: false"))
    if flavour["test"] and flavour["test"]["sls"] is None:
        # by default the new image must already be what the flavour's SLS describe
        flavour["test"]["sls"] = list(flavour["sls"] or [])
    if flavour["strategy"] == "snapshot" and merged.get("flavor") is None:
        where.sub("flavor").add(_allowed("required with strategy 'snapshot', and not set",
                                         "the name or id of the nova flavor the builder boots with"))
    if flavour["strategy"] == "volume" and merged.get("volume_size") is None:
        where.sub("volume_size").add(_allowed(
            "required with strategy 'volume': the size in GiB of the volume the image is baked on",
            "integers >= 1"))
    local = flavour["strategy"] == "local"
    if flavour["base"] is not None and local != is_local_base(flavour["base"]):
        where.sub("base").add(
            _allowed(f"strategy 'local' bakes a local image, not {_describe(merged.get('base'))}",
                     LOCAL_BASE_HELP) if local else
            _allowed(f"a local base needs strategy 'local' (strategy is {flavour['strategy']!r})",
                     "strategy local, or a Glance image as base"))
    if flavour["members"] and flavour["visibility"] not in (None, "shared"):
        where.sub("members").add(_allowed(
            f"projects can be members of a shared image only, and visibility is {flavour['visibility']!r}",
            "members with visibility 'shared'"))


# ------------------------------------------------------------------------------ image names
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


# ------------------------------------------------------------------------------ pillar
def _plain(value):
    """Plain dicts and lists: pillar may hold Salt's immutable or ordered types."""
    if isinstance(value, Mapping):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes, bytearray)):
        return [_plain(item) for item in value]
    return value


def _section(value, what):
    value = {} if value is None else _plain(value)
    if not isinstance(value, dict):
        raise _bad(f"{what} must be a mapping, not {_describe(value)}")
    return value


def _flavours(pillar_ami):
    flavours = _section(_section(pillar_ami, "pillar ami").get("flavours"), "pillar ami:flavours")
    odd = [name for name in flavours if not isinstance(name, str)]
    if odd:
        raise _bad(f"pillar ami:flavours: flavour names must be strings; quote {', '.join(map(repr, odd))}")
    return flavours


def _defaults(pillar_ami):
    defaults = _section(_section(pillar_ami, "pillar ami").get("defaults"), "pillar ami:defaults")
    for key in OWN_KEYS:
        if key in defaults:
            raise _bad(f"pillar ami:defaults: key {key!r} cannot be a default: a flavour names its own "
                       "parent, and whether it builds from its parent's image")
    return defaults


def _layer(flavours, name):
    return _section(flavours[name], f"flavour {name!r}")


def _known(flavours):
    return ", ".join(sorted(flavours)) or "none"


def _lineage(flavours, name):
    """``name``, its parent, and so on up to the flavour that extends none."""
    lineage = [name]
    while (parent := _layer(flavours, lineage[-1]).get("extends")) is not None:
        child = lineage[-1]
        if not isinstance(parent, str) or not parent:
            raise _bad(f"flavour {child!r}: key 'extends': must be the name of a flavour, "
                       f"not {_describe(parent)}", f"flavours {_known(flavours)}")
        if parent in lineage:
            loop = lineage[lineage.index(parent):] + [parent]
            raise _bad(f"flavour {child!r}: key 'extends': inheritance loop {' -> '.join(loop)}")
        if parent not in flavours:
            raise _bad(f"flavour {child!r}: key 'extends': no flavour {parent!r}"
                       f"{_suggest(parent, flavours)}", f"known flavours {_known(flavours)}")
        lineage.append(parent)
    return lineage


def _append(inherited, own):
    if isinstance(inherited, (str, list)) and isinstance(own, (str, list)):
        return _unique(_as_list(inherited) + _as_list(own))
    return own


def _deep_merge(inherited, own):
    if isinstance(inherited, dict) and isinstance(own, dict):
        return {**inherited, **{key: _deep_merge(inherited.get(key), value) for key, value in own.items()}}
    return own


def _merge(inherited, own):
    """``own`` keys over ``inherited`` ones, by the rules in the module docstring."""
    merged = dict(inherited)
    for key, value in own.items():
        if key in APPENDED:
            merged[key] = _append(merged.get(key), value)
        elif key in REPLACED:
            merged[key] = value
        else:
            merged[key] = _deep_merge(merged.get(key), value)
    return merged


def names(pillar_ami):
    """The names of the flavours in pillar ``ami`` (the ``ami`` mapping), sorted."""
    return sorted(_flavours(pillar_ami))


def resolve(pillar_ami, name):
    """Flavour ``name`` of pillar ``ami`` (the ``ami`` mapping), merged with its defaults and
    ancestors and validated: every key present with its default filled in, ``base`` in
    ``glance.find_image``'s form, and ``name`` added. One InvalidArgument lists every problem."""
    flavours = _flavours(pillar_ami)
    if name not in flavours:
        raise NotFound(f"no flavour {name!r} in pillar ami:flavours{_suggest(name, flavours)} "
                       f"(known flavours: {_known(flavours)})")
    if not NAME_RE.fullmatch(name):
        raise _bad(f"flavour name {name!r} cannot be used: it goes into image names, minion ids "
                   f"and event tags", NAME_HELP)
    layers = [_layer(flavours, n) for n in reversed(_lineage(flavours, name))]
    merged = functools.reduce(_merge, layers, _defaults(pillar_ami))
    own, fields = layers[-1], FIELDS
    merged["from_parent"] = own.get("from_parent")   # not inherited
    if own.get("from_parent") is True:
        # the parent's image holds the parent's SLS (and the defaults'): this flavour's own only
        merged["sls"] = own.get("sls")
        fields = {**FIELDS, "sls": (_Required(FROM_PARENT_SLS_HELP), _some_sls)}
    where = _Where(name)
    flavour = _fields(merged, fields, where)
    _across(merged, flavour, where, own)
    where.raise_problems()
    return {"name": name, **flavour}


def resolve_all(pillar_ami):
    """Every flavour, resolved: name -> flavour. One InvalidArgument lists the problems of
    all flavours."""
    flavours, problems = {}, []
    for name in names(pillar_ami):
        try:
            flavours[name] = resolve(pillar_ami, name)
        except InvalidArgument as e:
            problems.append(str(e))
    if problems:
        raise InvalidArgument("\n".join(problems))
    return flavours


# ------------------------------------------------------------------------------ image families
def image_parent(pillar_ami, name):
    """The flavour whose newest promoted image flavour ``name`` builds from (its own
    ``from_parent: true``, and the flavour it extends), else None. From the flavour as
    written: resolve says what is wrong with it."""
    flavours = _flavours(pillar_ami)
    layer = flavours.get(name)
    if not isinstance(layer, Mapping) or layer.get("from_parent") is not True:
        return None
    parent = layer.get("extends")
    return parent if isinstance(parent, str) and parent in flavours else None


def image_children(pillar_ami, name):
    """The flavours that build from flavour ``name``'s image, sorted."""
    return [child for child in names(pillar_ami) if image_parent(pillar_ami, child) == name]


def build_order(pillar_ami, wanted, with_parents=True):
    """The flavours ``wanted`` in the order they build: each after the flavour whose image it
    builds from, the others as given (several families side by side, level by level); with
    ``with_parents``, the image ancestors of each that ``wanted`` lacks come in before it.
    [(name, parent)]: parent is the flavour it builds from when that is in the list, else
    None."""
    parents, order = {}, []

    def add(name, seen=()):
        if name in parents or name in seen:  # (a loop of extends: resolve reports it)
            return
        parent = image_parent(pillar_ami, name)
        if parent is not None and with_parents:
            add(parent, (*seen, name))
        parents[name] = parent
        order.append(name)

    for name in wanted:
        add(name)

    def depth(name, seen=()):
        parent = parents.get(name)
        return 0 if parent not in parents or parent in seen else 1 + depth(parent, (*seen, name))

    return [(name, parents[name] if parents[name] in parents else None)
            for name in sorted(order, key=depth)]


def check_sls(flavour, exists):
    """Refuse a resolved flavour whose SLS, to bake or to test with, the master's file server
    lacks: ``exists(name)`` answers for one SLS name."""
    where = _Where(flavour["name"])
    own = flavour["sls"]
    # the test applies the flavour's own SLS unless told otherwise: each missing one is named once
    extra = [name for name in flavour["test"]["sls"] if name not in own]
    for key, wanted in (("sls", own), ("test.sls", extra)):
        missing = [name for name in wanted if not exists(name)]
        if missing:
            where.sub(key).add(f"no SLS {', '.join(map(repr, missing))} on the master's file server "
                               f"(an SLS a.b is the file a/b.sls or a/b/init.sls)")
    where.raise_problems()


# ------------------------------------------------------------------------------ fingerprint
def _json_default(value):
    # YAML makes dates and times of unquoted ones
    if isinstance(value, (datetime.date, datetime.time)):
        return value.isoformat()
    raise TypeError(f"a {type(value).__name__} value cannot be hashed")


def canonical_hash(obj):
    """sha256 (hex) of ``obj`` as canonical JSON: keys sorted, no whitespace, UTF-8. Equal data
    hashes equal whatever the order of its keys; dates count as their ISO 8601 strings."""
    try:
        text = json.dumps(_plain(obj), sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                          allow_nan=False, default=_json_default)
    except (TypeError, ValueError) as e:
        raise _bad(f"cannot hash this data: {e}", "mappings with string keys, lists, strings, "
                   "numbers, booleans, null, dates") from None
    return hashlib.sha256(text.encode()).hexdigest()


def fingerprint(parts):
    """sha256 (hex) identifying what a build makes from ``parts``: the base image's id and
    os_hash_value, the hash of the SLS content, the pillar's canonical_hash, the Salt and
    salt-ami versions, and image_settings; for a flavour built from its parent's image
    (from_parent), also that image's fingerprint. Two builds with the same fingerprint make the
    same image."""
    if not isinstance(parts, Mapping):
        raise _bad(f"fingerprint parts must be a mapping, not {_describe(parts)}")
    return canonical_hash(parts)


def image_settings(flavour):
    """The keys of a resolved flavour that decide the image it makes (IMAGE_KEYS), for the
    fingerprint beside the base image, the SLS content, the pillar's hash and the versions."""
    return {key: flavour[key] for key in IMAGE_KEYS}
