"""Attach the bake's volume to the builder and find its device there by its serial (device
names that nova reports are only hints)."""
from ..cloud import cinder, instance, nova

NAME = "attach"


def run(build, ctx):
    server = build.data["builder"]["server"]
    volume_id = build.made("volume")[0]
    nova.attach_volume(ctx.clients, server, volume_id, timeout=ctx.spec["timeouts"]["boot"])
    minion = build.data["builder"].get("minion")
    # the orchestration's builder is a minion of the master; ami.bake runs on the builder itself
    device = (ctx.master.call(minion, "ami.volume_device", [volume_id]) if minion
              else instance.volume_device(volume_id))
    build.data["device"] = device
    build.save()
    return {"server": server, "volume": volume_id, "device": device}


def detach(build, ctx):
    server = build.data["builder"]["server"]
    for volume_id in build.made("volume"):
        servers = {a["server_id"] for a in cinder.show(ctx.clients, volume_id).get("attachments") or ()}
        if server in servers:
            nova.detach_volume(ctx.clients, server, volume_id, timeout=ctx.spec["timeouts"]["boot"])


undo = detach
