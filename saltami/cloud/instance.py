"""Seen from inside a builder VM: which server am I, and which local disk is a volume."""
import glob
import json
import logging
import os
import tempfile
import time
import urllib.error
import urllib.request

from ..command import run
from ..errors import CommandFailed, NotFound, Timeout

log = logging.getLogger(__name__)

METADATA_URL = "http://169.254.169.254/openstack/latest/meta_data.json"
CONFIG_DRIVE_LABELS = ("config-2", "CONFIG-2")
META_PATH = "openstack/latest/meta_data.json"
# how KVM clouds name an attached volume: virtio-blk carries the first 20 characters of the
# volume id as its serial; virtio-scsi disks show up under the QEMU model name
BY_ID_PATTERNS = ("/dev/disk/by-id/virtio-{short}", "/dev/disk/by-id/scsi-0QEMU_QEMU_HARDDISK_{short}*",
                  "/dev/disk/by-id/scsi-0QEMU_QEMU_HARDDISK_{full}*", "/dev/disk/by-id/*{short}*")


def _mountpoint_of(device):
    real = os.path.realpath(device)
    with open("/proc/self/mounts") as f:
        for line in f:
            dev, point = line.split()[:2]
            if os.path.realpath(dev) == real:
                return point.replace("\\040", " ")
    return None


def _read_config_drive(device):
    mounted = _mountpoint_of(device)
    if mounted:
        with open(os.path.join(mounted, META_PATH)) as f:
            return json.load(f)
    with tempfile.TemporaryDirectory(prefix="ami-config-drive-") as point:
        run("mount", "-o", "ro", device, point)
        try:
            with open(os.path.join(point, META_PATH)) as f:
                return json.load(f)
        finally:
            run("umount", point, check=False)


def _read_metadata_service(url, timeout):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return json.load(r)


def whoami(server_id=None, metadata_url=METADATA_URL, timeout=3):
    """The server this runs in: {"id", "name", "source", ...} from the argument, the config
    drive (label config-2) or the metadata service, in that order."""
    if server_id:
        return {"id": server_id, "source": "given"}
    tried = []
    for label in CONFIG_DRIVE_LABELS:
        device = f"/dev/disk/by-label/{label}"
        if os.path.exists(device):
            try:
                meta = _read_config_drive(device)
                return {"id": meta["uuid"], "name": meta.get("name"), "source": f"config drive {device}",
                        "availability_zone": meta.get("availability_zone"), "meta": meta.get("meta", {})}
            except (OSError, ValueError, KeyError, CommandFailed) as e:
                tried.append(f"config drive {device}: {e}")
        else:
            tried.append(f"no {device}")
    try:
        meta = _read_metadata_service(metadata_url, timeout)
        return {"id": meta["uuid"], "name": meta.get("name"), "source": metadata_url,
                "availability_zone": meta.get("availability_zone"), "meta": meta.get("meta", {})}
    except (OSError, ValueError, KeyError, urllib.error.URLError) as e:
        tried.append(f"metadata service {metadata_url}: {e}")
    raise NotFound("cannot tell which server this is (" + "; ".join(tried) + "); pass server_id")


def volume_device(volume_id, timeout=60):
    """The local block device of an attached volume, found by its serial; waits for udev."""
    patterns = [p.format(short=volume_id[:20], full=volume_id) for p in BY_ID_PATTERNS]
    deadline = time.monotonic() + timeout
    while True:
        for pattern in patterns:
            found = sorted(p for p in glob.glob(pattern) if "-part" not in p)
            if found:
                device = os.path.realpath(found[0])
                log.info("volume %s is %s (%s)", volume_id, device, found[0])
                return device
        if time.monotonic() > deadline:
            raise Timeout(f"timed out after {timeout}s waiting for a device of volume {volume_id} "
                          f"(looked for {', '.join(patterns)})")
        time.sleep(0.5)
