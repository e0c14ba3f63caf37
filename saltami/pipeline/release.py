"""Delete the builder and its minion key once the image is safe in Glance. When a validation
follows, its server boots while the builder goes: the validate step waits for the rest."""
from . import minion_server

NAME = "release"


def run(build, ctx):
    minion_server.release(build, ctx, "builder", wait="validate" not in build.data.get("plan", ()))


def undo(build, ctx):
    minion_server.release(build, ctx, "builder")
