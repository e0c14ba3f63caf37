"""The local provider's disk: a sparse raw copy of the base image (a file on this machine,
or the cached vanilla image) that the bake changes through a loop device. The base itself
is never written to. It goes in the release_disk step, or with this step's undo."""
import os
from pathlib import Path

from .. import command, disk, imageformat, vanilla
from ..digest import file_digest
from ..errors import InvalidArgument

NAME = "disk"


def find_base(base):
    """The local base of a flavour (``{file: PATH}`` or ``{vanilla: RELEASE}``, built if it
    is not cached yet): {id, name, path, format, hash}; its hash is the content's sha256, so
    that a changed file changes the fingerprint. A file is refused unless the format
    inspector finds it safe (imageformat.py)."""
    if "vanilla" in base:
        path = vanilla.ensure(base["vanilla"])
        ref = f"vanilla:{base['vanilla']}"
    else:
        path = Path(base["file"])
        if not path.is_file():
            raise InvalidArgument(f"base image file {path} does not exist or is not a file "
                                  "(allowed: a raw or qcow2 disk image on this machine)")
        ref = f"file:{path}"
    fmt = checked(str(path))
    return {"id": ref, "name": path.name, "path": str(path), "format": fmt, "hash": file_digest(path)}


def checked(path):
    """The base file's format, once the format inspector found it safe and what its name
    claims (imageformat.py)."""
    return imageformat.check(path, imageformat.claimed_by_name(path), what="base image file")


def work_file(build):
    return str(build.path.with_suffix(".disk"))


def run(build, ctx):
    source, target = build.data["base"]["path"], work_file(build)
    # checked again as it is now, and its format given: qemu-img must never probe it
    fmt = checked(source)
    build.add("file", target)  # before it exists: a kill during the copy must still remove it
    # qemu-img reads raw and qcow2 alike and writes a sparse raw file
    command.run("qemu-img", "convert", "-f", fmt, "-O", "raw", source, target)
    size_gib = ctx.spec.get("volume_size")
    if size_gib and size_gib << 30 > os.path.getsize(target):
        grow(target, size_gib << 30)
    return {"base": source, "disk": target, "size": os.path.getsize(target)}


def grow(path, size):
    """The disk and its root filesystem grown to ``size`` bytes (the last partition, or a
    whole-disk filesystem)."""
    os.truncate(path, size)
    parts = disk.partitions(path)
    if parts:
        command.run("sfdisk", "--quiet", "--no-reread", "-N", str(parts[-1]["number"]), path, input=", +\n")
    device = disk.attach_loop(path)
    try:
        node, part = disk.root_filesystem(device)
        if node is None:
            node = disk.attach_loop(device, offset=part["start"], size=part["size"])
        command.run("e2fsck", "-f", "-p", node)
        command.run("resize2fs", node)
    finally:
        disk.detach_loops_of(device)
        disk.detach_loops_of(path)


def undo(build, ctx):
    for path in build.made("file"):
        disk.detach_loops_of(path)
        Path(path).unlink(missing_ok=True)
        build.forget("file", path)
