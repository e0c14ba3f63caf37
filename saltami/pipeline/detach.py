"""Detach the baked volume from the builder: cinder uploads only an idle volume."""
from . import attach

NAME = "detach"
# nothing to undo: the attach step's undo detaches if this did not


def run(build, ctx):
    attach.detach(build, ctx)
