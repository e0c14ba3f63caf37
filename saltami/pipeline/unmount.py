"""Unmount the baked disk; nothing of the bake stays mounted on this machine."""
from . import mount

NAME = "unmount"


def run(build, ctx):
    mount.undo(build, ctx)


def undo(build, ctx):
    """The mount step's undo unmounts if this did not."""
