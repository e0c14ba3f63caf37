"""Stop the builder, snapshot it under a candidate name, wait for the image, write its
provenance. The final name comes only with the promote step.

A builder booted from a volume snapshots into no bytes: nova's createImage of it makes a
cinder snapshot of its volume and a zero-byte Glance image whose block_device_mapping names
that snapshot, which only this project can boot, nobody can download or audit, and which
pins the builder's volume. The build makes a real image of it: a volume of the snapshot,
uploaded by cinder (in the flavour's disk_format) as the candidate; the volume, the zero-byte
image and its snapshot then go, and the builder's volume with the builder."""
from .. import provenance
from ..cloud import cinder, glance, nova
from ..errors import ResourceFailed
from . import candidate

NAME = "snapshot"


def run(build, ctx):
    spec = ctx.spec
    server = build.data["builder"]["server"]
    nova.stop(ctx.clients, server, timeout=spec["timeouts"]["boot"])
    started = nova.create_snapshot(ctx.clients, server, provenance.candidate_name(build),
                                   metadata=provenance.candidate_metadata(build), wait=False)
    build.add("image", started["id"])
    image = glance.wait_active(ctx.clients, started["id"], spec["timeouts"]["snapshot"])
    # before the release step deletes the builder: nova deletes the image of a snapshot task
    # that the server's deletion cuts short, even once the image is active
    nova.wait_task_done(ctx.clients, server, spec["timeouts"]["snapshot"])
    if glance.block_device_mapping(image):
        return _materialised(build, ctx, image)
    glance.set_properties(ctx.clients, image["id"], **provenance.properties(build, spec))
    build.data["outputs"]["candidate"] = {"id": image["id"], "size": image.get("size")}
    build.save()
    return {"image": image["id"], "size": image.get("size")}


def _materialised(build, ctx, image):
    """The candidate made of a volume-backed snapshot ``image`` (see the module's docstring)."""
    timeout = ctx.spec["timeouts"]["snapshot"]
    snapshots = glance.volume_snapshots(image)
    for snapshot_id in snapshots:
        build.add("volume_snapshot", snapshot_id)
    if not snapshots:
        raise ResourceFailed(f"image {image['id']} of the builder names no volume snapshot in its "
                             f"block_device_mapping: {image.get('block_device_mapping')}")
    root = cinder.wait_snapshot(ctx.clients, snapshots[0], "available", timeout)
    volume = cinder.create(ctx.clients, root["size"], name=f"ami-snapshot-{build.id}", snapshot=root["id"],
                           metadata={"ami_build": build.id}, wait=False)
    build.add("snapshot_volume", volume["id"])
    cinder.wait_status(ctx.clients, volume["id"], "available", timeout)
    made = candidate.upload(build, ctx, volume["id"])
    candidate.remove(build, ctx, keep=made["image"])
    build.data["outputs"]["candidate"]["volume_snapshot"] = {"image": image["id"], "snapshots": snapshots}
    build.save()
    return {**made, "from_volume_snapshots": snapshots}


undo = candidate.remove
