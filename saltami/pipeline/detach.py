"""Detach the baked volume from the builder: cinder uploads only an idle volume."""
from . import attach

NAME = "detach"


def run(build, ctx):
    attach.detach(build, ctx)


def undo(build, ctx):
    """The attach step's undo detaches if this did not."""
