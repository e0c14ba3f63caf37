"""What an image says about itself, from the build records and Glance alone (no image is
booted or downloaded): its package manifest (``salt-run ami.packages``) and what changed
between two images (``salt-run ami.diff``): packages added, removed, upgraded, and the
parts of the fingerprint that differ.

An image built by salt-ami carries its build's id (``ami_build``), its package manifest's
hash and count (``ami_packages_sha256``, ``ami_packages_count``) and each part of its
fingerprint (``ami_base_id``, ``ami_sls_hash``, ``ami_pillar_hash``...: provenance.py). The
build's records are in the builds directory of the machine that ran it (the master's for
``salt-run ami.build`` and the orchestration): its manifest ``<build>.json`` and the package
manifest ``<build>.packages.json`` (pipeline/provision.py record_packages).
"""
import hashlib
import json
import re
import string
from pathlib import Path

from . import saltfiles
from .cloud import glance
from .errors import AmiError, InvalidArgument

# properties whose value is the image's own, not something it was made from
PER_IMAGE = {"ami_build", "ami_built_at", "ami_status", "ami_fingerprint", "ami_packages_count",
             "ami_packages_sha256", "ami_part_of", "ami_output"}
# the fingerprint's parts (pipeline/resolve.py current) by what a person changes; a
# property of none of them (a part added since) is its own
PARTS = {"ami_flavour": "flavour", "ami_base_id": "base", "ami_base_hash": "base", "ami_sls": "sls",
         "ami_sls_hash": "sls", "ami_pillar_hash": "pillar", "ami_salt_version": "salt",
         "ami_version": "salt-ami", "ami_settings_hash": "settings", "ami_parent_fingerprint": "parent"}


# ------------------------------------------------------------------------------ the records
def find(clients, ref):
    """The Glance image ``ref`` names (an id or a name: the newest of that name), which a
    salt-ami build must have made."""
    image = glance.find_image(clients, ref)
    if not image.get("ami_build"):
        raise InvalidArgument(f"image {image['name']} ({image['id']}) was not built by salt-ami: it has no "
                              "ami_build property (allowed: an image that salt-run ami.build, the "
                              "orchestration or salt-call ami.bake made)")
    return image


def _described(image):
    return f"image {image['name']} ({image['id']})"


def packages_of(builds_dir, image):
    """The package manifest ({name: version}) the image's build recorded, checked against
    the hash the image carries."""
    path = Path(builds_dir) / f"{image['ami_build']}.packages.json"
    try:
        listing = path.read_bytes()
    except FileNotFoundError:
        raise AmiError(f"no package manifest of {_described(image)}: its build {image['ami_build']} has no "
                       f"record {path} here (a build's records stay on the machine that ran it: the "
                       "master for salt-run ami.build and the orchestration, the baking machine for "
                       "salt-call ami.bake)") from None
    expected = image.get("ami_packages_sha256")
    if expected and hashlib.sha256(listing).hexdigest() != expected:
        raise AmiError(f"{path} is not the package manifest {_described(image)} was built with: its sha256 "
                       f"differs from the image's ami_packages_sha256 ({expected})")
    return json.loads(listing)


def _render_files(builds_dir, image):
    """The files (and their hashes) the image's build recorded its SLS used, or None."""
    try:
        data = json.loads(Path(builds_dir, f"{image['ami_build']}.json").read_text())
    except (OSError, ValueError):
        return None
    return (data.get("render") or {}).get("files")


def brief(image):
    return {"id": image["id"], "name": image["name"], "flavour": image.get("ami_flavour"),
            "build": image.get("ami_build"), "built_at": image.get("ami_built_at"),
            "fingerprint": image.get("ami_fingerprint")}


def packages(clients, builds_dir, ref):
    """The package manifest of image ``ref`` (id or name)."""
    image = find(clients, ref)
    listing = packages_of(builds_dir, image)
    return {"image": brief(image), "count": len(listing), "packages": listing}


# ------------------------------------------------------------------------------ the diff
def diff(clients, builds_dir, ref_a, ref_b):
    """What changed from image ``ref_a`` to image ``ref_b``: their packages (added, removed,
    upgraded, downgraded), the parts of the fingerprint that differ (each with both values),
    and for the SLS part, which files its builds recorded they used differ."""
    a, b = find(clients, ref_a), find(clients, ref_b)
    fingerprint = a.get("ami_fingerprint")
    result = {"a": brief(a), "b": brief(b),
              "same_fingerprint": bool(fingerprint) and fingerprint == b.get("ami_fingerprint"),
              "parts": parts_diff(a, b),
              "packages": packages_diff(packages_of(builds_dir, a), packages_of(builds_dir, b))}
    if "sls" in result["parts"]:
        before, after = _render_files(builds_dir, a), _render_files(builds_dir, b)
        if before is None or after is None:
            missing = a if before is None else b
            result["sls_files"] = (f"not known: the build {missing['ami_build']} of {_described(missing)} "
                                   "recorded no list of the files its SLS used here")
        else:
            result["sls_files"] = saltfiles.changed_files(before, after)
    return result


def parts_diff(a, b):
    """{part: {property: {"a": value, "b": value}}} for every ``ami_*`` property of what the
    images were made from that differs between image properties ``a`` and ``b``."""
    found = {}
    names = sorted({k for k in (*a, *b) if k.startswith("ami_") and k not in PER_IMAGE})
    for name in names:
        va, vb = a.get(name), b.get(name)
        if va != vb:
            part = PARTS.get(name, name.removeprefix("ami_"))
            found.setdefault(part, {})[name] = {"a": va, "b": vb}
    return found


def packages_diff(before, after):
    """From package manifest ``before`` to ``after`` ({name: version}, as pkg.list_pkgs
    gives them): what was added, removed, upgraded or downgraded (from and to), changed
    (versions that do not compare: several installed at once), and how many are the same."""
    result = {"added": {n: after[n] for n in sorted(set(after) - set(before))},
              "removed": {n: before[n] for n in sorted(set(before) - set(after))},
              "upgraded": {}, "downgraded": {}, "changed": {}, "unchanged": 0}
    for name in sorted(set(before) & set(after)):
        old, new = _version(before[name]), _version(after[name])
        if old == new:
            result["unchanged"] += 1
            continue
        order = compare_versions(old, new)
        bucket = "changed" if order is None else "upgraded" if order < 0 else "downgraded"
        result[bucket][name] = {"from": old, "to": new}
    return result


def _version(value):
    return ",".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)


# ------------------------------------------------------------------------------ versions
_VERSION = re.compile(r"^(?:(\d+):)?(.+?)(?:-([^-]+))?$")


def compare_versions(a, b):
    """-1, 0 or 1 as version ``a`` is older than, the same as or newer than ``b``, by
    dpkg's rules (epoch, upstream version, revision; ``~`` sorts before anything, even the
    end); None when either is not one version (pkg.list_pkgs joins several with commas)."""
    if "," in a or "," in b:
        return None
    ma, mb = _VERSION.match(a.strip()), _VERSION.match(b.strip())
    if not ma or not mb:
        return None
    for x, y, numeric in ((ma.group(1) or "0", mb.group(1) or "0", True), (ma.group(2), mb.group(2), False),
                          (ma.group(3) or "", mb.group(3) or "", False)):
        order = (int(x) > int(y)) - (int(x) < int(y)) if numeric else _verrevcmp(x, y)
        if order:
            return 1 if order > 0 else -1
    return 0


def _order(c):
    if c.isdigit():
        return 0
    if c in string.ascii_letters:
        return ord(c)
    if c == "~":
        return -1
    return ord(c) + 256 if c else 0


def _verrevcmp(a, b):
    """dpkg's verrevcmp: non-digit runs compared by _order, then digit runs as numbers."""
    i = j = 0
    while i < len(a) or j < len(b):
        while (i < len(a) and not a[i].isdigit()) or (j < len(b) and not b[j].isdigit()):
            ac = _order(a[i]) if i < len(a) else 0
            bc = _order(b[j]) if j < len(b) else 0
            if ac != bc:
                return ac - bc
            i, j = i + 1, j + 1
        while i < len(a) and a[i] == "0":
            i += 1
        while j < len(b) and b[j] == "0":
            j += 1
        first_diff = 0
        while i < len(a) and a[i].isdigit() and j < len(b) and b[j].isdigit():
            first_diff = first_diff or ord(a[i]) - ord(b[j])
            i, j = i + 1, j + 1
        if i < len(a) and a[i].isdigit():
            return 1
        if j < len(b) and b[j].isdigit():
            return -1
        if first_diff:
            return first_diff
    return 0
