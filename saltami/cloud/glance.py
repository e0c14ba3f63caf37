"""Glance v2 images: find, upload (streamed and hash-verified), download, metadata, sharing
and delete.

Images are returned as flat dicts of the image's fields and properties, as Glance v2 returns
them (``id``, ``name``, ``status``, ``disk_format``, ``os_hash_value``, ..., plus every custom
property at the top level).

Transfers stream with constant memory: glanceclient sends a file object as a chunked PUT,
reading 1 MiB at a time, and hands downloads out as an iterator of 1 MiB chunks.
"""
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
import uuid

import requests

from ..command import completed, run
from ..digest import file_digest
from ..errors import CloudError, CommandFailed, InvalidArgument, NotFound, Timeout
from .api import create_once, get_or_none, service_errors
from .checks import check_choice, check_progress, check_properties, check_str, check_timeout, string_list
from .wait import wait_for

log = logging.getLogger(__name__)

# What a stock Glance accepts; used only when the image schema cannot be read.
STANDARD_DISK_FORMATS = ("ami", "ari", "aki", "vhd", "vhdx", "vmdk", "raw", "qcow2", "vdi",
                         "iso", "ploop")
STANDARD_CONTAINER_FORMATS = ("ami", "ari", "aki", "bare", "ovf", "ova", "docker", "compressed")
VISIBILITIES = ("private", "shared", "community", "public")
MEMBER_STATUSES = ("pending", "accepted", "rejected")
# EC2-style images: the container format must name the same part as the disk format.
AMI_FORMATS = ("aki", "ari", "ami")
# Declared disk format -> what `qemu-img info` calls that content. Glance (>= 2024.x)
# inspects uploads and refuses some mismatches only after the whole file was sent, and lets
# others through (qcow2 content declared raw becomes an "active" image nova cannot use).
QEMU_FORMATS = {"raw": "raw", "ami": "raw", "qcow2": "qcow2", "vmdk": "vmdk", "vhdx": "vhdx",
                "vdi": "vdi", "vhd": "vpc"}
QCOW2_MAGIC = b"QFI\xfb"
# Glance's default os_hash_algo; hashing while streaming avoids reading the file twice.
HASH_ALGO = "sha512"
CHUNK = 1 << 20
PROGRESS_SECONDS = 1.0
PROGRESS_FRACTION = 0.05
TRANSFER_TIMEOUT = 3600
DELETE_TIMEOUT = 300
FILTER_KEYS = ("name", "tag", "properties", "visibility", "owner")
GONE_STATUSES = ("deleted", "pending_delete")
FAILED_STATUSES = ("killed",) + GONE_STATUSES
# How upload() gives Glance the data: "upload" (PUT .../file), "import" (Glance's
# interoperable import: stage the data, then import it, which runs the cloud's import plugins),
# or "auto": upload, and import where Glance refuses the upload (by policy: "upload_image")
UPLOAD_METHODS = ("auto", "upload", "import")
# the import method that takes the caller's own bytes (web-download fetches a URL, copy-image
# copies between stores)
GLANCE_DIRECT = "glance-direct"


# --- lookups ------------------------------------------------------------------------------

def _image_dict(image):
    return dict(image)


def _get(clients, image_id):
    """The image as a dict, or None when Glance says 404."""
    image = get_or_none(f"reading image {image_id}", lambda: clients.glance.images.get(image_id))
    return None if image is None else _image_dict(image)


def show(clients, image_id):
    """The image with this id; NotFound if there is none (or the caller may not see it)."""
    check_str("image_id", image_id)
    image = _get(clients, image_id)
    if image is None:
        raise NotFound(f"no image with id {image_id!r}")
    return image


def _is_uuid(value):
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


def _list_filters(name, tags, properties, visibility, owner, active_only):
    filters = {}
    if name is not None:
        check_str("name", name)
        filters["name"] = name
    if tags is not None:
        filters["tag"] = string_list("tag", tags)
    if properties is not None:
        check_properties("properties", properties)
        filters.update(properties)
    if visibility is not None:
        if visibility not in VISIBILITIES + ("all",):
            raise InvalidArgument(f"visibility filter {visibility!r} is not one of "
                                  f"{', '.join(VISIBILITIES + ('all',))}")
        filters["visibility"] = visibility
    if owner is not None:
        check_str("owner", owner)
        filters["owner"] = owner
    if active_only:
        filters["status"] = "active"
    return filters


def find_images(clients, name=None, tags=None, properties=None, visibility=None, owner=None,
                active_only=True):
    """Images matching every given filter, newest (created_at) first.

    ``tags``: a tag or a list of tags, all of which the image must carry; ``properties``: a
    dict of custom properties that must all match exactly. Without ``visibility`` Glance
    lists public images, the caller's own and those shared with it and accepted; community
    images of other projects only appear with ``visibility="community"`` (or ``"all"``).
    """
    filters = _list_filters(name, tags, properties, visibility, owner, active_only)
    with service_errors(f"listing images matching {filters}"):
        # Glance's created_at has one-second resolution: id breaks ties so the order is stable.
        return [_image_dict(i) for i in clients.glance.images.list(
            filters=filters, sort_key=["created_at", "id"], sort_dir=["desc", "desc"])]


def find_image(clients, ref, active_only=True, skip=None):
    """The image ``ref`` names: an image id, a name, or a filter dict with the keys ``name``,
    ``tag`` (str or list, all must be present), ``properties`` (dict, all must match),
    ``visibility`` and ``owner``.

    A string is tried as an id first, then as a name. When a name or a filter matches
    several images the NEWEST one (by created_at, ties broken by id) is returned, so that
    "name: debian-12-golden" means the latest build. With ``active_only`` images that are
    not active (queued, saving, killed, deactivated, ...) are ignored. ``skip(image)``, when
    given, says why a match of a name or a filter is not wanted (a reason, else None): such
    images are passed over (an id is taken as given). Nothing matching raises NotFound
    naming the ref (and why the images skipped were).
    """
    if isinstance(ref, dict):
        unknown = sorted(set(ref) - set(FILTER_KEYS))
        if unknown or not ref:
            raise InvalidArgument(f"image filter {ref!r}: keys must be among {', '.join(FILTER_KEYS)}"
                                  + (f" (unknown: {', '.join(unknown)})" if unknown else ""))
        matches = find_images(clients, name=ref.get("name"), tags=ref.get("tag"),
                              properties=ref.get("properties"), visibility=ref.get("visibility"),
                              owner=ref.get("owner"), active_only=active_only)
    elif isinstance(ref, str) and ref:
        if _is_uuid(ref):
            image = _get(clients, ref)
            if image is not None:
                if active_only and image["status"] != "active":
                    raise NotFound(f"image {ref} ({image.get('name')}) is {image['status']}, not active")
                return image
        matches = find_images(clients, name=ref, active_only=active_only)
    else:
        raise InvalidArgument(f"an image reference must be an id, a name or a filter dict, not {ref!r}")
    skipped = {}
    if skip is not None:
        for image in list(matches):
            reason = skip(image)
            if reason:
                skipped.setdefault(reason, []).append(image["id"])
                matches.remove(image)
    if not matches:
        why = "".join(f"; {len(ids)} that match {'are' if len(ids) > 1 else 'is'} skipped: {reason} "
                      f"({', '.join(ids[:3])}{', ...' if len(ids) > 3 else ''})"
                      for reason, ids in skipped.items())
        raise NotFound(f"no {'active ' if active_only else ''}image matches {ref!r}{why}")
    if len(matches) > 1:
        log.info("%d images match %r; using the newest, %s (created %s)",
                 len(matches), ref, matches[0]["id"], matches[0]["created_at"])
    return matches[0]


def block_device_mapping(image):
    """The block_device_mapping property of an image nova's createImage made of a server booted
    from a volume (a list of nova's BDM v2 dicts), or [] for an image that holds its data.
    Such an image has no bytes in Glance: each disk is a cinder snapshot (``snapshot_id``)
    that nova makes a volume of at every boot."""
    value = image.get("block_device_mapping")
    if not value:
        return []
    try:
        mapping = json.loads(value) if isinstance(value, str) else value
    except ValueError:
        raise CloudError(f"image {image['id']}: its block_device_mapping is not JSON: {value[:200]!r}") from None
    return [m for m in mapping if isinstance(m, dict)]


def volume_snapshots(image):
    """Ids of the cinder snapshots that hold a volume-backed image's disks, the boot disk's
    first; [] for an image that holds its data."""
    mapping = sorted(block_device_mapping(image), key=lambda m: (m.get("boot_index") in (None, -1),
                                                                  m.get("boot_index") or 0))
    return [m["snapshot_id"] for m in mapping if m.get("source_type") == "snapshot" and m.get("snapshot_id")]


def disk_gib(image):
    """The whole GiB a disk needs to hold the image: its virtual size (the size of the disk
    it describes; a qcow2's size is only what it stores), or its size where Glance did not
    compute one."""
    size = max(image.get("virtual_size") or 0, image.get("size") or 0)
    return -(-size // 2**30)


# --- what Glance accepts ------------------------------------------------------------------

def _schema(clients):
    """The image schema's properties, or None when Glance does not serve it."""
    try:
        with service_errors("reading the Glance image schema"):
            return clients.glance.schemas.get("image").raw()["properties"]
    except (CloudError, KeyError) as e:
        log.warning("cannot read the Glance image schema (%s); assuming stock formats", e)
        return None


def _enum(schema, field, fallback):
    values = (schema or {}).get(field, {}).get("enum")
    return tuple(v for v in values if v) if values else fallback


def allowed_formats(clients):
    """(disk formats, container formats, visibilities) this Glance accepts."""
    schema = _schema(clients)
    return (_enum(schema, "disk_format", STANDARD_DISK_FORMATS),
            _enum(schema, "container_format", STANDARD_CONTAINER_FORMATS),
            _enum(schema, "visibility", VISIBILITIES))


def _read_only(schema):
    return {k for k, v in (schema or {}).items() if v.get("readOnly")} | {"id", "locations"}


def _qemu_img_info(path):
    """``qemu-img info`` of the file, or None without a working qemu-img."""
    if not shutil.which("qemu-img"):
        return None
    # -U: read the header even if a VM or qemu-nbd holds a lock on the file
    r = completed("qemu-img", "info", "-U", "--output=json", path)
    if r.returncode:
        log.warning("qemu-img info %s failed: %s", path, r.stderr.strip())
        return None
    return json.loads(r.stdout)


def _check_content(path, disk_format):
    expected = QEMU_FORMATS.get(disk_format)
    if expected is None:
        return
    info = _qemu_img_info(path)
    if info is None:
        # without qemu-img only qcow2's magic number tells formats apart
        if expected not in ("raw", "qcow2"):
            return
        with open(path, "rb") as f:
            info = {"format": "qcow2" if f.read(4) == QCOW2_MAGIC else "raw"}
    found = info.get("format")
    if found and found != expected:
        raise InvalidArgument(f"{path} is a {found} image but disk_format is {disk_format!r}: "
                              f"Glance would refuse it or store an image nova cannot boot; "
                              f"declare its real format or convert it with qemu-img convert")
    if found == "qcow2":
        # Glance's safety checks refuse these only after the whole upload.
        if info.get("backing-filename"):
            raise InvalidArgument(f"{path} is a qcow2 overlay on {info['backing-filename']}: Glance "
                                  f"refuses images with a backing file; flatten it with "
                                  f"qemu-img convert -O qcow2 first")
        if info.get("format-specific", {}).get("data", {}).get("data-file"):
            raise InvalidArgument(f"{path} is a qcow2 with an external data file, which Glance refuses")


def _check_file(path):
    check_str("path", path)
    if not os.path.exists(path):
        raise InvalidArgument(f"image file {path} does not exist")
    if not os.path.isfile(path):
        raise InvalidArgument(f"image file {path} is not a regular file")
    if not os.access(path, os.R_OK):
        raise InvalidArgument(f"image file {path} is not readable")
    return os.path.getsize(path)


def _upload_spec(clients, path, name, disk_format, container_format, properties, tags,
                 visibility, min_disk, min_ram, reserved=()):
    """Check everything about an upload that can be checked before creating the image;
    returns what _upload needs."""
    check_str("name", name)
    size = _check_file(path)
    schema = _schema(clients)
    check_choice("disk_format", disk_format, _enum(schema, "disk_format", STANDARD_DISK_FORMATS))
    if container_format is None:
        container_format = disk_format if disk_format in AMI_FORMATS else "bare"
    check_choice("container_format", container_format,
                  _enum(schema, "container_format", STANDARD_CONTAINER_FORMATS))
    if (disk_format in AMI_FORMATS or container_format in AMI_FORMATS) and disk_format != container_format:
        raise InvalidArgument(f"disk_format {disk_format!r} with container_format {container_format!r}: "
                              f"EC2-style images (aki/ari/ami) use the same value for both")
    check_choice("visibility", visibility, _enum(schema, "visibility", VISIBILITIES))
    fields = {"name": name, "disk_format": disk_format, "container_format": container_format,
              "visibility": visibility}
    for key, value in (("min_disk", min_disk), ("min_ram", min_ram)):
        if value is not None:
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise InvalidArgument(f"{key} must be a non-negative integer, not {value!r}")
            fields[key] = value
    if tags is not None:
        fields["tags"] = string_list("tags", tags)
    if properties:
        check_properties("properties", properties)
        taken = sorted(set(properties) & (set(fields) | {"tags", "protected"} | _read_only(schema)
                                          | set(reserved)))
        if taken:
            raise InvalidArgument(f"properties {', '.join(taken)} cannot be set as custom "
                                  f"properties of an upload (read-only, an argument of its own, "
                                  f"or set after the upload)")
        fields.update(properties)
    _check_content(path, disk_format)
    return {"path": path, "size": size, "fields": fields}


# --- streaming ----------------------------------------------------------------------------

class _Progress:
    """Calls ``callback(done, total)`` at most every PROGRESS_SECONDS or PROGRESS_FRACTION of
    the total, whichever comes first, and always once at the end."""

    def __init__(self, callback, total):
        self.callback = callback
        self.total = total
        self.last_time = time.monotonic()
        self.last_done = -1

    def __call__(self, done):
        if self.callback is None or done == self.last_done:
            return
        now = time.monotonic()
        if (done >= self.total or now - self.last_time >= PROGRESS_SECONDS
                or done - self.last_done >= self.total * PROGRESS_FRACTION):
            self.callback(done, self.total)
            self.last_time, self.last_done = now, done


class _Transfer:
    """Hash, byte count, progress and deadline of one transfer, fed chunk by chunk."""

    def __init__(self, what, total, algo, progress, timeout):
        self.what = what
        self.total = total
        self.hasher = hashlib.new(algo) if algo else None
        self.done = 0
        self.progress = _Progress(progress, total)
        self.timeout = timeout
        self.started = time.monotonic()
        self.deadline = self.started + timeout

    def feed(self, chunk):
        if self.hasher:
            self.hasher.update(chunk)
        self.done += len(chunk)
        self.progress(self.done)
        if time.monotonic() > self.deadline:
            raise Timeout(f"timed out after {self.timeout:g}s {self.what} "
                          f"({self.done} of {self.total} bytes done)")

    def left(self):
        """Seconds left for waits after the transfer; once the deadline passed the state is
        still checked once, so an image that did become active is not thrown away."""
        return max(self.deadline - time.monotonic(), 1e-3)

    @property
    def seconds(self):
        return round(time.monotonic() - self.started, 3)


class _HashingReader:
    """The file object handed to glanceclient's upload, which reads it chunk by chunk."""

    def __init__(self, f, transfer):
        self.f = f
        self.transfer = transfer

    def read(self, size=-1):
        chunk = self.f.read(size if size and size > 0 else CHUNK)
        self.transfer.feed(chunk)
        return chunk


def _stored_hash(image):
    """(algorithm, value) of the hash Glance keeps of the image's data: os_hash_value, or the
    md5 checksum of a Glance older than multihash."""
    if image.get("os_hash_value"):
        return image["os_hash_algo"], image["os_hash_value"]
    return "md5", image.get("checksum")


def _verify_upload(clients, image, path, transfer, disk_format, timeout):
    """Check what Glance stores against ``path``; how it was checked, for the caller.

    When Glance kept the data as sent, its hash and size must be those of the bytes sent.
    When its import converted them (the image's disk_format is not the one declared) the
    stored hash is the converted data's: see _verify_conversion."""
    if image.get("disk_format") != disk_format:
        return _verify_conversion(clients, image, path, disk_format, timeout)
    algo, stored = _stored_hash(image)
    local = transfer.hasher.hexdigest() if algo == HASH_ALGO else file_digest(path, algo)
    if stored != local:
        raise CloudError(f"image {image['id']}: Glance stored {algo} {stored}, but {path} has "
                         f"{local}; the data was damaged on the way")
    if image.get("size") != transfer.done:
        raise CloudError(f"image {image['id']}: Glance stored {image.get('size')} bytes, "
                         f"{transfer.done} were sent")
    return {"verification": "hash"}


def _scratch_dir(path):
    """Where to put a temporary copy of the image's content: next to it (that filesystem
    held the image), else the temporary directory."""
    parent = os.path.dirname(os.path.abspath(path))
    return parent if os.access(parent, os.W_OK) else None


def _verify_conversion(clients, image, path, disk_format, timeout):
    """Glance's import converted the file (its image_conversion plugin, qcow2 to raw on a
    Ceph-backed cloud): the image must hold the same disk as the file. To raw: the file is
    converted here as Glance did (qemu-img convert; raw is the disk's bytes, the same whatever
    qemu made it) and Glance's hash and size must be that raw disk's. To another format (whose
    bytes depend on the qemu that wrote them): the image is downloaded (checked against its
    hash) and qemu-img compare must find the same disk in both. Never skipped: what cannot be
    checked fails the upload."""
    target = image.get("disk_format")
    label = f"image {image['id']}: Glance's import converted {path} from {disk_format} to {target}"
    source, converted = QEMU_FORMATS.get(disk_format), QEMU_FORMATS.get(target)
    info = _qemu_img_info(path) if source and converted else None
    if info is None:
        why = "it needs a working qemu-img" if source and converted else "qemu-img does not read both formats"
        raise CloudError(f"{label}, which cannot be verified here ({why}); upload the image as "
                         f"{target} so that Glance has nothing to convert")
    if image.get("virtual_size") not in (None, info["virtual-size"]):
        raise CloudError(f"{label}: the image's virtual size is {image['virtual_size']} bytes, "
                         f"the file's {info['virtual-size']}")
    with tempfile.TemporaryDirectory(dir=_scratch_dir(path), prefix=".ami-verify-") as tmp:
        if converted == "raw":
            disk = os.path.join(tmp, "disk.raw")
            try:
                run("qemu-img", "convert", "-f", source, "-O", "raw", path, disk)
            except CommandFailed as e:
                raise CloudError(f"{label}; converting it here to verify it failed: {e.stderr.strip()}") from None
            algo, stored = _stored_hash(image)
            local = file_digest(disk, algo)
            if (stored, image.get("size")) != (local, os.path.getsize(disk)):
                raise CloudError(f"{label}: Glance stored {image.get('size')} bytes with {algo} "
                                 f"{stored}, the file's disk converted here is {os.path.getsize(disk)} "
                                 f"bytes with {local}; the data was damaged on the way")
            return {"verification": "converted-hash", "converted_from": disk_format}
        stored = os.path.join(tmp, f"stored.{target}")
        download(clients, image["id"], stored, timeout=timeout)
        # exit 1: the disks differ; 2 and more: the comparison failed
        r = completed("qemu-img", "compare", "-f", source, "-F", converted, path, stored)
        if r.returncode == 1:
            raise CloudError(f"{label}, and the disk it stores differs from the file's: "
                             f"{r.stdout.strip()}; the data was damaged on the way")
        if r.returncode:
            raise CloudError(f"{label}; comparing it with the file failed: {r.stderr.strip()}")
        return {"verification": "content", "converted_from": disk_format}


def discard(clients, image_id):
    """Delete an image this library made and no longer wants, on a failure path: never
    raises, so the original error is what the caller sees; a failure is logged."""
    try:
        delete(clients, image_id, force=True)
        log.info("deleted the unfinished image %s", image_id)
    except Exception as e:  # the caller is already handling a failure
        log.warning("could not delete the unfinished image %s, delete it by hand: %s", image_id, e)


def _ended(image):
    """Why an image being waited for will never be active, or None: gone (a 404, or deleted
    and still shown for a moment, which of the two depends on when Glance is asked), or
    killed."""
    if image is None or image["status"] in GONE_STATUSES:
        return "it is gone" if image is None else f"it is gone (status {image['status']})"
    return f"its status is {image['status']}" if image["status"] in FAILED_STATUSES else None


def wait_active(clients, image_id, timeout):
    return wait_for(lambda: _get(clients, image_id),
                    lambda i: i is not None and i["status"] == "active",
                    f"image {image_id} to become active", timeout,
                    failed=_ended,
                    describe=lambda i: "gone" if i is None else f"status {i['status']}")


def import_methods(clients):
    """The interoperable import methods this Glance offers (GET /v2/info/import): () for a
    Glance without the import API (before Queens) or with none enabled."""
    try:
        with service_errors("reading the import methods of Glance"):
            info = clients.glance.images.get_import_info()
    except CloudError as e:
        if e.http_status in (404, 405, 501):
            return ()
        raise
    return tuple((info.get("import-methods") or {}).get("value") or ())


def _check_method(clients, method):
    check_choice("method", method, UPLOAD_METHODS)
    if method == "import":
        offered = import_methods(clients)
        if GLANCE_DIRECT not in offered:
            raise CloudError(f"method 'import' needs Glance's {GLANCE_DIRECT} import, which this "
                             f"Glance does not offer (its import methods: {', '.join(offered) or 'none'})")


def _send(clients, image_id, path, size, progress, timeout, stage=False):
    """Stream the file to the image, uploaded (PUT .../file) or staged for an import (PUT
    .../stage), hashing it on the way; the transfer."""
    what = f"{'staging' if stage else 'uploading'} {path} {'for' if stage else 'to'} image {image_id}"
    transfer = _Transfer(what, size, HASH_ALGO, progress, timeout)
    send = clients.glance.images.stage if stage else clients.glance.images.upload
    with open(path, "rb") as f, service_errors(what):
        send(image_id, _HashingReader(f, transfer), image_size=size)
    if transfer.done != size:
        raise CloudError(f"{path} changed size during the upload ({size} bytes before, "
                         f"{transfer.done} sent)")
    return transfer


def _import_failure(clients, image):
    """Why Glance's import of the image failed: its import task's message where Glance
    shows the image's tasks (API 2.12, Wallaby and later)."""
    stores = image.get("os_glance_failed_import") or "its store"
    try:
        with service_errors(f"reading the import tasks of image {image['id']}"):
            tasks = clients.glance.images.get_associated_image_tasks(image["id"]).get("tasks") or []
    except CloudError as e:
        log.info("cannot read the import task of image %s: %s", image["id"], e)
        tasks = []
    task = max(tasks, key=lambda t: t.get("created_at") or "", default=None)
    said = (f"task {task['id']} says: {task.get('message') or task.get('status')}" if task
            else "Glance shows no task for it; its log says why")
    hint = (f"; a Glance whose import converts images (image_conversion) refuses "
            f"{', '.join(AMI_FORMATS)} images" if image.get("disk_format") in AMI_FORMATS else "")
    return f"Glance's import to {stores} failed, the image is back to {image['status']} ({said}){hint}"


def _wait_imported(clients, image_id, timeout):
    def failed(image):
        ended = _ended(image)
        if ended:
            return ended
        # where Glance puts a staged image whose import failed
        if image["status"] == "queued":
            return _import_failure(clients, image)
        return None

    def describe(image):
        if image is None:
            return "gone"
        if image["status"] == "uploading":
            return ("status uploading: Glance never started the import (its import workers or "
                    "staging area may be misconfigured)")
        return f"status {image['status']}"

    return wait_for(lambda: _get(clients, image_id),
                    lambda i: i is not None and i["status"] == "active",
                    f"Glance to import image {image_id}", timeout, failed=failed, describe=describe)


def _stage_and_import(clients, image_id, path, size, progress, timeout):
    """glance-direct: the file staged, then imported; the active image and the transfer."""
    transfer = _send(clients, image_id, path, size, progress, timeout, stage=True)
    staged = show(clients, image_id)
    # Glance records what it staged; a body cut short would be imported as it is
    if staged.get("size") != transfer.done:
        raise CloudError(f"image {image_id}: Glance staged {staged.get('size')} bytes, "
                         f"{transfer.done} were sent")
    what = f"importing image {image_id} ({GLANCE_DIRECT})"

    def started():
        image = _get(clients, image_id)
        return [image_id] if image and image["status"] in ("importing", "active") else []

    create_once(what, lambda: clients.glance.images.image_import(image_id, method=GLANCE_DIRECT), started)
    return _wait_imported(clients, image_id, transfer.left()), transfer


def _put_data(clients, image_id, path, size, progress, timeout, method):
    """The file into the image, as ``method`` says (UPLOAD_METHODS); (active image,
    transfer, the import method used or None)."""
    started = time.monotonic()
    if method != "import":
        try:
            transfer = _send(clients, image_id, path, size, progress, timeout)
        except CloudError as e:
            if e.http_status != 403 or method == "upload":
                raise
            offered = import_methods(clients)
            if GLANCE_DIRECT not in offered:
                raise CloudError(f"{e}; this Glance refuses direct uploads and does not offer the "
                                 f"{GLANCE_DIRECT} import either (its import methods: "
                                 f"{', '.join(offered) or 'none'})", 403) from None
            log.info("Glance refuses the direct upload of image %s (%s): staging and importing it instead",
                     image_id, e)
        else:
            return wait_active(clients, image_id, transfer.left()), transfer, None
    left = max(timeout - (time.monotonic() - started), 1e-3)
    image, transfer = _stage_and_import(clients, image_id, path, size, progress, left)
    return image, transfer, GLANCE_DIRECT


def _upload(clients, spec, progress, timeout, method="auto"):
    path, size, fields = spec["path"], spec["size"], spec["fields"]

    def queued():
        return [i["id"] for i in find_images(clients, name=fields["name"], active_only=False)
                if i["status"] == "queued" and i["disk_format"] == fields["disk_format"]]

    before = set(queued())
    image_id = create_once(f"creating image {fields['name']!r}", lambda: clients.glance.images.create(**fields)["id"],
                           lambda: [i for i in queued() if i not in before])
    log.info("uploading %s (%d bytes, %s) to image %s (%s)", path, size, fields["disk_format"],
             image_id, fields["name"])
    try:
        image, transfer, imported = _put_data(clients, image_id, path, size, progress, timeout, method)
        seconds = transfer.seconds
        checked = _verify_upload(clients, image, path, transfer, fields["disk_format"], timeout)
    except BaseException:
        discard(clients, image_id)
        raise
    log.info("image %s active: %d bytes in %.1fs%s, verified by %s", image_id, size, seconds,
             f" ({imported})" if imported else "", checked["verification"])
    image.update(uploaded_bytes=transfer.done, seconds=seconds, import_method=imported, **checked)
    return image


def upload(clients, path, name, disk_format="qcow2", container_format=None, properties=None,
           tags=None, visibility="private", min_disk=None, min_ram=None, progress=None,
           timeout=TRANSFER_TIMEOUT, method="auto"):
    """Upload a local image file as a new Glance image; returns the active image's dict plus
    ``uploaded_bytes``, ``seconds``, ``import_method`` (None, or ``glance-direct`` when it
    was imported), ``verification`` (below) and, when Glance converted it, ``converted_from``.

    Checked first, before anything is created: the file (exists, regular, readable), the
    formats and visibility against what this Glance accepts (its image schema), and for
    raw/qcow2/... that the file's real format (qemu-img) is the declared one. The data is
    streamed with constant memory and hashed on the way.

    ``method``: ``auto`` (default) uploads it (PUT .../file) and, where Glance refuses that
    (HTTP 403: clouds that take images only through the interoperable import), stages it and
    imports it with ``glance-direct`` instead; ``import`` always imports (the cloud's import
    plugins then run, such as a conversion to raw); ``upload`` never does. An import is
    waited for until the image is active; a failed one fails the upload with Glance's reason.

    ``verification``: ``hash`` when Glance kept the bytes as sent (its os_hash_value and size
    must be theirs); when its import converted them (its disk_format is no longer the one
    given), ``converted-hash`` (to raw: the file converted here must have Glance's hash) or
    ``content`` (to another format: downloaded and compared with qemu-img compare). What
    cannot be verified fails the upload.

    ``container_format`` defaults to ``bare`` (``aki``/``ari``/``ami`` for those disk formats).
    ``progress(bytes_done, total)`` is called about every second or 5%. ``timeout`` covers the
    transfer and the wait for ``active``. On any failure once the image record exists, the
    image is deleted (with any data Glance staged for it).
    """
    check_timeout(timeout)
    check_progress(progress)
    spec = _upload_spec(clients, path, name, disk_format, container_format, properties, tags,
                        visibility, min_disk, min_ram)
    _check_method(clients, method)
    return _upload(clients, spec, progress, timeout, method)


def upload_ami_triplet(clients, kernel_path, ramdisk_path, root_path, name, properties=None,
                       tags=None, visibility="private", min_disk=None, min_ram=None,
                       progress=None, timeout=TRANSFER_TIMEOUT, method="auto"):
    """Upload an EC2-style image: kernel (aki) as "<name>-kernel", ramdisk (ari) as
    "<name>-ramdisk", then the root filesystem (ami) as "<name>" with ``kernel_id`` and
    ``ramdisk_id`` pointing at the first two.

    ``properties``, ``tags``, ``min_disk`` and ``min_ram`` go on the root image only (it is
    what people look up and boot); ``visibility`` applies to all three, since whoever boots
    the root image needs the other two. All three files are checked before anything is
    uploaded; if a later part fails, the parts already made are deleted. ``progress`` is
    called per part; ``timeout`` applies to each part; ``method`` is upload()'s, for each part
    (a Glance whose import converts images refuses aki, ari and ami: importing them fails).
    Returns {"kernel", "ramdisk", "root"}.
    """
    check_timeout(timeout)
    check_progress(progress)
    check_str("name", name)
    parts = [("kernel", _upload_spec(clients, kernel_path, f"{name}-kernel", "aki", "aki", None,
                                     None, visibility, None, None)),
             ("ramdisk", _upload_spec(clients, ramdisk_path, f"{name}-ramdisk", "ari", "ari", None,
                                      None, visibility, None, None)),
             ("root", _upload_spec(clients, root_path, name, "ami", "ami", properties, tags,
                                   visibility, min_disk, min_ram,
                                   reserved=("kernel_id", "ramdisk_id")))]
    _check_method(clients, method)
    made = {}
    try:
        for part, spec in parts:
            if part == "root":
                spec["fields"].update(kernel_id=made["kernel"]["id"], ramdisk_id=made["ramdisk"]["id"])
            made[part] = _upload(clients, spec, progress, timeout, method)
    except BaseException:
        for image in made.values():
            discard(clients, image["id"])
        raise
    return made


# --- download -----------------------------------------------------------------------------

def _check_target(path):
    check_str("path", path)
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise InvalidArgument(f"cannot download to {path}: directory {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise InvalidArgument(f"cannot download to {path}: directory {parent} is not writable")
    if os.path.isdir(path):
        raise InvalidArgument(f"cannot download to {path}: it is a directory")
    return parent


def download(clients, image_id, path, progress=None, verify=True, timeout=TRANSFER_TIMEOUT):
    """Download an image's data to ``path`` with constant memory.

    The data goes to a temporary file next to ``path`` (mode 0600: images can hold
    secrets), hashed on the way, and is renamed to ``path`` only when complete and, with
    ``verify``, matching the image's os_hash_value (its md5 checksum for images older than
    multihash). Returns {"id", "path", "bytes", "seconds", "hash_algo", "hash_value",
    "verified"}.
    """
    check_timeout(timeout)
    check_progress(progress)
    parent = _check_target(path)
    image = show(clients, image_id)
    if image["status"] != "active":
        raise InvalidArgument(f"image {image_id} ({image.get('name')}) is {image['status']}: "
                              f"only active images have data to download")
    if block_device_mapping(image):
        # Glance would hand out its zero bytes, whose hash matches
        raise InvalidArgument(f"image {image_id} ({image.get('name')}) is a snapshot of a server booted "
                              f"from a volume: Glance holds no data of it, its disk is in cinder snapshot(s) "
                              f"{', '.join(volume_snapshots(image)) or '(none listed)'}; make a volume of "
                              f"one and upload it to an image (cinder upload-to-image) to have one to download")
    if image.get("os_hash_value"):
        algo, expected = image["os_hash_algo"], image["os_hash_value"]
    else:
        algo, expected = ("md5", image["checksum"]) if image.get("checksum") else (HASH_ALGO, None)
    if verify and not expected:
        raise CloudError(f"Glance has no checksum for image {image_id}; download it with "
                         f"verify=False to accept it unverified")
    what = f"downloading image {image_id} to {path}"
    with service_errors(what):
        body = clients.glance.images.data(image_id, do_checksum=False)
    # glanceclient wraps its result in a proxy even when it is None (no data, HTTP 204)
    if getattr(body, "__wrapped__", body) is None:
        raise CloudError(f"{what}: Glance returned no data")
    transfer = _Transfer(what, image["size"], algo, progress, timeout)
    fd, tmp = tempfile.mkstemp(dir=parent, prefix=f".{os.path.basename(path)}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out:
            try:
                for chunk in body:
                    out.write(chunk)
                    transfer.feed(chunk)
            except requests.exceptions.RequestException as e:
                raise CloudError(f"{what}: connection broken after {transfer.done} bytes: {e}") from None
        if transfer.done != image["size"]:
            raise CloudError(f"{what}: got {transfer.done} bytes, the image has {image['size']}")
        local = transfer.hasher.hexdigest()
        if verify and local != expected:
            raise CloudError(f"{what}: the data's {algo} is {local}, Glance has {expected}; "
                             f"the download was discarded")
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    log.info("downloaded image %s to %s: %d bytes in %.1fs%s", image_id, path, transfer.done,
             transfer.seconds, ", verified" if verify else "")
    return {"id": image_id, "path": path, "bytes": transfer.done, "seconds": transfer.seconds,
            "hash_algo": algo, "hash_value": local, "verified": bool(verify)}


# --- metadata -----------------------------------------------------------------------------

def _update(clients, image_id, what, remove_props=None, **fields):
    check_str("image_id", image_id)
    try:
        with service_errors(f"{what} of image {image_id}"):
            return _image_dict(clients.glance.images.update(image_id, remove_props=remove_props, **fields))
    except TypeError as e:
        # glanceclient checks values against the image schema before sending them
        raise InvalidArgument(f"{what} of image {image_id}: {str(e).splitlines()[0]}") from None
    except CloudError as e:
        if e.http_status == 404:
            raise NotFound(f"no image with id {image_id!r}") from None
        raise


def set_properties(clients, image_id, **props):
    """Set custom properties (strings) or writable fields (min_disk, protected, os_hidden, ...)."""
    if not props:
        raise InvalidArgument("set_properties needs at least one property")
    read_only = sorted(set(props) & _read_only(_schema(clients)))
    if read_only:
        raise InvalidArgument(f"image fields {', '.join(read_only)} are read-only")
    return _update(clients, image_id, "setting properties", **props)


def remove_properties(clients, image_id, names):
    """Remove custom properties; names the image does not have are ignored."""
    names = string_list("names", names)
    core = sorted(set(names) & set(_schema(clients) or ()))
    if core:
        raise InvalidArgument(f"{', '.join(core)} are Glance image fields, not custom properties, "
                              f"and cannot be removed")
    return _update(clients, image_id, "removing properties", remove_props=names)


def rename(clients, image_id, name):
    check_str("name", name)
    return _update(clients, image_id, "renaming", name=name)


def set_visibility(clients, image_id, visibility):
    """private, shared (members only), community (anyone who asks for it) or public (usually
    admin-only by Glance policy)."""
    check_choice("visibility", visibility, _enum(_schema(clients), "visibility", VISIBILITIES))
    return _update(clients, image_id, "setting visibility", visibility=visibility)


def can_hide(clients):
    """Whether this Glance hides images (os_hidden, image API 2.7, Rocky): hidden images
    leave image lists, and still boot and rebuild by id."""
    return "os_hidden" in (_schema(clients) or {})


def hide(clients, image_id):
    return _update(clients, image_id, "hiding", os_hidden=True)


def deactivate(clients, image_id):
    """Nobody but an admin boots or downloads the image until its owner reactivates it;
    servers already booted from it keep running."""
    check_str("image_id", image_id)
    try:
        with service_errors(f"deactivating image {image_id}"):
            clients.glance.images.deactivate(image_id)
    except CloudError as e:
        if e.http_status == 404:
            raise NotFound(f"no image with id {image_id!r}") from None
        raise


def _change_tags(clients, image_id, tags, what, call):
    tags = string_list("tags", tags)
    show(clients, image_id)
    for tag in tags:
        try:
            with service_errors(f"{what} {tag!r} of image {image_id}"):
                call(image_id, tag)
        except CloudError as e:
            # removing a tag the image does not carry: already the wanted state
            if e.http_status != 404:
                raise
    return show(clients, image_id)


def add_tags(clients, image_id, tags):
    return _change_tags(clients, image_id, tags, "adding tag", clients.glance.image_tags.update)


def remove_tags(clients, image_id, tags):
    return _change_tags(clients, image_id, tags, "removing tag", clients.glance.image_tags.delete)


# --- members ------------------------------------------------------------------------------

def _member_dict(member):
    return {k: member[k] for k in ("image_id", "member_id", "status", "created_at", "updated_at")
            if k in member}


def list_members(clients, image_id):
    """Projects the image is shared with, each with its status (pending/accepted/rejected)."""
    check_str("image_id", image_id)
    with service_errors(f"listing members of image {image_id}"):
        return [_member_dict(m) for m in clients.glance.image_members.list(image_id)]


def add_member(clients, image_id, member_id):
    """Share a ``shared`` image with a project; it shows in that project's image list once
    the project accepts it (set_member_status), and is usable by id right away."""
    check_str("image_id", image_id)
    check_str("member_id", member_id)
    image = show(clients, image_id)
    if image["visibility"] != "shared":
        # Glance only answers "Not allowed to create members" then
        raise InvalidArgument(f"image {image_id} is {image['visibility']}: only images with "
                              f"visibility 'shared' have members; set that first")
    with service_errors(f"sharing image {image_id} with project {member_id}"):
        return _member_dict(clients.glance.image_members.create(image_id, member_id))


def remove_member(clients, image_id, member_id):
    """Stop sharing; False when the project was not a member."""
    check_str("image_id", image_id)
    check_str("member_id", member_id)
    try:
        with service_errors(f"unsharing image {image_id} with project {member_id}"):
            clients.glance.image_members.delete(image_id, member_id)
    except CloudError as e:
        if e.http_status != 404:
            raise
        show(clients, image_id)  # NotFound when it is the image that is missing
        return False
    return True


def set_member_status(clients, image_id, status, member_id=None):
    """As the consumer project (default: the caller's), accept, reject or reset to pending an
    image shared with it."""
    check_str("image_id", image_id)
    check_choice("member status", status, MEMBER_STATUSES)
    member_id = member_id or clients.project_id
    with service_errors(f"setting the membership of project {member_id} in image {image_id} to {status}"):
        return _member_dict(clients.glance.image_members.update(image_id, member_id, status))


# --- delete -------------------------------------------------------------------------------

def servers_using(clients, image_id):
    """Ids of the servers that use the image and that the caller can see (all projects' for
    an admin, else its own project's): those booted from it, and those booted from (or with)
    a volume made from it, whose server lists no image of its own."""
    try:
        with service_errors("listing servers of all projects"):
            servers = clients.nova.servers.list(search_opts={"image": image_id, "all_tenants": 1})
    except CloudError as e:
        if e.http_status != 403:
            raise
        with service_errors(f"listing servers using image {image_id}"):
            servers = clients.nova.servers.list(search_opts={"image": image_id})
    return sorted({s.id for s in servers} | _servers_on_volumes_of(clients, image_id))


def _servers_on_volumes_of(clients, image_id):
    """Servers with a volume made from the image attached: cinder copies the image's id into
    the volume's volume_image_metadata. Cinder answers all_tenants with every project's
    volumes for an admin and ignores it for others; volumes are filtered here, as a
    non-admin may not filter them by image (resource_filters.json)."""
    with service_errors(f"listing volumes made from image {image_id}"):
        volumes = clients.cinder.volumes.list(search_opts={"all_tenants": 1})
    return {a["server_id"] for v in volumes
            if (getattr(v, "volume_image_metadata", None) or {}).get("image_id") == image_id
            for a in getattr(v, "attachments", None) or () if a.get("server_id")}


def delete(clients, image_id, force=False, timeout=DELETE_TIMEOUT):
    """Delete an image and wait until Glance no longer has it; False if it was already gone.

    Refused (CloudError, HTTP 409) while servers the caller can see were booted from it, or
    while it is protected, unless ``force``: then it is unprotected and deleted anyway
    (running servers keep their disks).
    """
    check_str("image_id", image_id)
    check_timeout(timeout)
    image = _get(clients, image_id)
    if image is None or image["status"] in GONE_STATUSES:
        return False
    label = f"image {image_id} ({image.get('name')})"
    if not force:
        servers = servers_using(clients, image_id)
        if servers:
            raise CloudError(f"{label} is used by server(s) {', '.join(servers)}; delete them "
                             f"first, or pass force=True", 409)
        if image.get("protected"):
            raise CloudError(f"{label} is protected; unprotect it first, or pass force=True", 409)
    elif image.get("protected"):
        _update(clients, image_id, "unprotecting", protected=False)
    try:
        with service_errors(f"deleting {label}"):
            clients.glance.images.delete(image_id)
    except CloudError as e:
        if e.http_status == 404:
            return False
        raise
    wait_for(lambda: _get(clients, image_id),
             lambda i: i is None or i["status"] in GONE_STATUSES,
             f"{label} to be deleted", timeout,
             describe=lambda i: "gone" if i is None else f"status {i['status']}")
    log.info("deleted %s", label)
    return True
