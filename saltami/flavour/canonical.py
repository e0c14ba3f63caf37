"""What identifies the image a build makes: the hash of data as canonical JSON
(canonical_hash), the build's fingerprint made of such hashes, and the flavour keys that enter
it (image_settings). Two builds with the same fingerprint make the same image: a build stops at
resolve when the promoted image has its fingerprint (pipeline/resolve.py). Pure: no cloud, no
Salt, nothing of saltami but the wording of problems."""
import datetime
import hashlib
import json
from collections.abc import Mapping, Sequence

from .problems import _bad, _describe

# The keys that change what the image holds or how it boots. The others only change how it
# is published (image_name, visibility, members, tags, keep, prune_shared, description), how the builder
# is reached (networks, key_name, security_groups, master, timeouts) or how it is tested.
# base and pillar enter the fingerprint as the base image's id and hash and the pillar's hash.
IMAGE_KEYS = ("sls", "strategy", "volume_size", "flavor", "properties", "min_disk", "min_ram", "outputs",
              "salt", "master_pillar")


def _plain(value):
    """Plain dicts and lists: pillar may hold Salt's immutable or ordered types."""
    if isinstance(value, Mapping):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes, bytearray)):
        return [_plain(item) for item in value]
    return value


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
