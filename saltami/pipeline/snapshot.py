"""Stop the builder, snapshot it under a candidate name, wait for the image, write its
provenance. The final name comes only with the promote step."""
from .. import provenance
from ..cloud import glance, nova

NAME = "snapshot"


def run(build, ctx):
    spec = ctx.spec
    server = build.data["builder"]["server"]
    nova.stop(ctx.clients, server, timeout=spec["timeouts"]["boot"])
    started = nova.create_snapshot(ctx.clients, server, provenance.candidate_name(build),
                                   metadata=provenance.candidate_metadata(build), wait=False)
    build.add("image", started["id"])
    image = glance.wait_active(ctx.clients, started["id"], spec["timeouts"]["snapshot"])
    glance.set_properties(ctx.clients, image["id"], **provenance.properties(build, spec))
    build.data["outputs"]["candidate"] = {"id": image["id"], "size": image.get("size")}
    build.save()
    return {"image": image["id"], "size": image.get("size")}


def undo(build, ctx):
    for image_id in build.made("image"):
        glance.delete(ctx.clients, image_id, force=True)
        build.forget("image", image_id)
