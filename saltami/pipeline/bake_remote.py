"""The chroot part of the orchestration's volume bake, run by the builder minion on the
attached volume (``ami.builder_bake``): mount, apply the SLS, scrub, unmount. The builder
cleans up after itself when that fails; its server goes with the boot step's undo."""
from ..saltmaster import MinionFailed
from . import provision

NAME = "bake"


def run(build, ctx):
    spec = ctx.spec
    out = ctx.master.call(build.data["builder"]["minion"], "ami.builder_bake",
                          kwargs={"device": build.data["device"], "sls": spec["sls"],
                                  "pillar": spec.get("pillar") or {}, "build_id": build.id,
                                  "timeout": spec["timeouts"]["apply"]},
                          timeout=spec["timeouts"]["apply"] + 120)
    if not isinstance(out, dict) or "packages" not in out:
        raise MinionFailed(f"ami.builder_bake on the builder failed: {out}")
    provision.record_packages(build, out["packages"])
    return {"builder_steps": out["steps"], "packages": len(out["packages"])}


def undo(build, ctx):
    """The builder undid its own steps; its server goes with the boot step's undo."""
