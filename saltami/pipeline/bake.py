"""The chroot part of the orchestration's volume bake, run by the builder minion on the
attached volume (``ami.builder_bake``): mount, apply the SLS, scrub, unmount. The builder
cleans up after itself when that fails; its server goes with the boot step's undo. The SLS
get the builder's pillar, which has the flavour's from the master's ami ext_pillar
(build_pillar.py): never the pillar as an argument, which the master logs and publishes."""
from .. import build_pillar
from ..saltmaster import MinionFailed
from . import provision, resolve

NAME = "bake"
# nothing to undo: the builder undid its own steps; its server goes with the boot step's undo


def run(build, ctx):
    spec = ctx.spec
    minion = build.data["builder"]["minion"]
    build_pillar.ensure(build, ctx, minion)
    out = ctx.master.call(minion, "ami.builder_bake",
                          kwargs={"device": build.data["device"], "sls": spec["sls"], "build_id": build.id,
                                  "timeout": spec["timeouts"]["apply"], "salt": spec["salt"]},
                          timeout=spec["timeouts"]["apply"] + 120)
    if not isinstance(out, dict) or "packages" not in out:
        raise MinionFailed(f"ami.builder_bake on the builder failed: {out}")
    provision.record_packages(build, out["packages"])
    resolve.record_render(build, ctx, out.get("render"))
    return {"builder_steps": out["steps"], "packages": len(out["packages"])}
