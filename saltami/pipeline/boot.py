"""Boot the builder from the base image as a minion of this master."""
from . import minion_server

NAME = "boot"


def run(build, ctx):
    return minion_server.start(build, ctx, "builder", build.data["base"]["id"])


def undo(build, ctx):
    minion_server.release(build, ctx, "builder")
