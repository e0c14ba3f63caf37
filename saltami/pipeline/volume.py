"""A volume made from the base image: the disk that the volume bake changes through a chroot
and then uploads. It goes in the release_volume step, or with this step's undo."""
from ..cloud import cinder, nova
from ..errors import NotFound

NAME = "volume"


def run(build, ctx):
    spec = ctx.spec
    volume = cinder.create(ctx.clients, spec["volume_size"], name=f"ami-bake-{build.id}",
                           image=build.data["base"]["id"], metadata={"ami_build": build.id}, wait=False)
    build.add("volume", volume["id"])
    cinder.wait_status(ctx.clients, volume["id"], "available", spec["timeouts"]["boot"])
    return {"volume": volume["id"], "size_gib": spec["volume_size"]}


def remove(clients, volume_id):
    """Detach the volume from whatever holds it, then delete it."""
    try:
        volume = cinder.show(clients, volume_id)
    except NotFound:
        return
    for attachment in volume.get("attachments") or ():
        nova.detach_volume(clients, attachment["server_id"], volume_id)
    cinder.delete(clients, volume_id)


def undo(build, ctx):
    for volume_id in build.made("volume"):
        remove(ctx.clients, volume_id)
        build.forget("volume", volume_id)
