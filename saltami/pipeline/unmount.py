"""Unmount the baked disk; nothing of the bake stays mounted on this machine."""
from . import mount

NAME = "unmount"
# nothing to undo: the mount step's undo unmounts if this did not


def run(build, ctx):
    mount.undo(build, ctx)
