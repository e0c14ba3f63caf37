"""Boot an instance of the candidate image and run the flavour's test on it: by default the
minion answers and the flavour's SLS apply with no changes."""
from .. import build_pillar
from ..saltmaster import MinionFailed
from . import minion_server

NAME = "validate"


def run(build, ctx):
    spec = ctx.spec
    test = spec["test"]
    minion = minion_server.start(build, ctx, "validator", build.data["outputs"]["candidate"]["id"])["minion"]
    try:
        report = {}
        if test.get("sls"):
            build_pillar.ensure(build, ctx, minion)
            applied = ctx.master.apply(minion, test["sls"], test=True, timeout=spec["timeouts"]["validate"])
            if test.get("expect_no_changes", True) and applied["changed"]:
                raise MinionFailed(f"the new image is not what its SLS describe: re-applying "
                                   f"{','.join(test['sls'])} would change {', '.join(applied['changed'])}")
            report["states"] = applied["states"]
        if test.get("cmd"):
            out = ctx.master.call(minion, "cmd.run_all", [test["cmd"]], {"python_shell": True},
                                  timeout=spec["timeouts"]["validate"])
            if out["retcode"] != 0:
                raise MinionFailed(f"test command {test['cmd']!r} exited {out['retcode']}: "
                                   f"{(out.get('stderr') or out.get('stdout'))[-500:]}")
            report["cmd"] = "exit 0"
    finally:
        minion_server.release(build, ctx, "validator")
    # the builder, whose deletion the release step asked for (on failure, its undo waits)
    minion_server.settle(build, ctx, "builder")
    return report


def undo(build, ctx):
    minion_server.release(build, ctx, "validator")
