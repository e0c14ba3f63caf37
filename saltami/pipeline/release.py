"""Delete the builder and its minion key once the image is safe in Glance."""
from . import minion_server

NAME = "release"


def run(build, ctx):
    minion_server.release(build, ctx, "builder")


def undo(build, ctx):
    minion_server.release(build, ctx, "builder")
