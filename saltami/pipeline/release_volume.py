"""Delete the bake's volume once its image is safe in Glance."""
from . import volume

NAME = "release_volume"


def run(build, ctx):
    volume.undo(build, ctx)


def undo(build, ctx):
    volume.undo(build, ctx)
