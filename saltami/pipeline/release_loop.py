"""Detach the loop device once the disk is unmounted: the outputs are made from the file."""
from . import loop

NAME = "release_loop"


def run(build, ctx):
    loop.undo(build, ctx)


def undo(build, ctx):
    loop.undo(build, ctx)
