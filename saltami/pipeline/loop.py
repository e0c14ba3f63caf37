"""A loop device over the local provider's disk, with its partitions: the device the mount
step mounts. Undone from what losetup shows, so the cleanup of a killed bake finds it."""
from .. import disk
from .disk import work_file

NAME = "loop"


def run(build, ctx):
    path = work_file(build)
    build.data["device"] = disk.attach_loop(path)
    build.save()
    return {"device": build.data["device"]}


def undo(build, ctx):
    disk.detach_loops_of(work_file(build))
