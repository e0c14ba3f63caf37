"""Apply the flavour's SLS to the mounted disk through a chroot, then record the package
manifest of what was built. The step's record in the build says which services the SLS
asked to start that were enabled at boot instead (no init system runs in a chroot), and
which processes still ran in the chroot at the end and were stopped."""
from ... import chroot  # saltami/chroot.py, the chroot itself
from .. import mount, provision, resolve

NAME = "provision"
# nothing to undo: the mount step's undo takes the chroot down


def run(build, ctx):
    spec = ctx.spec
    root = mount.root_of(build)
    chroot.prepare(root)
    try:
        applied = chroot.apply(root, spec["sls"], ctx.master.files(), pillar=spec.get("pillar"),
                               cachedir=ctx.cachedir, timeout=spec["timeouts"]["apply"])
        # what the SLS used of the file server, for the fingerprint (pipeline/resolve.py)
        resolve.record_chroot(build, ctx, root)
        packages = chroot.call(root, "pkg.list_pkgs", cachedir=ctx.cachedir)
    finally:
        stopped = chroot.teardown(root)
    provision.record_packages(build, packages)
    record = next(s for s in reversed(build.data["steps"]) if s["name"] == NAME)
    record.update(services=applied["services"], stopped=stopped)
    build.save()
    return {"states": applied["states"], "changed": len(applied["changed"]), "salt": applied["salt"],
            "packages": len(packages), "services": applied["services"], "stopped": stopped}
