"""The build's candidate image, the one the promote step renames: made of a volume by
cinder (the volume strategy's baked volume, or a volume of a volume-backed builder's
snapshot), and removed with what was made on the way to it. The snapshot, upload and publish
steps share it: their undo is ``remove``."""
from .. import provenance
from ..cloud import cinder, glance


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


def remove(build, ctx, keep=None):
    """What the build made for its candidate, but the image ``keep``: the volume made of a
    builder's volume snapshot first (on Ceph it is a clone of it), then the images with the
    snapshots they name, then any snapshot left."""
    for volume_id in build.made("snapshot_volume"):
        cinder.delete(ctx.clients, volume_id)
        build.forget("snapshot_volume", volume_id)
    for image_id in build.made("image"):
        if image_id != keep:
            provenance.delete_image(ctx.clients, image_id, force=True)
            build.forget("image", image_id)
    for snapshot_id in build.made("volume_snapshot"):
        cinder.delete_snapshot(ctx.clients, snapshot_id)
        build.forget("volume_snapshot", snapshot_id)
