"""Upload the baked volume to Glance under a candidate name, with the provenance
properties; the final name comes only with the promote step."""
from .. import provenance
from ..cloud import cinder, glance
from .snapshot import undo  # noqa: F401  (the candidate image goes the same way)

NAME = "upload"


def run(build, ctx):
    return upload(build, ctx, build.made("volume")[0])


def upload(build, ctx, volume_id):
    """The volume as the build's candidate image (also what the snapshot step makes of a
    builder booted from a volume)."""
    spec = ctx.spec
    started = cinder.upload_to_image(ctx.clients, volume_id, provenance.candidate_name(build),
                                     disk_format=spec["disk_format"], wait=False)
    build.add("image", started["id"])
    glance.set_properties(ctx.clients, started["id"], **provenance.candidate_metadata(build))
    image = glance.wait_active(ctx.clients, started["id"], spec["timeouts"]["snapshot"])
    cinder.wait_status(ctx.clients, volume_id, "available", spec["timeouts"]["snapshot"])
    glance.set_properties(ctx.clients, image["id"], **provenance.properties(build, spec))
    build.data["outputs"]["candidate"] = {"id": image["id"], "size": image.get("size")}
    build.save()
    return {"image": image["id"], "size": image.get("size"), "disk_format": spec["disk_format"]}
