"""Only now does the image get its final name, tags, visibility and members."""
from .. import provenance
from ..cloud import glance

NAME = "promote"


def run(build, ctx):
    spec = ctx.spec
    image_id = build.data["outputs"]["candidate"]["id"]
    name = provenance.final_name(build, spec)
    glance.set_properties(ctx.clients, image_id, **{provenance.STATUS: provenance.PROMOTED})
    glance.rename(ctx.clients, image_id, name)
    if spec.get("tags"):
        glance.add_tags(ctx.clients, image_id, spec["tags"])
    glance.set_visibility(ctx.clients, image_id, spec["visibility"])
    for member in spec.get("members") or []:
        glance.add_member(ctx.clients, image_id, member)
    # from here on the image is the build's product, not something to clean up
    build.forget("image", image_id)
    build.data["outputs"]["image"] = {"id": image_id, "name": name}
    build.save()
    return {"image": image_id, "name": name}


def undo(build, ctx):
    """A failed promote leaves the image recorded: the snapshot step's undo deletes it."""
