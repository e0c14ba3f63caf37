"""Boot the builder as a minion of this master: from the base image, or from the flavour's
``builder`` image (strategy volume, whose builder bakes a volume of the base)."""
from . import minion_server

NAME = "boot"


def run(build, ctx):
    return minion_server.start(build, ctx, "builder", build.data["builder_image"])


def undo(build, ctx):
    minion_server.release(build, ctx, "builder")
