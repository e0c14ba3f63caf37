"""Scrub the builder before it is snapshotted (salt/formulas/ami/scrub.sls, which runs
saltami/scrub.py on the builder)."""
NAME = "scrub"


def run(build, ctx):
    minion = build.data["builder"]["minion"]
    applied = ctx.master.apply(minion, ["ami.scrub"], timeout=ctx.spec["timeouts"]["apply"])
    return {"states": applied["states"]}


def undo(build, ctx):
    """Nothing of its own: the builder goes with the boot step's undo."""
