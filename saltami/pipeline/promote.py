"""Only now does the image get its final name, tags, visibility and members, and the disk
and memory it needs to boot (min_disk, min_ram), which nova and cinder check at every boot."""
from .. import provenance
from ..cloud import glance

NAME = "promote"
# nothing to undo: a failed promote leaves the image recorded, and the snapshot step's undo
# deletes it


def run(build, ctx):
    spec = ctx.spec
    image_id = build.data["outputs"]["candidate"]["id"]
    name = provenance.final_name(build, spec)
    glance.set_properties(ctx.clients, image_id, **{provenance.STATUS: provenance.PROMOTED},
                          **limits(spec, glance.show(ctx.clients, image_id)))
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


def limits(spec, image):
    """min_disk and min_ram of the image: the flavour's, else for min_disk what the image
    needs (its virtual size in whole GiB; a snapshot says the builder's disk, a cinder upload
    the volume's), and min_ram as the image has it."""
    found = {"min_disk": spec.get("min_disk") if spec.get("min_disk") is not None else glance.disk_gib(image)}
    if spec.get("min_ram") is not None:
        found["min_ram"] = spec["min_ram"]
    return found
