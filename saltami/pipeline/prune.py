"""Delete the flavour's older images beyond ``keep``, never one that a server uses. A
failure here does not fail the build: the new image is already promoted."""
from .. import provenance

NAME = "prune"
# nothing to undo: deleted images cannot come back


def run(build, ctx):
    # in the manifest too: the build's summary (salt-run ami.build, ami.present) reports it
    build.data["pruned"] = provenance.prune(ctx.clients, ctx.spec["name"], ctx.spec["keep"],
                                              shared=ctx.spec["prune_shared"])
    build.save()
    return build.data["pruned"]
