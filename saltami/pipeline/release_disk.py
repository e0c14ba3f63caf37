"""Delete the local provider's disk once the outputs are made from it."""
from . import disk

NAME = "release_disk"


def run(build, ctx):
    disk.undo(build, ctx)


def undo(build, ctx):
    disk.undo(build, ctx)
