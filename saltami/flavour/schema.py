"""The flavour schema: every key a flavour may have (FIELDS, and within it BASE_FIELDS,
TEST_FIELDS and the TIMEOUTS), each with its default and the check of its value, and the
rules across keys (a strategy's required keys, a local base only with strategy local...).
``validate`` checks a merged flavour as a whole (merge.py makes it) and reports every problem
in one InvalidArgument; ``check_sls`` asks whether the master's file server has its SLS.

Nothing here talks to a cloud or to Salt. What some keys accept is defined where it is used:
the visibilities Glance takes (cloud/glance.py) and the vanilla releases the local provider
makes (vanilla.py); they are imported from there, which the pure parts of the package
(imagename.py, canonical.py, problems.py) do not do.
"""
import copy
import os
import re
import uuid

from ..cloud.glance import VISIBILITIES
from ..errors import InvalidArgument
from ..vanilla import RELEASES as VANILLA_RELEASES
from .canonical import canonical_hash
from .imagename import (
    DEFAULT_IMAGE_NAME,
    GLANCE_MAX,
    NAME_FIELDS_HELP,
    SAMPLE_NAME_FIELDS,
    UNIQUE_FIELDS,
    pattern_fields,
    render_name,
)
from .problems import _allowed, _bad, _describe, _suggest

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

RESERVED_PREFIX = "ami_"
# Glance's own image attributes: Glance refuses them as custom properties, or the build sets them
GLANCE_ATTRIBUTES = frozenset((
    "id", "name", "status", "visibility", "protected", "os_hidden", "checksum", "os_hash_algo",
    "os_hash_value", "owner", "size", "virtual_size", "disk_format", "container_format",
    "created_at", "updated_at", "tags", "min_disk", "min_ram", "direct_url", "locations",
    "self", "file", "schema", "stores"))
FLAVOUR_KEY_OF_ATTRIBUTE = {"name": "image_name", "visibility": "visibility", "tags": "tags",
                            "min_disk": "min_disk", "min_ram": "min_ram"}

# claim: how long a build waits for another build of its flavour to finish
TIMEOUTS = {"boot": 600, "minion": 300, "apply": 1800, "snapshot": 1800, "validate": 900, "claim": 3600}

# What becomes of salt in the image: kept as it is; the image's own minion service disabled
# (no clone starts a minion of its own at boot); or what the build installed removed
SALT_IN_IMAGE = ("disable", "keep", "remove")
# What pruning does to an image other projects may use (visibility shared, community, public)
PRUNE_SHARED = ("hide", "deactivate", "delete")


# ------------------------------------------------------------------------------ problems
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


# ------------------------------------------------------------------------------ a flavour as a whole
# with from_parent, a flavour's sls are its own only: the parent's image holds the parent's
FROM_PARENT_FIELDS = {**FIELDS, "sls": (_Required(FROM_PARENT_SLS_HELP), _some_sls)}


def validate(name, merged, own):
    """Flavour ``name`` as ``merged`` from its defaults, ancestors and ``own`` keys (its own
    layer), checked: every key present with its default filled in, ``base`` in
    ``glance.find_image``'s form. One InvalidArgument lists every problem."""
    where = _Where(name)
    flavour = _fields(merged, FROM_PARENT_FIELDS if merged.get("from_parent") is True else FIELDS, where)
    _across(merged, flavour, where, own)
    where.raise_problems()
    return flavour


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

