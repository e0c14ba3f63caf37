"""Mount the root filesystem of the bake's disk (partitioned or not) on this machine."""
import os

from .. import chroot, disk

NAME = "mount"


def root_of(build):
    return str(build.path.with_suffix(".root"))


def run(build, ctx):
    root = root_of(build)
    build.add("mount", root)  # before mounting: a kill right after must still unmount
    node = disk.mount_root(build.data["device"], root)
    return {"device": build.data["device"], "filesystem": node, "root": root}


def undo(build, ctx):
    for root in build.made("mount"):
        if disk.mounts_below(root):
            chroot.teardown(root)
        disk.unmount_root(build.data["device"], root)
        if os.path.isdir(root):
            os.rmdir(root)
        build.forget("mount", root)
