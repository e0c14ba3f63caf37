"""Delete the local provider's disk once the outputs are made from it."""
from . import local_disk

NAME = "release_disk"


def run(build, ctx):
    local_disk.undo(build, ctx)


def undo(build, ctx):
    local_disk.undo(build, ctx)
