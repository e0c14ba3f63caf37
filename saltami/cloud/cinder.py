"""Cinder volumes: create (empty or from an image), wait, delete, and upload to Glance.

Volumes are returned as the dicts Cinder's API gives (``id``, ``name``, ``status``, ``size``,
``attachments``, ``volume_image_metadata``, ...).
"""
import logging
import time

from ..errors import CloudError, InvalidArgument, NotFound, ResourceFailed, Timeout
from . import glance
from .api import create_once, get_or_none, service_errors
from .checks import check_choice, check_properties, check_str, check_timeout, string_list
from .wait import wait_for

log = logging.getLogger(__name__)

CREATE_TIMEOUT = 600
DELETE_TIMEOUT = 300
UPLOAD_TIMEOUT = 1800
# Formats cinder's os-volume_upload_image accepts (its API schema), in Glance's names.
UPLOAD_DISK_FORMATS = ("raw", "qcow2", "vmdk", "vdi", "vhd", "vhdx", "ploop")
ERROR_STATUSES = ("error", "error_deleting", "error_extending", "error_restoring",
                  "error_managing", "error_backing-up")
GiB = 1 << 30


def _volume_dict(volume):
    return volume.to_dict()


def _get(clients, volume_id):
    """The volume as a dict, or None when Cinder says 404."""
    volume = get_or_none(f"reading volume {volume_id}", lambda: clients.cinder.volumes.get(volume_id))
    return None if volume is None else _volume_dict(volume)


def show(clients, volume_id):
    """The volume with this id; NotFound if there is none."""
    check_str("volume_id", volume_id)
    volume = _get(clients, volume_id)
    if volume is None:
        raise NotFound(f"no volume with id {volume_id!r}")
    return volume


def list_volumes(clients, name=None):
    """The caller's volumes, newest first; with ``name``, those with exactly that name."""
    if name is not None:
        check_str("name", name)
    # filtered here: which list filters a non-admin may use depends on the cloud's
    # resource_filters.json, and without one Cinder refuses them all
    with service_errors("listing volumes"):
        volumes = [_volume_dict(v) for v in clients.cinder.volumes.list()]
    return [v for v in volumes if name is None or v.get("name") == name]


def _label(volume):
    return f"volume {volume['id']}" + (f" ({volume['name']})" if volume.get("name") else "")


def _user_messages(clients, volume_id):
    """What Cinder told the user about this volume (API >= 3.3 "messages"); volumes
    themselves carry no fault message. Filtered here, as in list_volumes."""
    if not clients.supports("user-messages"):
        log.info("cinder's API is older than user messages (3.3): no reason to give for volume %s", volume_id)
        return []
    try:
        with service_errors(f"reading cinder's messages about volume {volume_id}"):
            messages = clients.cinder.messages.list()
    except CloudError as e:
        log.warning("%s", e)
        return []
    return [m.user_message for m in messages if m.resource_uuid == volume_id]


def _failure(clients, volume):
    messages = _user_messages(clients, volume["id"])
    said = ("cinder says: " + "; ".join(messages) if messages else
            "cinder records no reason on the volume and left no user message about it; the "
            "cause is in the cinder-scheduler/cinder-volume logs")
    return f"{_label(volume)} went to status {volume['status']} ({said})"


def wait_status(clients, volume_id, status, timeout=CREATE_TIMEOUT):
    """Wait until the volume's status is ``status`` (or one of a list; "deleted" means gone);
    ResourceFailed at once if it reaches an error status not asked for. Returns the volume
    dict, or None for "deleted"."""
    check_str("volume_id", volume_id)
    wanted = string_list("status", status)
    check_timeout(timeout)

    def failed(v):
        if v is None:
            return None if "deleted" in wanted else "it is gone"
        return _failure(clients, v) if v["status"] in ERROR_STATUSES and v["status"] not in wanted else None

    return wait_for(lambda: _get(clients, volume_id),
                    lambda v: ("deleted" in wanted) if v is None else v["status"] in wanted,
                    f"volume {volume_id} to become {' or '.join(wanted)}", timeout,
                    failed=failed,
                    describe=lambda v: "gone" if v is None else f"status {v['status']}")


def min_gib(image):
    """The smallest volume that holds the image: its size or virtual size rounded up to
    GiB, or its min_disk if larger."""
    return max(glance.disk_gib(image), image.get("min_disk") or 0)


def _check_size(size, image):
    if isinstance(size, bool) or not isinstance(size, int) or size <= 0:
        raise InvalidArgument(f"volume size must be a positive whole number of GiB, not {size!r}")
    if image is not None and size < min_gib(image):
        raise InvalidArgument(
            f"a {size} GiB volume cannot hold image {image['id']} ({image.get('name')}): it needs "
            f"{min_gib(image)} GiB (size {image.get('size')} bytes, virtual size "
            f"{image.get('virtual_size')}, min_disk {image.get('min_disk')} GiB)")


def _check_known(clients, what, value, fetch):
    """``value`` must be among what ``fetch()`` lists, unless the listing is forbidden."""
    try:
        with service_errors(f"listing {what}s"):
            known = fetch()
    except CloudError as e:
        if e.http_status != 403:
            raise
        log.info("cannot list %ss to check %r: %s", what, value, e)
        return
    if value not in known:
        raise InvalidArgument(f"{what} {value!r} does not exist here; known: {', '.join(sorted(known))}")


def _volume_types(clients):
    # cinderclient's volume_types.list() always sends an is_public filter, which Cinder
    # refuses from non-admins when its resource_filters.json does not allow it
    _, body = clients.cinder.client.get("/types")
    return {t[k] for t in body["volume_types"] for k in ("name", "id")}


def _zones(clients):
    return {z.zoneName for z in clients.cinder.availability_zones.list()
            if z.zoneState.get("available")}


def create(clients, size, name=None, image=None, volume_type=None, availability_zone=None,
           metadata=None, wait=True, timeout=CREATE_TIMEOUT, snapshot=None):
    """Create a volume of ``size`` GiB, empty or holding ``image`` (an id, name or filter as
    glance.find_image takes) or the cinder ``snapshot`` (an id); with ``wait``, wait until it
    is available.

    The size must hold the image (its size or virtual size rounded up to GiB, and its
    min_disk). A volume that goes to "error" is deleted and ResourceFailed raised with its id,
    status and whatever Cinder said. A timeout leaves the volume (it may still finish).
    """
    if name is not None:
        check_str("name", name)
    if metadata is not None:
        check_properties("metadata", metadata)
    check_timeout(timeout)
    found = glance.find_image(clients, image) if image is not None else None
    _check_size(size, found)
    if snapshot is not None:
        if found is not None:
            raise InvalidArgument("a volume is made from an image or from a snapshot, not both")
        source = show_snapshot(clients, snapshot)
        if size < source["size"]:
            raise InvalidArgument(f"a {size} GiB volume cannot hold snapshot {snapshot} of {source['size']} GiB")
    if volume_type is not None:
        check_str("volume_type", volume_type)
        _check_known(clients, "volume type", volume_type, lambda: _volume_types(clients))
    if availability_zone is not None:
        check_str("availability_zone", availability_zone)
        _check_known(clients, "availability zone", availability_zone, lambda: _zones(clients))

    def made():
        return [v for v in list_volumes(clients, name)
                if v["id"] not in before and v["size"] == size and (v.get("name") or None) == name
                and (metadata or {}).items() <= (v.get("metadata") or {}).items()]

    before = {v["id"] for v in list_volumes(clients, name)}
    volume = create_once(f"creating a {size} GiB volume", lambda: _volume_dict(clients.cinder.volumes.create(
        size, name=name, imageRef=found["id"] if found else None, snapshot_id=snapshot, volume_type=volume_type,
        availability_zone=availability_zone, metadata=metadata or {})), made)
    log.info("creating %s: %d GiB%s", _label(volume), size,
             f" from image {found['id']} ({found.get('name')})" if found else
             f" from snapshot {snapshot}" if snapshot else "")
    if not wait:
        return volume
    try:
        return wait_status(clients, volume["id"], "available", timeout)
    except ResourceFailed as e:
        _discard(clients, volume["id"])
        raise ResourceFailed(f"{e}; the volume was deleted") from None
    except Timeout as e:
        raise Timeout(f"{e}; the volume was left in place") from None


def label(clients, volume_id, name=None, metadata=None):
    """Name a volume and add ``metadata`` to it: nova names nothing of the volumes it makes
    for a server booted from one, so that only this tells whose they are."""
    check_str("volume_id", volume_id)
    if name is not None:
        check_str("name", name)
    if metadata:
        check_properties("metadata", metadata)
    with service_errors(f"labelling volume {volume_id}"):
        if name is not None:
            clients.cinder.volumes.update(volume_id, name=name)
        if metadata:
            clients.cinder.volumes.set_metadata(volume_id, metadata)
    return show(clients, volume_id)


def _discard(clients, volume_id):
    """Best-effort delete on a failure path; the original error is what the caller sees."""
    try:
        delete(clients, volume_id)
    except Exception as e:  # the caller is already handling a failure
        log.warning("could not delete volume %s, delete it by hand: %s", volume_id, e)


def delete(clients, volume_id, wait=True, timeout=DELETE_TIMEOUT, cascade=False):
    """Delete a volume and (with ``wait``) wait until it is gone; False if it already was.
    A volume attached to a server is refused (CloudError, HTTP 409) naming the servers.
    Cinder refuses to delete a volume that has snapshots, unless ``cascade``: then they go
    with it."""
    check_str("volume_id", volume_id)
    check_timeout(timeout)
    volume = _get(clients, volume_id)
    if volume is None:
        return False
    servers = sorted({a.get("server_id") for a in volume.get("attachments") or ()} - {None})
    if servers or volume["status"] in ("in-use", "attaching"):
        raise CloudError(f"{_label(volume)} is {volume['status']}, attached to server(s) "
                         f"{', '.join(servers) or '(none listed)'}; detach it first", 409)
    if volume["status"] != "deleting":
        try:
            with service_errors(f"deleting {_label(volume)}"):
                clients.cinder.volumes.delete(volume_id, cascade=cascade)
        except CloudError as e:
            if e.http_status == 404:
                return False
            raise
    if wait:
        wait_status(clients, volume_id, "deleted", timeout)
    log.info("deleted %s", _label(volume))
    return True


# --- snapshots ----------------------------------------------------------------------------
# nova's createImage of a server booted from a volume makes one of each of its volumes

def _get_snapshot(clients, snapshot_id):
    snapshot = get_or_none(f"reading volume snapshot {snapshot_id}",
                           lambda: clients.cinder.volume_snapshots.get(snapshot_id))
    return None if snapshot is None else snapshot.to_dict()


def show_snapshot(clients, snapshot_id):
    """The volume snapshot with this id (``id``, ``status``, ``size``, ``volume_id``, ...);
    NotFound if there is none (or the caller may not see it)."""
    check_str("snapshot_id", snapshot_id)
    snapshot = _get_snapshot(clients, snapshot_id)
    if snapshot is None:
        raise NotFound(f"no volume snapshot with id {snapshot_id!r}")
    return snapshot


def wait_snapshot(clients, snapshot_id, status, timeout=CREATE_TIMEOUT):
    """Wait until the snapshot's status is ``status`` ("deleted": gone); ResourceFailed at
    once when it reaches an error status not asked for."""
    def failed(v):
        if v is None:
            return "it is gone"
        return f"it went to {v['status']}" if v["status"].startswith("error") else None

    return wait_for(lambda: _get_snapshot(clients, snapshot_id),
                    lambda v: (status == "deleted") if v is None else v["status"] == status,
                    f"volume snapshot {snapshot_id} to become {status}", timeout, failed=failed,
                    describe=lambda v: "gone" if v is None else f"status {v['status']}")


def delete_snapshot(clients, snapshot_id, wait=True, timeout=DELETE_TIMEOUT):
    """Delete a volume snapshot and (with ``wait``) wait until it is gone; False if it
    already was."""
    check_str("snapshot_id", snapshot_id)
    snapshot = _get_snapshot(clients, snapshot_id)
    if snapshot is None:
        return False
    if snapshot["status"] != "deleting":
        if get_or_none(f"deleting volume snapshot {snapshot_id}",
                       lambda: clients.cinder.volume_snapshots.delete(snapshot_id) or True) is None:
            return False
    if wait:
        wait_snapshot(clients, snapshot_id, "deleted", timeout)
    log.info("deleted volume snapshot %s (of volume %s)", snapshot_id, snapshot.get("volume_id"))
    return True


def upload_to_image(clients, volume_id, image_name, disk_format="raw", container_format="bare",
                    visibility="private", protected=False, wait=True, timeout=UPLOAD_TIMEOUT):
    """Copy an available volume into a new Glance image (cinder converts it to
    ``disk_format``); with ``wait``, wait until the image is active and the volume available
    again. Returns the image dict.

    Fails (ResourceFailed) when the image is killed or deleted on the way, which is how
    cinder reports a failed upload; the unfinished image is deleted then, and on timeout.
    """
    check_str("volume_id", volume_id)
    check_str("image_name", image_name)
    disk_formats, container_formats, visibilities = glance.allowed_formats(clients)
    check_choice("disk_format", disk_format,
                         tuple(f for f in UPLOAD_DISK_FORMATS if f in disk_formats))
    check_choice("container_format", container_format, container_formats)
    check_choice("visibility", visibility, visibilities)
    if not isinstance(protected, bool):
        raise InvalidArgument(f"protected must be true or false, not {protected!r}")
    check_timeout(timeout)
    clients.require("upload-to-image")
    volume = show(clients, volume_id)
    if volume["status"] != "available":
        raise InvalidArgument(f"{_label(volume)} is {volume['status']}: only an available "
                              f"(detached, idle) volume can be uploaded to an image")

    def images():
        return [i["id"] for i in glance.find_images(clients, name=image_name, active_only=False)]

    before = set(images())
    image_id = create_once(
        f"uploading {_label(volume)} to image {image_name!r}",
        lambda: clients.cinder.volumes.upload_to_image(volume_id, False, image_name, container_format, disk_format,
                                                       visibility, protected)[1]["os-volume_upload_image"]["image_id"],
        lambda: [i for i in images() if i not in before])
    log.info("cinder is uploading %s to image %s (%s, %s)", _label(volume), image_id, image_name,
             disk_format)
    if not wait:
        return glance.show(clients, image_id)
    deadline = time.monotonic() + timeout
    try:
        image = glance.wait_active(clients, image_id, timeout)
        # the deadline may have passed just as the image became active: look once anyway
        wait_status(clients, volume_id, "available", max(deadline - time.monotonic(), 1e-3))
    except (ResourceFailed, Timeout) as e:
        glance.discard(clients, image_id)
        messages = _user_messages(clients, volume_id)
        raise type(e)(f"uploading {_label(volume)} to image {image_name!r}: {e}"
                      + (f" (cinder says: {'; '.join(messages)})" if messages else "")) from None
    log.info("image %s (%s) made from %s", image_id, image_name, _label(volume))
    return image
