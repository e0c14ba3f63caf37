"""Upload the baked volume to Glance under a candidate name, with the provenance
properties; the final name comes only with the promote step."""
from . import candidate

NAME = "upload"


def run(build, ctx):
    return candidate.upload(build, ctx, build.made("volume")[0])


# the candidate image goes as the snapshot step's does
undo = candidate.remove
