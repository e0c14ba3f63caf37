"""Scrub the builder before it is snapshotted (salt/formulas/ami/scrub.sls, which runs
saltami/scrub.py on the builder): what it removed, how the free space was cleared (fstrim
where it can be shown to free the blocks, else zeros), and whether a scrub at the builder's
shutdown is armed."""
import json

NAME = "scrub"
# nothing to undo of its own: the builder goes with the boot step's undo


def run(build, ctx):
    minion = build.data["builder"]["minion"]
    applied = ctx.master.apply(minion, ["ami.scrub"], timeout=ctx.spec["timeouts"]["apply"],
                               settings={"ami": {"scrub": {"salt": ctx.spec["salt"]}}})
    result = {"states": applied["states"]}
    for state in applied["returns"].values():
        try:
            report = json.loads((state.get("changes") or {}).get("stdout") or "")
        except ValueError:
            continue
        result.update(removed_bytes=report.get("bytes"), trim=report.get("trim", {}).get("method"),
                      trim_detail=report.get("trim", {}).get("detail"),
                      at_shutdown=report.get("at_shutdown", {}).get("armed", False))
    return result
