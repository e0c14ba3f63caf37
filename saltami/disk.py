"""Block devices and filesystems of an image being baked: loop devices over image files,
the root filesystem of a disk (partitioned or not), mounts.

Every function here that makes something has an undo that works from what the system shows
(the loop devices backing a file, the mounts below a directory), not from memory, so that the
cleanup of a killed bake finds what the killed process made.
"""
import json
import logging
import os
import stat
import time
from pathlib import Path

# disk.run is command.run: vanilla.py and the tests call it by this name
from .command import completed, run
from .errors import AmiError, InvalidArgument

log = logging.getLogger(__name__)

# MBR type codes and GPT type GUIDs of partitions that can hold a Linux root filesystem
LINUX_TYPES = {"83", "0x83", "0fc63daf-8483-4772-8e79-3d69d8477de4",
               "4f68bce3-e8cd-4db1-96e7-fbcaf984b709", "44479540-f297-41b2-9af7-d131d5f0458a"}
ROOT_FSTYPES = ("ext4", "ext3", "ext2", "xfs", "btrfs")


class DiskError(AmiError):
    """A loop device or a mount that should be gone is still there. A disk tool that fails
    raises CommandFailed (``run``, which is command.run)."""


# ------------------------------------------------------------------------------ loop devices
def attach_loop(path, read_only=False, offset=None, size=None):
    """A loop device over the file (or device) at ``path``, with its partitions added
    (this kernel does not scan partitions of loop devices itself)."""
    cmd = ["losetup", "--find", "--show"]
    if read_only:
        cmd.append("--read-only")
    if offset is not None:
        cmd += ["--offset", str(offset)]
    if size is not None:
        cmd += ["--sizelimit", str(size)]
    device = run(*cmd, path).strip()
    if offset is None:
        # a loop device detached without partx --delete keeps its partitions in the kernel,
        # and partx --add refuses to add them again for its next user
        run("partx", "--delete", device, check=False)
        # a disk with no partition table makes partx fail: that is a whole-disk filesystem
        run("partx", "--add", device, check=False)
    return device


def _loops():
    """{loop device: the file it is backed by}, as losetup lists them."""
    out = run("losetup", "--json", "--list", "--output", "NAME,BACK-FILE", check=False)
    return {d["name"]: (d.get("back-file") or "").rstrip()
            for d in json.loads(out or '{"loopdevices": []}')["loopdevices"]}


def loops_of(path):
    """Loop devices backed by ``path`` (a file or a device), as losetup reports them."""
    target = os.path.realpath(path)
    return [name for name, back in _loops().items() if back and os.path.realpath(back) == target]


def detach_loop(device):
    """Detach a loop device of ours, retrying while it is busy. Whether it is still attached
    is judged by its backing file: a device once detached may at once be another process's
    (losetup --find hands out the lowest free one), which is no failure of this detach."""
    backing = _loops().get(device)
    run("partx", "--delete", device, check=False)
    if backing is None:
        return
    for attempt in range(10):
        if not completed("losetup", "--detach", device).returncode or _loops().get(device) != backing:
            break
        time.sleep(0.3 * (attempt + 1))
    if _loops().get(device) == backing:
        raise DiskError(f"loop device {device} is still attached (to {backing})")


def detach_loops_of(path):
    for device in loops_of(path):
        detach_loop(device)


# ------------------------------------------------------------------------------ partitions
def partitions(device):
    """The partition table of a disk or image file: [{number, start, size, type}] in bytes,
    [] when it has none (a whole-disk filesystem). partx (util-linux, in every Debian) reads
    MBR and GPT alike; its sectors are 512 bytes whatever the disk's."""
    p = completed("partx", "--show", "--noheadings", "--output", "NR,START,SECTORS,TYPE", device)
    if p.returncode:
        return []
    parts = []
    for line in p.stdout.splitlines():
        number, start, sectors, ptype = (line.split() + [""])[:4]
        parts.append({"number": int(number), "start": int(start) * 512, "size": int(sectors) * 512,
                      "type": ptype.lower()})
    return parts


def fstype(device):
    return run("blkid", "--probe", "--output", "value", "--match-tag", "TYPE", device, check=False).strip()


def partition_node(device, number):
    """The device node of a partition, if the system made one (sdb1, vdb1, loop0p1). A disk
    whose name ends in a digit takes a "p" before the number: loop1 plus 1 is loop11, another
    loop device, not a partition."""
    name = f"{device}p{number}" if str(device)[-1:].isdigit() else f"{device}{number}"
    if Path(name).exists() and stat.S_ISBLK(os.stat(name).st_mode):
        return name
    return None


def root_filesystem(device):
    """Where the root filesystem of a disk is: ``(node, partition)``. ``node`` is the device
    to mount, or None when the partition has no device node (then it is reached through a
    loop device at its offset). A disk without a partition table is itself the filesystem."""
    parts = partitions(device)
    if not parts:
        found = fstype(device)
        if found not in ROOT_FSTYPES:
            raise InvalidArgument(f"{device} has neither a partition table nor a root filesystem "
                                  f"(found {found or 'nothing'}; allowed: {', '.join(ROOT_FSTYPES)})")
        return device, None
    linux = [p for p in parts if p["type"] in LINUX_TYPES] or parts
    part = max(linux, key=lambda p: p["size"])
    return partition_node(device, part["number"]), part


def mount_root(device, target):
    """Mount the root filesystem of ``device`` (a disk, or a loop device over an image) at
    ``target``; undone by ``unmount_root``."""
    node, part = root_filesystem(device)
    if node is None:
        node = attach_loop(device, offset=part["start"], size=part["size"])
    mount(node, target)
    return node


def unmount_root(device, target):
    unmount_below(target)
    detach_loops_of(device)


# ------------------------------------------------------------------------------ mounts
def mounts_below(directory):
    """Mount points at or below ``directory``, deepest first (the order to unmount them)."""
    target = os.path.realpath(directory)
    found = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            point = line.split()[4].replace("\\040", " ")
            if point == target or point.startswith(target.rstrip("/") + "/"):
                found.append(point)
    return sorted(set(found), key=lambda p: (-p.count("/"), p))


def mount(source, target, *options, fstype=None):
    Path(target).mkdir(parents=True, exist_ok=True)
    cmd = ["mount"]
    if fstype:
        cmd += ["-t", fstype]
    if options:
        cmd += ["-o", ",".join(options)]
    run(*cmd, source, target)


def unmount_below(directory):
    """Unmount everything at or below ``directory``; a busy mount is retried, then lazily
    detached so that the loop device under it can go."""
    for point in mounts_below(directory):
        for attempt in range(5):
            if not completed("umount", point).returncode:
                break
            time.sleep(0.5 * (attempt + 1))
        else:
            log.warning("%s is busy; detaching it lazily", point)
            run("umount", "--lazy", point)
    left = mounts_below(directory)
    if left:
        raise DiskError(f"still mounted: {', '.join(left)}")


def filesystem_usage(directory):
    """(bytes used, bytes total) of the filesystem mounted at ``directory``."""
    st = os.statvfs(directory)
    return (st.f_blocks - st.f_bfree) * st.f_frsize, st.f_blocks * st.f_frsize
