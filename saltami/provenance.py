"""What an image says about how it was made: the ami_* properties written to Glance, the
names of candidates and final images, and the lookups and pruning that rely on them."""
import datetime
import logging

from . import flavour
from .cloud import cinder, glance
from .cloud.checks import check_choice
from .errors import CloudError, NotFound, Timeout

log = logging.getLogger(__name__)

STATUS = "ami_status"
CANDIDATE = "candidate"
PROMOTED = "promoted"


# what every image a build makes carries (candidate_metadata), and a base image does not
BUILD_MARKS = ("ami_build", "ami_flavour", STATUS)


def made_by_build(image):
    """Why the image cannot be a base found by a name, tags or properties: it was made by a
    build (a nova snapshot and a cinder upload inherit their base's properties, and the
    flavour writes its own on them, so a filter that matched the base matches the flavour's
    own images next); None for any other image."""
    marks = [key for key in BUILD_MARKS if image.get(key)]
    return f"made by a build (it has {', '.join(marks)})" if marks else None


def base_skip(ref):
    """What find_base passes over for the base ``ref``: images made by builds, unless the
    ref asks for one, by id or by a filter that names an ami_ property
    (``{properties: {ami_flavour: debian-postgres, ami_status: promoted}}``)."""
    if not isinstance(ref, dict):
        return made_by_build  # a name; an id is taken as given anyway
    if any(str(key).startswith(flavour.RESERVED_PREFIX) for key in ref.get("properties") or {}):
        return None
    return made_by_build


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


class NoParentImage(NotFound):
    """A flavour builds from its parent's image (from_parent), and the parent has none."""

    def __init__(self, spec):
        self.flavour, self.parent = spec["name"], spec["extends"]
        super().__init__(f"flavour {self.flavour} builds from its parent {self.parent}'s image "
                         f"(from_parent), and {self.parent} has no promoted image: build {self.parent} first")


def parent_image(clients, spec):
    """The base of a flavour that builds from its parent's image (from_parent): the parent's
    newest promoted image. The one case where a base is an image a build made without the
    flavour naming it by id or by an ami_ property: from_parent asks for it."""
    promoted = find_promoted(clients, spec["extends"])
    if not promoted:
        raise NoParentImage(spec)
    return promoted[0]


# images that other projects may use: their servers are not all to be seen from here
OTHERS_MAY_USE = ("shared", "community", "public")
# what prune did to each image, by what ``shared`` says and what Glance can do
HOW_PRUNED = {"delete": "deleted", "hide": "hidden", "deactivate": "deactivated"}


def pruning_report(keep):
    """What prune returns before it has done anything."""
    return {"deleted": [], "hidden": [], "deactivated": [], "kept_in_use": {}, "failed": {},
            "must_be_empty": keep == 0}


def outcomes(report):
    """What a prune did (its report: the images it deleted, hid or deactivated, kept because
    servers use them, or could not remove and why), without what it did not."""
    return {k: v for k, v in (report or {}).items() if v and k != "must_be_empty"}


def prune(clients, flavour_name, keep, force=False, dry_run=False, shared="hide"):
    """The flavour's promoted images beyond the ``keep`` newest go. A private one is deleted
    (with the volume snapshots of a volume-backed one); one that other projects may use
    (visibility shared, community or public) is hidden (os_hidden, or deactivated where Glance
    has no os_hidden) or deactivated as ``shared`` says, and deleted only with ``delete``,
    which also deletes those hidden or deactivated by earlier prunes.

    An image a server uses is kept and reported, unless ``force``: servers booted from it,
    or from a volume made from it, that the caller can see (every project's for an admin).
    A refusal (Glance's 409 for an image with clones in its store, a protected image, a
    policy's 403) or a timeout is reported under ``failed`` with the reason, and the other
    images are pruned all the same: nothing here raises for one image. Listing the images
    may raise."""
    check_choice("shared", shared, flavour.PRUNE_SHARED)
    done = pruning_report(keep)
    older = find_promoted(clients, flavour_name)[keep:]
    if shared == "delete":
        listed = {i["id"] for i in older}
        older += [i for i in retired(clients, flavour_name) if i["id"] not in listed]
    for image in older:
        try:
            users = glance.servers_using(clients, image["id"])
            if users and not force:
                done["kept_in_use"][image["id"]] = users
                continue
            how = _how(clients, image, shared)
            if not dry_run:
                _retire(clients, image["id"], how, force)
        except (CloudError, NotFound, Timeout) as e:
            log.warning("pruning image %s of flavour %s: %s", image["id"], flavour_name, e)
            done["failed"][image["id"]] = str(e)
            continue
        done[HOW_PRUNED[how]].append(image["id"])
    return done


def retired(clients, flavour_name):
    """Promoted images of the flavour that an earlier prune hid or deactivated."""
    props = {"ami_flavour": flavour_name, STATUS: PROMOTED}
    hidden = glance.find_images(clients, properties={**props, "os_hidden": "true"}, active_only=False)
    deactivated = [i for i in glance.find_images(clients, properties=props, active_only=False)
                   if i["status"] == "deactivated" and i["id"] not in {h["id"] for h in hidden}]
    return hidden + deactivated


def _how(clients, image, shared):
    if image.get("visibility") not in OTHERS_MAY_USE or shared == "delete":
        return "delete"
    return "hide" if shared == "hide" and glance.can_hide(clients) else "deactivate"


def _retire(clients, image_id, how, force):
    if how == "delete":
        delete_image(clients, image_id, force=force)
    elif how == "hide":
        glance.hide(clients, image_id)
    else:
        glance.deactivate(clients, image_id)


def delete_image(clients, image_id, force=False):
    """Delete an image, and with a volume-backed one (nova's createImage of a server booted
    from a volume) the cinder snapshots that hold its disks: Glance deletes only the image,
    and each snapshot would be left, pinning the volume it was made of. False when the image
    was gone already. Snapshots that cannot be deleted (another project's, one a volume was
    made from) are logged, and the rest deleted."""
    try:
        image = glance.show(clients, image_id)
    except NotFound:
        return False
    deleted = glance.delete(clients, image_id, force=force)
    for snapshot_id in glance.volume_snapshots(image):
        try:
            cinder.delete_snapshot(clients, snapshot_id)
        except (CloudError, Timeout) as e:
            log.warning("image %s is deleted, but not its volume snapshot %s: %s", image_id, snapshot_id, e)
    return deleted
