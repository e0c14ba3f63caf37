"""What an image says about how it was made: the ami_* properties written to Glance, the
names of candidates and final images, and the lookups and pruning that rely on them."""
import datetime

from . import flavour
from .cloud import glance

STATUS = "ami_status"
CANDIDATE = "candidate"
PROMOTED = "promoted"


def candidate_name(build):
    """Never the final name: a failed or unvalidated build must not look like a product."""
    return f"ami-candidate-{build.id}"


def candidate_metadata(build):
    # set at createImage time, so that even an image whose build dies at once says what it is
    # (and does not keep a promoted status it might inherit from its base image)
    return {STATUS: CANDIDATE, "ami_build": build.id, "ami_flavour": build.data["flavour"]}


def built_at(build):
    return datetime.datetime.fromtimestamp(build.data["created"], datetime.timezone.utc)


def final_name(build, spec):
    when = built_at(build)
    return flavour.render_name(spec["image_name"], flavour=spec["name"], date=when.strftime("%Y%m%d"),
                               time=when.strftime("%H%M%S"), fingerprint=build.data["fingerprint"],
                               build=build.id.rsplit("-", 1)[-1])


def properties(build, spec):
    """The flavour's own properties and the build's provenance (never a secret: only hashes
    of the pillar, never the pillar)."""
    packages = build.data.get("packages", {})
    props = dict(spec.get("properties") or {})
    props.update(candidate_metadata(build))
    # each part of the fingerprint under its own name: ami.status says which one changed
    props.update({f"ami_{part}": str(value or "") for part, value in build.data["parts"].items()})
    props.update({
        "ami_fingerprint": build.data["fingerprint"],
        "ami_sls": ",".join(spec["sls"]),
        "ami_built_at": built_at(build).isoformat(timespec="seconds"),
        "ami_packages_count": str(packages.get("count", "")),
        "ami_packages_sha256": packages.get("sha256", ""),
    })
    return props


def find_promoted(clients, flavour_name, fingerprint=None):
    """Promoted images of a flavour, newest first."""
    props = {"ami_flavour": flavour_name, STATUS: PROMOTED}
    if fingerprint:
        props["ami_fingerprint"] = fingerprint
    return glance.find_images(clients, properties=props)


def prune(clients, flavour_name, keep, force=False, dry_run=False):
    """Delete promoted images of the flavour beyond the ``keep`` newest; an image a server
    uses is kept and reported, unless ``force``."""
    deleted, in_use = [], {}
    for image in find_promoted(clients, flavour_name)[keep:]:
        users = glance.servers_using(clients, image["id"])
        if users and not force:
            in_use[image["id"]] = users
            continue
        if not dry_run:
            glance.delete(clients, image["id"], force=force)
        deleted.append(image["id"])
    return {"deleted": deleted, "kept_in_use": in_use, "must_be_empty": keep == 0}
